"""``net.federation_client.FederationClient`` against a real HTTP server on loopback that
misbehaves: an answer past the bound is refused while it streams in (memory stays bounded, the
rest is never read), an answer that trickles in forever is cut off by the deadline, and a
``Retry-After`` that is not ASCII digits is ignored instead of escaping into the relay."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tidings.core.federation import PeerUnreachable
from tidings.net.federation_client import FederationClient
from tidings.protocol.federation import SigningKey

BOUND = 64 * 1024
HUGE = 256 * 1024 * 1024
Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


class Peer:
    """One connection at a time; ``answer`` writes the response after the request was read.
    ``written`` counts the body bytes it got out, ``done`` says how the answer ended."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        try:
            await self.answer(writer)
            outcome = "complete"
        except (ConnectionError, OSError):
            outcome = "cut off"
        finally:
            writer.close()
        if not self.done.done():
            self.done.set_result(outcome)


@asynccontextmanager
async def client_of(
    answer: Answer, *, timeout_s: float = 15.0, deadline_s: float = 30.0
) -> AsyncIterator[tuple[FederationClient, Peer]]:
    peer = Peer(answer)
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def base_url(domain: str) -> str:
        return f"http://127.0.0.1:{port}"

    key = SigningKey.generate("alpha.test")
    client = FederationClient(
        "alpha.test",
        lambda: key,
        base_url,
        timeout_s=timeout_s,
        deadline_s=deadline_s,
        max_answer_bytes=BOUND,
    )
    try:
        yield client, peer
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


def ask(client: FederationClient, how: str) -> Awaitable[Any]:
    if how == "post":
        return client.post("beta.test", "envelopes", b'{"envelopes": []}')
    return client.document("beta.test")


async def endless(writer: asyncio.StreamWriter, head: bytes) -> None:
    """``head``, then a JSON-looking body of HUGE bytes, paced by the reader (drain)."""
    writer.write(head)
    chunk = b"x" * (64 * 1024)
    for _ in range(HUGE // len(chunk)):
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if b"chunked" in head else chunk)
        await writer.drain()


CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
DECLARED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % HUGE


@pytest.mark.parametrize("how", ["post", "document"])
@pytest.mark.parametrize("head", [CHUNKED, DECLARED], ids=["chunked", "content-length"])
async def test_an_answer_past_the_bound_is_refused_while_it_streams(how: str, head: bytes) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        await endless(writer, head)

    async with client_of(answer) as (client, peer):
        tracemalloc.start()
        try:
            with pytest.raises(PeerUnreachable, match=f"larger than {BOUND} bytes"):
                await ask(client, how)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # the client hung up: the peer's 256 MiB were never all sent, nor held here
        assert await peer.done == "cut off"
        assert peak < 8 * 1024 * 1024, peak


async def test_an_answer_that_never_ends_is_cut_off_by_the_deadline() -> None:
    """Each read gets a byte well within httpx's timeout; only the deadline ends it."""

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(CHUNKED)
        while True:
            writer.write(b"1\r\n \r\n")
            await writer.drain()
            await asyncio.sleep(0.01)  # the peer's pace, not a synchronization

    async with client_of(answer, timeout_s=5.0, deadline_s=0.3) as (client, peer):
        with pytest.raises(PeerUnreachable, match=r"within 0\.3 s"):
            async with asyncio.timeout(10):  # without the deadline: fail, do not hang
                await ask(client, "post")
        assert await peer.done == "cut off"


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [("7", 7.0), ("²", None), ("٣", None), ("-1", None), ("1.5", None), ("", None)],
    ids=["digits", "superscript", "arabic-indic", "negative", "fraction", "empty"],
)
async def test_retry_after_is_read_only_from_ascii_digits(
    retry_after: str, seconds: float | None
) -> None:
    body = b'{"error_id": "busy", "detail": "later"}'

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (retry_after.encode(), len(body), body)
        )
        await writer.drain()

    async with client_of(answer) as (client, _):
        with pytest.raises(PeerUnreachable) as unreachable:
            await ask(client, "post")
    assert unreachable.value.retry_after == seconds
    assert "503 busy later" in str(unreachable.value)


async def test_a_peer_that_never_answers_holds_only_its_share_of_connections() -> None:
    """16 requests hang at a tarpit; a 17th to it waits for a slot, while a request to another
    peer (the same client, the same pool) goes at once."""
    hold = asyncio.Event()
    sixteen = asyncio.Event()
    heads = 0

    async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal heads
        await reader.readuntil(b"\r\n\r\n")
        heads += 1
        if heads == 16:
            sixteen.set()
        await hold.wait()
        writer.close()

    async def honest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.partition(b":")[2])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    slow = await asyncio.start_server(tarpit, "127.0.0.1", 0)
    fine = await asyncio.start_server(honest, "127.0.0.1", 0)
    ports = {
        "slow.test": slow.sockets[0].getsockname()[1],
        "fine.test": fine.sockets[0].getsockname()[1],
    }

    async def base_url(domain: str) -> str:
        return f"http://127.0.0.1:{ports[domain]}"

    key = SigningKey.generate("alpha.test")
    client = FederationClient("alpha.test", lambda: key, base_url, timeout_s=60, deadline_s=60)
    try:
        stuck = [asyncio.ensure_future(client.post("slow.test", "query", b"{}")) for _ in range(17)]
        async with asyncio.timeout(10):
            assert await client.post("fine.test", "query", b"{}") == {}
            await sixteen.wait()
        assert not any(task.done() for task in stuck)
        assert heads == 16
        assert client._slots["slow.test"].locked()  # the 17th waits for one of the 16
    finally:
        hold.set()
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        await client.close()
        slow.close()
        fine.close()
