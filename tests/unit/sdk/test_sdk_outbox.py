"""Outgoing-message tracking: what is re-sent after a reconnection, what ends a wait."""

from __future__ import annotations

import pytest

from tidings.protocol.lime import Message, NotificationEvent, Raw
from tidings.sdk._outbox import Outbox
from tidings.sdk._receipts import WAITABLE_EVENTS, satisfies

E = NotificationEvent


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


@pytest.mark.parametrize(
    ("received", "wanted", "expected"),
    [
        (E.ACCEPTED, E.ACCEPTED, True),
        (E.DISPATCHED, E.ACCEPTED, False),  # only "accepted" proves durable storage
        (E.CONSUMED, E.ACCEPTED, False),
        (E.ACCEPTED, E.DISPATCHED, False),
        (E.DISPATCHED, E.DISPATCHED, True),
        (E.RECEIVED, E.DISPATCHED, True),
        (E.CONSUMED, E.DISPATCHED, True),
        (E.DISPATCHED, E.RECEIVED, False),
        (E.RECEIVED, E.RECEIVED, True),
        (E.CONSUMED, E.RECEIVED, True),
        (E.RECEIVED, E.CONSUMED, False),
        (E.CONSUMED, E.CONSUMED, True),
        (E.VALIDATED, E.ACCEPTED, False),
        (E.FAILED, E.ACCEPTED, False),
    ],
)
def test_which_event_ends_which_wait(received: E, wanted: E, expected: bool) -> None:
    assert satisfies(received, wanted) is expected


def test_waitable_events() -> None:
    assert {E.ACCEPTED, E.DISPATCHED, E.RECEIVED, E.CONSUMED} == WAITABLE_EVENTS
