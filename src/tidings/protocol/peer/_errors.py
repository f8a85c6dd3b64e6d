"""The one error of the peer layer: something a peer sent that does not hold.

``kind`` is the machine-readable hint the SDK needs to decide what to do (drop one message,
close the connection, distrust a directory entry); the message is for logs only.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from .._errors import RemoteProtocolError

__all__ = ["PeerError", "PeerErrorKind"]

PeerErrorKind: TypeAlias = Literal[
    "malformed",
    "too-large",
    "handshake-failed",
    "key-mismatch",
    "bad-node-info",
    "expired-node-info",
    "decrypt-failed",
]


class PeerError(RemoteProtocolError):
    """A peer broke the direct-link protocol; ``kind`` says how (see ``PeerErrorKind``)."""

    def __init__(self, kind: PeerErrorKind, message: str | None = None) -> None:
        super().__init__(message if message is not None else kind)
        self.kind: PeerErrorKind = kind

    def __repr__(self) -> str:
        return f"PeerError({self.kind!r}, {str(self)!r})"
