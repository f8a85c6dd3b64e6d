"""Connections on both ports count against one limit (max_connections): beyond it a request is
refused with 503 (health and metrics are still answered) from a small reserve, beyond that a
connection is reset at once; a request head that does not come in time closes the connection;
running out of files pauses accepting with one log line, and the server recovers."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests import server_process
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

LIMIT = 3
DEADLINE = 15.0


def _start(tmp_path: Path, settings: str, **process: object) -> ServerProcess:
    config = tmp_path / "tidings.toml"
    config.write_text(settings)
    server = ServerProcess(
        tmp_path / "data", args=["--allow-guests", "--config", str(config)], **process
    )
    return server.start()


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = _start(tmp_path, f"max_connections = {LIMIT}\n")
    yield process
    process.stop()


async def test_upgrades_beyond_the_limit_get_503_and_a_freed_slot_is_reused(small_server):
    clients = [await WireClient.connect(small_server.ws_url) for _ in range(LIMIT - 1)]
    clients.append(await WireClient.connect(small_server.ws_url, subprotocol="feedme"))
    session = await clients[0].establish("first@localhost/a", scheme="guest")
    assert session["state"] == "established"  # the server has them all by now
    for subprotocol in ("lime", "feedme"):
        with pytest.raises(Exception, match="503"):
            await WireClient.connect(small_server.ws_url, subprotocol=subprotocol)
    assert small_server.metric("connections_refused_total") == 2
    ping = await clients[0].command(id="p", method="get", uri="/ping")
    assert ping["status"] == "success", "connections already open keep being served"
    clients[1].drop()
    await clients[1].closed()
    again = await WireClient.connect(small_server.ws_url)
    assert (await again.establish("again@localhost/b", scheme="guest"))["state"] == "established"


# Raw TCP clients: connections that never send a byte, or a chosen one.


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (EOF or reset), within DEADLINE."""
    try:
        async with asyncio.timeout(DEADLINE):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    return True


async def _reset_at_once(port: int) -> bool:
    """True when a new connection is closed by the server (maybe before connect returns)."""
    try:
        reader, writer = await _open(port)
    except ConnectionResetError:
        return True
    try:
        return await _closed_by_server(reader)
    finally:
        writer.close()


async def _get(
    port: int, path: str, *, keep_alive: bool = False
) -> tuple[int, bytes, tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """One GET on a fresh connection: (status, body, the connection)."""
    reader, writer = await _open(port)
    connection = "" if keep_alive else "Connection: close\r\n"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n{connection}\r\n".encode())
    async with asyncio.timeout(DEADLINE):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length")
        )
        body = await reader.readexactly(length)
    return int(lines[0].split()[1]), body, (reader, writer)


