"""A direct link's secure channel: Noise XX over length-prefixed records, sans-I/O.

Bytes go in (``receive_data``), events and bytes to write come out (``data_to_send``); the
caller owns the socket, the clock (``now_ms``) and the decision to close after a ``PeerError``.

The static Noise key is the node's X25519 box key, and each side's handshake payload is its
signed node info, so the link is bound to the same identity as the key directory: a peer is
accepted only if its node info verifies, names the very key that did the handshake, and has
not expired. Transport records carry an explicit counter (the Noise nonce, also the AD) so that
a replayed record can be recognised and dropped without decrypting it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import Enum
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import (
    NoiseHandshakeError,
    NoiseInvalidMessage,
    NoiseMaxNonceError,
    NoiseValueError,
)

from .._errors import InvalidState, LocalProtocolError
from ..e2e import E2EError, NodeInfo, NodeKeys, decode_key, encode_key, verify_node_info
from ._envelope import (
    ACK_PROTOCOL,
    PeerMessage,
    ack_message,
    acked_ids,
    decode_message,
    encode_message,
)
from ._errors import PeerError
from ._events import (
    AcksReceived,
    ChannelEvent,
    Established,
    MessageDropped,
    MessageReceived,
    ReplayDropped,
)
from ._netstring import DEFAULT_MAX_LENGTH, NetstringReader, encode_netstring

__all__ = [
    "MAX_CHUNK",
    "MAX_HANDSHAKE_RECORD",
    "MAX_RECORD",
    "NOISE_PATTERN",
    "PEER_PROLOGUE",
    "SecureChannel",
]

NOISE_PATTERN: Final = "Noise_XX_25519_ChaChaPoly_SHA256"
PEER_PROLOGUE: Final = b"tidings/peer/v1"

HEADER_BYTES: Final = 4
"""Every record starts with its length, 4 bytes big-endian."""
COUNTER_BYTES: Final = 8
TAG_BYTES: Final = 16
MAX_HANDSHAKE_RECORD: Final = 65535
"""Noise's maximum message length."""
MAX_RECORD: Final = MAX_HANDSHAKE_RECORD + COUNTER_BYTES
MAX_CHUNK: Final = MAX_HANDSHAKE_RECORD - TAG_BYTES
"""Plaintext bytes in one transport record."""
_KEY_BYTES: Final = 32
_RECORD_2_OVERHEAD: Final = _KEY_BYTES + (_KEY_BYTES + TAG_BYTES) + TAG_BYTES
_LAST_COUNTER: Final = 2**64 - 2
"""Noise reserves nonce 2**64-1 (the library refuses it)."""

_NOISE_ERRORS: Final = (
    NoiseValueError,  # a key of the wrong length
    NoiseInvalidMessage,
    NoiseHandshakeError,
    InvalidTag,  # a MAC that fails inside the handshake is not wrapped by noiseprotocol
    ValueError,  # cryptography refuses a low-order X25519 point (all-zero shared secret)
)


class _Step(Enum):
    """Where the handshake stands; ``ESTABLISHED`` and ``FAILED`` are final."""

    AWAIT_RECORD_1 = "await-record-1"
    AWAIT_RECORD_2 = "await-record-2"
    AWAIT_RECORD_3 = "await-record-3"
    ESTABLISHED = "established"
    FAILED = "failed"


