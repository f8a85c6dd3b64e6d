"""What arrived for the application, and which copies of it to drop.

The server delivers each message at least once: it redelivers, to the next session of the
node, whatever was not acknowledged with ``received``, and a message may arrive again while an
earlier copy still waits. The ``Inbox`` keeps the arrivals in order and decides, by
``(sender, id)``, what a copy is:

- ``Arrival.NEW``: not seen before; queued for the application;
- ``Arrival.WAITING``: a copy of one still queued, or taken but not yet acknowledged
  (``auto_ack=False``): dropped, the one copy the application has will be acknowledged;
- ``Arrival.SEEN``: already taken and recorded in ``SeenMessages``: dropped, and the caller
  acknowledges it again, since the first acknowledgement may have been lost with a connection.

It holds no I/O and no asyncio: the ``Receiver`` drives it and does the waiting.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final, TypeAlias

from tidings.protocol.lime import UNSET, Command, Message, Notification

from ._dedupe import MessageKey, SeenMessages

__all__ = ["Arrival", "Inbox", "message_key"]

NOTIFICATION_BACKLOG: Final = 1024
"""Notifications and server commands kept until taken (the latest ones)."""

Item: TypeAlias = Message | Notification | Command


class Arrival(enum.Enum):
    """What an incoming message turned out to be."""

    NEW = "new"
    WAITING = "waiting"
    SEEN = "seen"


def message_key(message: Message) -> MessageKey | None:
    """``(sender, id)`` of a message; ``None`` without an id (never deduplicated nor acked)."""
    if message.id is UNSET:
        return None
    return (message.from_ if message.from_ is not UNSET else "", message.id)


class Inbox:
    """Items waiting for the application, oldest first, and the keys it holds unacknowledged.

    ``seen`` is the record of what the application took (``None`` until the client connects).
    Messages queue without bound (the server's flow control bounds them); notifications and
    server commands keep only the latest ``backlog``.
    """

    def __init__(
        self, seen: SeenMessages | None = None, *, backlog: int = NOTIFICATION_BACKLOG
    ) -> None:
        self.seen = seen
        self._seq = 0
        self._messages: deque[tuple[int, Message]] = deque()
        self._others: deque[tuple[int, Notification | Command]] = deque(maxlen=backlog)
        self._queued: set[MessageKey] = set()
        self._unacked: set[MessageKey] = set()

    def __len__(self) -> int:
        return len(self._messages) + len(self._others)

    @property
    def unacknowledged(self) -> frozenset[MessageKey]:
        """Keys taken with ``auto_ack=False`` and not acknowledged yet."""
        return frozenset(self._unacked)

    def put_message(self, message: Message) -> Arrival:
        key = message_key(message)
        if key is not None:
            if key in self._queued or key in self._unacked:
                return Arrival.WAITING
            if self.seen is not None and self.seen.check(key):
                return Arrival.SEEN
            self._queued.add(key)
        self._seq += 1
        self._messages.append((self._seq, message))
        return Arrival.NEW

    def put_other(self, item: Notification | Command) -> None:
        self._seq += 1
        self._others.append((self._seq, item))

    def pop(self, *, messages_only: bool) -> tuple[int, Item] | None:
        """The oldest item (only messages if ``messages_only``) with its arrival number.

        A popped message is still counted as queued until ``hand_over()``, ``release()`` or
        ``restore()`` says what became of it, so copies arriving meanwhile are dropped.
        """
        if (
            not messages_only
            and self._others
            and (not self._messages or self._others[0][0] < self._messages[0][0])
        ):
            return self._others.popleft()
        if self._messages:
            return self._messages.popleft()
        return None

    def hand_over(self, key: MessageKey, *, auto_ack: bool) -> bool:
        """The application took the message; True when it must be acknowledged now.

        With ``auto_ack`` it is recorded as seen (durably, with a file) and acknowledged at
        once; otherwise it stays unacknowledged until ``acknowledge()``.
        """
        self._queued.discard(key)
        if not auto_ack:
            self._unacked.add(key)
            return False
        if self.seen is not None:
            self.seen.add(key)
        return True

    def acknowledge(self, key: MessageKey) -> None:
        """The application acknowledged a message it took (doing it twice is harmless)."""
        self._unacked.discard(key)
        if self.seen is not None:
            self.seen.add(key)

    def release(self, key: MessageKey) -> None:
        """Forget a popped message without recording it: the server will deliver it again."""
        self._queued.discard(key)

    def restore(self, seq: int, message: Message) -> None:
        """Put a popped message back where it was (its taker was cancelled)."""
        index = 0
        while index < len(self._messages) and self._messages[index][0] < seq:
            index += 1
        self._messages.insert(index, (seq, message))
