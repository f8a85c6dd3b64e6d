"""Sealed messages: content the server routes and stores but cannot read or alter unnoticed.

One fresh XChaCha20-Poly1305 key per message encrypts ``{"type", "content"}``; that key is
wrapped for every device that may read it with ``crypto_box_seal`` (so adding a device costs 80
bytes, not a second ciphertext), and the sender node signs the whole with its Ed25519 key. The
signature also covers the LIME id, the sender and the recipient, so a recipient cannot hand a
message on to someone else as if it had been sent to them (``docs/e2e.md`` is the format).

Only what a sealed message itself proves is checked here. Whether ``signId`` is a published,
unrevoked key of the node named ``from`` is the directory's word, so the caller asks it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgspec
import nacl.utils
from msgspec import Meta
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError
from nacl.public import PublicKey, SealedBox

from .._nesting import nested_deeper_than
from ..lime import InvalidNode, Node, parse_node
from ..lime._node import MAX_PART_LENGTH
from ._errors import E2EError, InvalidKey
from ._ids import decode_key, encode_key
from ._keys import SIGNATURE_BYTES, NodeKeys, verify

__all__ = [
    "COPY_SUFFIX",
    "MAX_CIPHERTEXT_BYTES",
    "MAX_KEY_ENTRIES",
    "SEALED_TYPE",
    "KeyEntry",
    "OpenFailure",
    "Opened",
    "SealedContent",
    "open_sealed",
    "seal",
]

SEALED_TYPE: Final = "application/vnd.tidings.sealed+json"
VERSION_LINE: Final = "tidings/sealed/v1"
"""First line of the signed bytes and of the AEAD associated data: domain separation, so a
signature made for another document (node info) never verifies as a sealed message."""
COPY_SUFFIX: Final = ":copy"
"""Appended to the LIME id of the copy a sender sends to its own identity's other devices."""

MAX_KEY_ENTRIES: Final = 64
"""Devices one message may be sealed for (recipient's and sender's together)."""
MAX_CIPHERTEXT_BYTES: Final = 8 * 1024 * 1024
"""The largest envelope any Tidings session accepts; a longer ciphertext could never arrive."""
MAX_ID_LENGTH: Final = 256
"""LIME ids longer than this are refused by the server (``protocol.lime`` session limit)."""
MAX_TYPE_LENGTH: Final = 1024
_MAX_NODE_LENGTH: Final = 3 * MAX_PART_LENGTH + 2

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 24
WRAPPED_KEY_BYTES: Final = 32 + 48
"""``crypto_box_seal`` of a 32-byte key: ephemeral public key, then the boxed key and its tag."""
_TAG_BYTES: Final = 16


def _b64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


