"""Corked writes: frames bound for one connection within one loop iteration go out in one
``write`` (one syscall) instead of one each.

Server frames are unmasked, so a text frame is a 2-10 byte header and the payload (RFC 6455
section 5.2). picows still handles everything else (reading, control frames, closing); call
``flush()`` before anything that picows itself writes, such as a close frame.

All writers of a loop share one scheduled flush, so a fan-out to a thousand connections costs
one callback, not a thousand.
"""

from __future__ import annotations

import asyncio
import weakref
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


class _FlushGroup:
    """The writers of one event loop that have frames waiting, flushed in one callback."""

    __slots__ = ("_loop", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[CorkedWriter] = []

    def add(self, writer: CorkedWriter) -> None:
        if not self._waiting:
            self._loop.call_soon(self._flush_all)
        self._waiting.append(writer)

    def _flush_all(self) -> None:
        waiting, self._waiting = self._waiting, []
        for writer in waiting:
            writer.flush()


_groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _FlushGroup] = (
    weakref.WeakKeyDictionary()
)


def _group_of(loop: asyncio.AbstractEventLoop) -> _FlushGroup:
    group = _groups.get(loop)
    if group is None:
        group = _groups[loop] = _FlushGroup(loop)
    return group


class CorkedWriter:
    """Frames for one connection, written in one go at the end of the loop iteration, or at
    once when they pass ``flush_at`` bytes: then the transport sees them, and its write buffer
    limits (``pause_writing``) apply to them too, instead of a list growing without bound."""

    __slots__ = ("_flush_at", "_group", "_pending", "_size", "_transport", "_ws")

    def __init__(self, transport: Any, flush_at: int = 1 << 20, ws: Any = None) -> None:
        self._transport = transport
        self._ws = ws
        """The picows transport, if any: once it has sent a close frame (its own, say for a
        malformed control frame), nothing more may follow it."""
        self._group = _group_of(asyncio.get_running_loop())
        self._pending: list[bytes] = []
        self._size = 0
        self._flush_at = flush_at

    def write_text(self, payload: bytes) -> None:
        pending = self._pending
        if not pending:
            self._group.add(self)
        pending.append(text_frame_header(len(payload)))
        pending.append(payload)
        self._size += len(payload)
        if self._size > self._flush_at:
            self.flush()

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel (approximately: headers not counted)."""
        return self._size + int(self._transport.get_write_buffer_size())

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._size = 0
            if not self._transport.is_closing() and not (
                self._ws is not None and self._ws.is_close_frame_sent
            ):
                self._transport.write(data)
