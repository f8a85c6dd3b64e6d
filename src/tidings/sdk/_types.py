"""What the SDK hands to the application, and how contents go to and from the wire."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import msgspec

from tidings.protocol.lime import SCOPE_KEY, UNSET, Command, Message, Raw

from ._dedupe import MessageKey

__all__ = [
    "CommandResult",
    "OpenedMessage",
    "ReceivedMessage",
    "decode_document",
    "encode_document",
    "is_json_type",
]


def is_json_type(media_type: str) -> bool:
    """``application/json`` and ``*/*+json`` documents travel as JSON values, others as strings."""
    base = media_type.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


def encode_document(document: Any, media_type: str) -> Raw:
    """The wire form of a message content or command resource of type ``media_type``.

    JSON types take any JSON-serialisable value. Other types take a ``str`` (sent as a JSON
    string) or ``bytes`` (sent base64-encoded, as LIME sends binary contents).
    """
    if not is_json_type(media_type):
        if isinstance(document, bytes | bytearray | memoryview):
            document = base64.b64encode(bytes(document)).decode("ascii")
        elif not isinstance(document, str):
            raise TypeError(
                f"a {media_type!r} document must be str or bytes, not {type(document).__name__}; "
                "use a JSON media type (application/json, ...+json) for structured documents"
            )
    return Raw(msgspec.json.encode(document))


def decode_document(raw: Raw) -> Any:
    """The JSON value of a raw document: a ``str`` for non-JSON types (base64 for binary ones)."""
    return msgspec.json.decode(bytes(raw))


class OpenedMessage(Message, frozen=True, kw_only=True):
    """A sealed message, opened: plaintext ``type`` and ``content``, and the node whose
    published key signed it. Only the SDK's sealing layer makes one: no metadata a sender
    writes can pass for it."""

    verified_sender: str = msgspec.field(name="verifiedSender")
    verified_sign_id: str = msgspec.field(name="verifiedSignId")


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message delivered to this client.

    ``sender`` is the node the server stamped in ``from``; ``content`` is decoded (a ``str`` for
    ``text/plain`` and other non-JSON types, the JSON value for JSON types). ``envelope`` is the
    message exactly as it came off the wire (for a sealed message: as opened).
    ``verified_sender`` is the node whose published key signed a sealed message (None for a
    message that was not sealed: then only the server vouches for ``sender``), and
    ``verified_sign_id`` the key that signed it.

    ``scope`` is the trust scope the server stamped when it delivered the message (its
    ``metadata["tidings.scope"]``): ``"self"`` from another node of this identity, ``"friends"``
    from an accepted contact, ``"public"`` from anyone else (and from the server itself); None
    from a server that stamps none.
    """

    id: str | None
    sender: str
    to: str | None
    type: str
    content: Any
    metadata: dict[str, Any] | None
    envelope: Message
    verified_sender: str | None = None
    scope: str | None = None
    verified_sign_id: str | None = None

    @classmethod
    def from_envelope(cls, message: Message) -> ReceivedMessage:
        metadata = message.metadata if message.metadata is not UNSET else None
        scope = metadata.get(SCOPE_KEY) if metadata is not None else None
        return cls(
            id=message.id if message.id is not UNSET else None,
            sender=message.from_ if message.from_ is not UNSET else "",
            to=message.to if message.to is not UNSET else None,
            type=message.type,
            content=decode_document(message.content),
            metadata=metadata,
            envelope=message,
            verified_sender=message.verified_sender if isinstance(message, OpenedMessage) else None,
            scope=scope if isinstance(scope, str) else None,
            verified_sign_id=(
                message.verified_sign_id if isinstance(message, OpenedMessage) else None
            ),
        )

    @property
    def key(self) -> MessageKey | None:
        """``(sender, id)``, the deduplication key; ``None`` for a message without id."""
        return None if self.id is None else (self.sender, self.id)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A successful command response: the resource (decoded, ``None`` if absent) and its type."""

    type: str | None
    resource: Any
    envelope: Command

    @classmethod
    def from_envelope(cls, command: Command) -> CommandResult:
        resource = command.resource
        return cls(
            type=command.type if command.type is not UNSET else None,
            resource=decode_document(resource) if resource is not UNSET else None,
            envelope=command,
        )
