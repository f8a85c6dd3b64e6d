"""What a session's record keeps across a server restart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", args=["--allow-guests"]).start()
    yield process
    process.stop()


async def test_last_seen_is_the_disconnect_time_after_a_restart(server):
    """Idle collection counts from the last disconnect, so a session that stayed connected for
    long must not look idle since its connect once the server restarts."""
    identity = f"guest-{uuid.uuid4().hex[:12]}@localhost"
    phone = await WireClient.guest(server.ws_url, f"{identity}/phone")
    connected_before = time.time()
    await phone.finish()
    await phone.closed()
    assert server.stop() == 0
    server.restart()
    laptop = await WireClient.guest(server.ws_url, f"{identity}/laptop")
    listed = await laptop.command(id="l", method="get", uri="/sessions")
    items = {item["name"]: item for item in listed["resource"]["items"]}
    assert not items["phone"]["online"]
    assert items["phone"]["lastSeen"] >= connected_before
