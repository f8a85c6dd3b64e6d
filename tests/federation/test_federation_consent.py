"""Consent between users of two real servers (issue 13): an invite of alpha's accepted from
beta, chat both ways, alert and ack, scope request and decision, revoke from either side,
refusal, single use across servers, an invalidated invite, and a forged accept."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.federation.support import ALPHA, BETA, PASSWORDS, STEP, Server
from tidings.core.federation import PeerRefusal
from tidings.net.federation_client import FederationClient
from tidings.sdk import Client, Consent, ConsentError, InboxEvent
from tidings.store.server_keys import ServerKeys

pytestmark = pytest.mark.integration

PRESENCE_READ = {"resource": "presence", "level": "read"}
ACCOUNT_READ = {"resource": "account", "level": "read"}


@asynccontextmanager
async def user(server: Server, name: str) -> AsyncIterator[Client]:
    """``name``'s SDK client on ``server`` (an instance of its own)."""
    identity = server.identity(name)
    async with Client(
        server.ws_url, identity, instance=uuid.uuid4().hex[:8], password=PASSWORDS[name]
    ) as client:
        yield client


async def invite_of(alice: Client, **kwargs: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "app_code": "cardio",
        "display_name": "Cardio study",
        "consent": {"en": "We read your presence."},
        "permissions": [PRESENCE_READ],
        **kwargs,
    }
    return await alice.consent.create_invite(**arguments)


async def next_of(inbox: Any, kind: str, **data: Any) -> InboxEvent:
    """The next event of ``kind`` whose data has the items ``data`` (one's own chat and
    alerts are in one's inbox too)."""
    async with asyncio.timeout(STEP):
        async for event in inbox:
            if event.kind == kind and all(event.data.get(k) == v for k, v in data.items()):
                return event  # type: ignore[no-any-return]
    raise AssertionError(f"the inbox ended before a {kind!r} event")


async def test_an_invite_of_alpha_accepted_from_beta_then_chat_both_ways(
    servers: tuple[Server, Server],
) -> None:
    alpha, beta = servers
    async with user(alpha, "alice") as alice, user(beta, "bob") as bob:
        invite = await invite_of(alice)
        url = invite["capabilityUrl"]
        assert url.startswith(alpha.http_url)
        waiting = asyncio.ensure_future(alice.consent.wait_for_accept(invite["id"], timeout=STEP))
        relationship = await bob.consent.accept_invite(url)
        assert relationship["requester"] == "alice@alpha.test"
        assert relationship["accepter"] == "bob@beta.test"
        assert relationship["permissions"] == [PRESENCE_READ]
        assert relationship["features"] == {"chat": True, "systemMessaging": True}
        rel = relationship["id"]
        assert (await waiting)["id"] == rel  # alpha made it with the id beta chose
        status = await alice.consent.get_invite_status(invite["id"])
        assert status["status"] == "accepted"
        assert [a["identity"] for a in status["acceptedBy"]] == ["bob@beta.test"]
        assert rel in [r["id"] for r in await bob.consent.list_relationships()]

        bob_events = await bob.consent.events(since=0, limit=1000)
        created = [e for e in bob_events if e.kind == "relationship-created"]
        assert [e.data["relationshipId"] for e in created].count(rel) == 1  # once, not twice

        async with (
            bob.consent.inbox(since=None) as bob_inbox,
            alice.consent.inbox(since=None) as alice_inbox,
        ):
            await bob_inbox.subscribe()
            await alice_inbox.subscribe()
            await alice.consent.send_chat(rel, "hello bob")
            heard = await next_of(bob_inbox, "chat")
            assert (heard.data["from"], heard.data["text"]) == ("alice@alpha.test", "hello bob")
            async with asyncio.timeout(STEP):
                message = await anext(aiter(bob.messages()))
            assert message.type == Consent.CHAT_TYPE
            assert (message.sender, message.content["text"]) == ("alice@alpha.test", "hello bob")

            await bob.consent.send_chat(rel, "hello alice")
            back = await next_of(alice_inbox, "chat", **{"from": "bob@beta.test"})
            assert (back.data["from"], back.data["text"]) == ("bob@beta.test", "hello alice")
            async with asyncio.timeout(STEP):
                message = await anext(aiter(alice.messages()))
            assert (message.sender, message.content["text"]) == ("bob@beta.test", "hello alice")

        expected = ["hello bob", "hello alice"]
        assert [m["text"] for m in await alice.consent.chat_history(rel)] == expected
        assert [m["text"] for m in await bob.consent.chat_history(rel)] == expected


