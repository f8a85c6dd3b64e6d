"""The receiving side of a client: from the connection, through the inbox, to the application.

Incoming messages go into the ``Inbox`` (which drops copies); iterators wait here for the next
item. Handing a message over runs the incoming message layers and then, as the iterator asks,
acknowledges it: with ``auto_ack`` the key is recorded in ``SeenMessages`` (fsynced with a
file) and ``received`` goes out before ``__anext__`` returns, so a message the application was
given is never given again, even across a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tidings.protocol.lime import Command, Message, Notification, NotificationEvent

from ._dedupe import MessageKey, SeenMessages
from ._exceptions import TidingsClientError
from ._inbox import Arrival, Inbox, message_key
from ._iterators import Incoming
from ._pipeline import Pipeline
from ._signal import Signal
from ._types import ReceivedMessage

__all__ = ["Receiver"]

logger = logging.getLogger("tidings.sdk")


class Receiver:
    """Feeds the inbox from the connection and the application from the inbox.

    ``send_ack`` sends a ``received`` notification now, or keeps it for the next connection.
    """

    def __init__(
        self,
        send_ack: Callable[[Notification], None],
        pipeline: Pipeline | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self.inbox = inbox if inbox is not None else Inbox()
        self._send_ack = send_ack
        self._pipeline = pipeline if pipeline is not None else Pipeline()
        self._changes = Signal()
        self._ended = False
        self._error: TidingsClientError | None = None

    # -- the connection's side ---------------------------------------------------------------

    def open(self, seen: SeenMessages) -> None:
        """Start recording what the application takes in ``seen``."""
        self.inbox.seen = seen

    def put_message(self, message: Message) -> None:
        arrival = self.inbox.put_message(message)
        if arrival is Arrival.NEW:
            self._changes.notify()
        elif arrival is Arrival.SEEN:
            key = message_key(message)
            assert key is not None
            logger.debug("dropping a redelivered message %s, acknowledging it", key)
            self._acknowledge(key)

    def put_other(self, item: Notification | Command) -> None:
        self.inbox.put_other(item)
        self._changes.notify()

    def end(self, error: TidingsClientError | None = None) -> None:
        """No more items: iterators stop, or raise ``error`` (an error outlives a plain end)."""
        self._ended = True
        if error is not None:
            self._error = error
        self._changes.notify()

    def close(self) -> None:
        """Close the record of seen messages (its file)."""
        if self.inbox.seen is not None:
            self.inbox.seen.close()

    # -- the application's side --------------------------------------------------------------

    async def next_incoming(self, *, messages_only: bool, auto_ack: bool) -> Incoming | None:
        while True:
            if self._ended:
                if self._error is not None:
                    raise self._error
                return None
            entry = self.inbox.pop(messages_only=messages_only)
            if entry is None:
                await self._changes.wait()
                continue
            seq, item = entry
            if not isinstance(item, Message):
                return item
            received = await self._hand_over(seq, item, auto_ack)
            if received is not None:
                return received

    def ack(self, message: ReceivedMessage) -> None:
        """Acknowledge a message taken with ``auto_ack=False``."""
        key = message.key
        if key is None:
            return
        self.inbox.acknowledge(key)
        self._acknowledge(key)

    async def _hand_over(
        self, seq: int, message: Message, auto_ack: bool
    ) -> ReceivedMessage | None:
        key = message_key(message)
        if self._pipeline:
            try:
                opened = await self._pipeline.incoming(message)
            except asyncio.CancelledError:
                self.inbox.restore(seq, message)
                raise
            except BaseException:
                if key is not None:
                    self.inbox.release(key)
                raise
            if opened is None:  # a layer consumed it: done with, as far as the server goes
                if key is not None and self.inbox.hand_over(key, auto_ack=True):
                    self._acknowledge(key)
                return None
            message = opened
        received = ReceivedMessage.from_envelope(message)
        if key is not None and self.inbox.hand_over(key, auto_ack=auto_ack):
            self._acknowledge(key)
        return received

    def _acknowledge(self, key: MessageKey) -> None:
        sender, message_id = key
        if sender:
            self._send_ack(Notification(id=message_id, to=sender, event=NotificationEvent.RECEIVED))
