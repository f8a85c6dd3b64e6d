"""The Pryv CMC acceptance scenarios (reference 1.11) that apply to one Tidings server, one
test each, over HTTP on a real ``tidings serve`` (docs/consent.md maps the others)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

NAMES = ("alice", "bob", "carol", "dave")
FERTILITY = {"resource": "feed:fertility", "level": "read"}
SYMPTOMS = {"resource": "feed:symptoms", "level": "read"}


@pytest.fixture(scope="module")
def cmc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Any]]:
    server = ServerProcess(tmp_path_factory.mktemp("cmc"))
    keys = {}
    server.add_accounts({name: f"{name}-pw" for name in NAMES})
    for name in NAMES:
        keys[name] = server.tidings("account", "key", name).stdout.strip()
    server.start()
    try:
        yield server, keys
    finally:
        server.stop()


class Party:
    """One account speaking HTTP with its API key."""

    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, url: str, body: Any = None, status: int = 200) -> Any:
        answer = await self.http.request(method, url, headers=self.headers, json=body)
        assert answer.status_code == status, answer.text
        return answer.json() if answer.content else None

    async def refused(self, method: str, url: str, body: Any, error_id: str) -> dict[str, Any]:
        answer = await self.http.request(method, url, headers=self.headers, json=body)
        problem: dict[str, Any] = answer.json()
        assert problem["error_id"] == error_id, answer.text
        return problem


@pytest.fixture
async def parties(cmc_server: tuple[ServerProcess, Any]) -> AsyncIterator[dict[str, Party]]:
    server, keys = cmc_server
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        yield {name: Party(http, keys[name]) for name in NAMES}


def invite_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "appCode": "my-app",
        "displayName": "Study 1",
        "consent": {"en": "Share your fertility data for study 1"},
        "requestedPermissions": [FERTILITY],
    }
    return body | overrides


async def invite(alice: Party, **overrides: Any) -> dict[str, Any]:
    created: dict[str, Any] = await alice.call(
        "POST", "/consent/invites", invite_body(**overrides), 201
    )
    return created


async def accepted(alice: Party, bob: Party, **overrides: Any) -> dict[str, Any]:
    created = await invite(alice, **overrides)
    relationship: dict[str, Any] = await bob.call(
        "POST", created["capabilityUrl"] + "/accept", None, 201
    )
    return relationship


async def test_scenario_1_mint_with_default_ttl(parties):
    created = await invite(parties["alice"])
    assert created["status"] == "pending" and created["mode"] == "single-use"
    assert abs(created["expiresAt"] - (time.time() + 7 * 86400)) <= 2
    assert created["capabilityUrl"].startswith("http://")
    token = created["capabilityUrl"].rsplit("/", 1)[1]
    assert len(token) >= 43  # 256 bits, url-safe base64


async def test_scenario_2_ttl_bounds(parties):
    alice = parties["alice"]
    for expires in (time.time() + 30, time.time() + 31 * 86400):
        problem = await alice.refused(
            "POST",
            "/consent/invites",
            invite_body(expiresAt=int(expires)),
            "cmc-capability-ttl-out-of-range",
        )
        assert problem["status"] == 422
    before = await alice.call("GET", "/consent/invites")
    wanted = int(time.time()) + 3600
    created = await invite(alice, expiresAt=wanted)
    assert created["expiresAt"] == wanted
    after = await alice.call("GET", "/consent/invites")
    assert len(after["items"]) == len(before["items"]) + 1  # the refused ones made nothing


async def test_scenario_3_offer_read_through_the_capability_url(parties, cmc_server):
    created = await invite(parties["alice"])
    async with httpx.AsyncClient(timeout=10) as anonymous:
        offer = (await anonymous.get(created["capabilityUrl"])).json()
    assert offer["requester"] == "alice@localhost"
    assert offer["requestedPermissions"] == [FERTILITY]
    assert not {"capabilityUrl", "status", "id", "acceptedBy"} & set(offer)


async def test_scenario_5_deciding_needs_an_account_key(parties, cmc_server):
    """The personal-token gate: only an account's own key accepts; the capability alone (or
    the server's api_token) does not make anyone an accepter (D12)."""
    created = await invite(parties["alice"])
    async with httpx.AsyncClient(timeout=10) as anonymous:
        answer = await anonymous.post(created["capabilityUrl"] + "/accept")
    assert (answer.status_code, answer.json()["error_id"]) == (401, "bad-credentials")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    status = await parties["alice"].call("GET", f"/consent/invites/{created['id']}")
    assert status["status"] == "pending"