async def test_alert_ack_scope_and_revoke_reach_the_other_side(
    servers: tuple[Server, Server],
) -> None:
    alpha, beta = servers
    async with user(alpha, "alice") as alice, user(beta, "bob") as bob:
        invite = await invite_of(alice)
        rel = (await bob.consent.accept_invite(invite["capabilityUrl"]))["id"]
        async with (
            bob.consent.inbox(since=None) as bob_inbox,
            alice.consent.inbox(since=None) as alice_inbox,
        ):
            await bob_inbox.subscribe()
            await alice_inbox.subscribe()
            alert = await alice.consent.send_system_alert(
                rel,
                level="warning",
                title={"en": "Battery"},
                body={"en": "Low"},
                ack_required=True,
                ack_id="b1",
            )
            seen = await next_of(bob_inbox, "alert")
            assert seen.data["alertId"] == alert["id"]
            assert seen.data["from"] == "alice@alpha.test"
            with pytest.raises(ConsentError) as wrong:
                await bob.consent.send_system_ack(alert["id"], "not-b1")
            assert wrong.value.error_id == "cmc-invalid-event-content"
            acked = await bob.consent.send_system_ack(alert["id"], "b1")
            assert acked["ackedBy"] == "bob@beta.test"
            told = await next_of(alice_inbox, "alert-acked")
            assert (told.data["alertId"], told.data["by"]) == (alert["id"], "bob@beta.test")

            asked = await alice.consent.request_scope_update(rel, [PRESENCE_READ, ACCOUNT_READ])
            request = await next_of(bob_inbox, "scope-requested")
            assert request.data["scopeRequestId"] == asked["id"]
            with pytest.raises(ConsentError) as alices:
                await alice.consent.accept_scope_update(asked["id"])
            assert alices.value.error_id == "cmc-insufficient-permissions"
            decided = await bob.consent.accept_scope_update(asked["id"])
            assert decided["state"] == "accepted"
            granted = [PRESENCE_READ, ACCOUNT_READ]
            assert (await bob.consent.get_relationship(rel))["permissions"] == granted
            await next_of(alice_inbox, "scope-accepted")
            assert (await alice.consent.get_relationship(rel))["permissions"] == granted

            revoked = await alice.consent.revoke_relationship(rel, reason="study over")
            assert revoked["state"] == "revoked"
            heard = await next_of(bob_inbox, "relationship-revoked")
            assert (heard.data["by"], heard.data["reason"]) == ("alice@alpha.test", "study over")
        on_beta = await bob.consent.get_relationship(rel)
        assert (on_beta["state"], on_beta["revokedBy"]) == ("revoked", "alice@alpha.test")
        with pytest.raises(ConsentError) as refused:
            await bob.consent.send_chat(rel, "hello?")
        assert refused.value.error_id == "cmc-relationship-revoked"


async def test_a_revoke_from_beta_reaches_alpha(servers: tuple[Server, Server]) -> None:
    alpha, beta = servers
    async with user(alpha, "alice") as alice, user(beta, "bob") as bob:
        invite = await invite_of(alice)
        rel = (await bob.consent.accept_invite(invite["capabilityUrl"]))["id"]
        async with alice.consent.inbox(since=None) as alice_inbox:
            await alice_inbox.subscribe()
            await bob.consent.revoke_relationship(rel)
            heard = await next_of(alice_inbox, "relationship-revoked")
            assert (heard.data["relationshipId"], heard.data["by"]) == (rel, "bob@beta.test")
        assert (await alice.consent.get_relationship(rel))["state"] == "revoked"
        with pytest.raises(ConsentError) as refused:
            await alice.consent.send_chat(rel, "still there?")
        assert refused.value.error_id == "cmc-relationship-revoked"


async def test_a_single_use_invite_is_accepted_once_across_servers(
    servers: tuple[Server, Server],
) -> None:
    alpha, beta = servers
    async with (
        user(alpha, "alice") as alice,
        user(beta, "bob") as bob,
        user(beta, "carol") as carol,
        user(alpha, "dave") as dave,
    ):
        invite = await invite_of(alice)
        url = invite["capabilityUrl"]
        first = await bob.consent.accept_invite(url)
        again = await bob.consent.accept_invite(url)  # a retry: the same relationship
        assert again["id"] == first["id"]
        for other in (carol, dave):  # another server's user, then one of alpha's own
            with pytest.raises(ConsentError) as consumed:
                await other.consent.accept_invite(url)
            assert consumed.value.error_id == "cmc-capability-consumed"
        relationships = [r for r in await alice.consent.list_relationships()]
        assert [r["accepter"] for r in relationships if r["inviteId"] == invite["id"]] == [
            "bob@beta.test"
        ]
        assert first["id"] not in [r["id"] for r in await carol.consent.list_relationships()]


