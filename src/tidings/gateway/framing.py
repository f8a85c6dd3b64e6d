"""Corked writes: frames bound for one connection within one loop iteration go out in one
``write`` (one syscall) instead of one each.

Server frames are unmasked, so a text frame is a 2-10 byte header and the payload (RFC 6455
section 5.2). picows still handles everything else (reading, control frames, closing); call
``flush()`` before anything that picows itself writes, such as a close frame.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=4096)
def text_frame_header(length: int) -> bytes:
    """Cached: a fan-out writes the same length to every client."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


class CorkedWriter:
    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []

    def write_text(self, payload: bytes) -> None:
        pending = self._pending
        if not pending:
            self._loop.call_soon(self.flush)
        pending.append(text_frame_header(len(payload)))
        pending.append(payload)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)
