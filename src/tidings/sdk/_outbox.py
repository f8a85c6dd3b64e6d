"""What must still reach the server: unsettled messages, and acknowledgements not yet sent.

A message stays in the ``Outbox`` from the moment it is sent until the server answers
``accepted`` (durably stored) or ``failed``. After a reconnection the client re-sends everything
still there, in the original order and with the original ids; the server stores a given
(sender, id) once and answers ``accepted`` again for a copy.

Acknowledgements (``received`` notifications) made while no connection is up wait here too, and
go out once, first thing on the next connection: an ack is not worth repeating (the server
redelivers what it did not get, and the client acknowledges the copy).

``max_in_flight`` bounds the unsettled messages: the client waits for ``has_room`` before adding
one, so a producer faster than the server stores is paced rather than buffered without end.

The server remembers a (sender, id) only for its duplicate window (``message_id_retention_s``,
5 minutes by default), so a re-send is safe only while that memory lasts. The outbox notes when
each message first went out (``transmitted``); ``overdue`` names those first sent longer ago
than the client's resend horizon, which the client then stops re-sending (``MessageInDoubt``).
A message that never went out (queued while no connection was up) is not overdue: sending it
for the first time can duplicate nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from tidings.protocol.lime import Message, Notification

__all__ = ["Outbox"]


class Outbox:
    """Messages sent but neither accepted nor failed yet, in the order they were sent."""

    def __init__(self, max_in_flight: int | None = None) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self._messages: OrderedDict[str, Message] = OrderedDict()
        self._first_sent: dict[str, float] = {}
        self._acks: list[Notification] = []

    def __len__(self) -> int:
        return len(self._messages)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._messages

    def __iter__(self) -> Iterator[Message]:
        """The unsettled messages, oldest first: what to re-send after a reconnection."""
        return iter(list(self._messages.values()))

    @property
    def has_room(self) -> bool:
        """Whether another message may be sent without passing ``max_in_flight``."""
        return self.max_in_flight is None or len(self._messages) < self.max_in_flight

    def add(self, message: Message) -> None:
        if not isinstance(message.id, str):
            raise ValueError("only messages with an id can be tracked")
        if message.id in self._messages:
            raise ValueError(f"a message with id {message.id!r} is already waiting to be accepted")
        self._messages[message.id] = message

    def settle(self, message_id: str) -> bool:
        """Forget a message the server accepted or failed; False if it was not tracked."""
        self._first_sent.pop(message_id, None)
        return self._messages.pop(message_id, None) is not None

    def transmitted(self, message_id: str, now: float) -> None:
        """The message was written to a connection at ``now`` (monotonic seconds); only the
        first transmission counts, since the server's window runs from the first copy it
        stored."""
        if message_id in self._messages:
            self._first_sent.setdefault(message_id, now)

    def first_sent(self, message_id: str) -> float:
        """When the message was first transmitted (monotonic seconds)."""
        return self._first_sent[message_id]

    def overdue(self, now: float, horizon: float) -> list[Message]:
        """Unsettled messages first transmitted more than ``horizon`` seconds before ``now``,
        oldest first: the server may have stored one and forgotten its id since, so a re-send
        could be stored a second time."""
        first_sent = self._first_sent
        return [
            message
            for message_id, message in self._messages.items()
            if now - first_sent.get(message_id, now) > horizon
        ]

    @property
    def acks_waiting(self) -> int:
        """How many acknowledgements wait for a connection."""
        return len(self._acks)

    def queue_ack(self, ack: Notification) -> None:
        """Keep an acknowledgement made while no connection is up, for the next one."""
        self._acks.append(ack)

    def take_acks(self) -> list[Notification]:
        """The waiting acknowledgements, oldest first; the caller sends them, once."""
        acks, self._acks = self._acks, []
        return acks
