"""Delivery waits: which notification ends which wait."""

from __future__ import annotations

import pytest

from tidings.protocol.lime import Notification, NotificationEvent, Reason
from tidings.sdk import ClientClosed, MessageFailed
from tidings.sdk._receipts import WAITABLE_EVENTS, Receipts, satisfies

E = NotificationEvent


def note(message_id: str, event: E, code: int | None = None) -> Notification:
    reason = Reason(code=code, description="why") if code is not None else None
    if reason is None:
        return Notification(id=message_id, event=event)
    return Notification(id=message_id, event=event, reason=reason)


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


async def test_several_waits_on_one_message_end_each_on_its_own_event() -> None:
    receipts = Receipts()
    accepted = receipts.watch("m1", E.ACCEPTED)
    received = receipts.watch("m1", E.RECEIVED)
    other = receipts.watch("m2", E.ACCEPTED)
    receipts.notify(note("m1", E.ACCEPTED))
    assert accepted.done() and not received.done() and not other.done()
    receipts.notify(note("m1", E.CONSUMED))
    assert received.done()
    for message_id, waiter in (("m1", accepted), ("m1", received)):
        receipts.forget(message_id, waiter)
    assert "m1" not in receipts and "m2" in receipts
    receipts.forget("m2", other)
    assert len(receipts) == 0


async def test_failed_ends_every_wait_on_the_message_with_its_reason() -> None:
    receipts = Receipts()
    waits = [receipts.watch("m1", E.ACCEPTED), receipts.watch("m1", E.CONSUMED)]
    receipts.notify(note("m1", E.FAILED, code=42))
    for waiter in waits:
        error = waiter.exception()
        assert isinstance(error, MessageFailed)
        assert (error.code, error.message_id, error.description) == (42, "m1", "why")
    assert "m1" not in receipts


async def test_abort_ends_every_wait() -> None:
    receipts = Receipts()
    waiter = receipts.watch("m1", E.ACCEPTED)
    receipts.abort(ClientClosed("closed"))
    assert isinstance(waiter.exception(), ClientClosed)
    assert len(receipts) == 0


async def test_only_delivery_events_can_be_waited_for() -> None:
    with pytest.raises(ValueError):
        Receipts().watch("m1", E.FAILED)
