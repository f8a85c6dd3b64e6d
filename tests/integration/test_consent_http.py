"""Consent over HTTP against a real ``tidings serve`` (docs/consent.md): the whole handshake
with each account's API key (invite, offer, accept, status, relationships on both sides, the
grant enforced on ``~bob/NAME`` feeds, chat, alert + ack, scope requests accepted and refused,
revoke by either side, both inboxes in order), refusal, invalidating an open link, a granted
``messages`` permission letting the requester write to an accepter who refuses strangers (over
LIME and the SDK), and every error id reachable over HTTP with its exact id and status.

An expired capability cannot be reached on a real server without waiting out the 60 s minimum
TTL: ``test_an_expired_capability_over_http`` runs the server in process with the consent
service's clock moved forward instead."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

from tidings.config import Settings
from tidings.sdk import Client, MessageFailed
from tidings.wiring import TidingsServer

pytestmark = pytest.mark.integration

NAMES = ("alice", "bob", "carol", "dan", "erin")
HEART = {"resource": "feed:heart-rate*", "level": "read"}
SLEEP = {"resource": "feed:sleep", "level": "read"}
PRESENCE = {"resource": "presence", "level": "read"}
ACCOUNT = {"resource": "account", "level": "read"}
MESSAGES = {"resource": "messages", "level": "contribute"}
ACCOUNT_TYPE = "application/vnd.lime.account+json"


class Served:
    """The running server and each account's API key."""

    def __init__(self, process: ServerProcess, keys: dict[str, str]) -> None:
        self.process = process
        self.keys = keys

    @property
    def url(self) -> str:
        return self.process.http_url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    process = ServerProcess(tmp_path_factory.mktemp("consent-http"))
    keys = {}
    process.add_accounts({name: f"{name}-pw" for name in NAMES})
    for name in NAMES:
        made = process.tidings("account", "key", name)
        assert made.returncode == 0, made.stderr
        keys[name] = made.stdout.strip().splitlines()[-1]
    process.start()
    try:
        yield Served(process, keys)
    finally:
        process.stop()


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=30.0) as client:
        yield client


