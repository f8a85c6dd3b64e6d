"""JSON codec for LIME envelopes: one envelope per WebSocket text frame.

Decoding guesses the envelope type from the raw bytes and decodes straight into the typed struct,
which is the common case and costs one pass. When the guess fails (a marker inside a string, an
escaped key, a real validation error), it falls back to classifying a plain dict by key presence
and decodes again to report the precise problem.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .._errors import RemoteProtocolError
from .._nesting import MAX_DEPTH, nested_deeper_than
from ._envelopes import Command, Envelope, Message, Notification, Session
from ._reasons import Reason, ReasonCode

__all__ = ["EnvelopeError", "decode_envelope", "encode_envelope"]

_CLASSIFY_ORDER: Final[tuple[tuple[str, type[Envelope]], ...]] = (
    ("content", Message),
    ("event", Notification),
    ("method", Command),
    ("state", Session),
)
_SNIFF: Final = tuple((f'"{key}"'.encode(), cls) for key, cls in _CLASSIFY_ORDER)
_DECODERS: Final[dict[type[Envelope], msgspec.json.Decoder[Any]]] = {
    cls: msgspec.json.Decoder(cls) for _, cls in _CLASSIFY_ORDER
}
_ANY_DECODER: Final = msgspec.json.Decoder()
_ENCODER: Final = msgspec.json.Encoder()

_KIND_NAMES: Final[dict[type[Envelope], str]] = {
    Message: "message",
    Notification: "notification",
    Command: "command",
    Session: "session",
}


class EnvelopeError(RemoteProtocolError):
    """A frame that is not a valid envelope; ``reason`` is what to fail or answer with.

    ``kind`` and ``envelope_id`` are set when the frame was at least a JSON object of a known
    envelope type, so the caller can answer that envelope instead of failing the session.
    """

    def __init__(
        self,
        reason: Reason,
        kind: type[Envelope] | None = None,
        envelope_id: str | None = None,
    ) -> None:
        super().__init__(reason.description)
        self.reason = reason
        self.kind = kind
        self.envelope_id = envelope_id


def decode_envelope(data: bytes) -> Envelope:
    """Decode one text frame into an envelope, or raise ``EnvelopeError`` naming the problem."""
    if nested_deeper_than(data):
        raise EnvelopeError(_invalid(f"The envelope nests more than {MAX_DEPTH} levels deep"))
    if b"\\u" not in data:
        for marker, cls in _SNIFF:
            if marker in data:
                try:
                    envelope: Envelope = _DECODERS[cls].decode(data)
                except msgspec.DecodeError:
                    break
                return envelope
    return _decode_carefully(data)


def _decode_carefully(data: bytes) -> Envelope:
    try:
        obj = _ANY_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(_invalid(f"The frame is not valid JSON: {exc}")) from None
    if not isinstance(obj, dict):
        raise EnvelopeError(_invalid("An envelope must be a JSON object"))
    cls = next((kind for key, kind in _CLASSIFY_ORDER if key in obj), None)
    if cls is None:
        raise EnvelopeError(
            _invalid("Unknown envelope: it has none of 'content', 'event', 'method', 'state'")
        )
    envelope_id = obj.get("id")
    if cls is Command and "status" in obj:
        envelope_id = None  # a response is never answered, so a bad one cannot be refused
    try:
        envelope: Envelope = _DECODERS[cls].decode(data)
    except msgspec.ValidationError as exc:
        raise EnvelopeError(
            _invalid(f"Invalid {_KIND_NAMES[cls]}: {exc}"),
            kind=cls,
            envelope_id=envelope_id if isinstance(envelope_id, str) and envelope_id else None,
        ) from None
    return envelope


def encode_envelope(envelope: Envelope) -> bytes:
    return _ENCODER.encode(envelope)


def _invalid(description: str) -> Reason:
    return Reason(code=ReasonCode.VALIDATION_ERROR, description=description)
