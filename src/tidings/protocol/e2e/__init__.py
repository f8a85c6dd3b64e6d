"""End-to-end encryption, sans-I/O: node keys, signed node info and sealed messages.

Pure functions over bytes and dicts (PyNaCl for the primitives); the SDK keeps the keys and
the server verifies only publications (``docs/e2e.md`` is the format a client in another
language implements)."""

from __future__ import annotations

from ._errors import E2EError, InvalidKey
from ._ids import KEY_BYTES, box_id_of, decode_key, encode_key

__all__ = ["KEY_BYTES", "E2EError", "InvalidKey", "box_id_of", "decode_key", "encode_key"]
