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
    process.add_accounts({"ann": "pw", "crash": "pw"})
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def token(gate_server: ServerProcess) -> str:
    return gate_server.tidings("account", "key", "ann").stdout.strip()


def is_type(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("MessageType") == name


async def refused(client: WireClient) -> bool:
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    ended = await client.expect(
        lambda m: m.get("MessageType") == "HandshakeResponse" or "__disconnected__" in m
    )
    return "__disconnected__" in ended


async def test_a_handshake_listener_can_refuse_a_client(gate_server):
    client = await WireClient.connect(gate_server.ws_url, subprotocol="feedme")
    assert await refused(client), "the listener's refusal came after a HandshakeResponse"


async def test_a_failing_handshake_listener_refuses_the_client(gate_server):
    key = gate_server.tidings("account", "key", "crash").stdout.strip()
    client = await WireClient.connect(f"{gate_server.ws_url}?token={key}", subprotocol="feedme")
    assert await refused(client), "a guard that raised let the client in"


async def test_a_handshake_listener_lets_a_member_in(gate_server, token):
    client = await WireClient.connect(f"{gate_server.ws_url}?token={token}", subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    response = await client.expect(is_type("HandshakeResponse"))
    assert response == {"MessageType": "HandshakeResponse", "Success": True, "Version": "0.1"}


LOBBY = {"FeedName": "lobby", "FeedArgs": {}}


async def member(server: ServerProcess, token: str) -> WireClient:
    client = await WireClient.connect(f"{server.ws_url}?token={token}", subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    await client.expect(is_type("HandshakeResponse"))
    return client


async def call(client: WireClient, action: str, callback_id: str, **args: object) -> dict[str, Any]:
    client.send(
        {
            "MessageType": "Action",
            "ActionName": action,
            "CallbackId": callback_id,
            "ActionArgs": args,
        }
    )
    answer = await client.expect(lambda m: m.get("CallbackId") == callback_id)
    assert answer["Success"] is True, answer
    return dict(answer["ActionData"])


async def open_lobby(client: WireClient) -> None:
    client.send({"MessageType": "FeedOpen", **LOBBY})
    opened = await client.expect(is_type("FeedOpenResponse"))
    assert opened["Success"] is True and opened["FeedData"] == {"members": 1}


async def test_the_feed_close_response_waits_for_the_listener(gate_server, token):
    client = await member(gate_server, token)
    await open_lobby(client)
    before = len((await call(client, "closes", "c0"))["closes"])
    client.send({"MessageType": "FeedClose", **LOBBY})
    closed = await client.expect(is_type("FeedCloseResponse"))
    assert closed == {"MessageType": "FeedCloseResponse", **LOBBY}
    assert len((await call(client, "closes", "c1"))["closes"]) == before + 1


async def test_a_close_answered_by_a_termination_is_not_answered_again(gate_server, token):
    """Close, get terminated while the listener runs (that answers the close), reopen and close
    again: the first listener's late response must not answer the second close."""
    client = await member(gate_server, token)
    await open_lobby(client)
    before = len((await call(client, "closes", "k0"))["closes"])
    await call(client, "close_delay", "d1", seconds=0.2)
    client.send({"MessageType": "FeedClose", **LOBBY})  # its listener ends first...
    await call(client, "kick", "k1")
    await client.expect(is_type("FeedCloseResponse"))  # the termination answered it
    await open_lobby(client)
    await call(client, "close_delay", "d2", seconds=0.6)
    client.send({"MessageType": "FeedClose", **LOBBY})  # ...this one's ends 0.4 s later
    await client.expect(is_type("FeedCloseResponse"))
    assert len((await call(client, "closes", "k2"))["closes"]) == before + 2
    await call(client, "close_delay", "d3", seconds=0.2)