async def test_scenario_6_accept_happy_path(parties):
    alice, bob = parties["alice"], parties["bob"]
    relationship = await accepted(alice, bob)
    assert (relationship["requester"], relationship["accepter"]) == (
        "alice@localhost",
        "bob@localhost",
    )
    assert relationship["permissions"] == [FERTILITY]
    status = await alice.call("GET", f"/consent/invites/{relationship['inviteId']}")
    assert status["status"] == "accepted"
    assert status["acceptedBy"][0]["identity"] == "bob@localhost"
    for side in (alice, bob):
        ids = [r["id"] for r in (await side.call("GET", "/consent/relationships"))["items"]]
        assert relationship["id"] in ids


async def test_scenario_7_single_use_re_click(parties):
    alice, bob, carol = parties["alice"], parties["bob"], parties["carol"]
    created = await invite(alice)
    await bob.call("POST", created["capabilityUrl"] + "/accept", None, 201)
    for who in (bob, carol):
        await who.refused(
            "POST", created["capabilityUrl"] + "/accept", None, "cmc-capability-consumed"
        )
    mine = await carol.call("GET", "/consent/relationships")
    assert all(r["inviteId"] != created["id"] for r in mine["items"])


async def test_scenario_8_open_link_accepts_re_click_and_invalidate(parties):
    alice, bob, carol, dave = (parties[n] for n in NAMES)
    created = await invite(alice, mode="open-link")
    url = created["capabilityUrl"]
    first = await bob.call("POST", url + "/accept", None, 201)
    await carol.call("POST", url + "/accept", None, 201)
    status = await alice.call("GET", f"/consent/invites/{created['id']}")
    assert status["status"] == "pending"
    assert {a["identity"] for a in status["acceptedBy"]} == {"bob@localhost", "carol@localhost"}
    await bob.refused("POST", url + "/accept", None, "cmc-capability-already-accepted-by-you")
    invalidated = f"/consent/invites/{created['id']}/invalidate"
    assert (await alice.call("POST", invalidated))["status"] == "invalidated"
    assert (await alice.call("POST", invalidated))["status"] == "invalidated"  # idempotent
    await dave.refused("POST", url + "/accept", None, "cmc-capability-invalidated")
    chat = f"/consent/relationships/{first['id']}/chat"
    await alice.call("POST", chat, {"text": "still here"}, 201)  # earlier ones still work


async def test_scenario_9_grant_subset_rules(parties):
    alice, bob = parties["alice"], parties["bob"]
    created = await invite(alice, requestedPermissions=[FERTILITY, SYMPTOMS], mode="open-link")
    url = created["capabilityUrl"]
    steps = {"resource": "feed:steps", "level": "read"}
    await bob.refused(
        "POST",
        url + "/accept",
        {"grantedPermissions": [steps]},
        "cmc-granted-permissions-not-subset",
    )
    relationship = await bob.call("POST", url + "/accept", {"grantedPermissions": [SYMPTOMS]}, 201)
    assert relationship["permissions"] == [SYMPTOMS]


async def test_scenario_10_chat_round_trip_and_length(parties):
    alice, bob = parties["alice"], parties["bob"]
    relationship = await accepted(alice, bob)
    chat = f"/consent/relationships/{relationship['id']}/chat"
    sent = await alice.call("POST", chat, {"text": "hi"}, 201)
    assert sent["sender"] == "alice@localhost"
    history = await bob.call("GET", chat)
    assert [(m["sender"], m["text"]) for m in history["items"]] == [("alice@localhost", "hi")]
    await bob.call("POST", chat, {"text": "x" * 10240}, 201)
    for text in ("x" * 10241, ""):
        await bob.refused("POST", chat, {"text": text}, "cmc-invalid-event-content")


