"""Server text frames built for corked writes (real clients parse them in the integration
and conformance suites; this pins the header layout of RFC 6455 section 5.2)."""

from __future__ import annotations

import pytest

from tidings.gateway.framing import text_frame_header


@pytest.mark.parametrize("length", [0, 1, 125, 126, 300, 65535, 65536, 70000])
def test_header_encodes_fin_text_and_length(length: int):
    header = text_frame_header(length)
    assert header[0] == 0x81  # FIN + text opcode, unmasked
    if length < 126:
        assert header[1] == length and len(header) == 2
    elif length < 65536:
        assert header[1] == 126 and int.from_bytes(header[2:4], "big") == length
    else:
        assert header[1] == 127 and int.from_bytes(header[2:10], "big") == length


async def test_writers_of_a_loop_flush_together_in_one_write_each():
    import asyncio
    import socket

    from tidings.gateway.framing import CorkedWriter

    pairs = [socket.socketpair() for _ in range(2)]
    try:
        writers = []
        for ours, _ in pairs:
            _, protocol_writer = await asyncio.open_connection(sock=ours)
            writers.append((CorkedWriter(protocol_writer.transport), protocol_writer))
        for n, (writer, _) in enumerate(writers):
            for text in (b"a", b"bb", b"x" * 300):
                writer.write_text(text + str(n).encode())
        loop = asyncio.get_running_loop()
        for _, theirs in pairs:
            theirs.setblocking(False)
        expected = [
            b"".join(
                text_frame_header(len(t) + 1) + t + str(n).encode()
                for t in (b"a", b"bb", b"x" * 300)
            )
            for n in range(2)
        ]
        for (_, theirs), frames in zip(pairs, expected, strict=True):
            received = b""
            async with asyncio.timeout(5):
                while len(received) < len(frames):
                    received += await loop.sock_recv(theirs, 4096)
            assert received == frames
        for _, stream in writers:
            stream.close()
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