class As:
    """Requests as one account (its API key as the bearer)."""

    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(url, headers=self.headers, **kwargs)

    async def post(self, url: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return await self.http.post(url, headers=self.headers, json=json, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.http.delete(url, headers=self.headers, **kwargs)

    async def ok(self, method: str, url: str, status: int = 200, **kwargs: Any) -> Any:
        answer = await getattr(self, method)(url, **kwargs)
        assert answer.status_code == status, answer.text
        return None if status == 204 else answer.json()

    async def invite(self, **fields: Any) -> dict[str, Any]:
        body = {
            "appCode": "cardio",
            "displayName": "Cardio study",
            "consent": {"en": "We read your heart rate.", "fr": "Nous lisons votre pouls."},
            "requestedPermissions": [HEART],
            **fields,
        }
        created: dict[str, Any] = await self.ok("post", "/consent/invites", 201, json=body)
        return created

    async def inbox(self, since: int = 0) -> list[dict[str, Any]]:
        page = await self.ok("get", "/consent/inbox", params={"since": since, "limit": 1000})
        items: list[dict[str, Any]] = page["items"]
        return items


def who(http: httpx.AsyncClient, served: Served, name: str) -> As:
    return As(http, served.keys[name])


def problem(answer: httpx.Response, status: int, error_id: str) -> dict[str, Any]:
    assert (answer.status_code, answer.json().get("error_id")) == (status, error_id), answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    document: dict[str, Any] = answer.json()
    assert document["status"] == status
    return document


def about(events: list[dict[str, Any]], **ids: str) -> list[dict[str, Any]]:
    """The events whose data names any of ``ids`` (inviteId=..., relationshipId=...)."""
    return [e for e in events if any(e["data"].get(k) == v for k, v in ids.items())]


async def publish(owner: As, feed: str, data: dict[str, Any]) -> None:
    body = {"action_name": "init", "feed_data": data}
    await owner.ok("post", f"/feeds/{feed}/actions", json=body)


async def test_the_whole_handshake_over_http(http: httpx.AsyncClient, served: Served) -> None:
    alice, bob = who(http, served, "alice"), who(http, served, "bob")
    await publish(bob, "~bob/heart-rate", {"bpm": 61})
    await publish(bob, "~bob/sleep", {"hours": 7})
    problem(await alice.get("/feeds/~bob/heart-rate"), 403, "not-granted")
    alice_start = (await alice.inbox())[-1]["seq"] if await alice.inbox() else 0
    bob_start = (await bob.inbox())[-1]["seq"] if await bob.inbox() else 0

    invite = await alice.invite(requestedPermissions=[HEART, PRESENCE])
    invite_id = invite["inviteId"]
    assert invite["id"] == invite_id and invite["mode"] == "single-use"
    assert invite["status"] == "pending" and invite["requester"] == "alice@localhost"
    url = invite["capabilityUrl"]
    assert url.startswith(f"{served.url}/consent/offers/")
    assert len(url.rsplit("/", 1)[1]) >= 43  # 256 random bits, base64url
    assert 0 < invite["expiresAt"] - time.time() <= 7 * 86_400

    # the capability URL needs no credentials: it is the capability
    offer = (await http.get(url)).json()
    assert offer == {
        "requester": "alice@localhost",
        "appCode": "cardio",
        "displayName": "Cardio study",
        "consent": {"en": "We read your heart rate.", "fr": "Nous lisons votre pouls."},
        "requestedPermissions": [HEART, PRESENCE],
        "mode": "single-use",
        "features": {"chat": True, "systemMessaging": True},
        "expiresAt": invite["expiresAt"],
    }
    pending = await alice.ok("get", f"/consent/invites/{invite_id}")
    assert pending["status"] == "pending" and pending["acceptedBy"] == []

    relationship = await bob.ok("post", f"{url}/accept", 201)
    rel = relationship["id"]
    assert (relationship["requester"], relationship["accepter"]) == (
        "alice@localhost",
        "bob@localhost",
    )
    assert relationship["state"] == "active"
    assert relationship["permissions"] == [HEART, PRESENCE]
    assert relationship["inviteId"] == invite_id

    status = await alice.ok("get", f"/consent/invites/{invite_id}")
    assert status["status"] == "accepted"
    (accepted,) = status["acceptedBy"]
    assert accepted["identity"] == "bob@localhost" and accepted["relationshipId"] == rel
    assert abs(accepted["at"] - time.time()) < 3600
    assert invite_id in [i["id"] for i in (await alice.ok("get", "/consent/invites"))["items"]]
    for side in (alice, bob):
        listed = (await side.ok("get", "/consent/relationships"))["items"]
        assert rel in [r["id"] for r in listed]
        assert (await side.ok("get", f"/consent/relationships/{rel}"))["state"] == "active"

    # the grant is enforced: the requester reads ~bob/heart-rate with its own key, not ~bob/sleep
    read = await alice.ok("get", "/feeds/~bob/heart-rate")
    assert read["feed_data"] == {"bpm": 61}
    problem(await alice.get("/feeds/~bob/sleep"), 403, "not-granted")

    # chat both ways, and the history with since
    first = await alice.ok("post", f"/consent/relationships/{rel}/chat", 201, json={"text": "hi"})
    assert (first["sender"], first["text"], first["relationshipId"]) == (
        "alice@localhost",
        "hi",
        rel,
    )
    second = await bob.ok("post", f"/consent/relationships/{rel}/chat", 201, json={"text": "yo"})
    assert second["seq"] > first["seq"]
    for side in (alice, bob):
        history = await side.ok("get", f"/consent/relationships/{rel}/chat")
        assert [(m["sender"], m["text"]) for m in history["items"]] == [
            ("alice@localhost", "hi"),
            ("bob@localhost", "yo"),
        ]
    later = await bob.ok(
        "get", f"/consent/relationships/{rel}/chat", params={"since": first["seq"]}
    )
    assert [m["text"] for m in later["items"]] == ["yo"]
    none = await bob.ok(
        "get", f"/consent/relationships/{rel}/chat", params={"since": second["seq"]}
    )
    assert none["items"] == []

    # alert + ack
    alert = await alice.ok(
        "post",
        f"/consent/relationships/{rel}/alerts",
        201,
        json={
            "level": "warning",
            "title": {"en": "Check-in"},
            "body": {"en": "Please confirm"},
            "ackRequired": True,
            "ackId": "d1",
        },
    )
    assert alert["sender"] == "alice@localhost" and "ackedAt" not in alert
    acked = await bob.ok("post", f"/consent/alerts/{alert['id']}/ack", json={"ackId": "d1"})
    assert acked["ackedBy"] == "bob@localhost" and acked["ackedAt"] >= alert["at"]
    again = await bob.ok("post", f"/consent/alerts/{alert['id']}/ack", json={"ackId": "d1"})
    assert again["ackedAt"] == acked["ackedAt"]  # idempotent

    # a scope request accepted applies at once: ~bob/sleep becomes readable
    wider = [HEART, SLEEP, PRESENCE]
    asked = await alice.ok(
        "post",
        f"/consent/relationships/{rel}/scope-requests",
        201,
        json={"requestedPermissions": wider, "message": {"en": "and your sleep"}},
    )
    assert asked["state"] == "pending" and asked["requestedPermissions"] == wider
    problem(await alice.get("/feeds/~bob/sleep"), 403, "not-granted")
    decided = await bob.ok("post", f"/consent/scope-requests/{asked['id']}/accept")
    assert decided["state"] == "accepted"
    assert (await alice.ok("get", f"/consent/relationships/{rel}"))["permissions"] == wider
    assert (await alice.ok("get", "/feeds/~bob/sleep"))["feed_data"] == {"hours": 7}

    # a scope request refused changes nothing
    narrower = await alice.ok(
        "post",
        f"/consent/relationships/{rel}/scope-requests",
        201,
        json={"requestedPermissions": [HEART]},
    )
    refused = await bob.ok("post", f"/consent/scope-requests/{narrower['id']}/refuse")
    assert refused["state"] == "refused"
    assert (await bob.ok("get", f"/consent/relationships/{rel}"))["permissions"] == wider
    assert (await alice.ok("get", "/feeds/~bob/sleep"))["feed_data"] == {"hours": 7}

    # revoke by the accepter: both sides see it, the grant goes at once
    revoked = await bob.ok("delete", f"/consent/relationships/{rel}", params={"reason": "done"})
    assert revoked["state"] == "revoked"
    assert (revoked["revokedBy"], revoked["revokeReason"]) == ("bob@localhost", "done")
    assert (await alice.ok("get", f"/consent/relationships/{rel}"))["state"] == "revoked"
    problem(await alice.get("/feeds/~bob/heart-rate"), 403, "not-granted")
    problem(await alice.get("/feeds/~bob/sleep"), 403, "not-granted")
    assert (await bob.ok("get", "/feeds/~bob/heart-rate"))["feed_data"] == {"bpm": 61}
    # revoking again returns it unchanged
    twice = await alice.ok("delete", f"/consent/relationships/{rel}")
    assert twice["revokedBy"] == "bob@localhost"

    # every lifecycle event of both sides, in order
    ids = {"inviteId": invite_id, "relationshipId": rel}
    alice_events = about(await alice.inbox(alice_start), **ids)
    bob_events = about(await bob.inbox(bob_start), **ids)
    middle = [
        "relationship-created",
        "chat",
        "chat",
        "alert",
        "alert-acked",
        "scope-requested",
        "scope-accepted",
        "scope-requested",
        "scope-refused",
        "relationship-revoked",
    ]
    assert [e["kind"] for e in alice_events] == ["invite-created", "invite-accepted", *middle]
    assert [e["kind"] for e in bob_events] == middle
    for events in (alice_events, bob_events):
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert alice_events[1]["data"]["by"] == "bob@localhost"
    assert bob_events[-1]["data"] == {
        "relationshipId": rel,
        "by": "bob@localhost",
        "reason": "done",
    }
    # since is a cursor: what comes after it, nothing before
    cut = alice_events[4]["seq"]
    assert [e["seq"] for e in about(await alice.inbox(cut), **ids)] == [
        e["seq"] for e in alice_events[5:]
    ]


async def test_the_requester_revokes(http: httpx.AsyncClient, served: Served) -> None:
    alice, carol = who(http, served, "alice"), who(http, served, "carol")
    await publish(carol, "~carol/heart-rate", {"bpm": 70})
    invite = await alice.invite()
    rel = (await carol.ok("post", f"{invite['capabilityUrl']}/accept", 201))["id"]
    assert (await alice.ok("get", "/feeds/~carol/heart-rate"))["feed_data"] == {"bpm": 70}
    revoked = await alice.ok("delete", f"/consent/relationships/{rel}")
    assert revoked["state"] == "revoked" and revoked["revokedBy"] == "alice@localhost"
    assert "revokeReason" not in revoked
    assert (await carol.ok("get", f"/consent/relationships/{rel}"))["state"] == "revoked"
    problem(await alice.get("/feeds/~carol/heart-rate"), 403, "not-granted")
    both = ["relationship-created", "relationship-revoked"]
    for side, kinds in ((alice, ["invite-accepted", *both]), (carol, both)):
        assert [e["kind"] for e in about(await side.inbox(), relationshipId=rel)] == kinds


async def test_a_refusal_reaches_the_requester(http: httpx.AsyncClient, served: Served) -> None:
    alice, carol, erin = (who(http, served, n) for n in ("alice", "carol", "erin"))
    invite = await alice.invite()
    url = invite["capabilityUrl"]
    await carol.ok("post", f"{url}/refuse", 204, json={"reason": "not now"})
    status = await alice.ok("get", f"/consent/invites/{invite['id']}")
    assert status["status"] == "refused" and status["acceptedBy"] == []
    (refusal,) = status["refusedBy"]
    assert (refusal["identity"], refusal["reason"]) == ("carol@localhost", "not now")
    (event,) = about(await alice.inbox(), inviteId=invite["id"])[1:]
    assert event["kind"] == "invite-refused"
    assert event["data"] == {"inviteId": invite["id"], "by": "carol@localhost", "reason": "not now"}
    assert [e["kind"] for e in about(await carol.inbox(), inviteId=invite["id"])] == [
        "invite-refused"
    ]
    # a single-use invite is spent by a refusal
    problem(await http.get(url), 409, "cmc-capability-consumed")
    problem(await erin.post(f"{url}/accept"), 409, "cmc-capability-consumed")
    # refusing without a body is fine too
    other = await alice.invite()
    await carol.ok("post", f"{other['capabilityUrl']}/refuse", 204)


async def test_invalidating_an_open_link(http: httpx.AsyncClient, served: Served) -> None:
    alice, bob, carol = (who(http, served, n) for n in ("alice", "bob", "carol"))
    invite = await alice.invite(mode="open-link")
    url = invite["capabilityUrl"]
    assert invite["mode"] == "open-link"
    first = await bob.ok("post", f"{url}/accept", 201)
    assert (await http.get(url)).json()["mode"] == "open-link"  # still open for others
    assert (await alice.ok("get", f"/consent/invites/{invite['id']}"))["status"] == "pending"

    closed = await alice.ok(
        "post", f"/consent/invites/{invite['id']}/invalidate", json={"reason": "full"}
    )
    assert closed["status"] == "invalidated"
    problem(await http.get(url), 410, "cmc-capability-invalidated")
    problem(await carol.post(f"{url}/accept"), 410, "cmc-capability-invalidated")
    problem(await carol.post(f"{url}/refuse"), 410, "cmc-capability-invalidated")
    # idempotent, without a body too; the relationship already made stays
    again = await alice.ok("post", f"/consent/invites/{invite['id']}/invalidate")
    assert again["status"] == "invalidated"
    assert (await bob.ok("get", f"/consent/relationships/{first['id']}"))["state"] == "active"
    kinds = [e["kind"] for e in about(await alice.inbox(), inviteId=invite["id"])]
    assert kinds == [
        "invite-created",
        "invite-accepted",
        "relationship-created",
        "invite-invalidated",
    ]


async def lime_login(served: Served, name: str, instance: str) -> WireClient:
    client = await WireClient.connect(served.process.ws_url)
    session = await client.establish(f"{name}@localhost/{instance}", password=f"{name}-pw")
    assert session["state"] == "established", session
    return client


async def test_a_messages_grant_lets_the_requester_write_to_a_strict_accepter(
    http: httpx.AsyncClient, served: Served
) -> None:
    """dan refuses unknown senders; erin may write to him while a relationship grants her
    ``messages`` (contribute), over LIME and the SDK, and is refused (32) before and after."""
    erin, dan = who(http, served, "erin"), who(http, served, "dan")
    dan_lime = await lime_login(served, "dan", "strict")
    strict = await dan_lime.command(
        id="strict",
        method="merge",
        uri="/account",
        type=ACCOUNT_TYPE,
        resource={"allowUnknownSender": False},
    )
    assert strict["status"] == "success", strict
    erin_lime = await lime_login(served, "erin", "wire")
    sdk = Client(served.process.ws_url, "erin@localhost", instance="sdk", password="erin-pw")

    async def refused(attempt: str) -> None:
        erin_lime.send(
            {
                "id": f"{attempt}-lime",
                "to": "dan@localhost/strict",
                "type": "text/plain",
                "content": "x",
            }
        )
        failed = await erin_lime.expect_id(f"{attempt}-lime", event="failed")
        assert failed["reason"]["code"] == 32, failed
        with pytest.raises(MessageFailed) as caught:
            await sdk.send_message("dan@localhost/strict", "x", id=f"{attempt}-sdk")
        assert caught.value.code == 32

    async with sdk:
        await refused("before")
        invite = await erin.invite(requestedPermissions=[MESSAGES], appCode="coach")
        rel = (await dan.ok("post", f"{invite['capabilityUrl']}/accept", 201))["id"]

        erin_lime.send(
            {
                "id": "granted-lime",
                "to": "dan@localhost/strict",
                "type": "text/plain",
                "content": "a",
            }
        )
        got = await dan_lime.expect(lambda e: e.get("id") == "granted-lime")
        assert got["from"].startswith("erin@localhost/") and got["content"] == "a"
        await sdk.send_message("dan@localhost/strict", "b", id="granted-sdk")
        got = await dan_lime.expect(lambda e: e.get("id") == "granted-sdk")
        assert got["content"] == "b"

        await dan.ok("delete", f"/consent/relationships/{rel}")
        await refused("after")
    assert not [e for e in dan_lime.held if str(e.get("id", "")).startswith(("before", "after"))]


# -- error ids ---------------------------------------------------------------------------------


async def test_capability_errors(http: httpx.AsyncClient, served: Served) -> None:
    alice, bob, carol = (who(http, served, n) for n in ("alice", "bob", "carol"))
    base = f"{served.url}/consent/offers"
    for bad in ("no-such-token", "x" * 300, "%C3%A9t%C3%A9"):
        problem(await http.get(f"{base}/{bad}"), 401, "cmc-capability-invalid")
        problem(await bob.post(f"{base}/{bad}/accept"), 401, "cmc-capability-invalid")
        problem(await bob.post(f"{base}/{bad}/refuse"), 401, "cmc-capability-invalid")

    single = (await alice.invite())["capabilityUrl"]
    problem(await alice.post(f"{single}/accept"), 409, "cmc-own-invite")
    problem(await alice.post(f"{single}/refuse"), 409, "cmc-own-invite")
    await bob.ok("post", f"{single}/accept", 201)
    problem(await carol.post(f"{single}/accept"), 409, "cmc-capability-consumed")
    problem(await bob.post(f"{single}/accept"), 409, "cmc-capability-consumed")
    problem(await http.get(single), 409, "cmc-capability-consumed")

    open_link = (await alice.invite(mode="open-link"))["capabilityUrl"]
    await bob.ok("post", f"{open_link}/accept", 201)
    gone = problem(
        await bob.post(f"{open_link}/accept"), 409, "cmc-capability-already-accepted-by-you"
    )
    assert "accepted" in gone["detail"]
    problem(await bob.post(f"{open_link}/refuse"), 409, "cmc-capability-already-accepted-by-you")
    await carol.ok("post", f"{open_link}/accept", 201)

    invite = await alice.invite()
    await alice.ok("post", f"/consent/invites/{invite['id']}/invalidate")
    problem(await bob.post(f"{invite['capabilityUrl']}/accept"), 410, "cmc-capability-invalidated")


async def test_invite_errors(http: httpx.AsyncClient, served: Served) -> None:
    alice = who(http, served, "alice")
    body = {
        "appCode": "cardio",
        "displayName": "Cardio study",
        "consent": {"en": "x"},
        "requestedPermissions": [HEART],
    }
    now = int(time.time())
    for expires in (now + 10, now - 1, 0, now + 31 * 86_400):
        answer = await alice.post("/consent/invites", {**body, "expiresAt": expires})
        problem(answer, 422, "cmc-capability-ttl-out-of-range")
    fine = await alice.post("/consent/invites", {**body, "expiresAt": now + 3600})
    assert fine.status_code == 201 and fine.json()["expiresAt"] == now + 3600
    answer = await alice.post("/consent/invites", {**body, "requestedPermissions": []})
    problem(answer, 422, "cmc-offer-empty-permissions")
    for permissions in (
        [{"resource": "nothing", "level": "read"}],
        [{"resource": "presence", "level": "manage"}],
        [{"resource": "messages", "level": "read"}],
        [{"resource": "feed:a b", "level": "read"}],
        [HEART, HEART],
    ):
        answer = await alice.post("/consent/invites", {**body, "requestedPermissions": permissions})
        problem(answer, 422, "cmc-offer-invalid-permissions")
    # malformed bodies are invalid-argument, as everywhere in Tidings
    problem(
        await alice.post("/consent/invites", {**body, "mode": "twice"}), 422, "invalid-argument"
    )
    problem(await alice.post("/consent/invites", {"appCode": "x"}), 422, "invalid-argument")


async def test_accept_with_granted_permissions(http: httpx.AsyncClient, served: Served) -> None:
    alice, bob = who(http, served, "alice"), who(http, served, "bob")
    url = (await alice.invite(requestedPermissions=[HEART, PRESENCE]))["capabilityUrl"]
    for granted in ([ACCOUNT], [{"resource": "feed:heart-rate*", "level": "manage"}]):
        answer = await bob.post(f"{url}/accept", {"grantedPermissions": granted})
        problem(answer, 422, "cmc-granted-permissions-not-subset")
    answer = await bob.post(f"{url}/accept", {"grantedPermissions": []})
    problem(answer, 422, "cmc-offer-empty-permissions")
    answer = await bob.post(
        f"{url}/accept", {"grantedPermissions": [{"resource": "x", "level": "read"}]}
    )
    problem(answer, 422, "cmc-offer-invalid-permissions")
    # none of those consumed the invite; a subset is fine
    made = await bob.ok("post", f"{url}/accept", 201, json={"grantedPermissions": [PRESENCE]})
    assert made["permissions"] == [PRESENCE]


async def test_relationship_errors(http: httpx.AsyncClient, served: Served) -> None:
    alice, bob, carol = (who(http, served, n) for n in ("alice", "bob", "carol"))
    quiet = await alice.invite(features={"chat": False, "systemMessaging": False})
    assert (await http.get(quiet["capabilityUrl"])).json()["features"] == {
        "chat": False,
        "systemMessaging": False,
    }
    rel = (await bob.ok("post", f"{quiet['capabilityUrl']}/accept", 201))["id"]
    alert = {"level": "info", "title": {"en": "t"}, "body": {"en": "b"}}
    for side in (alice, bob):
        chat = await side.post(f"/consent/relationships/{rel}/chat", {"text": "hi"})
        problem(chat, 403, "cmc-chat-disabled")
        sent = await side.post(f"/consent/relationships/{rel}/alerts", alert)
        problem(sent, 403, "cmc-system-messaging-disabled")
    # history stays readable (empty)
    assert (await bob.ok("get", f"/consent/relationships/{rel}/chat"))["items"] == []

    rel = (await bob.ok("post", f"{(await alice.invite())['capabilityUrl']}/accept", 201))["id"]
    chat_url = f"/consent/relationships/{rel}/chat"
    problem(await alice.post(chat_url, {"text": ""}), 422, "cmc-invalid-event-content")
    problem(await alice.post(chat_url, {"text": "x" * 10_241}), 422, "cmc-invalid-event-content")
    assert (await alice.post(chat_url, {"text": "x" * 10_240})).status_code == 201
    bad_alert = {**alert, "title": {"EN": "t"}}
    sent = await alice.post(f"/consent/relationships/{rel}/alerts", bad_alert)
    problem(sent, 422, "cmc-invalid-event-content")

    # the sender acks its own alert / a wrong ack id
    made = await alice.ok(
        "post", f"/consent/relationships/{rel}/alerts", 201, json={**alert, "ackRequired": True}
    )
    assert made["ackId"] == made["id"]  # defaults to the alert's id
    ack = f"/consent/alerts/{made['id']}/ack"
    problem(await alice.post(ack, {"ackId": made["ackId"]}), 403, "cmc-insufficient-permissions")
    problem(await bob.post(ack, {"ackId": "wrong"}), 422, "cmc-invalid-event-content")
    problem(await carol.post(ack, {"ackId": made["ackId"]}), 404, "cmc-not-found")

    # scope requests: only the requester asks, only the accepter decides, once
    scope_url = f"/consent/relationships/{rel}/scope-requests"
    asked = await bob.post(scope_url, {"requestedPermissions": [HEART]})
    problem(asked, 403, "cmc-insufficient-permissions")
    problem(
        await alice.post(scope_url, {"requestedPermissions": []}),
        422,
        "cmc-offer-empty-permissions",
    )
    request = await alice.ok("post", scope_url, 201, json={"requestedPermissions": [PRESENCE]})
    decide = f"/consent/scope-requests/{request['id']}"
    problem(await alice.post(f"{decide}/accept"), 403, "cmc-insufficient-permissions")
    problem(await carol.post(f"{decide}/accept"), 404, "cmc-not-found")
    await bob.ok("post", f"{decide}/refuse")
    problem(await bob.post(f"{decide}/accept"), 409, "cmc-scope-request-decided")
    problem(await bob.post(f"{decide}/refuse"), 409, "cmc-scope-request-decided")

    # not a side of it: cmc-not-found, as for what does not exist
    problem(await carol.get(f"/consent/relationships/{rel}"), 404, "cmc-not-found")
    problem(await carol.delete(f"/consent/relationships/{rel}"), 404, "cmc-not-found")
    problem(await carol.post(chat_url, {"text": "hi"}), 404, "cmc-not-found")
    problem(await carol.get(chat_url), 404, "cmc-not-found")

    # after a revoke: cmc-relationship-revoked for what would change it
    pending = await alice.ok("post", scope_url, 201, json={"requestedPermissions": [HEART]})
    await alice.ok("delete", f"/consent/relationships/{rel}")
    problem(await bob.post(chat_url, {"text": "hi"}), 410, "cmc-relationship-revoked")
    sent = await bob.post(f"/consent/relationships/{rel}/alerts", alert)
    problem(sent, 410, "cmc-relationship-revoked")
    problem(
        await alice.post(scope_url, {"requestedPermissions": [HEART]}),
        410,
        "cmc-relationship-revoked",
    )
    late = await bob.post(f"/consent/scope-requests/{pending['id']}/accept")
    problem(late, 410, "cmc-relationship-revoked")
    problem(await bob.post(ack, {"ackId": made["ackId"]}), 410, "cmc-relationship-revoked")
    assert len((await alice.ok("get", chat_url))["items"]) == 1  # history stays


async def test_not_found_and_credentials(http: httpx.AsyncClient, served: Served) -> None:
    alice, carol = who(http, served, "alice"), who(http, served, "carol")
    invite = await alice.invite()
    problem(await carol.get(f"/consent/invites/{invite['id']}"), 404, "cmc-not-found")
    problem(await carol.post(f"/consent/invites/{invite['id']}/invalidate"), 404, "cmc-not-found")
    missing = uuid.uuid4().hex
    for answer in (
        await alice.get(f"/consent/invites/{missing}"),
        await alice.post(f"/consent/invites/{missing}/invalidate"),
        await alice.get(f"/consent/relationships/{missing}"),
        await alice.delete(f"/consent/relationships/{missing}"),
        await alice.get(f"/consent/relationships/{missing}/chat"),
        await alice.post(f"/consent/relationships/{missing}/chat", {"text": "x"}),
        await alice.post(f"/consent/scope-requests/{missing}/accept"),
        await alice.post(f"/consent/alerts/{missing}/ack", {"ackId": "x"}),
        await alice.get(f"/consent/relationships/{'é' * 70}"),
    ):
        problem(answer, 404, "cmc-not-found")

    # no key, another scheme, an unknown key: bad-credentials
    problem(await http.get("/consent/invites"), 401, "bad-credentials")
    basic = await http.get("/consent/invites", headers={"Authorization": "Basic YTpi"})
    problem(basic, 401, "bad-credentials")
    wrong = await http.get("/consent/relationships", headers={"Authorization": "Bearer tdk_nope"})
    problem(wrong, 401, "bad-credentials")
    url = invite["capabilityUrl"]
    problem(await http.post(f"{url}/accept"), 401, "bad-credentials")
    assert (await http.get(url)).status_code == 200  # reading the offer needs none
    assert (await alice.ok("get", f"/consent/invites/{invite['id']}"))["status"] == "pending"


# -- expiry: the server in process, its consent clock moved forward --------------------------


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def in_process(tmp_path: Path) -> AsyncIterator[tuple[TidingsServer, dict[str, str], Clock]]:
    server = TidingsServer(Settings(ws_port=0, http_port=0, data_dir=tmp_path))
    await server.start()
    try:
        assert server.services is not None
        keys = {}
        for name in ("alice", "bob"):
            await server.services.accounts.add(name, f"{name}-password")
            keys[name] = await server.services.accounts.create_key(name)
        clock = Clock()
        # The only stand-in: the consent service's clock (a private attribute), so that an
        # invite expires without waiting out the 60 s minimum TTL.
        server.services.consent._clock = clock
        yield server, keys, clock
    finally:
        await server.stop()


async def test_an_expired_capability_over_http(
    in_process: tuple[TidingsServer, dict[str, str], Clock],
) -> None:
    server, keys, clock = in_process
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        alice, bob = As(client, keys["alice"]), As(client, keys["bob"])
        invite = await alice.invite(expiresAt=int(time.time()) + 90)
        url = invite["capabilityUrl"]
        assert (await client.get(url)).status_code == 200
        clock.offset = 120
        expired = problem(await client.get(url), 410, "cmc-capability-expired")
        assert "expired" in expired["detail"]
        problem(await bob.post(f"{url}/accept"), 410, "cmc-capability-expired")
        problem(await bob.post(f"{url}/refuse"), 410, "cmc-capability-expired")
        status = await alice.ok("get", f"/consent/invites/{invite['inviteId']}")
        assert status["status"] == "expired"
        listed = await alice.ok("get", "/consent/invites")
        assert [i["status"] for i in listed["items"]] == ["expired"]
        # invalidating an expired invite changes nothing
        closed = await alice.ok("post", f"/consent/invites/{invite['inviteId']}/invalidate")
        assert closed["status"] == "expired"