class OpenFailure(StrEnum):
    """The ``kind`` of the ``E2EError`` raised by ``open_sealed``, in the order checked."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    WRONG_RECIPIENT = "wrong-recipient"
    NOT_FOR_ME = "not-for-me"
    TAMPERED = "tampered"


class KeyEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename={"box_id": "boxId"}):
    """The message key sealed for one device."""

    box_id: Annotated[str, Meta(min_length=44, max_length=44)]
    key: Annotated[
        str,
        Meta(min_length=_b64_length(WRAPPED_KEY_BYTES), max_length=_b64_length(WRAPPED_KEY_BYTES)),
    ]


class SealedContent(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    rename={"sender": "from", "sign_id": "signId"},
):
    """The content of an ``application/vnd.tidings.sealed+json`` message, bounded so that a
    hostile one costs no more than its size. Unknown fields are refused: they would be unsigned."""

    v: Literal[1]
    id: Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    sender: Annotated[str, Meta(min_length=1, max_length=_MAX_NODE_LENGTH)]
    to: Annotated[str, Meta(min_length=1, max_length=_MAX_NODE_LENGTH)]
    sign_id: Annotated[str, Meta(min_length=44, max_length=44)]
    nonce: Annotated[
        str, Meta(min_length=_b64_length(NONCE_BYTES), max_length=_b64_length(NONCE_BYTES))
    ]
    ciphertext: Annotated[
        str,
        Meta(min_length=_b64_length(_TAG_BYTES), max_length=_b64_length(MAX_CIPHERTEXT_BYTES)),
    ]
    keys: Annotated[list[KeyEntry], Meta(min_length=1, max_length=MAX_KEY_ENTRIES)]
    signature: Annotated[
        str,
        Meta(min_length=_b64_length(SIGNATURE_BYTES), max_length=_b64_length(SIGNATURE_BYTES)),
    ]


class _Inner(msgspec.Struct, forbid_unknown_fields=True):
    type: Annotated[str, Meta(min_length=1, max_length=MAX_TYPE_LENGTH)]
    content: Any


_decoder: Final = msgspec.json.Decoder(SealedContent)
_inner_decoder: Final = msgspec.json.Decoder(_Inner)


@dataclass(frozen=True, slots=True)
class Opened:
    """A sealed message that verified and decrypted.

    ``sender`` is the node that signed it with ``sign_id``: trust it only once the directory
    says ``sign_id`` is a current key of ``sender``. ``to`` is the identity it was sealed for;
    ``is_copy`` when this is the sender's copy for its own other devices.
    """

    type: str
    content: Any
    sender: str
    sign_id: str
    to: str
    is_copy: bool


def seal(
    keys: NodeKeys,
    *,
    message_id: str,
    sender: str,
    to: str,
    content_type: str,
    content: Any,
    recipients: Sequence[str],
) -> dict[str, Any]:
    """The sealed content for LIME message ``message_id`` from node ``sender`` to ``to``.

    ``recipients`` are the ``boxId`` of every device that may open it: the recipient's
    devices and the sender's own other ones (the same content goes, with id
    ``message_id + ":copy"``, to the sender's identity). ``to`` may name a node; the identity is
    what is sealed. ``content`` is any JSON value (a ``msgspec.Raw`` is embedded as is).
    ``ValueError`` for arguments no opener would accept (``InvalidKey``, also a ``ValueError``,
    for a recipient that is not a box key).
    """
    sender_node = parse_node(sender)
    if sender_node.instance is None:
        raise ValueError(f"The sender {sender!r} must be a node (identity/instance)")
    recipient = parse_node(to).to_identity().text
    if not 0 < len(message_id) <= MAX_ID_LENGTH - len(COPY_SUFFIX):
        raise ValueError(f"A sealed message id has 1 to {MAX_ID_LENGTH - len(COPY_SUFFIX)} chars")
    if not _one_line(message_id):
        raise ValueError("A sealed message id may not contain a line feed (and must be UTF-8)")
    if not 0 < len(content_type) <= MAX_TYPE_LENGTH:
        raise ValueError(f"A content type has 1 to {MAX_TYPE_LENGTH} characters")
    box_ids = sorted(set(recipients))
    if not 0 < len(box_ids) <= MAX_KEY_ENTRIES:
        raise ValueError(f"A sealed message is for 1 to {MAX_KEY_ENTRIES} devices")
    try:
        plaintext = msgspec.json.encode({"type": content_type, "content": content})
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"The content is not JSON: {exc}") from None

    message_key = nacl.utils.random(KEY_BYTES)
    nonce = nacl.utils.random(NONCE_BYTES)
    aad = _aad(message_id, sender_node.text, recipient)
    ciphertext = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, message_key)
    if len(ciphertext) > MAX_CIPHERTEXT_BYTES:
        raise ValueError(f"The sealed content exceeds {MAX_CIPHERTEXT_BYTES} bytes")
    entries = [KeyEntry(box_id, encode_key(_wrap(message_key, box_id))) for box_id in box_ids]
    unsigned = SealedContent(
        v=1,
        id=message_id,
        sender=sender_node.text,
        to=recipient,
        sign_id=keys.sign_id,
        nonce=encode_key(nonce),
        ciphertext=encode_key(ciphertext),
        keys=entries,
        signature="",
    )
    signature = keys.sign(_signed_bytes(unsigned, ciphertext))
    sealed = msgspec.structs.replace(unsigned, signature=encode_key(signature))
    result: dict[str, Any] = msgspec.to_builtins(sealed)
    return result


def open_sealed(
    content: object,
    *,
    message_id: str,
    envelope_from: str,
    envelope_to: str,
    my_keys: Sequence[NodeKeys],
) -> Opened:
    """Verify and decrypt a sealed content received in the envelope ``message_id``,
    ``envelope_from`` -> ``envelope_to`` (the opener's own address, as delivered).

    ``content`` is the decoded JSON value, or its JSON text (``bytes``, ``str`` or
    ``msgspec.Raw``). ``my_keys`` are the opener's current and retired keys. Every failure is an
    ``E2EError`` whose ``kind`` is an ``OpenFailure``.
    """
    sealed = _decode(content)
    sender, recipient, ciphertext = _check_form(sealed)
    signature = _b64(sealed.signature)
    try:
        verify(sealed.sign_id, _signed_bytes(sealed, ciphertext), signature)
    except E2EError:
        raise _fail(OpenFailure.BAD_SIGNATURE, "The signature does not verify") from None
    is_copy = _check_envelope(sealed, sender, recipient, message_id, envelope_from, envelope_to)

    wrapped = {entry.box_id: entry.key for entry in sealed.keys}
    mine = [keys for keys in my_keys if keys.box_id in wrapped]
    if not mine:
        raise _fail(OpenFailure.NOT_FOR_ME, "The message is not sealed for any of my keys")
    plaintext = _decrypt(sealed, ciphertext, mine, wrapped)

    if nested_deeper_than(plaintext):
        raise _fail(OpenFailure.MALFORMED, "The sealed content nests too deeply")
    try:
        inner = _inner_decoder.decode(plaintext)
    except (msgspec.DecodeError, UnicodeError):
        raise _fail(OpenFailure.MALFORMED, "The plaintext is not {type, content}") from None
    return Opened(inner.type, inner.content, sender.text, sealed.sign_id, recipient.text, is_copy)


def _fail(kind: OpenFailure, message: str) -> E2EError:
    return E2EError(message, kind=kind)


def _decode(content: object) -> SealedContent:
    try:
        if isinstance(content, (bytes, str, msgspec.Raw)):
            text = content.encode() if isinstance(content, str) else bytes(content)
            if nested_deeper_than(text):
                raise _fail(OpenFailure.MALFORMED, "The sealed content nests too deeply")
            return _decoder.decode(text)
        return msgspec.convert(content, SealedContent)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        # msgspec lets invalid UTF-8 through as UnicodeDecodeError
        raise _fail(OpenFailure.MALFORMED, f"Not a sealed message: {exc}") from None


def _check_form(sealed: SealedContent) -> tuple[Node, Node, bytes]:
    """What the schema cannot say: canonical base64 of the right sizes, addresses that parse,
    no line feed to confuse the signed lines, one entry per device."""
    if not _one_line(sealed.id):
        raise _fail(OpenFailure.MALFORMED, "The id contains a line feed or is not UTF-8")
    try:
        sender = parse_node(sealed.sender)
        recipient = parse_node(sealed.to)
    except InvalidNode as exc:
        raise _fail(OpenFailure.MALFORMED, f"Bad address: {exc}") from None
    if sender.instance is None or recipient.instance is not None:
        raise _fail(OpenFailure.MALFORMED, "'from' must be a node and 'to' an identity")
    try:
        decode_key(sealed.sign_id, "signId")
        for entry in sealed.keys:
            decode_key(entry.box_id, "boxId")
    except InvalidKey as exc:
        raise _fail(OpenFailure.MALFORMED, str(exc)) from None
    if len({entry.box_id for entry in sealed.keys}) != len(sealed.keys):
        raise _fail(OpenFailure.MALFORMED, "A boxId appears twice in 'keys'")
    _b64(sealed.nonce, NONCE_BYTES, "nonce")
    _b64(sealed.signature, SIGNATURE_BYTES, "signature")
    for entry in sealed.keys:
        _b64(entry.key, WRAPPED_KEY_BYTES, "wrapped key")
    ciphertext = _b64(sealed.ciphertext, what="ciphertext")
    if not _TAG_BYTES <= len(ciphertext) <= MAX_CIPHERTEXT_BYTES:
        raise _fail(OpenFailure.MALFORMED, "The ciphertext has an impossible length")
    return sender, recipient, ciphertext


def _one_line(text: str) -> bool:
    """Fit for a line of the signed bytes: no line feed, and encodable (no lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\n" not in text


def _b64(text: str, size: int | None = None, what: str = "value") -> bytes:
    """Strict, canonical base64: one value has one spelling, so nothing unsigned can vary."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(OpenFailure.MALFORMED, f"The {what} is not base64") from None
    if (size is not None and len(raw) != size) or encode_key(raw) != text:
        raise _fail(OpenFailure.MALFORMED, f"The {what} is not the canonical base64 expected")
    return raw


def _check_envelope(
    sealed: SealedContent,
    sender: Node,
    recipient: Node,
    message_id: str,
    envelope_from: str,
    envelope_to: str,
) -> bool:
    """Whether the envelope is the one the sender signed for: the message itself, or its copy
    to the sender's own identity. Returns ``is_copy``."""
    try:
        delivered_from = parse_node(envelope_from)
        delivered_to = parse_node(envelope_to).to_identity()
    except InvalidNode:
        raise _fail(OpenFailure.WRONG_RECIPIENT, "The envelope addresses do not parse") from None
    if delivered_from != sender:
        raise _fail(OpenFailure.WRONG_RECIPIENT, "The envelope sender is not the signed sender")
    if message_id == sealed.id and delivered_to == recipient:
        return False
    if message_id == sealed.id + COPY_SUFFIX and delivered_to == sender.to_identity():
        return True
    raise _fail(OpenFailure.WRONG_RECIPIENT, "The envelope id or recipient is not the signed one")


def _decrypt(
    sealed: SealedContent,
    ciphertext: bytes,
    mine: list[NodeKeys],
    wrapped: dict[str, str],
) -> bytes:
    aad = _aad(sealed.id, sealed.sender, sealed.to)  # as written and signed, not normalised
    nonce = _b64(sealed.nonce)
    for keys in mine:
        try:
            message_key = SealedBox(keys.box_key).decrypt(_b64(wrapped[keys.box_id]))
            if len(message_key) != KEY_BYTES:
                continue
            return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, message_key)
        except CryptoError:
            continue
    raise _fail(OpenFailure.TAMPERED, "The message key or the ciphertext does not decrypt")


def _wrap(message_key: bytes, box_id: str) -> bytes:
    try:
        return SealedBox(PublicKey(decode_key(box_id, "boxId"))).encrypt(message_key)
    except CryptoError:
        raise InvalidKey(f"The boxId {box_id!r} is not a usable X25519 public key") from None


def _aad(message_id: str, sender: str, recipient: str) -> bytes:
    return f"{VERSION_LINE}\n{message_id}\n{sender}\n{recipient}".encode()


def _signed_bytes(sealed: SealedContent, ciphertext: bytes) -> bytes:
    """The lines the sender signs. The ciphertext enters as its SHA-512, so signing a large
    message does not copy it; the key entries in their given order."""
    lines = [
        VERSION_LINE,
        sealed.id,
        sealed.sender,
        sealed.to,
        sealed.sign_id,
        sealed.nonce,
        encode_key(hashlib.sha512(ciphertext).digest()),
        *(f"{entry.box_id} {entry.key}" for entry in sealed.keys),
    ]
    return "\n".join(lines).encode()
