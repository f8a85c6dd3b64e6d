"""Granted reads of an account's own feeds end to end, on real sockets, with the server run in
process so that a test ``GrantChecker`` stands in for the consent service: a grantee opens
``~bob/NAME`` over Feedme and reads it over HTTP, sees bob's publications, and the moment the
grant goes its open feed is terminated with ``ACCESS_REVOKED`` and every read is refused.
The last test drives the same path through the real consent service (invite, accept,
revoke), called in process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.unit.core.grants_fake import FakeGrants

from tidings.config import Settings
from tidings.wiring import TidingsServer

pytestmark = pytest.mark.integration
TOKEN = "in-process-token"
BOB, ANN = "bob@localhost", "ann@localhost"


class Running:
    def __init__(self, server: TidingsServer, grants: FakeGrants, keys: dict[str, str]) -> None:
        self.server = server
        self.grants = grants
        self.keys = keys
        self.ws_url = f"ws://127.0.0.1:{server.ws_port}/"
        self.http_url = f"http://127.0.0.1:{server.http_port}"

    async def settled(self) -> None:
        assert self.server.services is not None
        await self.server.services.owner_feeds.settled()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    settings = Settings(ws_port=0, http_port=0, data_dir=tmp_path, api_token=TOKEN)
    grants = FakeGrants()
    server = TidingsServer(settings, grant_checker=grants)
    await server.start()
    try:
        assert server.services is not None
        accounts = server.services.accounts
        keys = {}
        for name in ("bob", "ann"):
            await accounts.add(name, f"{name}-password")
            keys[name] = await accounts.create_key(name)
        yield Running(server, grants, keys)
    finally:
        await WireClient.close_all()
        await server.stop()


async def feedme(running: Running, key: str) -> WireClient:
    client = await WireClient.connect(f"{running.ws_url}?token={key}", subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    await client.expect(lambda m: m.get("MessageType") == "HandshakeResponse")
    return client


async def open_feed(client: WireClient, name: str) -> dict[str, Any]:
    client.send({"MessageType": "FeedOpen", "FeedName": name, "FeedArgs": {}})
    return await client.expect(lambda m: m.get("MessageType") == "FeedOpenResponse")


async def publish(http: httpx.AsyncClient, running: Running, body: dict[str, Any]) -> None:
    answer = await http.post(
        f"{running.http_url}/feeds/~bob/heart-rate/actions",
        headers={"Authorization": f"Bearer {running.keys['bob']}"},
        json=body,
    )
    assert answer.status_code == 200, answer.text


async def test_a_grantee_reads_until_revoked_and_its_open_feed_is_terminated(running):
    url = f"{running.http_url}/feeds/~bob/heart-rate"
    ann_key = {"Authorization": f"Bearer {running.keys['ann']}"}
    async with httpx.AsyncClient() as http:
        await publish(http, running, {"action_name": "init", "feed_data": {"bpm": 60}})
        ann = await feedme(running, running.keys["ann"])
        refused = await open_feed(ann, "~bob/heart-rate")
        assert (refused["Success"], refused["ErrorCode"]) == (False, "UNAUTHORIZED")
        assert (await http.get(url, headers=ann_key)).status_code == 403

        running.grants.grant(BOB, ANN, "feed:heart-*", "read")
        await running.settled()
        opened = await open_feed(ann, "~bob/heart-rate")
        assert opened["Success"] is True and opened["FeedData"] == {"bpm": 60}
        assert (await http.get(url, headers=ann_key)).json()["feed_data"] == {"bpm": 60}
        bob = await feedme(running, running.keys["bob"])
        assert (await open_feed(bob, "~bob/heart-rate"))["Success"] is True

        delta = {"Operation": "Increment", "Path": ["bpm"], "Value": 1}
        await publish(http, running, {"action_name": "beat", "deltas": [delta]})
        revealed = await ann.expect(lambda m: m.get("MessageType") == "ActionRevelation")
        assert revealed["FeedName"] == "~bob/heart-rate" and revealed["ActionName"] == "beat"

        running.grants.revoke(BOB, ANN)
        terminated = await ann.expect(lambda m: m.get("MessageType") == "FeedTermination")
        assert terminated["FeedName"] == "~bob/heart-rate"
        assert terminated["ErrorCode"] == "ACCESS_REVOKED"
        assert terminated["ErrorData"]["errorId"] == "not-granted"
        denied = await http.get(url, headers=ann_key)
        assert (denied.status_code, denied.json()["error_id"]) == (403, "not-granted")

        await publish(http, running, {"action_name": "beat", "deltas": [delta]})
        seen = await bob.expect(lambda m: m.get("MessageType") == "ActionRevelation")
        assert seen["ActionName"] == "beat"  # the owner's feed stays open
        ann.send({"MessageType": "FeedClose", "FeedName": "~bob/heart-rate", "FeedArgs": {}})
        again = await open_feed(ann, "~bob/heart-rate")
        assert (again["Success"], again["ErrorCode"]) == (False, "UNAUTHORIZED")
    assert running.server.services is not None
    assert running.server.services.owner_feeds.terminated == 1


async def test_granted_account_and_presence_reads_over_lime(running):
    ann = await WireClient.connect(running.ws_url)
    session = await ann.establish(f"{ANN}/{uuid.uuid4().hex[:6]}", password="ann-password")
    assert session["state"] == "established"

    async def get(uri: str) -> dict[str, Any]:
        return await ann.command(id=str(uuid.uuid4()), method="get", uri=uri)

    for uri in ("lime://bob@localhost/account", "lime://bob@localhost/presence"):
        assert (await get(uri))["reason"]["code"] == 35
    running.grants.grant(BOB, ANN, "account", "read")
    running.grants.grant(BOB, ANN, "presence", "read")
    account = await get("lime://bob@localhost/account")
    assert account["status"] == "success" and account["resource"]["identity"] == BOB
    presence = await get("lime://bob@localhost/presence")
    assert presence["status"] == "success"
    running.grants.revoke(BOB, ANN)
    assert (await get("lime://bob@localhost/account"))["reason"]["code"] == 35


@pytest.fixture
async def consenting(tmp_path: Path) -> AsyncIterator[Running]:
    """The server as wired: authorization asks the consent service's grants."""
    settings = Settings(ws_port=0, http_port=0, data_dir=tmp_path, api_token=TOKEN)
    server = TidingsServer(settings)
    await server.start()
    try:
        assert server.services is not None
        accounts = server.services.accounts
        keys = {}
        for name in ("bob", "ann"):
            await accounts.add(name, f"{name}-password")
            keys[name] = await accounts.create_key(name)
        yield Running(server, FakeGrants(), keys)
    finally:
        await WireClient.close_all()
        await server.stop()


