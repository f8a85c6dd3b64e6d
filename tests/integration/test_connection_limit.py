"""Beyond max_connections the upgrade is refused with 503; a freed slot is usable again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

LIMIT = 3


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[ServerProcess]:
    config = tmp_path / "tidings.toml"
    config.write_text(f"max_connections = {LIMIT}\n")
    process = ServerProcess(tmp_path / "data", args=["--allow-guests", "--config", str(config)])
    process.start()
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
