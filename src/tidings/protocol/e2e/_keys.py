"""Node keys: one long-term Ed25519 signing key per node, and the X25519 box key derived from it.

The box key is derived with libsodium's conversion (``crypto_sign_ed25519_sk_to_curve25519``),
as mm-platform's ``ed2curve`` does, so one secret (64 bytes: seed then public key, the form
mm-platform stores as ``'identity'``) is the whole identity of a node and a ``boxId`` follows
from its ``signId``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from nacl.bindings import crypto_sign_ed25519_sk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey
from nacl.signing import SigningKey, VerifyKey

from ._errors import E2EError, InvalidKey
from ._ids import KEY_BYTES, decode_key, encode_key

__all__ = ["SECRET_BYTES", "SIGNATURE_BYTES", "NodeKeys", "verify"]

SECRET_BYTES = 64
"""An Ed25519 secret key as libsodium (and tweetnacl) keep it: 32-byte seed, 32-byte public key."""
SIGNATURE_BYTES = 64


@dataclass(frozen=True, eq=False)
class NodeKeys:
    """The key pair of one node; built from the signing key alone, so the two halves agree.

    Equal when the public keys are equal. The repr shows only the ``signId``.
    """

    signing_key: SigningKey = field(repr=False)
    box_key: PrivateKey = field(init=False, repr=False)
    sign_id: str = field(init=False)
    box_id: str = field(init=False)

    def __post_init__(self) -> None:
        box_secret = crypto_sign_ed25519_sk_to_curve25519(self.secret)
        box_key = PrivateKey(box_secret)
        object.__setattr__(self, "box_key", box_key)
        object.__setattr__(self, "sign_id", encode_key(bytes(self.signing_key.verify_key)))
        object.__setattr__(self, "box_id", encode_key(bytes(box_key.public_key)))

    @classmethod
    def generate(cls) -> NodeKeys:
        return cls(SigningKey.generate())

    @classmethod
    def from_secret(cls, secret: bytes) -> NodeKeys:
        """Keys from the 64-byte secret; ``InvalidKey`` unless its public half is the one the
        seed gives (a truncated or spliced secret would otherwise sign as someone else)."""
        if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
            raise InvalidKey(f"An Ed25519 secret key is {SECRET_BYTES} bytes (seed, public key)")
        keys = cls(SigningKey(secret[:KEY_BYTES]))
        if not hmac.compare_digest(bytes(keys.signing_key.verify_key), secret[KEY_BYTES:]):
            raise InvalidKey("The public half of the secret key does not match its seed")
        return keys

    @property
    def secret(self) -> bytes:
        """The 64-byte secret key (seed, then public key): what a key file holds."""
        return bytes(self.signing_key) + bytes(self.signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 detached signature of ``message``."""
        return self.signing_key.sign(message).signature

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeKeys) and other.sign_id == self.sign_id

    def __hash__(self) -> int:
        return hash(self.sign_id)


def verify(sign_id: str, message: bytes, signature: bytes) -> None:
    """Check a detached signature; ``E2EError(kind="bad-signature")`` when it does not hold.

    ``InvalidKey`` if ``sign_id`` is not a key id at all (that is the caller's input, not the
    signature, that is wrong).
    """
    public = decode_key(sign_id, "signId")
    try:
        VerifyKey(public).verify(message, signature)
    except (CryptoError, ValueError, TypeError):
        raise E2EError("The signature does not verify", kind="bad-signature") from None