async def test_an_accepted_invite_grants_the_feed_and_revoking_it_terminates_the_open_feed(
    consenting,
):
    """The consent service end to end in process: ann asks for bob's heart-* feeds, bob
    accepts, ann's client opens ~bob/heart-rate; bob revokes and the feed is terminated."""
    services = consenting.server.services
    assert services is not None
    consent = services.consent
    async with httpx.AsyncClient() as http:
        await publish(http, consenting, {"action_name": "init", "feed_data": {"bpm": 60}})
    ann = await feedme(consenting, consenting.keys["ann"])
    assert (await open_feed(ann, "~bob/heart-rate"))["ErrorCode"] == "UNAUTHORIZED"
    _, token = await consent.create_invite(
        ANN,
        app_code="cardio",
        display_name="Cardio study",
        consent={"en": "Share your heart rate with the study"},
        permissions=[{"resource": "feed:heart-*", "level": "read"}],
    )
    relationship = await consent.accept(token, BOB)
    opened = await open_feed(ann, "~bob/heart-rate")
    assert opened["Success"] is True and opened["FeedData"] == {"bpm": 60}
    steps = await open_feed(ann, "~bob/steps")  # not in the grant
    assert (steps["Success"], steps["ErrorData"]["errorId"]) == (False, "not-granted")
    await consent.revoke(relationship.id, BOB, reason="study over")
    terminated = await ann.expect(lambda m: m.get("MessageType") == "FeedTermination")
    assert (terminated["FeedName"], terminated["ErrorCode"]) == (
        "~bob/heart-rate",
        "ACCESS_REVOKED",
    )
