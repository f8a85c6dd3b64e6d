"""End-to-end encryption, sans-I/O: node keys, signed node info and sealed messages.

Pure functions over bytes and dicts (PyNaCl for the primitives); the SDK keeps the keys and
the server verifies only publications (``docs/e2e.md`` is the format a client in another
language implements)."""

from __future__ import annotations

from ._errors import E2EError, InvalidKey
from ._ids import KEY_BYTES, box_id_of, decode_key, encode_key
from ._keys import SECRET_BYTES, SIGNATURE_BYTES, NodeKeys, verify
from ._sealed import (
    COPY_SUFFIX,
    MAX_CIPHERTEXT_BYTES,
    MAX_KEY_ENTRIES,
    SEALED_TYPE,
    KeyEntry,
    Opened,
    OpenFailure,
    SealedContent,
    open_sealed,
    seal,
)

__all__ = [
    "COPY_SUFFIX",
    "KEY_BYTES",
    "MAX_CIPHERTEXT_BYTES",
    "MAX_KEY_ENTRIES",
    "SEALED_TYPE",
    "SECRET_BYTES",
    "SIGNATURE_BYTES",
    "E2EError",
    "InvalidKey",
    "KeyEntry",
    "NodeKeys",
    "OpenFailure",
    "Opened",
    "SealedContent",
    "box_id_of",
    "decode_key",
    "encode_key",
    "open_sealed",
    "seal",
    "verify",
]
