"""A sealed-message writer built from ``docs/e2e.md`` alone, with PyNaCl's primitives and none
of ``tidings.protocol.e2e``: what a client in another language would write. Tests use it to
check that the format the docs describe is the one the code opens, and to make messages that
are signed correctly but wrong in one place (the sender itself misbehaving)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import nacl.utils
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.public import PublicKey, SealedBox
from nacl.signing import SigningKey


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def signed_bytes(content: dict[str, Any]) -> bytes:
    ciphertext = base64.b64decode(content["ciphertext"])
    lines = [
        "tidings/sealed/v1",
        content["id"],
        content["from"],
        content["to"],
        content["signId"],
        content["nonce"],
        b64(hashlib.sha512(ciphertext).digest()),
        *(f"{entry['boxId']} {entry['key']}" for entry in content["keys"]),
    ]
    return "\n".join(lines).encode()


def aad(message_id: str, sender: str, to: str) -> bytes:
    return f"tidings/sealed/v1\n{message_id}\n{sender}\n{to}".encode()


def wrap(message_key: bytes, box_id: str) -> bytes:
    return SealedBox(PublicKey(base64.b64decode(box_id))).encrypt(message_key)


def resign(content: dict[str, Any], signer: SigningKey) -> dict[str, Any]:
    """``content`` with ``signId`` and ``signature`` those of ``signer`` over its fields."""
    content = dict(content, signId=b64(bytes(signer.verify_key)))
    content["signature"] = b64(signer.sign(signed_bytes(content)).signature)
    return content


def spec_seal(
    signer: SigningKey,
    *,
    message_id: str,
    sender: str,
    to: str,
    plaintext: bytes,
    box_ids: list[str],
    message_key: bytes | None = None,
) -> dict[str, Any]:
    message_key = message_key or nacl.utils.random(32)
    nonce = nacl.utils.random(24)
    ciphertext = crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, aad(message_id, sender, to), nonce, message_key
    )
    keys = [
        {
            "boxId": box_id,
            "key": b64(SealedBox(PublicKey(base64.b64decode(box_id))).encrypt(message_key)),
        }
        for box_id in sorted(box_ids)
    ]
    content = {
        "v": 1,
        "id": message_id,
        "from": sender,
        "to": to,
        "signId": "",
        "nonce": b64(nonce),
        "ciphertext": b64(ciphertext),
        "keys": keys,
        "signature": "",
    }
    return resign(content, signer)
