"""Direct links between two nodes, sans-I/O: netstrings, the protobuf ``Message`` with acks,
and the Noise XX secure channel that carries them (``docs/peer.md``, "Wire format").

Bytes in, events out: nothing here opens a socket, starts a task or reads the clock (the
caller passes ``now_ms``). Every refusal of a peer's bytes is a ``PeerError`` whose ``kind``
says what the caller should do (drop one message, or close the connection).
"""

from __future__ import annotations

from ._channel import (
    MAX_CHUNK,
    MAX_HANDSHAKE_RECORD,
    MAX_RECORD,
    NOISE_PATTERN,
    PEER_PROLOGUE,
    SecureChannel,
)
from ._envelope import (
    ACK_PROTOCOL,
    ACK_TOPIC,
    MAX_ID_LENGTH,
    MAX_PROTOCOL_LENGTH,
    MAX_TOPIC_LENGTH,
    PeerMessage,
    ack_message,
    acked_ids,
    decode_message,
    encode_message,
)
from ._errors import PeerError, PeerErrorKind
from ._events import (
    AcksReceived,
    ChannelEvent,
    Established,
    MessageDropped,
    MessageReceived,
    ReplayDropped,
)
from ._netstring import NetstringReader, encode_netstring

__all__ = [
    "ACK_PROTOCOL",
    "ACK_TOPIC",
    "MAX_CHUNK",
    "MAX_HANDSHAKE_RECORD",
    "MAX_ID_LENGTH",
    "MAX_PROTOCOL_LENGTH",
    "MAX_RECORD",
    "MAX_TOPIC_LENGTH",
    "NOISE_PATTERN",
    "PEER_PROLOGUE",
    "AcksReceived",
    "ChannelEvent",
    "Established",
    "MessageDropped",
    "MessageReceived",
    "NetstringReader",
    "PeerError",
    "PeerErrorKind",
    "PeerMessage",
    "ReplayDropped",
    "SecureChannel",
    "ack_message",
    "acked_ids",
    "decode_message",
    "encode_message",
    "encode_netstring",
]
