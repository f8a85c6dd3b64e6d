"""Key ids: ``signId`` and ``boxId`` are the standard base64 (with padding) of 32-byte public
keys, as mm-platform writes them; the box key is derived from the signing key (libsodium's
Ed25519 to X25519 conversion), so a ``boxId`` follows from its ``signId`` but not back."""

from __future__ import annotations

import base64
import binascii
from typing import Final

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519

from ._errors import InvalidKey

__all__ = ["KEY_BYTES", "box_id_of", "decode_key", "encode_key"]

KEY_BYTES: Final = 32


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_key(text: object, what: str = "key") -> bytes:
    """The 32 bytes of a key id; ``InvalidKey`` for anything else (a non-canonical spelling
    too, so that one key has one id)."""
    if not isinstance(text, str) or len(text) != 44:
        raise InvalidKey(f"A {what} is the base64 of 32 bytes (44 characters)")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey(f"The {what} {text!r} is not base64") from None
    if len(raw) != KEY_BYTES or encode_key(raw) != text:
        raise InvalidKey(f"The {what} {text!r} is not the base64 of 32 bytes")
    return raw


def box_id_of(sign_id: str) -> str:
    """The ``boxId`` that belongs to ``sign_id`` (``InvalidKey`` if it is no Ed25519 point)."""
    try:
        return encode_key(crypto_sign_ed25519_pk_to_curve25519(decode_key(sign_id, "signId")))
    except InvalidKey:
        raise
    except Exception:
        raise InvalidKey(f"The signId {sign_id!r} is not an Ed25519 public key") from None
