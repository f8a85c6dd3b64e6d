"""Listener and Budget: admission up to the limit, the reserve's answers and resets, slots
released when connections close, head deadlines, and accepting paused (one line) when the
process is out of files. Real loopback sockets, an in-process echo protocol."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from tidings.gateway.admission import Budget, Listener, Slot, http_response, websocket_connect

DEADLINE = 10.0
REFUSAL = http_response(503, "Service Unavailable", b"full\n")
HEALTH = http_response(200, "OK", b"ok\n")


class Echo(asyncio.Protocol):
    """Writes back what it reads; releases its slot when its connection is lost."""

    def __init__(self, slot: Slot, made: asyncio.Queue[Echo]) -> None:
        self.slot = slot
        self.made = made
        self.lost = asyncio.Event()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:  # uvloop's are no asyncio.Transport
        self.transport = transport
        self.made.put_nowait(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.slot.release()
        self.lost.set()


class Harness:
    def __init__(self, budget: Budget, sock: socket.socket | None = None, **options: Any) -> None:
        self.budget = budget
        self.made: asyncio.Queue[Echo] = asyncio.Queue()
        self.sock = sock or socket.create_server(("127.0.0.1", 0))
        self.listener = Listener(
            "test",
            self.sock,
            budget,
            lambda slot: Echo(slot, self.made),
            refusal=REFUSAL,
            header_timeout=options.pop("header_timeout", DEADLINE * 3),
            **options,
        )
        self.listener.start()
        self.clients: list[asyncio.StreamWriter] = []

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.listener.port)
        self.clients.append(writer)
        return reader, writer

    async def admitted(self) -> Echo:
        async with asyncio.timeout(DEADLINE):
            return await self.made.get()

    def close(self) -> None:
        for writer in self.clients:
            writer.close()
        self.listener.close()


Make = Callable[..., Harness]
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def on_both_loops(
    scenario: Callable[[Make], Awaitable[None]],
) -> Callable[[str], None]:
    """A test that runs ``scenario`` on asyncio's loop and on uvloop (the server's)."""

    async def run() -> None:
        made: list[Harness] = []

        def make(budget: Budget, sock: socket.socket | None = None, **options: Any) -> Harness:
            made.append(Harness(budget, sock, **options))
            return made[-1]

        try:
            await scenario(make)
        finally:
            for one in made:
                one.close()

    @pytest.mark.parametrize("loop", list(LOOPS))
    def test(loop: str) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(run())

    test.__name__ = scenario.__name__
    test.__doc__ = scenario.__doc__
    return test


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent before it closed (a reset ends it too)."""
    received = b""
    try:
        async with asyncio.timeout(DEADLINE):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass
    return received


async def _reset_at_once(port: int) -> bool:
    """True when a new connection is closed by the server, maybe before connect returns."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionResetError:
        return True
    try:
        return await _closed(reader) == b""
    finally:
        writer.close()


async def _echoes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"ping")
    async with asyncio.timeout(DEADLINE):
        return await reader.readexactly(4) == b"ping"


@on_both_loops
async def test_up_to_the_limit_connections_are_admitted_and_counted(harness: Make) -> None:
    h = harness(Budget(limit=2, reserve=1))
    first = await h.connect()
    second = await h.connect()
    await h.admitted()
    await h.admitted()
    assert (h.budget.open, h.listener.open) == (2, 2)
    assert await _echoes(*first) and await _echoes(*second)


@on_both_loops
async def test_beyond_the_limit_the_reserve_answers_with_the_refusal_then_resets(
    harness: Make,
) -> None:
    h = harness(Budget(limit=1, reserve=1))
    await h.connect()
    await h.admitted()
    reader, writer = await h.connect()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await _closed(reader) == REFUSAL
    assert (h.budget.refused, h.budget.waiting) == (1, 0)
    await h.connect()  # idle, in the reserve (the listener accepts in order)
    assert await _reset_at_once(h.listener.port), "beyond the reserve: closed at once"
    assert h.budget.refused == 2
    assert h.budget.waiting == 1
    assert h.made.empty()


@on_both_loops
async def test_exempt_requests_are_answered_from_the_reserve(harness: Make) -> None:
    def exempt(request_line: bytes) -> bytes | None:
        return HEALTH if request_line.startswith(b"GET /healthz ") else None

    h = harness(Budget(limit=1, reserve=4), exempt=exempt)
    await h.connect()
    await h.admitted()
    reader, writer = await h.connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await _closed(reader) == HEALTH
    reader, writer = await h.connect()
    writer.write(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await _closed(reader) == REFUSAL
    assert h.budget.refused == 1


@on_both_loops
async def test_a_head_arriving_in_pieces_is_answered_once_complete(harness: Make) -> None:
    h = harness(Budget(limit=0, reserve=1))
    reader, writer = await h.connect()
    writer.write(b"GET / HTTP/1.1\r\n")
    await writer.drain()
    writer.write(b"Host: x\r\n\r\n")
    assert await _closed(reader) == REFUSAL


@on_both_loops
async def test_the_budget_is_shared_and_a_listener_may_have_a_smaller_limit(harness: Make) -> None:
    budget = Budget(limit=3, reserve=2)
    small = harness(budget, limit=1)
    large = harness(budget)
    await small.connect()
    await small.admitted()
    reader, writer = await small.connect()
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await _closed(reader) == REFUSAL, "the small listener is at its own limit"
    for _ in range(2):
        await large.connect()
        await large.admitted()
    reader, writer = await large.connect()
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await _closed(reader) == REFUSAL, "the budget is full"
    assert (budget.open, small.listener.open, large.listener.open) == (3, 1, 2)


@on_both_loops
async def test_a_closed_connection_gives_its_slot_back(harness: Make) -> None:
    h = harness(Budget(limit=1, reserve=0))
    _, writer = await h.connect()
    protocol = await h.admitted()
    writer.close()
    async with asyncio.timeout(DEADLINE):
        await protocol.lost.wait()
    assert (h.budget.open, h.listener.open) == (0, 0)
    again = await h.connect()
    await h.admitted()
    assert await _echoes(*again)


@on_both_loops
async def test_a_waiting_connection_is_admitted_if_a_slot_is_free_before_it_is_read(
    harness: Make,
) -> None:
    h = harness(Budget(limit=1, reserve=1))
    _, first = await h.connect()
    protocol = await h.admitted()
    second = await h.connect()  # at the limit: waits in the reserve, nothing read yet
    first.close()
    async with asyncio.timeout(DEADLINE):
        await protocol.lost.wait()
    assert await _echoes(*second), "admitted after all, its first bytes intact"
    assert (h.budget.open, h.budget.waiting, h.budget.refused) == (1, 0, 0)


@on_both_loops
async def test_websocket_transports_take_admitted_and_waiting_connections(harness: Make) -> None:
    """The WebSocket port's transports after the reserve watched the socket."""
    h = harness(Budget(limit=1, reserve=1), connect=websocket_connect)
    first = await h.connect()
    protocol = await h.admitted()
    assert await _echoes(*first)
    second = await h.connect()
    first[1].close()
    async with asyncio.timeout(DEADLINE):
        await protocol.lost.wait()
    assert await _echoes(*second)
    assert h.budget.open == 1


