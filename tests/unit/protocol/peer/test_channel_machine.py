"""Random interleavings of sends both ways, with the byte streams cut anywhere: every message
arrives exactly once, in order, on both sides (a hypothesis state machine)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tidings.protocol import LocalProtocolError
from tidings.protocol.peer import (
    ACK_PROTOCOL,
    AcksReceived,
    ChannelEvent,
    Established,
    MessageReceived,
    PeerMessage,
    SecureChannel,
)

from .peers import Node
from .strategies import ids, messages


def on_the_ack_protocol(message: PeerMessage) -> PeerMessage:
    return replace(message, protocol=ACK_PROTOCOL)


ALICE, BOB = Node("alice"), Node("bob")  # key pairs made once: each example only shakes hands
SIDES = st.sampled_from(["initiator", "responder"])


class Wire:
    """One direction: bytes written by one side and not yet read by the other."""

    def __init__(self, sender: SecureChannel, receiver: SecureChannel) -> None:
        self.sender, self.receiver = sender, receiver
        self.in_flight = b""
        self.sent: list[object] = []
        self.received: list[object] = []
        self.established = 0

    def collect(self) -> None:
        self.in_flight += self.sender.data_to_send()

    def deliver(self, count: int) -> None:
        data, self.in_flight = self.in_flight[:count], self.in_flight[count:]
        for received in self.receiver.receive_data(data):
            self.record(received)

    def record(self, event: ChannelEvent) -> None:
        if isinstance(event, Established):
            self.established += 1
        elif isinstance(event, MessageReceived):
            self.received.append(event.message)
        elif isinstance(event, AcksReceived):
            self.received.append(event.ids)
        else:
            raise AssertionError(f"unexpected {event!r}")


class ChannelMachine(RuleBasedStateMachine):
    @initialize(shake_hands=st.sampled_from([True, True, True, False]))
    def connect(self, shake_hands: bool) -> None:
        """Mostly established at once, so that most steps move messages; else the rules
        drive the handshake too, cut like the rest of the stream."""
        self.initiator = ALICE.initiator(expected=BOB)
        self.responder = BOB.responder()
        self.wires = {
            "initiator": Wire(self.initiator, self.responder),
            "responder": Wire(self.responder, self.initiator),
        }
        if shake_hands:
            self.flush()

    @rule(side=SIDES, message=messages | messages.map(on_the_ack_protocol))
    def send(self, side: str, message: PeerMessage) -> None:
        wire = self.wires[side]
        if not wire.sender.established:
            return
        if message.protocol == ACK_PROTOCOL:  # refused: the peer would drop it as a bad ack
            with pytest.raises(LocalProtocolError):
                wire.sender.send(message)
            return
        wire.sender.send(message)
        wire.sent.append(message)

    @rule(side=SIDES, acknowledged=st.lists(ids, min_size=1, max_size=3))
    def send_acks(self, side: str, acknowledged: list[str]) -> None:
        wire = self.wires[side]
        if wire.sender.established:
            wire.sender.send_acks(acknowledged)
            wire.sent.append(acknowledged)

    @rule(side=SIDES)
    def write(self, side: str) -> None:
        self.wires[side].collect()

    @rule(side=SIDES, count=st.integers(0, 70_000) | st.integers(0, 40))
    def read(self, side: str, count: int) -> None:
        self.wires[side].deliver(count)

    @invariant()
    def received_is_a_prefix_of_sent(self) -> None:
        for wire in self.wires.values():
            assert wire.received == wire.sent[: len(wire.received)]
            assert wire.established <= 1

    def flush(self) -> None:
        for _ in range(3):  # the handshake takes at most three trips
            for wire in self.wires.values():
                wire.collect()
                wire.deliver(len(wire.in_flight))

    def teardown(self) -> None:
        if not hasattr(self, "wires"):
            return
        self.flush()
        assert self.initiator.established and self.responder.established
        for wire in self.wires.values():
            assert wire.received == wire.sent
            assert wire.established == 1
        delivered = sum(len(wire.sent) for wire in self.wires.values())
        event(f"messages delivered: {'none' if not delivered else 'some'}")


ChannelMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestChannelMachine = ChannelMachine.TestCase
