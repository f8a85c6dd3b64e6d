"""handshake and feedClose listeners hold the server's response until they return (the seed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess


@pytest.fixture(scope="module")
def gate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("gate")
    process = ServerProcess(data_dir, args=["--app", "tests.integration.gate_app:app"])
    assert process.tidings("account", "add", "ann", "--password", "pw").returncode == 0
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def token(gate_server: ServerProcess) -> str:
    return gate_server.tidings("account", "key", "ann").stdout.strip()


def is_type(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("MessageType") == name


async def test_a_handshake_listener_can_refuse_a_client(gate_server):
    client = await WireClient.connect(gate_server.ws_url, subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    ended = await client.expect(
        lambda m: m.get("MessageType") == "HandshakeResponse" or "__disconnected__" in m
    )
    assert "__disconnected__" in ended, "the listener's refusal came after a HandshakeResponse"


async def test_a_handshake_listener_lets_a_member_in(gate_server, token):
    client = await WireClient.connect(f"{gate_server.ws_url}?token={token}", subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    response = await client.expect(is_type("HandshakeResponse"))
    assert response == {"MessageType": "HandshakeResponse", "Success": True, "Version": "0.1"}


async def test_the_feed_close_response_waits_for_the_listener(gate_server, token):
    client = await WireClient.connect(f"{gate_server.ws_url}?token={token}", subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    await client.expect(is_type("HandshakeResponse"))
    lobby = {"FeedName": "lobby", "FeedArgs": {}}
    client.send({"MessageType": "FeedOpen", **lobby})
    opened = await client.expect(is_type("FeedOpenResponse"))
    assert opened["Success"] is True and opened["FeedData"] == {"members": 1}
    client.send({"MessageType": "FeedClose", **lobby})
    closed = await client.expect(is_type("FeedCloseResponse"))
    assert closed == {"MessageType": "FeedCloseResponse", **lobby}
    client.send(
        {"MessageType": "Action", "ActionName": "closes", "CallbackId": "1", "ActionArgs": {}}
    )
    answer = await client.expect(is_type("ActionResponse"))
    assert "ann@localhost:lobby" in answer["ActionData"]["closes"]
