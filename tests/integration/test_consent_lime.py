"""Consent over raw LIME against a real ``tidings serve``: the whole handshake (invite, offer,
accept, chat both ways with the chat LIME message, alert + ack, scope updates accepted and
refused, revoke), the live inbox (subscribe -> observe, with a backlog), and error ids in the
reasons' descriptions."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from tests.integration.conftest import PASSWORDS
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

EVENT = "application/vnd.tidings.consent-event+json"
CHAT = "application/vnd.tidings.consent-chat+json"
INVITE = "application/vnd.tidings.consent-invite+json"
RELATIONSHIP = "application/vnd.tidings.consent-relationship+json"
PRESENCE_READ = {"resource": "presence", "level": "read"}
ACCOUNT_READ = {"resource": "account", "level": "read"}


async def login(server: ServerProcess, name: str, instance: str = "phone") -> WireClient:
    client = await WireClient.connect(server.ws_url)
    session = await client.establish(f"{name}@localhost/{instance}", password=PASSWORDS[name])
    assert session["state"] == "established", session
    return client


async def command(client: WireClient, method: str, uri: str, **fields: Any) -> dict[str, Any]:
    if "resource" in fields and "type" not in fields:
        fields["type"] = "application/json"
    return await client.command(id=str(uuid.uuid4()), method=method, uri=uri, **fields)


async def ok(client: WireClient, method: str, uri: str, **fields: Any) -> dict[str, Any]:
    response = await command(client, method, uri, **fields)
    assert response["status"] == "success", response
    return response


async def create_invite(client: WireClient, **fields: Any) -> dict[str, Any]:
    document = {
        "appCode": "cardio",
        "displayName": "Cardio study",
        "consent": {"en": "We read your presence."},
        "requestedPermissions": [PRESENCE_READ],
        **fields,
    }
    response = await ok(client, "set", "/consent/invites", resource=document)
    assert response["type"] == INVITE
    invite: dict[str, Any] = response["resource"]
    return invite


async def observed(client: WireClient, kind: str, **data: Any) -> dict[str, Any]:
    """The next inbox event of ``kind`` (with ``data`` fields) pushed to ``client``."""
    envelope = await client.expect(
        lambda e: (
            e.get("method") == "observe"
            and str(e.get("uri", "")).endswith("/consent/inbox")
            and e["resource"]["kind"] == kind
            and all(e["resource"]["data"].get(k) == v for k, v in data.items())
        )
    )
    assert envelope["type"] == EVENT
    event: dict[str, Any] = envelope["resource"]
    return event


def failure_id(response: dict[str, Any]) -> str:
    assert response["status"] == "failure", response
    return str(response["reason"]["description"]).partition(": ")[0]


async def test_the_whole_handshake_over_lime(server: ServerProcess) -> None:
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    await ok(alice, "subscribe", "/consent/inbox")
    await ok(bob, "subscribe", "/consent/inbox")

    invite = await create_invite(alice)
    assert invite["requester"] == "alice@localhost"
    assert invite["status"] == "pending"
    token = invite["capabilityToken"]
    assert invite["capabilityUrl"].endswith(token)
    await observed(alice, "invite-created", inviteId=invite["id"])

    offer = (await ok(bob, "get", f"/consent/offers/{token}"))["resource"]
    assert offer["requester"] == "alice@localhost"
    assert offer["displayName"] == "Cardio study"
    assert offer["requestedPermissions"] == [PRESENCE_READ]
    assert offer["features"] == {"chat": True, "systemMessaging": True}

    accepted = await ok(bob, "set", f"/consent/offers/{token}", resource={"decision": "accept"})
    assert accepted["type"] == RELATIONSHIP
    relationship = accepted["resource"]
    rel = relationship["id"]
    assert (relationship["requester"], relationship["accepter"]) == (
        "alice@localhost",
        "bob@localhost",
    )
    assert relationship["state"] == "active"
    assert relationship["permissions"] == [PRESENCE_READ]
    await observed(alice, "invite-accepted", inviteId=invite["id"])

    status = (await ok(alice, "get", f"/consent/invites/{invite['id']}"))["resource"]
    assert status["status"] == "accepted"
    assert [a["identity"] for a in status["acceptedBy"]] == ["bob@localhost"]
    assert status["acceptedBy"][0]["relationshipId"] == rel
    mine = (await ok(alice, "get", "/consent/invites"))["resource"]
    assert invite["id"] in [i["id"] for i in mine["items"]]
    for client in (alice, bob):
        listed = (await ok(client, "get", "/consent/relationships"))["resource"]
        assert rel in [r["id"] for r in listed["items"]]

    # chat both ways: the inbox event, and the LIME message from the sender's identity
    sent = await ok(alice, "set", f"/consent/relationships/{rel}/chat", resource={"text": "hi"})
    assert sent["resource"]["text"] == "hi"
    message = await bob.expect(lambda e: e.get("type") == CHAT)
    assert message["from"] == "alice@localhost"
    assert message["id"] == f"consent-chat:{rel}:{sent['resource']['seq']}"
    assert message["content"]["text"] == "hi"
    assert message["content"]["relationshipId"] == rel
    await observed(bob, "chat")
    await ok(bob, "set", f"/consent/relationships/{rel}/chat", resource={"text": "hello back"})
    back = await alice.expect(lambda e: e.get("type") == CHAT)
    assert back["from"] == "bob@localhost"
    assert back["content"]["text"] == "hello back"
    history = (await ok(alice, "get", f"/consent/relationships/{rel}/chat?since=0"))["resource"]
    assert [m["text"] for m in history["items"]] == ["hi", "hello back"]
    first_seq = history["items"][0]["seq"]
    later = await ok(bob, "get", f"/consent/relationships/{rel}/chat?since={first_seq}")
    assert [m["text"] for m in later["resource"]["items"]] == ["hello back"]

    # alert + ack
    alert = (
        await ok(
            alice,
            "set",
            f"/consent/relationships/{rel}/alerts",
            resource={
                "level": "info",
                "title": {"en": "x"},
                "body": {"en": "y"},
                "ackRequired": True,
                "ackId": "d1",
            },
        )
    )["resource"]
    await observed(bob, "alert")
    acked = await ok(bob, "set", f"/consent/alerts/{alert['id']}/ack", resource={"ackId": "d1"})
    assert acked["resource"]["ackedBy"] == "bob@localhost"
    await observed(alice, "alert-acked")

    # a scope update accepted applies at once; one refused changes nothing
    wider = [PRESENCE_READ, ACCOUNT_READ]
    asked = (
        await ok(
            alice,
            "set",
            f"/consent/relationships/{rel}/scope-requests",
            resource={"requestedPermissions": wider, "message": {"en": "more"}},
        )
    )["resource"]
    await observed(bob, "scope-requested")
    decided = await ok(
        bob, "set", f"/consent/scope-requests/{asked['id']}", resource={"decision": "accept"}
    )
    assert decided["resource"]["state"] == "accepted"
    await observed(alice, "scope-accepted")
    now = (await ok(alice, "get", f"/consent/relationships/{rel}"))["resource"]
    assert now["permissions"] == wider
    asked = (
        await ok(
            alice,
            "set",
            f"/consent/relationships/{rel}/scope-requests",
            resource={"requestedPermissions": [PRESENCE_READ]},
        )
    )["resource"]
    refused = await ok(
        bob, "set", f"/consent/scope-requests/{asked['id']}", resource={"decision": "refuse"}
    )
    assert refused["resource"]["state"] == "refused"
    await observed(alice, "scope-refused")
    assert (await ok(bob, "get", f"/consent/relationships/{rel}"))["resource"][
        "permissions"
    ] == wider

    # revoke by the accepter: both sides told, chat refused after
    revoked = await ok(bob, "delete", f"/consent/relationships/{rel}", resource={"reason": "done"})
    assert revoked["resource"]["state"] == "revoked"
    await observed(alice, "relationship-revoked")
    await observed(bob, "relationship-revoked")
    refused_chat = await command(
        alice, "set", f"/consent/relationships/{rel}/chat", resource={"text": "still there?"}
    )
    assert failure_id(refused_chat) == "cmc-relationship-revoked"


async def test_refuse_reaches_the_requester(server: ServerProcess) -> None:
    alice = await login(server, "alice")
    carol = await login(server, "carol")
    await ok(alice, "subscribe", "/consent/inbox")
    invite = await create_invite(alice)
    await ok(
        carol,
        "set",
        f"/consent/offers/{invite['capabilityToken']}",
        resource={"decision": "refuse", "reason": "no thanks"},
    )
    await observed(alice, "invite-refused", inviteId=invite["id"])
    status = (await ok(alice, "get", f"/consent/invites/{invite['id']}"))["resource"]
    assert status["status"] == "refused"
    assert status["refusedBy"][0]["identity"] == "carol@localhost"
    assert status["refusedBy"][0]["reason"] == "no thanks"


async def test_subscribe_since_pushes_the_backlog_then_live_events(
    server: ServerProcess,
) -> None:
    alice = await login(server, "alice")
    first = await create_invite(alice)
    second = await create_invite(alice)
    page = (await ok(alice, "get", "/consent/inbox?since=0&limit=1000"))["resource"]["items"]
    created = [e for e in page if e["kind"] == "invite-created"]
    before = next(e["seq"] for e in created if e["data"]["inviteId"] == first["id"])
    answer = await ok(alice, "subscribe", f"/consent/inbox?since={before}")
    backlog = await observed(alice, "invite-created", inviteId=second["id"])
    assert backlog["seq"] > before
    assert answer["resource"]["cursor"] >= backlog["seq"]
    third = await create_invite(alice)
    live = await observed(alice, "invite-created", inviteId=third["id"])
    assert live["seq"] > backlog["seq"]
    await ok(alice, "unsubscribe", "/consent/inbox")
    fourth = await create_invite(alice)
    probe = await ok(alice, "get", "/ping")  # answered after any observe of the fourth
    assert probe["status"] == "success"
    assert not [
        e
        for e in alice.held
        if e.get("method") == "observe" and e["resource"]["data"].get("inviteId") == fourth["id"]
    ]


async def test_error_ids_lead_the_reason_description(server: ServerProcess) -> None:
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    carol = await login(server, "carol")
    invite = await create_invite(alice)
    token = invite["capabilityToken"]
    accept = {"decision": "accept"}
    own = await command(alice, "set", f"/consent/offers/{token}", resource=accept)
    assert failure_id(own) == "cmc-own-invite"
    await ok(bob, "set", f"/consent/offers/{token}", resource=accept)
    consumed = await command(carol, "set", f"/consent/offers/{token}", resource=accept)
    assert failure_id(consumed) == "cmc-capability-consumed"
    unknown = await command(bob, "get", "/consent/offers/no-such-token")
    assert failure_id(unknown) == "cmc-capability-invalid"
    empty = await command(
        alice,
        "set",
        "/consent/invites",
        resource={
            "appCode": "cardio",
            "displayName": "x",
            "consent": {"en": "x"},
            "requestedPermissions": [],
        },
    )
    assert failure_id(empty) == "cmc-offer-empty-permissions"
    nobody = await command(bob, "get", f"/consent/invites/{invite['id']}")
    assert failure_id(nobody) == "cmc-not-found"
    # not consent errors: no id in front
    malformed = await command(alice, "set", "/consent/invites", resource=[1])
    assert malformed["reason"]["code"] == 64
    assert not malformed["reason"]["description"].startswith("cmc-")
    no_method = await command(alice, "merge", "/consent/invites", resource={})
    assert no_method["reason"]["code"] == 63


async def test_consent_acts_only_for_the_session_identity(server: ServerProcess) -> None:
    alice = await login(server, "alice")
    other = await command(alice, "get", "lime://bob@localhost/consent/invites")
    assert other["reason"]["code"] == 35
    guest = await WireClient.guest(server.ws_url, f"guest-{uuid.uuid4().hex[:8]}@localhost/g")
    refused = await command(guest, "get", "/consent/relationships")
    assert refused["reason"]["code"] == 35
