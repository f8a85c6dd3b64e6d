"""mm-platform's protobuf ``Message``, extended with an optional ``id``, and acknowledgements.

```proto
message Message {            // proto2
  required string topic    = 1;
  required string protocol = 2;
  required bytes  payload  = 3;   // mm-platform: string; same wire type, so its bytes are ours
  optional string id       = 4;   // Tidings: the sender's outbox id, for acks and dedupe
}
```

Hand-written rather than generated: four fields do not justify a runtime dependency on
``protobuf``, and the decoder must refuse (``PeerError("malformed")``) what a generated one
would accept silently (missing required fields, strings that are not UTF-8, a known field with
another wire type). The tests cross-check both directions against Google's ``protobuf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .._errors import LocalProtocolError
from ._errors import PeerError

__all__ = [
    "ACK_PROTOCOL",
    "ACK_TOPIC",
    "MAX_ID_LENGTH",
    "MAX_PROTOCOL_LENGTH",
    "MAX_TOPIC_LENGTH",
    "PeerMessage",
    "ack_message",
    "acked_ids",
    "decode_message",
    "encode_message",
]

MAX_TOPIC_LENGTH: Final = 1024
MAX_PROTOCOL_LENGTH: Final = 64
MAX_ID_LENGTH: Final = 256
"""Bounds in characters; an empty value is refused too."""

ACK_PROTOCOL: Final = "tidings.ack"
ACK_TOPIC: Final = "ack"

_TOPIC, _PROTOCOL, _PAYLOAD, _ID = 1, 2, 3, 4
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES: Final = 10
_BOUNDS: Final = {
    _TOPIC: ("topic", MAX_TOPIC_LENGTH),
    _PROTOCOL: ("protocol", MAX_PROTOCOL_LENGTH),
    _ID: ("id", MAX_ID_LENGTH),
}


@dataclass(frozen=True, slots=True)
class PeerMessage:
    """One message on a direct link; ``id`` (the sender's outbox id) asks for an ack."""

    topic: str
    protocol: str
    payload: bytes
    id: str | None = None


def encode_message(message: PeerMessage) -> bytes:
    """The protobuf bytes (fields 1, 2, 3 then 4 if set); ``LocalProtocolError`` for a message
    that ``decode_message`` would refuse, so we never send what the peer must drop."""
    fields = [
        (_TOPIC, message.topic),
        (_PROTOCOL, message.protocol),
        (_PAYLOAD, message.payload),
    ]
    if message.id is not None:
        fields.append((_ID, message.id))
    out = bytearray()
    for number, value in fields:
        if isinstance(value, str):
            name, limit = _BOUNDS[number]
            if problem := _text_problem(name, value, limit):
                raise LocalProtocolError(problem)
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError:
                raise LocalProtocolError(f"{name} cannot be encoded as UTF-8") from None
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        else:
            raise LocalProtocolError("payload must be bytes")
        out += _varint(number << 3 | _LENGTH_DELIMITED)
        out += _varint(len(data))
        out += data
    return bytes(out)


def decode_message(data: bytes) -> PeerMessage:
    """The ``PeerMessage`` in ``data``; ``PeerError("malformed")`` names what is wrong.

    Proto2 rules: unknown fields of wire types 0, 1, 2 and 5 are skipped; when a field occurs
    more than once, the last occurrence wins.
    """
    view = memoryview(data)
    values: dict[int, bytes] = {}
    position = 0
    end = len(view)
    while position < end:
        key, position = _read_varint(view, position)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise PeerError("malformed", "A protobuf field number is 0")
        if number in (_TOPIC, _PROTOCOL, _PAYLOAD, _ID) and wire_type != _LENGTH_DELIMITED:
            raise PeerError("malformed", f"Field {number} has wire type {wire_type}, not 2")
        if wire_type == _VARINT:
            _, position = _read_varint(view, position)
        elif wire_type == _FIXED64:
            position = _skip(view, position, 8)
        elif wire_type == _FIXED32:
            position = _skip(view, position, 4)
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _read_varint(view, position)
            start = position
            position = _skip(view, position, length)
            if number in (_TOPIC, _PROTOCOL, _PAYLOAD, _ID):
                values[number] = bytes(view[start:position])
        else:
            raise PeerError("malformed", f"Unsupported protobuf wire type {wire_type}")
    for number, name in ((_TOPIC, "topic"), (_PROTOCOL, "protocol"), (_PAYLOAD, "payload")):
        if number not in values:
            raise PeerError("malformed", f"The required field {name} is missing")
    raw_id = values.get(_ID)
    return PeerMessage(
        topic=_decode_text(_TOPIC, values[_TOPIC]),
        protocol=_decode_text(_PROTOCOL, values[_PROTOCOL]),
        payload=values[_PAYLOAD],
        id=None if raw_id is None else _decode_text(_ID, raw_id),
    )


def ack_message(ids: Sequence[str]) -> PeerMessage:
    """The message that acknowledges ``ids`` (``LocalProtocolError`` if one cannot be sent)."""
    if isinstance(ids, str) or not ids:
        raise LocalProtocolError("An ack names at least one id (a sequence of strings)")
    for value in ids:
        if problem := _text_problem("id", value, MAX_ID_LENGTH):
            raise LocalProtocolError(f"Cannot acknowledge {value!r}: {problem}")
    try:
        payload = "\n".join(ids).encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError("An acknowledged id cannot be encoded as UTF-8") from None
    return PeerMessage(topic=ACK_TOPIC, protocol=ACK_PROTOCOL, payload=payload)


def acked_ids(message: PeerMessage) -> list[str]:
    """The ids an ack message acknowledges; ``PeerError("malformed")`` if it is a bad ack.

    ``LocalProtocolError`` when ``message`` is not on ``ACK_PROTOCOL`` at all (check first).
    """
    if message.protocol != ACK_PROTOCOL:
        raise LocalProtocolError(f"Not an ack: protocol {message.protocol!r}")
    if message.topic != ACK_TOPIC or message.id is not None:
        raise PeerError("malformed", "An ack has topic 'ack' and no id")
    try:
        text = message.payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PeerError("malformed", "An ack payload is not UTF-8") from None
    ids = text.split("\n")
    for value in ids:
        if problem := _text_problem("id", value, MAX_ID_LENGTH):
            raise PeerError("malformed", f"Bad ack: {problem}")
    return ids


def _text_problem(name: str, value: object, limit: int) -> str | None:
    """Why ``value`` cannot be field ``name``, or ``None``; ids may not hold the ack separator."""
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        return f"{name} is 1 to {limit} characters"
    if name == "id" and "\n" in value:
        return "an id contains a line break (acks separate ids with one)"
    return None


def _decode_text(number: int, raw: bytes) -> str:
    name, limit = _BOUNDS[number]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PeerError("malformed", f"{name} is not valid UTF-8") from None
    if problem := _text_problem(name, text, limit):
        raise PeerError("malformed", problem)
    return text


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(view: memoryview, position: int) -> tuple[int, int]:
    """A varint of at most 10 bytes (64 bits, as protobuf reads it) and the next position."""
    result = 0
    for index in range(_MAX_VARINT_BYTES):
        if position + index >= len(view):
            raise PeerError("malformed", "The protobuf ends inside a varint")
        byte = view[position + index]
        result |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, position + index + 1
    raise PeerError("malformed", "A protobuf varint is longer than 10 bytes")


def _skip(view: memoryview, position: int, length: int) -> int:
    if length > len(view) - position:
        raise PeerError("malformed", "The protobuf ends inside a field")
    return position + length
