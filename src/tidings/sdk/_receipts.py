"""Senders waiting for a delivery event of their message (``send_message(wait=...)``).

The server reports a message's progress with notifications on its id: ``accepted`` (stored
durably), ``dispatched``, ``received``, ``consumed``, or ``failed``. A wait ends on the event it
names or a later one, except a wait for ``accepted``; ``failed`` ends every wait on the message
with ``MessageFailed``.
"""

from __future__ import annotations

import asyncio
from typing import Final

from tidings.protocol.lime import Notification, NotificationEvent

from ._exceptions import MessageFailed, reason_parts

__all__ = ["WAITABLE_EVENTS", "Receipts", "satisfies"]

_LATER_EVENTS: Final[dict[NotificationEvent, frozenset[NotificationEvent]]] = {
    # Only "accepted" itself proves durable storage, so nothing else stands in for it.
    NotificationEvent.ACCEPTED: frozenset({NotificationEvent.ACCEPTED}),
    NotificationEvent.DISPATCHED: frozenset(
        {NotificationEvent.DISPATCHED, NotificationEvent.RECEIVED, NotificationEvent.CONSUMED}
    ),
    NotificationEvent.RECEIVED: frozenset({NotificationEvent.RECEIVED, NotificationEvent.CONSUMED}),
    NotificationEvent.CONSUMED: frozenset({NotificationEvent.CONSUMED}),
}

WAITABLE_EVENTS: Final = frozenset(_LATER_EVENTS)
"""The events ``send_message(wait=...)`` accepts."""


def satisfies(received: NotificationEvent, wanted: NotificationEvent) -> bool:
    """Whether a ``received`` notification ends a wait for ``wanted``.

    A later delivery step implies the earlier ones (``consumed`` implies ``received``), except
    that ``accepted``, the promise of durable storage, is only ever proved by itself.
    """
    return received in _LATER_EVENTS[wanted]


class Receipts:
    """Futures waiting for notifications, by message id; several may wait on one message."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[tuple[NotificationEvent, asyncio.Future[None]]]] = {}

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._waiters

    def __len__(self) -> int:
        return len(self._waiters)

    def watch(self, message_id: str, wanted: NotificationEvent) -> asyncio.Future[None]:
        """A future done when ``wanted`` (or what ``satisfies`` it) arrives for the message.

        The caller ``forget()``s it once it stops waiting, whatever the outcome.
        """
        if wanted not in WAITABLE_EVENTS:
            raise ValueError(f"cannot wait for {wanted.value!r}")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(message_id, []).append((wanted, waiter))
        return waiter

    def forget(self, message_id: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(message_id)
        if waiters is None:
            return
        waiters[:] = [entry for entry in waiters if entry[1] is not waiter]
        if not waiters:
            del self._waiters[message_id]

    def notify(self, notification: Notification) -> None:
        """End the waits this notification satisfies; ``failed`` ends them all, with an error."""
        message_id = notification.id
        if not isinstance(message_id, str):
            return
        event = notification.event
        if event is NotificationEvent.FAILED:
            code, description = reason_parts(notification.reason)
            for _, waiter in self._waiters.pop(message_id, []):
                if not waiter.done():
                    waiter.set_exception(MessageFailed(code, description, message_id))
            return
        for wanted, waiter in self._waiters.get(message_id, []):
            if not waiter.done() and satisfies(event, wanted):
                waiter.set_result(None)

    def fail(self, message_id: str, error: BaseException) -> None:
        """End every wait on one message with ``error`` (the client gave up on it)."""
        for _, waiter in self._waiters.pop(message_id, []):
            if not waiter.done():
                waiter.set_exception(error)

    def abort(self, error: BaseException) -> None:
        """Make every wait raise ``error`` (the client is closing or gave up)."""
        for waiters in self._waiters.values():
            for _, waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
        self._waiters.clear()
