"""The store is chosen by configuration: ``store = "memory"`` runs the whole server on the
in-memory adapter (the one the core unit tests use), with nothing written to the data folder."""

from __future__ import annotations

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration


async def test_a_server_on_the_memory_store_routes_and_keeps_nothing_on_disk(tmp_path):
    server = ServerProcess(tmp_path / "data", args=["--allow-guests", "--store", "memory"])
    server.start()
    try:
        alice = await WireClient.guest(server.ws_url, "alice-m@localhost/a")
        await alice.set_receipt("accepted")
        bob = await WireClient.guest(server.ws_url, "bob-m@localhost/b")
        alice.send({"id": "m1", "to": "bob-m@localhost/b", "type": "text/plain", "content": "hi"})
        assert (await alice.expect(lambda e: e.get("id") == "m1"))["event"] == "accepted"
        assert (await bob.expect(lambda e: e.get("id") == "m1"))["content"] == "hi"
        await WireClient.close_all()
    finally:
        server.stop()
    assert not (tmp_path / "data" / "tidings.db").exists()


def test_an_unknown_store_is_refused_at_start_naming_the_setting(tmp_path):
    server = ServerProcess(tmp_path, args=["--store", "mongo"])
    with pytest.raises(RuntimeError) as failed:
        server.start()
    assert "store" in str(failed.value)
