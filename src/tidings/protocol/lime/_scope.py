"""The trust scope the server stamps on each message it delivers: ``metadata["tidings.scope"]``.

A message is encoded once, when the server takes it, with the scope as the first metadata key
(``scoped_metadata``); the scope is final only at delivery, so ``stamp_scope`` rewrites that one
value in the encoded bytes without parsing them. It relies on the encoding: fields are written in
the struct's order and ``metadata`` before ``type`` and ``content``, dicts in insertion order, and a
JSON string never holds an unescaped quote, so ``"metadata":{"tidings.scope":"`` with no ``{``
before it is the envelope's own metadata, not something inside a string, a nested object or the
content. Anything else (a message encoded before scopes existed, an id holding a ``{``) takes the
slow path: decode, put the scope first, encode again.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ._envelopes import UNSET, Message

__all__ = ["SCOPE_KEY", "scoped_metadata", "stamp_scope"]

SCOPE_KEY: Final = "tidings.scope"
PLACEHOLDER: Final = "public"
"""What a message is encoded with before its delivery decides (the commonest scope)."""

_MARKER: Final = b'"metadata":{"' + SCOPE_KEY.encode() + b'":"'
_MARKER_LENGTH: Final = len(_MARKER)
_QUOTED: Final = {scope: f'{scope}"'.encode() for scope in ("self", "friends", "public")}
"""A known value and the quote that ends it: a value that starts so is that value."""
_ONLY_SCOPE: Final[dict[str, Any]] = {SCOPE_KEY: PLACEHOLDER}
_DECODER: Final = msgspec.json.Decoder(Message)
_ENCODER: Final = msgspec.json.Encoder()


def scoped_metadata(metadata: Any, scope: str = PLACEHOLDER) -> dict[str, Any]:
    """``metadata`` with ``scope`` as its first key, replacing whatever the sender put there.

    The dict returned may be shared: do not change it."""
    if not isinstance(metadata, dict) or not metadata:
        return _ONLY_SCOPE if scope == PLACEHOLDER else {SCOPE_KEY: scope}
    scoped: dict[str, Any] = {SCOPE_KEY: scope}
    for key, value in metadata.items():
        if key != SCOPE_KEY:
            scoped[key] = value
    return scoped


def stamp_scope(payload: bytes, scope: str) -> bytes:
    """The message envelope ``payload`` with ``metadata["tidings.scope"]`` = ``scope``.

    Returns ``payload`` itself when it says so already. Only for message envelopes: anything
    that does not decode as a message is returned unchanged."""
    at = payload.find(_MARKER)
    if at > 0 and payload.find(b"{", 1, at) < 0:
        start = at + _MARKER_LENGTH
        quoted = _QUOTED.get(scope)
        if quoted is not None and payload.startswith(quoted, start):
            return payload  # the common case: nothing changed since the message was encoded
        end = payload.find(b'"', start)
        if end > 0 and payload.find(b"\\", start, end) < 0:
            return b"".join((payload[:start], scope.encode(), payload[end:]))
    return _stamp_slowly(payload, scope)


def _stamp_slowly(payload: bytes, scope: str) -> bytes:
    try:
        message = _DECODER.decode(payload)
    except msgspec.DecodeError:
        return payload
    metadata = message.metadata if message.metadata is not UNSET else None
    if metadata and next(iter(metadata)) == SCOPE_KEY and metadata[SCOPE_KEY] == scope:
        return payload
    metadata = scoped_metadata(metadata, scope)
    return _ENCODER.encode(msgspec.structs.replace(message, metadata=metadata))
