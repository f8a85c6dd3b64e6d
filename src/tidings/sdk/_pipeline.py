"""Message layers: where a message is transformed on its way out and on its way in.

A ``MessageLayer`` sees each outgoing message before it is sent (and before it is kept for
re-sending, so a retry sends the very same envelope) and each incoming message before the
application gets it. This is where end-to-end sealed messages are sealed and opened, and where
a platform can take the messages that are meant for it rather than for the application.

Layers stack like an onion: ``layers[0]`` is nearest the application, so outgoing messages
pass ``layers[0]`` first and incoming ones pass it last. A layer may change anything but the
``id`` (and, incoming, the ``from``): they are the keys of the outbox, of delivery waits, of
deduplication and of acknowledgements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tidings.protocol.lime import Message

__all__ = ["MessageLayer", "Pipeline"]


class MessageLayer(Protocol):
    """One step every message passes; return the message unchanged to let it through."""

    async def outgoing(self, message: Message) -> Message:
        """The message as it should be sent. Raising stops the send (nothing goes out)."""
        ...

    async def incoming(self, message: Message) -> Message | None:
        """The message as the application should see it, or ``None`` to consume it here.

        A consumed message is acknowledged and never reaches the application. Raising makes
        the iterator raise; the message is then not acknowledged, so the server delivers it
        again to the next session.
        """
        ...


class Pipeline:
    """The layers of one client, run in order; with none, messages pass untouched."""

    def __init__(self, layers: Sequence[MessageLayer] = ()) -> None:
        self.layers: tuple[MessageLayer, ...] = tuple(layers)

    def __bool__(self) -> bool:
        return bool(self.layers)

    async def outgoing(self, message: Message) -> Message:
        for layer in self.layers:
            changed = await layer.outgoing(message)
            if changed.id != message.id:
                raise ValueError(f"{layer!r} changed the id of an outgoing message")
            message = changed
        return message

    async def incoming(self, message: Message) -> Message | None:
        for layer in reversed(self.layers):
            changed = await layer.incoming(message)
            if changed is None:
                return None
            if changed.id != message.id or changed.from_ != message.from_:
                raise ValueError(f"{layer!r} changed the id or sender of an incoming message")
            message = changed
        return message