class SecureChannel:
    """One side of a direct link. Build it with ``initiator`` or ``responder``.

    After a ``PeerError`` the channel is dead: ``receive_data`` and ``send`` raise
    ``InvalidState`` and ``data_to_send`` returns nothing more (the caller closes the
    connection). Events decoded earlier in the failing call are dropped with it; none of them
    was acknowledged, so the sender's outbox sends them again.
    """

    def __init__(
        self,
        keys: NodeKeys,
        node_info: dict[str, Any],
        *,
        initiator: bool,
        now_ms: int,
        expected_box_id: str | None = None,
        max_message: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        if expected_box_id is not None:
            decode_key(expected_box_id, "expected boxId")
        self._payload = _handshake_payload(node_info)
        self._now_ms = now_ms
        self._expected_box_id = expected_box_id
        self._max_message = max_message
        self._noise = NoiseConnection.from_name(NOISE_PATTERN.encode("ascii"))
        self._noise.set_prologue(PEER_PROLOGUE)
        self._noise.set_keypair_from_private_bytes(Keypair.STATIC, bytes(keys.box_key))
        if initiator:
            self._noise.set_as_initiator()
        else:
            self._noise.set_as_responder()
        self._noise.start_handshake()
        # noiseprotocol deletes its handshake state when the last message is processed, and
        # never copies the remote static key elsewhere: keep it to read the key afterwards.
        self._handshake = self._noise.noise_protocol.handshake_state
        self._received = bytearray()
        self._outgoing = bytearray()
        self._plaintext = bytearray()
        self._reader = NetstringReader(max_message)
        self._send_counter = 0
        self._last_counter = -1
        self.established = False
        self.peer: NodeInfo | None = None
        if initiator:
            self._step = _Step.AWAIT_RECORD_2
            self._write_handshake(b"")
        else:
            self._step = _Step.AWAIT_RECORD_1

    @classmethod
    def initiator(
        cls,
        keys: NodeKeys,
        node_info: dict[str, Any],
        *,
        now_ms: int,
        expected_box_id: str | None = None,
        max_message: int = DEFAULT_MAX_LENGTH,
    ) -> SecureChannel:
        """The dialling side; ``expected_box_id`` (from the directory) is checked on record 2,
        before this side reveals its own node info."""
        return cls(
            keys,
            node_info,
            initiator=True,
            now_ms=now_ms,
            expected_box_id=expected_box_id,
            max_message=max_message,
        )

    @classmethod
    def responder(
        cls,
        keys: NodeKeys,
        node_info: dict[str, Any],
        *,
        now_ms: int,
        max_message: int = DEFAULT_MAX_LENGTH,
    ) -> SecureChannel:
        """The accepting side."""
        return cls(keys, node_info, initiator=False, now_ms=now_ms, max_message=max_message)

    def data_to_send(self) -> bytes:
        """The bytes to write now: handshake records, then pending messages sealed in records.

        Messages sent since the last call share records (up to ``MAX_CHUNK`` bytes each).
        """
        plaintext = memoryview(self._plaintext)
        for start in range(0, len(plaintext), MAX_CHUNK):
            self._seal(plaintext[start : start + MAX_CHUNK])
        plaintext.release()
        self._plaintext.clear()
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def receive_data(self, data: bytes) -> list[ChannelEvent]:
        """The events in ``data`` (any split of the stream works); ``PeerError`` kills the
        channel: ``malformed``, ``too-large``, a handshake failure or ``decrypt-failed``."""
        if self._step is _Step.FAILED:
            raise InvalidState("The channel failed; the connection must be closed")
        events: list[ChannelEvent] = []
        try:
            self._receive(data, events)
        except PeerError:
            self._fail()
            raise
        return events

    def send(self, message: PeerMessage) -> None:
        """Queue ``message`` for ``data_to_send`` (``InvalidState`` before the handshake).

        The acknowledgements' protocol is refused (``LocalProtocolError``): the peer would read
        such a message as an ack and drop it as malformed; ``send_acks`` writes acks."""
        if message.protocol == ACK_PROTOCOL:
            raise LocalProtocolError(
                f"The protocol {ACK_PROTOCOL!r} is the acknowledgements' own (send_acks)"
            )
        self._queue(message)

    def send_acks(self, ids: Sequence[str]) -> None:
        """Acknowledge the peer's messages ``ids`` (one ack message)."""
        self._queue(ack_message(ids))

    def _queue(self, message: PeerMessage) -> None:
        if self._step is not _Step.ESTABLISHED:
            raise InvalidState(f"Cannot send on a channel that is {self._step.value}")
        encoded = encode_message(message)
        if len(encoded) > self._max_message:
            raise LocalProtocolError(
                f"A message of {len(encoded)} bytes is over max_message ({self._max_message})"
            )
        self._plaintext += encode_netstring(encoded)

    def _receive(self, data: bytes, events: list[ChannelEvent]) -> None:
        buffer = self._received
        buffer += data
        position = 0
        try:
            while len(buffer) - position >= HEADER_BYTES:
                length = int.from_bytes(buffer[position : position + HEADER_BYTES], "big")
                limit = MAX_RECORD if self.established else MAX_HANDSHAKE_RECORD
                if not 0 < length <= limit:
                    raise PeerError("malformed", f"A record of {length} bytes (1 to {limit})")
                end = position + HEADER_BYTES + length
                if len(buffer) < end:
                    break
                record = bytes(buffer[position + HEADER_BYTES : end])
                position = end
                if self.established:
                    self._open(record, events)
                else:
                    self._handshake_record(record, events)
        finally:
            del buffer[:position]

    def _handshake_record(self, record: bytes, events: list[ChannelEvent]) -> None:
        if self._step is _Step.AWAIT_RECORD_1:
            if len(record) != _KEY_BYTES:
                raise PeerError("handshake-failed", "Record 1 is the initiator's 32-byte key")
            self._read_handshake(record)
            self._write_handshake(self._payload)
            self._step = _Step.AWAIT_RECORD_3
        elif self._step is _Step.AWAIT_RECORD_2:
            payload = self._read_handshake(record)
            remote = self._remote_box_id()
            if self._expected_box_id is not None and remote != self._expected_box_id:
                raise PeerError(
                    "key-mismatch", f"The responder's key {remote} is not the one expected"
                )
            peer = self._check_peer(payload, remote)
            self._write_handshake(self._payload)
            self._establish(peer, events)
        else:
            payload = self._read_handshake(record)
            self._establish(self._check_peer(payload, self._remote_box_id()), events)

    def _read_handshake(self, record: bytes) -> bytes:
        try:
            return bytes(self._noise.read_message(record))
        except _NOISE_ERRORS as exc:
            raise PeerError("handshake-failed", f"Noise handshake: {exc!r}") from exc

    def _write_handshake(self, payload: bytes) -> None:
        try:
            message = bytes(self._noise.write_message(payload))
        except _NOISE_ERRORS as exc:
            raise PeerError("handshake-failed", f"Noise handshake: {exc!r}") from exc
        self._outgoing += len(message).to_bytes(HEADER_BYTES, "big") + message

    def _remote_box_id(self) -> str:
        return encode_key(bytes(self._handshake.rs.public_bytes))

    def _check_peer(self, payload: bytes, remote_box_id: str) -> NodeInfo:
        """The peer's node info, if it verifies, names the handshake key and is not expired."""
        try:
            document = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise PeerError("bad-node-info", "The handshake payload is not JSON") from None
        try:
            peer = verify_node_info(document)
        except E2EError as exc:
            raise PeerError("bad-node-info", f"The peer's node info: {exc}") from exc
        if peer.box_id != remote_box_id:
            raise PeerError(
                "key-mismatch", "The peer's node info names another key than its handshake"
            )
        if peer.expires <= self._now_ms:
            raise PeerError("expired-node-info", f"The peer's node info expired ({peer.expires})")
        return peer

    def _establish(self, peer: NodeInfo, events: list[ChannelEvent]) -> None:
        self._step = _Step.ESTABLISHED
        self.established = True
        self.peer = peer
        events.append(Established(peer))

    def _open(self, record: bytes, events: list[ChannelEvent]) -> None:
        if len(record) < COUNTER_BYTES + TAG_BYTES:
            raise PeerError("malformed", f"A transport record of {len(record)} bytes")
        counter = int.from_bytes(record[:COUNTER_BYTES], "big")
        if counter <= self._last_counter:
            events.append(ReplayDropped(counter))
            return
        cipher = self._noise.noise_protocol.cipher_state_decrypt
        cipher.set_nonce(counter)
        try:
            chunk = cipher.decrypt_with_ad(record[:COUNTER_BYTES], record[COUNTER_BYTES:])
        except (InvalidTag, NoiseMaxNonceError):
            raise PeerError("decrypt-failed", f"Record {counter} does not decrypt") from None
        self._last_counter = counter
        for payload in self._reader.feed(chunk):
            events.append(_message_event(payload))

    def _seal(self, chunk: memoryview) -> None:
        counter = self._send_counter
        if counter > _LAST_COUNTER:
            raise LocalProtocolError("The channel's record counter is exhausted")
        counter_bytes = counter.to_bytes(COUNTER_BYTES, "big")
        cipher = self._noise.noise_protocol.cipher_state_encrypt
        cipher.set_nonce(counter)
        body = counter_bytes + cipher.encrypt_with_ad(counter_bytes, bytes(chunk))
        self._outgoing += len(body).to_bytes(HEADER_BYTES, "big") + body
        self._send_counter = counter + 1

    def _fail(self) -> None:
        self._step = _Step.FAILED
        self.established = False
        self._received.clear()
        self._outgoing.clear()
        self._plaintext.clear()


def _message_event(payload: bytes) -> ChannelEvent:
    """One decoded netstring: a message, an ack, or a drop that leaves the stream intact."""
    try:
        message = decode_message(payload)
        if message.protocol == ACK_PROTOCOL:
            return AcksReceived(acked_ids(message))
        return MessageReceived(message)
    except PeerError as exc:
        return MessageDropped(exc)


def _handshake_payload(node_info: dict[str, Any]) -> bytes:
    """Our node info as sent (canonical JSON); not verified here, the peer does that."""
    try:
        payload = json.dumps(
            node_info, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as exc:
        raise LocalProtocolError(f"node_info is not JSON: {exc}") from None
    if len(payload) > MAX_HANDSHAKE_RECORD - _RECORD_2_OVERHEAD:
        raise LocalProtocolError("node_info does not fit in a handshake record")
    return payload
