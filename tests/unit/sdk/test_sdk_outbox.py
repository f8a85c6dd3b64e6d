"""The outbox: what is re-sent after a reconnection, acks kept for the next connection,
room under max_in_flight; and a state machine over random sends, settles and reconnections."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tidings.protocol.lime import Message, Notification, NotificationEvent, Raw
from tidings.sdk._outbox import Outbox


def message(message_id: str) -> Message:
    return Message(id=message_id, to="bob@localhost", type="text/plain", content=Raw(b'"hi"'))


def test_unsettled_messages_come_back_in_send_order() -> None:
    outbox = Outbox()
    for message_id in ("c", "a", "b"):
        outbox.add(message(message_id))
    assert outbox.settle("a")
    assert [m.id for m in outbox] == ["c", "b"]
    assert "a" not in outbox and "c" in outbox
    assert len(outbox) == 2


def test_overdue_counts_from_the_first_transmission_and_never_from_a_queued_one() -> None:
    """The server's window runs from the first copy it could have stored: a re-send does not
    restart the clock, and a message that never went out cannot be stored twice."""
    outbox = Outbox()
    for message_id in ("early", "late", "never"):
        outbox.add(message(message_id))
    outbox.transmitted("early", 0.0)
    outbox.transmitted("late", 50.0)
    outbox.transmitted("early", 90.0)  # a re-send: the first transmission still counts
    assert [m.id for m in outbox.overdue(100.0, 60.0)] == ["early"]
    assert outbox.first_sent("early") == 0.0
    assert [m.id for m in outbox.overdue(111.0, 60.0)] == ["early", "late"]
    assert outbox.overdue(1e9, 60.0)[-1].id != "never"
    outbox.settle("early")
    outbox.add(message("early"))  # the id again, a new message: a new clock
    assert [m.id for m in outbox.overdue(111.0, 60.0)] == ["late"]
    outbox.transmitted("gone", 0.0)  # not tracked: ignored
    assert "gone" not in outbox


def test_settling_twice_or_unknown_is_false() -> None:
    outbox = Outbox()
    outbox.add(message("a"))
    assert outbox.settle("a")
    assert not outbox.settle("a")
    assert not outbox.settle("zzz")


def test_the_same_id_cannot_be_pending_twice() -> None:
    outbox = Outbox()
    outbox.add(message("a"))
    with pytest.raises(ValueError):
        outbox.add(message("a"))
    outbox.settle("a")
    outbox.add(message("a"))  # once settled, the id may be sent again
    assert "a" in outbox


def test_messages_without_id_are_refused() -> None:
    with pytest.raises(ValueError):
        Outbox().add(Message(to="bob@localhost", type="text/plain", content=Raw(b'"x"')))


def test_iteration_is_a_snapshot() -> None:
    outbox = Outbox()
    outbox.add(message("a"))
    outbox.add(message("b"))
    for m in outbox:
        assert isinstance(m.id, str)
        outbox.settle(m.id)
    assert len(outbox) == 0


def ack(message_id: str) -> Notification:
    return Notification(id=message_id, to="alice@localhost/a", event=NotificationEvent.RECEIVED)


def test_acks_wait_for_the_next_connection_and_go_once() -> None:
    outbox = Outbox()
    outbox.queue_ack(ack("x"))
    outbox.queue_ack(ack("y"))
    assert outbox.acks_waiting == 2
    assert [a.id for a in outbox.take_acks()] == ["x", "y"]
    assert outbox.take_acks() == [] and outbox.acks_waiting == 0
    assert len(outbox) == 0  # acks are not messages in flight


def test_room_under_max_in_flight() -> None:
    outbox = Outbox(max_in_flight=2)
    outbox.add(message("a"))
    assert outbox.has_room
    outbox.add(message("b"))
    assert not outbox.has_room
    outbox.settle("a")
    assert outbox.has_room
    assert Outbox().has_room
    with pytest.raises(ValueError):
        Outbox(max_in_flight=0)


class OutboxMachine(RuleBasedStateMachine):
    """Random sends, settles (accepted or failed, known ids or not), acks and reconnections.

    The model is what the server must see after a reconnection: the queued acks, then every
    unsettled message, each once, in the order it was first sent.
    """

    def __init__(self) -> None:
        super().__init__()
        self.outbox = Outbox(max_in_flight=4)
        self.unsettled: list[str] = []
        self.acks: list[str] = []
        self.sent = 0

    @precondition(lambda self: self.outbox.has_room)
    @rule()
    def send(self) -> None:
        message_id = f"m{self.sent}"
        self.sent += 1
        self.outbox.add(message(message_id))
        self.unsettled.append(message_id)

    @rule(pick=st.integers(0, 9))
    def settle(self, pick: int) -> None:
        message_id = f"m{pick}"
        assert self.outbox.settle(message_id) is (message_id in self.unsettled)
        if message_id in self.unsettled:
            self.unsettled.remove(message_id)

    @rule(pick=st.integers(0, 9))
    def queue_ack(self, pick: int) -> None:
        self.outbox.queue_ack(ack(f"in{pick}"))
        self.acks.append(f"in{pick}")

    @rule()
    def reconnect(self) -> None:
        wire = [a.id for a in self.outbox.take_acks()] + [m.id for m in self.outbox]
        assert wire == self.acks + self.unsettled
        self.acks = []

    @invariant()
    def matches_the_model(self) -> None:
        assert [m.id for m in self.outbox] == self.unsettled
        assert len(self.outbox) == len(self.unsettled) <= 4
        assert self.outbox.has_room is (len(self.unsettled) < 4)
        assert self.outbox.acks_waiting == len(self.acks)


TestOutboxMachine = OutboxMachine.TestCase
