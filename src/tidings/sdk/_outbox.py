"""Bookkeeping for outgoing messages: what to re-send, and which events satisfy a wait.

A message stays in the ``Outbox`` from the moment it is sent until the server answers
``accepted`` (durably stored) or ``failed``. After a reconnection the SDK re-sends everything
still there, in the original order and with the original ids; the server stores a given
(sender, id) once and answers ``accepted`` again for a copy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Final

from tidings.protocol.lime import Message, NotificationEvent

__all__ = ["WAITABLE_EVENTS", "Outbox", "satisfies"]

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


class Outbox:
    """Messages sent but neither accepted nor failed yet, in the order they were sent."""

    def __init__(self) -> None:
        self._messages: OrderedDict[str, Message] = OrderedDict()

    def __len__(self) -> int:
        return len(self._messages)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._messages

    def __iter__(self) -> Iterator[Message]:
        """The unsettled messages, oldest first: what to re-send after a reconnection."""
        return iter(list(self._messages.values()))

    def add(self, message: Message) -> None:
        if not isinstance(message.id, str):
            raise ValueError("only messages with an id can be tracked")
        if message.id in self._messages:
            raise ValueError(f"a message with id {message.id!r} is already waiting to be accepted")
        self._messages[message.id] = message

    def settle(self, message_id: str) -> bool:
        """Forget a message the server accepted or failed; False if it was not tracked."""
        return self._messages.pop(message_id, None) is not None