@on_both_loops
async def test_a_silent_connection_in_the_reserve_is_closed_after_the_header_timeout(
    harness: Make,
) -> None:
    h = harness(Budget(limit=0, reserve=1), header_timeout=0.05)
    reader, _ = await h.connect()
    assert await _closed(reader) == b""
    assert (h.budget.refused, h.budget.waiting) == (1, 0)


@on_both_loops
async def test_a_slot_is_released_once_however_often_it_is_asked(harness: Make) -> None:
    h = harness(Budget(limit=2, reserve=0))
    await h.connect()
    protocol = await h.admitted()
    protocol.slot.release()
    protocol.slot.release()
    assert (h.budget.open, h.listener.open) == (0, 0)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class OutOfFiles(socket.socket):
    """A listening socket whose first ``failures`` accepts fail with EMFILE."""

    failures = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


@on_both_loops
async def test_out_of_files_accepting_pauses_logs_one_line_and_resumes(harness: Make) -> None:
    sock = OutOfFiles(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.failures = 5
    h = harness(Budget(limit=10, reserve=0), sock, backoff=0.01)
    records = Records()
    logging.getLogger("tidings").addHandler(records)
    try:
        client = await h.connect()
        await h.admitted()
    finally:
        logging.getLogger("tidings").removeHandler(records)
    assert await _echoes(*client)
    assert h.budget.backoffs == 5
    assert len(records.lines) == 1, records.lines
    assert "accepting paused" in records.lines[0] and "test port" in records.lines[0]


def test_backoffs_are_reported_once_per_interval_with_the_number_left_unreported(caplog):
    now = [100.0]
    budget = Budget(limit=1, reserve=0, report_every=60.0, clock=lambda: now[0])
    error = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level(logging.WARNING, logger="tidings"):
        for _ in range(1000):
            budget.report_backoff("HTTP", error, 0.5)
            now[0] += 0.5
    lines = [r.getMessage() for r in caplog.records]
    assert budget.backoffs == 1000
    assert len(lines) == 9  # 500 s: one line at 0, 60, ... 480 s
    assert "Too many open files" in lines[0] and "more since" not in lines[0]
    assert "119 more since the last report" in lines[1]


@on_both_loops
async def test_closing_stops_accepting_and_drops_the_reserve(harness: Make) -> None:
    h = harness(Budget(limit=0, reserve=1))
    reader, _ = await h.connect()
    port = h.listener.port
    assert await _reset_at_once(port)  # accepted after the first: that one is in the reserve
    assert h.budget.waiting == 1
    h.listener.close()
    assert await _closed(reader) == b""
    assert h.budget.waiting == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


def test_http_response_is_complete_and_closes():
    response = http_response(503, "Service Unavailable", b"{}", "application/json", {"A": "b"})
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 503 Service Unavailable",
        b"Content-Type: application/json",
        b"Content-Length: 2",
        b"Connection: close",
        b"A: b",
    ]
    assert body == b"{}"
