"""The whole Client under random sequences (hypothesis), through the in-memory transport.

Each step runs to quiescence on a private event loop, synchronised with the fake server's
``ping()`` barrier, never with sleeps. The model is the delivery contract (DESIGN.md 3): the
client re-sends every unsettled message, in order, with its id, after each reconnection; the
application gets each (sender, id) once, in arrival order; and whatever the server holds
unacknowledged is exactly what the client still has queued or holds unacknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tidings.protocol.lime import Message, Notification, NotificationEvent
from tidings.sdk import Connection, FrameReceiver, MessageKey, ReceivedMessage
from tidings.sdk.testing import FakeConnection, FakeServer

from .harness import STEP, make_client

T = TypeVar("T")

MAX_IN_FLIGHT = 3
SENDERS = ("alice@localhost/a", "carol@localhost/c")
KEYS = st.tuples(st.sampled_from(SENDERS), st.sampled_from(["i1", "i2", "i3", "i4", "i5"]))


class Gate:
    """A transport that holds new connections while closed: the client stays offline."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.open = asyncio.Event()
        self.open.set()

    async def connect(self, url: str, receiver: FrameReceiver) -> Connection:
        await self.open.wait()
        return await self.server.transport().connect(url, receiver)


class ClientMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.server = FakeServer(auto_accept=False)
        self.gate = Gate(self.server)
        self.client = make_client(self.server, transport=self.gate, max_in_flight=MAX_IN_FLIGHT)
        self.run(self.client.connect())
        self.peer: FakeConnection = self.run(self.server.next_connection())
        self.online = True
        self.scanned = 0  # how much of peer.received was checked for acknowledgements
        self.sent = 0
        self.unsettled: list[str] = []  # the model of client.unaccepted
        self.on_wire: set[str] = set()  # unsettled ids the current peer has seen
        self.delivered: set[MessageKey] = set()
        self.server_unacked: list[MessageKey] = []
        self.expected: list[MessageKey] = []  # what the application will get, in order
        self.taken: set[MessageKey] = set()
        self.held: dict[MessageKey, ReceivedMessage] = {}
        self.sync()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, STEP))

    def sync(self) -> None:
        """Let the client handle everything sent so far; note what the server got."""
        if not self.online:
            return
        self.run(self.peer.ping())
        for item in self.peer.received[self.scanned :]:
            if isinstance(item, Notification) and item.event is NotificationEvent.RECEIVED:
                key = (item.to, item.id)
                if key in self.server_unacked:
                    self.server_unacked.remove(key)
            elif isinstance(item, Message) and isinstance(item.id, str):
                self.on_wire.add(item.id)
        self.scanned = len(self.peer.received)

    def teardown(self) -> None:
        self.gate.open.set()
        self.run(self.client.close(timeout=0))
        self.loop.close()

    # -- sending -----------------------------------------------------------------------------

    @precondition(lambda self: len(self.unsettled) < MAX_IN_FLIGHT)
    @rule()
    def send(self) -> None:
        message_id = f"o{self.sent}"
        self.sent += 1
        self.run(self.client.send_message("alice@localhost", "x", id=message_id, wait=None))
        self.unsettled.append(message_id)
        self.sync()

    @precondition(lambda self: self.online and bool(set(self.unsettled) & self.on_wire))
    @rule(data=st.data(), event=st.sampled_from(["accepted", "failed"]))
    def settle(self, data: st.DataObject, event: str) -> None:
        message_id = data.draw(st.sampled_from(sorted(set(self.unsettled) & self.on_wire)))
        self.peer.notify(message_id, event, code=42 if event == "failed" else None)
        self.unsettled.remove(message_id)
        self.sync()

    # -- receiving ---------------------------------------------------------------------------

    @precondition(lambda self: self.online)
    @rule(key=KEYS)
    def deliver(self, key: MessageKey) -> None:
        """A new message, or a copy of one (acknowledged or not): the server may do either."""
        if key not in self.delivered:
            self.delivered.add(key)
            self.server_unacked.append(key)
            self.expected.append(key)
        self.peer.deliver("x", sender=key[0], id=key[1])
        self.sync()

    @precondition(lambda self: bool(self.expected))
    @rule(auto_ack=st.booleans())
    def take(self, auto_ack: bool) -> None:
        message = self.run(anext(self.client.messages(auto_ack=auto_ack)))
        key = message.key
        assert key is not None
        assert key == self.expected.pop(0), "out of order"
        assert key not in self.taken, "given twice"
        self.taken.add(key)
        if not auto_ack:
            self.held[key] = message
        self.sync()

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.held)))
        self.client.ack(self.held.pop(key))
        self.sync()

    # -- the connection ----------------------------------------------------------------------

    @precondition(lambda self: self.online)
    @rule()
    def drop(self) -> None:
        self.gate.open.clear()
        self.peer.drop()
        self.run(self.peer.wait_closed())
        self.online = False
        assert not self.client.connected

    @precondition(lambda self: not self.online)
    @rule()
    def reconnect(self) -> None:
        self.gate.open.set()
        self.peer = self.run(self.server.next_connection())
        self.online = True
        self.scanned = 0
        self.on_wire = set()
        self.sync()
        replayed = [item.id for item in self.peer.received if isinstance(item, Message)]
        assert replayed == self.unsettled, "the outbox was not replayed in order, once"
        held_or_queued = set(self.expected) | set(self.held)
        assert set(self.server_unacked) == held_or_queued, "acks made offline were not sent"
        for key in list(self.server_unacked):  # the server redelivers what it has no ack for
            self.peer.deliver("x", sender=key[0], id=key[1])
        self.sync()

    @invariant()
    def the_client_matches_the_model(self) -> None:
        assert self.client.unaccepted == self.unsettled
        if self.online:
            assert set(self.server_unacked) == set(self.expected) | set(self.held)


ClientMachine.TestCase.settings = settings(max_examples=75, stateful_step_count=30, deadline=None)
TestClientMachine = ClientMachine.TestCase
