"""``tidings.protocol.peer`` exports every name the SDK is written against."""

from __future__ import annotations

import tidings.protocol.peer as peer
from tidings.protocol import RemoteProtocolError

SPEC_NAMES = {
    "PeerError",
    "SecureChannel",
    "ChannelEvent",
    "Established",
    "MessageReceived",
    "AcksReceived",
    "ReplayDropped",
    "MessageDropped",
    "encode_netstring",
    "NetstringReader",
    "encode_message",
    "decode_message",
    "PeerMessage",
    "ACK_PROTOCOL",
    "ack_message",
    "acked_ids",
    "PEER_PROLOGUE",
    "NOISE_PATTERN",
}


def test_the_names() -> None:
    assert set(peer.__all__) >= SPEC_NAMES
    assert all(hasattr(peer, name) for name in peer.__all__)


def test_the_constants() -> None:
    assert peer.PEER_PROLOGUE == b"tidings/peer/v1"
    assert peer.NOISE_PATTERN == "Noise_XX_25519_ChaChaPoly_SHA256"
    assert peer.ACK_PROTOCOL == "tidings.ack"
    assert (peer.MAX_RECORD, peer.MAX_CHUNK) == (65_543, 65_519)


def test_the_error() -> None:
    error = peer.PeerError("too-large", "A netstring of 20 bytes is over 10")
    assert isinstance(error, RemoteProtocolError)
    assert (error.kind, str(error)) == ("too-large", "A netstring of 20 bytes is over 10")
    assert str(peer.PeerError("malformed")) == "malformed"
