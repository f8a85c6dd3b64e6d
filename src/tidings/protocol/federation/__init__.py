"""Federation between servers, sans-I/O: signed requests, replay protection, key documents
(``docs/federation.md``, "Server identity and signed requests").

Nothing here opens a socket, reads the clock or touches a file: the caller passes ``now`` and
the keys it trusts. Every refusal of a peer's request or document is a ``FederationRefused``
whose ``error_id`` and ``status`` are the answer to send.
"""

from __future__ import annotations

from ._documents import (
    MAX_DOCUMENT_KEYS,
    PublishedKey,
    canonical_json,
    read_server_document,
    server_document,
)
from ._errors import STATUS, FederationErrorId, FederationRefused
from ._keys import KEY_BYTES, KEY_ID_HEX, SIGNATURE_BYTES, SigningKey, key_id, public_key
from ._nonces import NonceCache
from ._signing import (
    ALGORITHM,
    COVERED_COMPONENTS,
    MAX_FIELD_LENGTH,
    MAX_NONCE_LENGTH,
    SIGNATURE_LABEL,
    Verified,
    content_digest,
    sign_request,
    verify_request,
)

__all__ = [
    "ALGORITHM",
    "COVERED_COMPONENTS",
    "KEY_BYTES",
    "KEY_ID_HEX",
    "MAX_DOCUMENT_KEYS",
    "MAX_FIELD_LENGTH",
    "MAX_NONCE_LENGTH",
    "SIGNATURE_BYTES",
    "SIGNATURE_LABEL",
    "STATUS",
    "FederationErrorId",
    "FederationRefused",
    "NonceCache",
    "PublishedKey",
    "SigningKey",
    "Verified",
    "canonical_json",
    "content_digest",
    "key_id",
    "public_key",
    "read_server_document",
    "server_document",
    "sign_request",
    "verify_request",
]
