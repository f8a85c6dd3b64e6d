"""``tidings.protocol.federation`` exports the names the federation service is written against."""

from __future__ import annotations

import tidings.protocol.federation as federation
from tidings.protocol import RemoteProtocolError


def test_the_names() -> None:
    assert set(federation.__all__) >= {
        "FederationRefused",
        "NonceCache",
        "SigningKey",
        "Verified",
        "key_id",
        "read_server_document",
        "server_document",
        "sign_request",
        "verify_request",
    }
    assert all(hasattr(federation, name) for name in federation.__all__)


def test_the_constants() -> None:
    assert federation.COVERED_COMPONENTS == (
        "@method",
        "@target-uri",
        "content-digest",
        "tidings-origin",
        "tidings-destination",
    )
    assert (federation.SIGNATURE_LABEL, federation.ALGORITHM) == ("sig1", "ed25519")
    assert issubclass(federation.FederationRefused, RemoteProtocolError)
