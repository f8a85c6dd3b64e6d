"""Text frames to typed messages and back; the only module that touches JSON.

Decoding never raises anything but ``RemoteProtocolError`` (case
``INVALID_MESSAGE``) with a precise ``detail``. Encoding never emits a key
the client's ``additionalProperties: false`` schemas reject, never emits
``null`` for an absent key, and refuses NaN/Infinity (``JSON.parse`` would
fail on them, and msgspec would silently write ``null``).
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from .._nesting import MAX_DEPTH, nested_deeper_than
from ._errors import LocalProtocolError, RemoteProtocolError, ViolationCase
from ._messages import (
    Action,
    ActionRevelation,
    ClientMessage,
    FeedClose,
    FeedKey,
    FeedOpen,
    Handshake,
    Message,
    ServerMessage,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "PreparedRevelation",
    "check_json_value",
    "decode_client_message",
    "decode_server_message",
    "encode_message",
    "prepare_revelation",
    "raw_text",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 1024 * 1024
_ECHO_LIMIT: Final = 1024

_client_decoder: Final = msgspec.json.Decoder(Handshake | Action | FeedOpen | FeedClose)
_server_decoder: Final = msgspec.json.Decoder(ServerMessage)
_encoder: Final = msgspec.json.Encoder()


def raw_text(frame: str | bytes) -> str:
    """The frame as text for diagnostics; undecodable bytes become U+FFFD."""
    if isinstance(frame, str):
        return frame
    return frame.decode("utf-8", "replace")


def _decode(decoder: msgspec.json.Decoder[Any], frame: str | bytes, max_size: int) -> Any:
    if len(frame) > max_size:
        text = raw_text(frame[:_ECHO_LIMIT])
        raise RemoteProtocolError(
            ViolationCase.INVALID_MESSAGE, f"Message exceeds {max_size} characters.", text
        )
    if nested_deeper_than(frame.encode() if isinstance(frame, str) else frame):
        raise RemoteProtocolError(
            ViolationCase.INVALID_MESSAGE,
            f"JSON is nested more than {MAX_DEPTH} levels deep.",
            raw_text(frame),
        )
    try:
        return decoder.decode(frame)
    except msgspec.MsgspecError as exc:
        detail = str(exc)
    except (UnicodeError, ValueError, TypeError) as exc:  # defensive: bad input only
        detail = f"Invalid message: {exc}"
    raise RemoteProtocolError(ViolationCase.INVALID_MESSAGE, detail, raw_text(frame))


def decode_client_message(
    frame: str | bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> ClientMessage:
    """Parse one text frame from a client (``len(frame)`` is bounded by ``max_size``).

    Lone UTF-16 surrogates and numbers beyond the double range are refused
    as invalid JSON; the real client never produces them.
    """
    message: ClientMessage = _decode(_client_decoder, frame, max_size)
    return message


def decode_server_message(
    frame: str | bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> ServerMessage:
    """Parse one text frame from a server, deltas included (client role)."""
    message: ServerMessage = _decode(_server_decoder, frame, max_size)
    return message


def check_json_value(value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is plain JSON the client can parse.

    Allowed: dict with str keys, list, str, bool, None, int, finite float.
    Iterative, so deep documents cannot overflow the stack.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) or item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("NaN and infinities cannot be sent as JSON")
        elif isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise ValueError(f"object keys must be strings, not {type(key).__name__}")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            raise ValueError(f"not a JSON value: {type(item).__name__}")


def _payloads(message: Message) -> list[Any]:
    """The free-form JSON parts of a message (the rest is typed and checked)."""
    values: list[Any] = [
        getattr(message, name, msgspec.UNSET)
        for name in ("action_args", "action_data", "feed_data", "error_data", "diagnostics")
    ]
    if isinstance(message, ActionRevelation):
        values.extend(delta.value for delta in message.feed_deltas)
    return [value for value in values if value is not msgspec.UNSET]


def encode_message(message: Message) -> bytes:
    """Serialize a message to the UTF-8 payload of one text frame.

    Raises ``LocalProtocolError`` if the payload is not plain JSON or holds
    a lone surrogate (not representable in a text frame).
    """
    try:
        for payload in _payloads(message):
            check_json_value(payload)
        return _encoder.encode(message)
    except (ValueError, TypeError, UnicodeError) as exc:
        raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from exc


class PreparedRevelation(msgspec.Struct, frozen=True):
    """An ActionRevelation serialized once, to be queued for many clients.

    Fan-out cost per client is then a dict lookup and a list append
    (``FeedmeConversation.send_prepared``); every client gets the same bytes.
    """

    message: ActionRevelation
    feed: FeedKey
    payload: bytes


def prepare_revelation(message: ActionRevelation) -> PreparedRevelation:
    """Encode ``message`` once; raises ``LocalProtocolError`` like ``encode_message``."""
    return PreparedRevelation(message, message.feed, encode_message(message))
