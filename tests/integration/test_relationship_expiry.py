"""Relationship expiry on a real ``tidings serve``: an invite with a short ``grantExpiresAt``,
accepted; the requester's open Feedme feed ``~bob/NAME`` is terminated with ``ACCESS_REVOKED``
when the relationship expires (the server's expiry task), both inboxes hear
``relationship-expired``, the relationship reads ``expired`` and chat on it is refused with
``cmc-relationship-expired``. And an out-of-range ``grantExpiresAt`` is refused with
``cmc-grant-expiry-out-of-range``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

NAMES = ("alice", "bob")
GRANT_S = 5
"""How long the relationship lasts: long enough to accept and open the feed first."""
TERMINATION_TIMEOUT_S = GRANT_S + 60.0
"""Generous: the wait ends at the termination, this only bounds a failure."""


@pytest.fixture(scope="module")
def expiry_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    data_dir: Path = tmp_path_factory.mktemp("relationship-expiry")
    server = ServerProcess(data_dir)
    keys = {}
    server.add_accounts({name: f"{name}-pw" for name in NAMES})
    for name in NAMES:
        keys[name] = server.tidings("account", "key", name).stdout.strip()
    server.start()
    try:
        yield server, keys
    finally:
        server.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def invite_body(feed: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "appCode": "cardio",
        "displayName": "Cardio study",
        "consent": {"en": "We read your heart rate for a few seconds."},
        "requestedPermissions": [{"resource": f"feed:{feed}", "level": "read"}],
    }
    return body | overrides


async def feedme(server: ServerProcess, key: str) -> WireClient:
    client = await WireClient.connect(f"{server.ws_url}?token={key}", subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    answer = await client.expect(lambda m: m.get("MessageType") == "HandshakeResponse")
    assert answer["Success"] is True
    return client


async def open_feed(client: WireClient, name: str) -> dict[str, Any]:
    client.send({"MessageType": "FeedOpen", "FeedName": name, "FeedArgs": {}})
    return await client.expect(
        lambda m: m.get("MessageType") == "FeedOpenResponse" and m.get("FeedName") == name
    )


async def test_an_open_feed_is_terminated_when_the_relationship_expires(expiry_server):
    server, keys = expiry_server
    alice, bob = bearer(keys["alice"]), bearer(keys["bob"])
    feed = f"heart-rate-{uuid.uuid4().hex[:8]}"
    name = f"~bob/{feed}"
    try:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
            published = await http.post(
                f"/feeds/{name}/actions",
                headers=bob,
                json={"action_name": "init", "feed_data": {"bpm": 61}},
            )
            assert published.status_code == 200, published.text

            grant_expires_at = int(time.time()) + GRANT_S
            created = await http.post(
                "/consent/invites",
                headers=alice,
                json=invite_body(feed, grantExpiresAt=grant_expires_at),
            )
            assert created.status_code == 201, created.text
            assert created.json()["grantExpiresAt"] == grant_expires_at
            accepted = await http.post(created.json()["capabilityUrl"] + "/accept", headers=bob)
            assert accepted.status_code == 201, accepted.text
            relationship = accepted.json()
            assert relationship["expiresAt"] == grant_expires_at
            assert relationship["state"] == "active"
            path = f"/consent/relationships/{relationship['id']}"

            reader = await feedme(server, keys["alice"])
            opened = await open_feed(reader, name)
            assert opened["Success"] is True, opened
            assert opened["FeedData"] == {"bpm": 61}

            terminated = await reader.expect(
                lambda m: m.get("MessageType") == "FeedTermination", timeout=TERMINATION_TIMEOUT_S
            )
            assert terminated["FeedName"] == name
            assert terminated["ErrorCode"] == "ACCESS_REVOKED"
            assert terminated["ErrorData"]["errorId"] == "not-granted"

            # the expiry was recorded before the listeners were told: it reads at once
            for side in (alice, bob):
                seen = await http.get(path, headers=side)
                assert seen.json()["state"] == "expired", seen.text
                inbox = (await http.get("/consent/inbox?since=0", headers=side)).json()["items"]
                expired = [e for e in inbox if e["kind"] == "relationship-expired"]
                assert [e["data"] for e in expired] == [
                    {"relationshipId": relationship["id"], "expiresAt": grant_expires_at}
                ]
            chat = await http.post(f"{path}/chat", headers=alice, json={"text": "still there?"})
            assert (chat.status_code, chat.json()["error_id"]) == (410, "cmc-relationship-expired")
            denied = await http.get(f"/feeds/{name}", headers=alice)
            assert (denied.status_code, denied.json()["error_id"]) == (403, "not-granted")
            reader.send({"MessageType": "FeedClose", "FeedName": name, "FeedArgs": {}})
            again = await open_feed(reader, name)
            assert (again["Success"], again["ErrorCode"]) == (False, "UNAUTHORIZED")
    finally:
        await WireClient.close_all()


@pytest.mark.parametrize("ahead", [-10, 0, 366 * 86400])
async def test_a_grant_expiry_out_of_range_is_refused(expiry_server, ahead):
    server, keys = expiry_server
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        answer = await http.post(
            "/consent/invites",
            headers=bearer(keys["alice"]),
            json=invite_body("x", grantExpiresAt=int(time.time()) + ahead),
        )
    problem = answer.json()
    assert (answer.status_code, problem["error_id"]) == (422, "cmc-grant-expiry-out-of-range")
