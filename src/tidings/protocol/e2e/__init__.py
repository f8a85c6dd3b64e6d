"""End-to-end encryption, sans-I/O: node keys, signed node info and sealed messages.

Pure functions over bytes and dicts (PyNaCl for the primitives); the SDK keeps the keys and
the server verifies only publications (``docs/e2e.md`` is the format a client in another
language implements)."""

from __future__ import annotations

from ._errors import E2EError, InvalidKey
from ._ids import KEY_BYTES, box_id_of, decode_key, encode_key
from ._node_info import (
    NODE_INFO_TYPE,
    NodeInfo,
    Signer,
    node_info_signed_bytes,
    sign_node_info,
    verify_node_info,
)

__all__ = [
    "KEY_BYTES",
    "NODE_INFO_TYPE",
    "E2EError",
    "InvalidKey",
    "NodeInfo",
    "Signer",
    "box_id_of",
    "decode_key",
    "encode_key",
    "node_info_signed_bytes",
    "sign_node_info",
    "verify_node_info",
]