def _close(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _reader, writer in connections:
        writer.close()


# (a) The limit counts both ports; beyond it: 503 (health and metrics answered), then resets.

FULL, RESERVE = 40, 2


@pytest.fixture
def full_server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = _start(
        tmp_path,
        f"max_connections = {FULL}\nconnection_reserve = {RESERVE}\n"
        "header_timeout_s = 600\nhttp_keep_alive_s = 600\n",
    )
    yield process
    process.stop()


async def test_idle_connections_on_both_ports_fill_the_limit_and_sessions_go_on(full_server):
    server = full_server
    alice = await WireClient.guest(server.ws_url, "alice@localhost/a")
    idle = [await _open(server.ws_port) for _ in range(FULL // 2 - 2)]
    # The listener accepts in order: once bob's upgrade is answered, every idle one before it
    # has been accepted too.
    bob = await WireClient.guest(server.ws_url, "bob@localhost/b")
    idle += [await _open(server.http_port) for _ in range(FULL // 2)]
    try:
        # Accepted after the idle ones, this scrape finds the limit reached: the reserve
        # answers it.
        assert server.metric("tcp_connections_open") == FULL
        assert server.metric("http_connections_open") == FULL // 2
        with pytest.raises(Exception, match="503"):
            await WireClient.connect(server.ws_url)
        status, body, _ = await _get(server.http_port, "/identities/alice@localhost/sessions")
        assert status == 503
        assert json.loads(body)["error_id"] == "connection-limit"
        status, body, _ = await _get(server.http_port, "/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        assert server.metric("connections_refused_total") == 2

        alice.send({"to": "bob@localhost/b", "type": "text/plain", "content": "still here"})
        got = await bob.expect(lambda e: e.get("type") == "text/plain")
        assert got["content"] == "still here", "established sessions keep being served"

        # With the reserve taken too, a new connection is reset at once.
        fillers = [await _open(server.http_port) for _ in range(RESERVE)]
        assert await _reset_at_once(server.http_port)
        for filler_reader, filler_writer in fillers:  # the server lets them go on EOF
            filler_writer.write_eof()
            assert await _closed_by_server(filler_reader)
            filler_writer.close()
        assert server.metric("connections_refused_total") == 2 + 1 + RESERVE
        ping = await alice.command(id="p", method="get", uri="/ping")
        assert ping["status"] == "success"
    finally:
        _close(idle)


# (b) Request heads have a deadline on both ports; so has an idle keep-alive connection.


@pytest.fixture
def hasty_server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = _start(tmp_path, "header_timeout_s = 1\nhttp_keep_alive_s = 1\n")
    yield process
    process.stop()


async def test_silent_and_slow_heads_and_idle_keep_alives_are_closed(hasty_server):
    server = hasty_server
    silent = [await _open(port) for port in (server.ws_port, server.http_port)]
    partial = [await _open(port) for port in (server.ws_port, server.http_port)]
    for _reader, writer in partial:  # a head that never ends
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n")
    status, _, kept = await _get(server.http_port, "/healthz", keep_alive=True)
    assert status == 200
    connections = [*silent, *partial, kept]
    try:
        closed = await asyncio.gather(*(_closed_by_server(reader) for reader, _ in connections))
        assert all(closed)
        assert server.metric("tcp_connections_open") == 1  # this scrape
    finally:
        _close(connections)


# (c) Out of files: accepting pauses with one log line; sessions go on; the server recovers.

NOFILE = 128
STARVING = 2 * NOFILE
LOW_NOFILE = (
    "import resource, runpy, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
    "sys.argv[0] = 'tidings'; "
    "runpy.run_module('tidings', run_name='__main__', alter_sys=True)"
)


class CountedOutput(deque[str]):
    """The server's output: the last lines, and counts of every line and of chosen ones."""

    def __init__(self) -> None:
        super().__init__(maxlen=200)
        self.lines = 0
        self.paused = 0
        self.tracebacks = 0
        self.first_pause = threading.Event()

    def append(self, line: str) -> None:
        self.lines += 1
        if "accepting paused" in line:
            self.paused += 1
            self.first_pause.set()
        if "Traceback" in line:
            self.tracebacks += 1
        super().append(line)


@pytest.fixture
def starved_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    monkeypatch.setattr(server_process, "TIDINGS", [sys.executable, "-c", LOW_NOFILE])
    process = _start(tmp_path, "header_timeout_s = 600\n", output=CountedOutput())
    yield process
    process.stop()


async def test_out_of_files_accepting_pauses_with_one_line_and_recovers(starved_server):
    server = starved_server
    output = server.output
    assert isinstance(output, CountedOutput)
    alice = await WireClient.guest(server.ws_url, "alice@localhost/a")
    flood: list[socket.socket] = []
    try:
        for n in range(STARVING):  # the kernel completes these whether the server accepts or not
            port = server.ws_port if n % 2 else server.http_port
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE))
        assert await asyncio.to_thread(output.first_pause.wait, DEADLINE), server.tail()
        ping = await alice.command(id="p", method="get", uri="/ping")
        assert ping["status"] == "success", "a session keeps being served without files"
    finally:
        for sock in flood:
            sock.close()
    carol = await WireClient.guest(server.ws_url, "carol@localhost/c")
    pong = await carol.command(id="p", method="get", uri="/ping")
    assert pong["status"] == "success", "new sessions once files are free again"
    assert server.metric("accept_backoffs_total") >= 1
    assert server.process is not None and server.process.poll() is None
    assert 1 <= output.paused <= 2, server.tail()
    assert output.tracebacks == 0, server.tail()
    assert output.lines < 20, server.tail()
