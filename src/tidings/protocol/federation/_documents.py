"""The server key document (``GET /.well-known/tidings/server``): a domain's public keys,
signed by every one of them.

Every listed key signs, which proves the publisher holds each private key and lets a peer that
pinned an old key accept the new one during a rotation's overlap. Signatures cover the canonical
JSON of ``{"domain", "keys"}``: sorted keys, no spaces, UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature

from .._errors import LocalProtocolError
from ._errors import FederationErrorId, FederationRefused
from ._keys import KEY_BYTES, SIGNATURE_BYTES, SigningKey, public_key

__all__ = [
    "MAX_DOCUMENT_KEYS",
    "PublishedKey",
    "canonical_json",
    "read_server_document",
    "server_document",
]

MAX_DOCUMENT_KEYS = 16
"""Most keys a document may list: a current key and a few still in their overlap."""
_MAX_DOMAIN_LENGTH = 253
_MAX_KEY_ID_LENGTH = 300
_MAX_TIMESTAMP = 2**53  # beyond any real expiry; keeps JSON integers exact everywhere

PublishedKey = tuple[str, bytes, int | None]
"""A key read from a document: id, raw public key, expiry (epoch seconds) or ``None``."""


def canonical_json(value: Any) -> bytes:
    """The bytes signed in a server document: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def server_document(domain: str, keys: Sequence[tuple[SigningKey, float | None]]) -> dict[str, Any]:
    """The document publishing ``keys`` (each with its expiry, or ``None``), signed by each."""
    if not 1 <= len(keys) <= MAX_DOCUMENT_KEYS:
        raise LocalProtocolError(f"a server document lists 1 to {MAX_DOCUMENT_KEYS} keys")
    for key, _ in keys:
        if not key.key_id.startswith(f"{domain}#"):
            raise LocalProtocolError(f"key {key.key_id!r} is not a key of {domain!r}")
    signed = {
        "domain": domain,
        "keys": [
            {
                "id": key.key_id,
                "key": base64.b64encode(key.public).decode("ascii"),
                "expires": None if expires is None else int(expires),
            }
            for key, expires in keys
        ],
    }
    payload = canonical_json(signed)
    signatures = {
        key.key_id: base64.b64encode(key.sign(payload)).decode("ascii") for key, _ in keys
    }
    return {**signed, "signatures": signatures}


def read_server_document(
    document: Any, *, domain: str, pinned: Collection[bytes], now: float
) -> list[PublishedKey]:
    """The unexpired keys of ``domain`` that ``document`` publishes, once it proves itself.

    Every listed key must have signed the document. When ``pinned`` (raw public keys we already
    trust) is not empty, one of the listed unexpired keys must be pinned, else
    ``federation-unknown-key``: a new key is accepted only on the word of a key we trust. A
    document of the wrong shape raises ``federation-bad-document``, a signature that does not
    verify ``federation-bad-signature``.
    """
    if not isinstance(document, dict) or set(document) != {"domain", "keys", "signatures"}:
        raise _bad("a document has exactly domain, keys and signatures")
    if document["domain"] != domain:
        raise _bad(f"the document is not of {domain}")
    entries = document["keys"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_DOCUMENT_KEYS:
        raise _bad(f"keys must list 1 to {MAX_DOCUMENT_KEYS} keys")
    keys = [_read_key(entry, domain) for entry in entries]
    if len({kid for kid, _, _ in keys}) != len(keys) or len({k for _, k, _ in keys}) != len(keys):
        raise _bad("a key id or key is listed twice")
    signatures = document["signatures"]
    if not isinstance(signatures, dict) or set(signatures) != {kid for kid, _, _ in keys}:
        raise _bad("signatures must hold one signature per listed key, and no other")

    payload = canonical_json({"domain": domain, "keys": entries})
    for kid, raw, _ in keys:
        signature = _b64(signatures[kid], SIGNATURE_BYTES, f"signature of {kid}")
        try:
            public_key(raw).verify(signature, payload)
        except InvalidSignature as exc:
            raise FederationRefused(
                FederationErrorId.BAD_SIGNATURE, f"{kid} did not sign this document"
            ) from exc

    live = [key for key in keys if key[2] is None or key[2] > now]
    if not live:
        raise _bad("every key has expired")
    if pinned and not any(raw in pinned for _, raw, _ in live):
        raise FederationRefused(
            FederationErrorId.UNKNOWN_KEY, f"no key we trust for {domain} signed the document"
        )
    return live


def _read_key(entry: Any, domain: str) -> PublishedKey:
    if not isinstance(entry, dict) or set(entry) != {"id", "key", "expires"}:
        raise _bad("a key has exactly id, key and expires")
    kid, key, expires = entry["id"], entry["key"], entry["expires"]
    if (
        not isinstance(kid, str)
        or len(kid) > _MAX_KEY_ID_LENGTH
        or len(domain) > _MAX_DOMAIN_LENGTH
        or not kid.startswith(f"{domain}#")
    ):
        raise _bad(f"a key id must be {domain}#<id>")
    if expires is not None and (type(expires) is not int or not 0 <= expires < _MAX_TIMESTAMP):
        raise _bad(f"expires of {kid} must be epoch seconds or null")
    raw = _b64(key, KEY_BYTES, f"key {kid}")
    try:
        public_key(raw)
    except ValueError as exc:
        raise _bad(f"key {kid} is not an Ed25519 key") from exc
    return kid, raw, expires


def _b64(value: Any, length: int, what: str) -> bytes:
    """Strict standard base64 of exactly ``length`` bytes, for keys and signatures."""
    if not isinstance(value, str) or len(value) > 4 * (length // 3 + 1):
        raise _bad(f"{what} must be base64")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"{what} must be base64") from exc
    if len(raw) != length:
        raise _bad(f"{what} must be {length} bytes")
    return raw


def _bad(detail: str) -> FederationRefused:
    return FederationRefused(FederationErrorId.BAD_DOCUMENT, detail)