async def test_an_invalidated_invite_is_refused_from_beta(servers: tuple[Server, Server]) -> None:
    alpha, beta = servers
    async with user(alpha, "alice") as alice, user(beta, "bob") as bob:
        invite = await invite_of(alice, mode="open-link")
        await alice.consent.invalidate_capability(invite["id"], reason="enough")
        with pytest.raises(ConsentError) as refused:
            await bob.consent.accept_invite(invite["capabilityUrl"])
        assert refused.value.error_id == "cmc-capability-invalidated"
        mine = await bob.consent.list_relationships()
        assert invite["id"] not in [r["inviteId"] for r in mine]


async def test_a_refusal_from_beta_reaches_the_requester(servers: tuple[Server, Server]) -> None:
    alpha, beta = servers
    async with user(alpha, "alice") as alice, user(beta, "bob") as bob:
        invite = await invite_of(alice)
        async with alice.consent.inbox(since=None) as alice_inbox:
            await alice_inbox.subscribe()
            await bob.consent.refuse_invite(invite["capabilityUrl"], reason="not now")
            heard = await next_of(alice_inbox, "invite-refused")
        assert (heard.data["by"], heard.data["reason"]) == ("bob@beta.test", "not now")
        assert (await alice.consent.get_invite_status(invite["id"]))["status"] == "refused"
        own = [e for e in await bob.consent.events(since=0, limit=1000)]
        assert invite["id"] in [e.data.get("inviteId") for e in own if e.kind == "invite-refused"]
        with pytest.raises(ConsentError) as spent:
            await bob.consent.accept_invite(invite["capabilityUrl"])
        assert spent.value.error_id == "cmc-capability-consumed"


async def test_a_url_of_no_peer_is_not_fetched(servers: tuple[Server, Server]) -> None:
    _, beta = servers
    async with user(beta, "bob") as bob:
        with pytest.raises(ConsentError) as refused:
            await bob.consent.accept_invite("http://192.0.2.1:9/consent/offers/abcdef")
        assert refused.value.error_id == "cmc-capability-invalid"


async def test_a_forged_accept_is_refused(servers: tuple[Server, Server]) -> None:
    """beta's signed query acting for an identity of alpha's (or of a third domain): refused,
    and the invite stays pending (a server speaks only for its own users, D12)."""
    alpha, beta = servers
    async with user(alpha, "alice") as alice:
        invite = await invite_of(alice)
        token = invite["capabilityToken"]
        keys = ServerKeys.load_or_create(beta.process.data_dir, BETA, time.time())

        async def alpha_base(domain: str) -> str:
            assert domain == ALPHA
            return alpha.http_url

        as_beta = FederationClient(BETA, lambda: keys.current, alpha_base)
        try:
            for actor in ("dave@alpha.test", "mallory@gamma.test"):
                body = {
                    "kind": "consent.accept",
                    "actor": actor,
                    "token": token,
                    "relationshipId": uuid.uuid4().hex,
                }
                with pytest.raises(PeerRefusal) as refused:
                    await as_beta.post(ALPHA, "query", json.dumps(body).encode())
                assert refused.value.status == 403
                assert refused.value.problem["error_id"] == "forbidden"
            honest = {"kind": "consent.offer", "actor": "bob@beta.test", "token": token}
            offer = await as_beta.post(ALPHA, "query", json.dumps(honest).encode())
            assert offer["answer"]["requester"] == "alice@alpha.test"
        finally:
            await as_beta.close()
        assert (await alice.consent.get_invite_status(invite["id"]))["status"] == "pending"


async def test_a_revoke_waits_in_the_outbox_while_the_other_server_is_down(
    servers: tuple[Server, Server],
) -> None:
    """Reference scenarios 16-17: the peer unreachable at revoke time hears of it once back."""
    alpha, beta = servers
    async with user(alpha, "alice") as alice:
        invite = await invite_of(alice)
        async with user(beta, "bob") as bob:
            rel = (await bob.consent.accept_invite(invite["capabilityUrl"]))["id"]
            cursor = (await bob.consent.events(since=0, limit=1000))[-1].seq
        beta.stop()
        try:
            revoked = await alice.consent.revoke_relationship(rel, reason="while away")
            assert revoked["state"] == "revoked"
        finally:
            beta.start()
        async with user(beta, "bob") as bob, bob.consent.inbox(since=cursor) as inbox:
            heard = await next_of(inbox, "relationship-revoked", relationshipId=rel)
            assert (heard.data["by"], heard.data["reason"]) == ("alice@alpha.test", "while away")
            assert (await bob.consent.get_relationship(rel))["state"] == "revoked"