async def test_scenario_11_feature_gating_comes_from_the_offer(parties):
    alice, bob = parties["alice"], parties["bob"]
    relationship = await accepted(alice, bob, features={"chat": False, "systemMessaging": False})
    base = f"/consent/relationships/{relationship['id']}"
    for who in (alice, bob):
        await who.refused("POST", base + "/chat", {"text": "hi"}, "cmc-chat-disabled")
    alert = {"level": "info", "title": {"en": "x"}, "body": {"en": "y"}}
    await alice.refused("POST", base + "/alerts", alert, "cmc-system-messaging-disabled")
    scope = {"requestedPermissions": [FERTILITY, SYMPTOMS]}
    await alice.call("POST", base + "/scope-requests", scope, 201)  # still possible
    open_relationship = await accepted(alice, bob)  # features omitted: both permitted
    await alice.call(
        "POST", f"/consent/relationships/{open_relationship['id']}/chat", {"text": "ok"}, 201
    )


async def test_scenario_12_alert_and_ack(parties):
    alice, bob = parties["alice"], parties["bob"]
    relationship = await accepted(alice, bob)
    base = f"/consent/relationships/{relationship['id']}"
    alert = {
        "level": "info",
        "title": {"en": "x"},
        "body": {"en": "y"},
        "ackRequired": True,
        "ackId": "d1",
    }
    sent = await alice.call("POST", base + "/alerts", alert, 201)
    inbox = await bob.call("GET", "/consent/inbox")
    assert any(e["kind"] == "alert" for e in inbox["items"])
    acked = await bob.call("POST", f"/consent/alerts/{sent['id']}/ack", {"ackId": "d1"})
    assert acked["ackedBy"] == "bob@localhost"
    answer = await alice.http.post(
        base + "/alerts", headers=alice.headers, json=alert | {"level": "urgent"}
    )
    assert answer.status_code == 422  # not a level: refused before the core
    missing = await bob.http.post(f"/consent/alerts/{sent['id']}/ack", headers=bob.headers, json={})
    assert missing.status_code == 422


async def test_scenario_15_revoke_by_the_accepter_tears_down_both_sides(parties):
    alice, bob = parties["alice"], parties["bob"]
    relationship = await accepted(alice, bob)
    path = f"/consent/relationships/{relationship['id']}"
    revoked = await bob.call("DELETE", path + "?reason=done")
    assert (revoked["state"], revoked["revokedBy"]) == ("revoked", "bob@localhost")
    assert (await alice.call("GET", path))["state"] == "revoked"  # D4: both sides
    events = (await alice.call("GET", "/consent/inbox"))["items"]
    assert events[-1]["kind"] == "relationship-revoked"
    await alice.refused("POST", path + "/chat", {"text": "hi"}, "cmc-relationship-revoked")
    again = await bob.call("DELETE", path)
    assert again["state"] == "revoked"
    assert (await alice.call("GET", "/consent/inbox"))["items"][-1]["seq"] == events[-1]["seq"]


async def test_scenario_18_scope_update_applies_the_permissions(parties):
    alice, bob = parties["alice"], parties["bob"]
    relationship = await accepted(alice, bob)
    base = f"/consent/relationships/{relationship['id']}"
    wanted = [FERTILITY, SYMPTOMS]
    request = await alice.call(
        "POST", base + "/scope-requests", {"requestedPermissions": wanted}, 201
    )
    decided = await bob.call("POST", f"/consent/scope-requests/{request['id']}/accept")
    assert decided["state"] == "accepted"
    assert (await alice.call("GET", base))["permissions"] == wanted  # D8: applied
    await bob.refused(
        "POST", f"/consent/scope-requests/{request['id']}/refuse", None, "cmc-scope-request-decided"
    )
