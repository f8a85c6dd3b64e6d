"""Errors of the end-to-end layer: a key, a signed document or a sealed message that does not
hold. Each names what failed in ``kind`` so that the edges can answer with a precise code."""

from __future__ import annotations

from .._errors import RemoteProtocolError

__all__ = ["E2EError", "InvalidKey"]


class E2EError(RemoteProtocolError):
    """Something signed or sealed by a peer that does not verify (``kind`` says how)."""

    kind = "e2e"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class InvalidKey(E2EError, ValueError):
    """A key string that is not the base64 of 32 bytes (or a key file of the wrong form)."""

    kind = "invalid-key"
