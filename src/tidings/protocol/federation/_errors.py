"""The one error of the federation layer: a peer's request or document that we refuse.

``FederationRefused`` carries the stable error id (the problem JSON's ``type``) and the HTTP
status the receiver answers with, so the HTTP edge renders it without a table of its own.
"""

from __future__ import annotations

from enum import StrEnum

from .._errors import RemoteProtocolError

__all__ = ["STATUS", "FederationErrorId", "FederationRefused"]


class FederationErrorId(StrEnum):
    """Why a signed request or a server document was refused (``docs/federation.md``)."""

    UNSIGNED = "federation-unsigned"
    DIGEST_MISMATCH = "federation-digest-mismatch"
    UNKNOWN_KEY = "federation-unknown-key"
    BAD_SIGNATURE = "federation-bad-signature"
    STALE = "federation-stale"
    REPLAYED = "federation-replayed"
    WRONG_DESTINATION = "federation-wrong-destination"
    RATE_LIMITED = "federation-rate-limited"
    BAD_DOCUMENT = "federation-bad-document"
    DENIED = "federation-denied"
    FOREIGN_SENDER = "federation-foreign-sender"


STATUS: dict[FederationErrorId, int] = {
    FederationErrorId.UNSIGNED: 401,
    FederationErrorId.DIGEST_MISMATCH: 401,
    FederationErrorId.UNKNOWN_KEY: 401,
    FederationErrorId.BAD_SIGNATURE: 401,
    FederationErrorId.STALE: 401,
    FederationErrorId.REPLAYED: 401,
    # RFC 9110 15.5.20 Misdirected Request: the request reached a server that is not its target.
    FederationErrorId.WRONG_DESTINATION: 421,
    FederationErrorId.RATE_LIMITED: 429,
    # The operator's deny list names the origin.
    FederationErrorId.DENIED: 403,
    # An envelope's sender is not of the origin's domain: a server speaks only for its own.
    FederationErrorId.FOREIGN_SENDER: 403,
    # Only raised while reading a peer's key document, which we fetched: their fault, not ours.
    FederationErrorId.BAD_DOCUMENT: 502,
}
"""The HTTP status of each refusal; one table, so the status cannot drift from the id."""


class FederationRefused(RemoteProtocolError):
    """A peer's request or document failed a check; ``error_id`` and ``status`` say which.

    ``detail`` is for logs and the problem JSON's ``detail``; ``retry_after_s`` is set only when
    waiting helps (``RATE_LIMITED``), for a ``Retry-After`` header.
    """

    def __init__(
        self, error_id: FederationErrorId, detail: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{error_id.value}: {detail}")
        self.error_id = error_id
        self.status = STATUS[error_id]
        self.detail = detail
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"FederationRefused({self.error_id.value!r}, {self.detail!r})"
