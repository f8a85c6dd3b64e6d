"""A raw WebSocket client over asyncio streams, for sending what well-behaved clients cannot.

It does the RFC 6455 client handshake with a chosen subprotocol and then writes frames exactly
as asked: any opcode (reserved ones too), any RSV bits, ``fin`` or not, masked or not, any
payload bytes (invalid UTF-8, oversized control frames, stray continuations). It reads the
server's frames back as they are, without interpreting them (no auto-pong, no reassembly), so a
test sees exactly what the server put on the wire. Every read has a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEADLINE = 10.0

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeRefused(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status: int, head: bytes) -> None:
        super().__init__(f"upgrade refused with {status}: {head[:200]!r}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame as read from the wire (server frames must not be masked: ``masked`` says)."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = False

    @property
    def close_code(self) -> int | None:
        """The status code of a close frame (None when it carries none)."""
        if self.opcode != CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    mask_key: bytes | None = None,
) -> bytes:
    """One frame, byte for byte as given: nothing is checked (``rsv`` is 0-7, RSV1 highest)."""
    head = bytearray([(0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head.append(mask_bit | length)
    elif length < 65536:
        head.append(mask_bit | 126)
        head += struct.pack("!H", length)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", length)
    if not mask:
        return bytes(head) + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    head += key
    return bytes(head) + _xor(payload, key)


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


def _xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big"
    )


class RawWebSocket:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, subprotocol: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.subprotocol = subprotocol
        self.eof = False
        self.reset = False
        """The connection ended with a reset (RST), not a FIN: what the server sent last (its
        close frame) may have been discarded by the kernel before we read it."""

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        subprotocol: str,
        *,
        path: str = "/",
        timeout: float = DEADLINE,
    ) -> RawWebSocket:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            key = base64.b64encode(os.urandom(16))
            writer.write(
                b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n"
                % (path.encode(), host.encode(), port, key, subprotocol.encode())
            )
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                writer.close()
                raise HandshakeRefused(0, exc.partial) from None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        if status != 101:
            writer.close()
            raise HandshakeRefused(status, head)
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        assert headers.get("sec-websocket-accept") == accept, headers
        assert headers.get("sec-websocket-protocol") == subprotocol, headers
        return cls(reader, writer, subprotocol)

    # -- writing --------------------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def send_frame(
        self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0
    ) -> None:
        self.send_bytes(encode_frame(opcode, payload, fin=fin, rsv=rsv))

    def send_text(self, payload: bytes | str) -> None:
        self.send_frame(TEXT, payload.encode() if isinstance(payload, str) else payload)

    async def drain(self) -> None:
        """Flush what was written; a server that has already hung up is not an error here."""
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()

    # -- reading --------------------------------------------------------------------------------

    async def recv(self, timeout: float = DEADLINE) -> Frame | None:
        """The next frame, or None at EOF (or a reset). Raises TimeoutError past the deadline."""
        if self.eof:
            return None
        try:
            async with asyncio.timeout(timeout):
                return await self._read_frame()
        except asyncio.IncompleteReadError:
            self.eof = True
            return None
        except ConnectionError:
            self.eof = self.reset = True
            return None

    async def _read_frame(self) -> Frame:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        masked = bool(second & 0x80)
        key = await self.reader.readexactly(4) if masked else b""
        payload = await self.reader.readexactly(length)
        if masked:
            payload = _xor(payload, key)
        return Frame(
            opcode=first & 0xF,
            payload=payload,
            fin=bool(first & 0x80),
            rsv=(first >> 4) & 7,
            masked=masked,
        )

    async def close(self) -> None:
        """Drop the TCP connection (no closing handshake) and wait until it is gone."""
        self.writer.close()
        try:
            async with asyncio.timeout(DEADLINE):
                await self.writer.wait_closed()
        except (ConnectionError, OSError, TimeoutError):
            pass
