"""docs/lime.md, Session: "A connection that has not established its session within
``establish_timeout_s`` gets ``failed`` 16." The session names the deadline, the gateway's timer
fires it; an established session has none. Nothing here sleeps: each test waits for an event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.lime_wire import WireClient
from tests.raw_ws import CLOSE, RawWebSocket
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory: Path = tmp_path_factory.mktemp("establish-timeout")
    config = directory / "tidings.toml"
    config.write_text(f"establish_timeout_s = {TIMEOUT_S}\n")
    process = ServerProcess(directory / "data", args=["--allow-guests", "--config", str(config)])
    process.start()
    yield process
    process.stop()


async def until_closed(ws: RawWebSocket) -> tuple[list[dict[str, Any]], int | None]:
    """The envelopes the server sent up to its close frame, and the close code."""
    envelopes = []
    while True:
        frame = await ws.recv()
        assert frame is not None, "the connection ended without a close frame"
        if frame.opcode == CLOSE:
            return envelopes, frame.close_code
        envelopes.append(json.loads(frame.payload))


async def test_a_silent_connection_fails_with_16(server: ServerProcess) -> None:
    ws = await RawWebSocket.connect("127.0.0.1", server.ws_port, "lime")
    envelopes, code = await until_closed(ws)
    assert envelopes == [
        {
            "from": "postmaster@localhost/server",
            "state": "failed",
            "reason": {
                "code": 16,
                "description": f"The session was not established within {TIMEOUT_S:g} s",
            },
        }
    ]
    assert code == 1000


async def test_a_session_stuck_in_authentication_fails_with_16(server: ServerProcess) -> None:
    ws = await RawWebSocket.connect("127.0.0.1", server.ws_port, "lime")
    ws.send_text(json.dumps({"state": "new"}))
    envelopes, _ = await until_closed(ws)
    authenticating, failed = envelopes
    assert authenticating["state"] == "authenticating"
    assert failed["state"] == "failed" and failed["reason"]["code"] == 16
    assert failed["id"] == authenticating["id"]


async def test_an_established_session_has_no_deadline(server: ServerProcess) -> None:
    alice = await WireClient.guest(server.ws_url, "alice@localhost/a")
    # A connection opened after alice's times out: by then alice's deadline has passed too.
    late = await RawWebSocket.connect("127.0.0.1", server.ws_port, "lime")
    [failed], _ = await until_closed(late)
    assert failed["reason"]["code"] == 16
    pong = await alice.command(id="p", method="get", uri="/ping")
    assert pong["status"] == "success"
