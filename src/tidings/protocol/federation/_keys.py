"""Server signing keys: one Ed25519 key pair, named ``<domain>#<hash prefix>``.

The key id carries the domain so a receiver can refuse a key of another domain before it looks
anything up, and a hash of the public key so a rotated key never reuses an id.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["KEY_BYTES", "KEY_ID_HEX", "SIGNATURE_BYTES", "SigningKey", "key_id", "public_key"]

KEY_BYTES = 32
"""Length of an Ed25519 seed and of a raw public key."""
SIGNATURE_BYTES = 64
KEY_ID_HEX = 16
"""Hex digits of sha256(public key) in a key id: 64 bits, so ids of one domain do not collide."""


def key_id(domain: str, public: bytes) -> str:
    """The id of ``public`` as a key of ``domain``."""
    return f"{domain}#{hashlib.sha256(public).hexdigest()[:KEY_ID_HEX]}"


def public_key(raw: bytes) -> Ed25519PublicKey:
    """A verification key from its raw 32 bytes; ``ValueError`` for any other length."""
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {KEY_BYTES} bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class SigningKey:
    """A server's private key and its id; the repr never shows the seed."""

    key_id: str
    seed: bytes = field(repr=False)
    private: Ed25519PrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != KEY_BYTES:
            raise ValueError(f"an Ed25519 seed is {KEY_BYTES} bytes, not {len(self.seed)}")
        object.__setattr__(self, "private", Ed25519PrivateKey.from_private_bytes(self.seed))

    @classmethod
    def generate(cls, domain: str) -> SigningKey:
        """A fresh key of ``domain``, its id derived with ``key_id``."""
        seed = secrets.token_bytes(KEY_BYTES)
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
        return cls(key_id(domain, public.public_bytes(Encoding.Raw, PublicFormat.Raw)), seed)

    @property
    def public(self) -> bytes:
        """The raw 32-byte public key, as published in the server document."""
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)
