"""A client sending faster than its rate is slowed down (not read), never refused or dropped,
and everyone else keeps being served meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

RATE, BURST, FLOOD = 200, 20, 300


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("flood")
    config = data_dir / "tidings.toml"
    config.write_text(f"rate_limit = {RATE}\nrate_burst = {BURST}\n")
    process = ServerProcess(
        data_dir, args=["--allow-guests", "--config", str(config), "--app", "examples.counter:app"]
    )
    process.start()
    yield process
    process.stop()


async def test_a_lime_flood_is_slowed_and_delivered_whole_in_order(slow_server):
    before = slow_server.metric("connections_throttled_total")
    receiver = await WireClient.guest(slow_server.ws_url, "sink@localhost/r")
    flooder = await WireClient.guest(slow_server.ws_url, "flood@localhost/f")
    bystander = await WireClient.guest(slow_server.ws_url, "calm@localhost/b")
    for n in range(FLOOD):  # fire-and-forget: a refusal could only fail the session
        flooder.send({"to": "sink@localhost/r", "type": "text/plain", "content": f"m{n}"})
    bystander.send({"id": "ping", "method": "get", "uri": "/ping"})
    pong = await bystander.expect(lambda e: e.get("id") == "ping")
    assert pong["status"] == "success"
    contents = [
        (await receiver.expect(lambda e: e.get("type") == "text/plain"))["content"]
        for _ in range(FLOOD)
    ]
    assert contents == [f"m{n}" for n in range(FLOOD)]
    assert slow_server.metric("connections_throttled_total") > before
    alive = await flooder.command(id="after", method="get", uri="/ping")
    assert alive["status"] == "success"
    assert not [e for e in flooder.held if "state" in e or e.get("event") == "failed"]


async def test_a_feedme_flood_gets_every_action_answered(slow_server):
    before = slow_server.metric("connections_throttled_total")
    client = await WireClient.connect(slow_server.ws_url, subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    await client.expect(lambda m: m.get("MessageType") == "HandshakeResponse")
    for n in range(FLOOD):
        client.send(
            {
                "MessageType": "Action",
                "ActionName": "increment",
                "CallbackId": str(n),
                "ActionArgs": {"by": 1},
            }
        )
    answered = set()
    for _ in range(FLOOD):
        response = await client.expect(lambda m: m.get("MessageType") == "ActionResponse")
        assert response["Success"] is True, response
        answered.add(response["CallbackId"])
    assert answered == {str(n) for n in range(FLOOD)}
    assert slow_server.metric("connections_throttled_total") > before
