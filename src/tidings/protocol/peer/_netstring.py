"""Netstrings (``<decimal length>:<bytes>,``): how mm-platform frames messages on a stream.

The reader is strict where mm-platform 0.7.5 is lax (it never checks the trailing comma): a
length we cannot trust means the stream is out of step, and nothing after it can be parsed.
Errors depend only on the bytes, never on how they were split into ``feed`` calls.
"""

from __future__ import annotations

from typing import Final

from .._errors import InvalidState
from ._errors import PeerError

__all__ = ["DEFAULT_MAX_LENGTH", "NetstringReader", "encode_netstring"]

DEFAULT_MAX_LENGTH: Final = 16 * 2**20
_COLON: Final = ord(":")
_COMMA: Final = ord(",")


def encode_netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


class NetstringReader:
    """Incremental netstring parser: ``feed`` bytes as they come, get complete payloads.

    A payload is buffered until complete (so ``max_length`` bounds the memory one peer can
    hold); the length header is checked as soon as each byte of it arrives.
    After a ``PeerError`` the reader refuses further input (``InvalidState``): the caller
    closes the connection.
    """

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < 0:
            raise ValueError("max_length must not be negative")
        self.max_length = max_length
        self._max_digits = len(str(max_length))
        self._buffer = bytearray()
        self._length: int | None = None
        """The payload length once its header was read; ``None`` while reading a header."""
        self._failed = False

    def feed(self, data: bytes) -> list[bytes]:
        """Every payload completed by ``data``, in order (``PeerError`` if the stream is bad)."""
        if self._failed:
            raise InvalidState("The netstring reader failed; the connection must be closed")
        try:
            return self._feed(data)
        except PeerError:
            self._failed = True
            self._buffer.clear()
            raise

    def _feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        payloads: list[bytes] = []
        position = 0
        while True:
            if self._length is None:
                colon = buffer.find(_COLON, position, position + self._max_digits + 1)
                if colon < 0:
                    self._check_header(
                        buffer[position : position + self._max_digits + 1], complete=False
                    )
                    break
                self._length = self._check_header(buffer[position:colon], complete=True)
                position = colon + 1
            end = position + self._length
            if len(buffer) <= end:
                break
            if buffer[end] != _COMMA:
                raise PeerError("malformed", "A netstring does not end with ','")
            payloads.append(bytes(buffer[position:end]))
            position = end + 1
            self._length = None
        del buffer[:position]
        return payloads

    def _check_header(self, header: bytearray, *, complete: bool) -> int:
        """The length in ``header``; a partial header is checked for what is already final."""
        if not header.isdigit():
            if header or complete:
                raise PeerError("malformed", "A netstring length is decimal digits before ':'")
            return 0
        if len(header) > self._max_digits:
            raise PeerError(
                "malformed", f"A netstring length has more than {self._max_digits} digits"
            )
        if header[0] == ord("0") and len(header) > 1:
            raise PeerError("malformed", "A netstring length has a leading zero")
        if not complete:
            return 0
        length = int(header)
        if length > self.max_length:
            raise PeerError("too-large", f"A netstring of {length} bytes is over {self.max_length}")
        return length
