"""``client.messages()`` and ``client.envelopes()``: async iterators over what arrives.

The iterators only know an ``IncomingSource``: something that waits for the next item and
hands it over (deduplicated, acknowledged as asked). The client's ``Receiver`` is one; anything
else that delivers LIME items (a local bus, a test double) can be iterated the same way.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias

from tidings.protocol.lime import Command, Notification

from ._types import ReceivedMessage

__all__ = ["Envelopes", "Incoming", "IncomingSource", "Messages"]

Incoming: TypeAlias = ReceivedMessage | Notification | Command
"""What ``envelopes()`` yields: messages, notifications and the server's command requests."""


class IncomingSource(Protocol):
    """What the iterators read from."""

    async def next_incoming(self, *, messages_only: bool, auto_ack: bool) -> Incoming | None:
        """Wait for the next item (only messages if ``messages_only``); ``None`` at the end.

        A message is handed over as the application's own: with ``auto_ack`` it is recorded
        and acknowledged before this returns. Raises the error that ended the source, if any.
        """
        ...


class Messages:
    """``async for message in client.messages()``: the messages, each exactly once."""

    def __init__(self, source: IncomingSource, auto_ack: bool) -> None:
        self._source = source
        self._auto_ack = auto_ack

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> ReceivedMessage:
        item = await self._source.next_incoming(messages_only=True, auto_ack=self._auto_ack)
        if item is None:
            raise StopAsyncIteration
        assert isinstance(item, ReceivedMessage)
        return item


class Envelopes:
    """``async for item in client.envelopes()``: messages, notifications and server commands."""

    def __init__(self, source: IncomingSource, auto_ack: bool) -> None:
        self._source = source
        self._auto_ack = auto_ack

    def __aiter__(self) -> Envelopes:
        return self

    async def __anext__(self) -> Incoming:
        item = await self._source.next_incoming(messages_only=False, auto_ack=self._auto_ack)
        if item is None:
            raise StopAsyncIteration
        return item
