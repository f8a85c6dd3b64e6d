"""A stand-in for the gateway side of the core's ``Outlet`` port."""

from __future__ import annotations

from typing import Any

from tidings.core.model import EnvelopeKind


class Recorder:
    def __init__(self, closing: bool) -> None:
        self.closing = closing
        self.written: list[bytes] = []

    def deliver(self, payload: bytes, kind: EnvelopeKind = EnvelopeKind.MESSAGE) -> bool:
        if self.closing:
            return False
        self.written.append(payload)
        return True

    def notify(self, *args: Any) -> None: ...
    def observe(self, *args: Any) -> None: ...
    def end(self, *args: Any) -> None: ...
