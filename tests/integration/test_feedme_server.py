"""Feedme end to end against a real server: app actions and feeds, revelations, HTTP publish."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

from tidings.protocol.feedme import Delta, apply_deltas, feed_md5

pytestmark = pytest.mark.integration
TOKEN = "test-api-token"


@pytest.fixture(scope="module")
def feed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("feeds")
    process = ServerProcess(
        data_dir, args=["--app", "examples.chat_room:app", "--api-token", TOKEN]
    )
    assert process.tidings("account", "add", "ann", "--password", "pw").returncode == 0
    process.start()
    yield process
    process.stop()


async def reply(client: WireClient, message_type: str) -> dict[str, Any]:
    """The next message of that MessageType (others are held for later)."""
    return await client.expect(lambda m: m.get("MessageType") == message_type)


async def handshake(server: ServerProcess, query: str = "") -> WireClient:
    client = await WireClient.connect(server.ws_url + query, subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    response = await reply(client, "HandshakeResponse")
    assert response == {"MessageType": "HandshakeResponse", "Success": True, "Version": "0.1"}
    return client


def room(name: str) -> dict[str, object]:
    return {"FeedName": "room", "FeedArgs": {"room": name}}


def action(name: str, callback_id: str, args: object) -> dict[str, object]:
    return {
        "MessageType": "Action",
        "ActionName": name,
        "CallbackId": callback_id,
        "ActionArgs": args,
    }


async def open_feed(client: WireClient, feed: dict[str, object]) -> dict[str, Any]:
    """Send FeedOpen for ``feed`` (FeedName and FeedArgs): the FeedOpenResponse."""
    client.send({"MessageType": "FeedOpen", **feed})
    return await reply(client, "FeedOpenResponse")


async def test_open_a_room_and_see_a_revelation_applied_with_its_md5(feed_server):
    key = feed_server.tidings("account", "key", "ann").stdout.strip()
    reader = await handshake(feed_server)
    opened = await open_feed(reader, room("lobby"))
    assert opened["Success"] is True and opened["FeedData"] == {"messages": []}
    speaker = await handshake(feed_server, f"?token={key}")
    speaker.send(action("say", "1", {"room": "lobby", "text": "hi all"}))
    done = await reply(speaker, "ActionResponse")
    assert done == {
        "MessageType": "ActionResponse",
        "CallbackId": "1",
        "Success": True,
        "ActionData": {},
    }
    revealed = await reply(reader, "ActionRevelation")
    assert revealed["ActionData"] == {"from": "ann@localhost", "text": "hi all"}
    data = apply_deltas(
        opened["FeedData"],
        [Delta(**{k.lower(): v for k, v in d.items()}) for d in revealed["FeedDeltas"]],
    )
    assert data == {"messages": [{"from": "ann@localhost", "text": "hi all"}]}
    assert feed_server.metric("feed_deliveries_total") >= 1


async def test_anonymous_speaker_is_refused_and_unknown_action_is_internal_error(feed_server):
    client = await handshake(feed_server)
    client.send(action("say", "a", {"room": "lobby", "text": "x"}))
    refused = await client.expect(lambda m: m.get("CallbackId") == "a")
    assert refused["Success"] is False and refused["ErrorCode"] == "UNAUTHORIZED"
    client.send(action("dance", "b", {}))
    missing = await client.expect(lambda m: m.get("CallbackId") == "b")
    assert missing["ErrorCode"] == "INTERNAL_ERROR"


async def test_bad_token_refuses_the_upgrade(feed_server):
    with pytest.raises(Exception, match="401"):
        await WireClient.connect(feed_server.ws_url + "?token=nope", subprotocol="feedme")


async def violation(client: WireClient) -> str:
    answer = await reply(client, "ViolationResponse")
    return str(answer["Diagnostics"]["Problem"])


async def test_raw_negative_probe(feed_server):
    """Out-of-order and invalid messages, each answered with the precise ViolationResponse;
    the connection and other clients keep working."""
    client = await WireClient.connect(feed_server.ws_url, subprotocol="feedme")
    client.send(action("say", "1", {}))
    assert await violation(client) == "Handshake required."
    client.send_raw(b"{not json")
    assert await violation(client) == "Invalid JSON or schema violation."
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    await reply(client, "HandshakeResponse")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    assert await violation(client) == "Unexpected Handshake message."
    client.send({"MessageType": "FeedClose", **room("never-opened")})
    assert await violation(client) == "Unexpected FeedClose message."
    for bad in (
        {"MessageType": "FeedOpen", "FeedName": "", "FeedArgs": {}},
        {"MessageType": "FeedOpen", "FeedName": "room", "FeedArgs": {"n": 1}},
        action("say", "x", []),
        {**action("say", "x", {}), "Extra": 1},
        {"MessageType": "FeedAction", "FeedName": "room", "FeedArgs": {}},
        [1, 2],
    ):
        client.send(bad)  # type: ignore[arg-type]
        assert await violation(client) == "Invalid JSON or schema violation."
    client.send({"MessageType": "FeedOpen", **room("probe")})
    client.send({"MessageType": "FeedOpen", **room("probe")})
    assert await violation(client) == "Unexpected FeedOpen message."
    opened = await reply(client, "FeedOpenResponse")
    assert opened["Success"] is True
    bystander = await handshake(feed_server)
    bystander.send(action("dance", "z", {}))
    answer = await bystander.expect(lambda m: m.get("CallbackId") == "z")
    assert answer["ErrorCode"] == "INTERNAL_ERROR"


async def test_binary_frame_closes_the_connection(feed_server):
    client = await handshake(feed_server)
    client.send_raw(b"\x00", binary=True)
    await client.closed()


async def test_http_publish_keeps_the_document_and_reveals_with_md5(feed_server):
    client = await handshake(feed_server)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{feed_server.http_url}/feeds/scores/actions"
    async with httpx.AsyncClient() as http:
        first = await http.post(
            url,
            headers=headers,
            json={
                "action_name": "init",
                "feed_args": {"game": "g1"},
                "feed_data": {"home": 0, "away": 0},
            },
        )
        assert first.status_code == 200, first.text
        opened = await open_feed(client, {"FeedName": "scores", "FeedArgs": {"game": "g1"}})
        assert opened["FeedData"] == {"home": 0, "away": 0}
        goal = await http.post(
            url,
            headers=headers,
            json={
                "action_name": "goal",
                "action_data": {"team": "home"},
                "feed_args": {"game": "g1"},
                "deltas": [{"Operation": "Increment", "Path": ["home"], "Value": 1}],
            },
        )
        assert goal.json()["delivered"] == 1
        revealed = await reply(client, "ActionRevelation")
        assert revealed["FeedMd5"] == feed_md5({"home": 1, "away": 0})
        bad = await http.post(
            url,
            headers=headers,
            json={
                "action_name": "goal",
                "feed_args": {"game": "g1"},
                "deltas": [{"Operation": "Increment", "Path": ["nothere"], "Value": 1}],
            },
        )
        assert bad.status_code == 409
        assert bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["error_id"] == "invalid-delta"
        read = await http.get(f"{feed_server.http_url}/feeds/scores", params={"game": "g1"})
        assert read.json()["feed_data"] == {"home": 1, "away": 0}
        denied = await http.post(url, json={"action_name": "x", "feed_data": {}})
        assert denied.status_code == 403
        invalid = await http.post(url, headers=headers, json={"action_name": ""})
        assert invalid.status_code == 422 and invalid.json()["error_id"] == "invalid-argument"
    assert json.loads(json.dumps(revealed))  # plain JSON on the wire


async def test_published_document_survives_a_restart(tmp_path):
    server = ServerProcess(tmp_path, args=["--api-token", TOKEN]).start()
    try:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{server.http_url}/feeds/board/actions",
                headers={"Authorization": f"Bearer {TOKEN}"},
                json={"action_name": "set", "feed_data": {"pinned": ["a"]}},
            )
            assert response.status_code == 200
        server.kill()
        server.restart()
        client = await handshake(server)
        opened = await open_feed(client, {"FeedName": "board", "FeedArgs": {}})
        assert opened["FeedData"] == {"pinned": ["a"]}
    finally:
        server.stop()
