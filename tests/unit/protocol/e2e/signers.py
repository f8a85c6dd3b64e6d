"""A node's signing key for tests, as the node-info signer wants it (Ed25519, PyNaCl)."""

from __future__ import annotations

from nacl.signing import SigningKey

from tidings.protocol.e2e import encode_key


class TestSigner:
    __test__ = False

    def __init__(self, key: SigningKey | None = None) -> None:
        self.key = key if key is not None else SigningKey.generate()

    @property
    def sign_id(self) -> str:
        return encode_key(bytes(self.key.verify_key))

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message).signature
