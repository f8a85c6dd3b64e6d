"""End-to-end encryption, sans-I/O: node keys, signed node info and sealed messages.

Pure functions over bytes and dicts (PyNaCl for the primitives); the SDK keeps the keys and
the server verifies only publications (``docs/e2e.md`` is the format a client in another
language implements)."""

from __future__ import annotations

from ._errors import E2EError, InvalidKey
from ._ids import KEY_BYTES, box_id_of, decode_key, encode_key
from ._keys import SECRET_BYTES, SIGNATURE_BYTES, NodeKeys, verify
from ._node_info import (
    NODE_INFO_TYPE,
    NodeInfo,
    Signer,
    node_info_signed_bytes,
    sign_node_info,
    verify_node_info,
)
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
    "NODE_INFO_TYPE",
    "SEALED_TYPE",
    "SECRET_BYTES",
    "SIGNATURE_BYTES",
    "E2EError",
    "InvalidKey",
    "KeyEntry",
    "NodeInfo",
    "NodeKeys",
    "OpenFailure",
    "Opened",
    "SealedContent",
    "Signer",
    "box_id_of",
    "decode_key",
    "encode_key",
    "node_info_signed_bytes",
    "open_sealed",
    "seal",
    "sign_node_info",
    "verify",
    "verify_node_info",
]
