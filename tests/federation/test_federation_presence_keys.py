"""Presence and keys across two real servers (issue 13): the owner's server decides with its
own rules (sharing, whom its users accept), pushes presence changes back through the outbox,
and sealed messages between domains open as they do on one server."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.federation.support import PASSWORDS, STEP, Server, client, lime_js, pair, signed_in
from tests.lime_wire import WireClient
from tidings.sdk import Backoff, Client

pytestmark = pytest.mark.integration

PRESENCE = "application/vnd.lime.presence+json"
CONTACT = "application/vnd.lime.contact+json"
NOT_SHARED = 35
FAST = Backoff(initial=0.02, maximum=0.5)


async def command(wire: WireClient, **fields: Any) -> dict[str, Any]:
    return await wire.command(id=uuid.uuid4().hex, **fields)


async def share(owner: WireClient, watcher: str) -> None:
    added = await command(
        owner,
        method="set",
        uri="/contacts",
        type=CONTACT,
        resource={"identity": watcher, "sharePresence": True},
    )
    assert added["status"] == "success", added


async def set_status(wire: WireClient, status: str) -> None:
    done = await command(
        wire, method="set", uri="/presence", type=PRESENCE, resource={"status": status}
    )
    assert done["status"] == "success", done


def observe_of(uri: str, status: str | None = None) -> Any:
    def match(envelope: dict[str, Any]) -> bool:
        return (
            envelope.get("method") == "observe"
            and envelope.get("uri") == uri
            and (status is None or envelope.get("resource", {}).get("status") == status)
        )

    return match


@pytest.mark.conformance
def test_lime_js_presence_observed_across_servers(servers: tuple[Server, Server]) -> None:
    alpha, beta = servers
    result = lime_js("presenceSubscribe", owner=client(beta, "bob"), watcher=client(alpha, "alice"))
    assert result["refused"]["status"] == "failure"
    assert result["refused"]["reason"]["code"] == NOT_SHARED  # beta's rule, beta's id
    assert result["share"]["status"] == "success"
    assert result["subscribed"]["status"] == "success"
    for push in (result["initial"], result["pushed"]):
        assert push["method"] == "observe"
        assert push["uri"] == "lime://bob@beta.test/presence"
        assert push["type"] == PRESENCE
        assert push["from"] == "bob@beta.test"  # the shape of a local push
        assert push["to"].startswith("alice@alpha.test/")
    assert result["initial"]["resource"]["status"] == "available"
    assert result["pushed"]["resource"]["status"] == "busy"


async def test_get_presence_of_another_domain_follows_its_sharing(
    servers: tuple[Server, Server],
) -> None:
    alpha, beta = servers
    carol = await signed_in(beta, "carol")
    dave = await signed_in(alpha, "dave")
    uri = "lime://carol@beta.test/presence"
    refused = await command(dave, method="get", uri=uri)
    assert refused["status"] == "failure"
    assert refused["reason"]["code"] == NOT_SHARED
    assert "does not share its presence" in refused["reason"]["description"]
    await share(carol, "dave@alpha.test")
    await set_status(carol, "away")
    got = await command(dave, method="get", uri=uri)
    assert got["status"] == "success", got
    assert got["type"] == PRESENCE
    assert got["resource"]["status"] == "away"
    assert got["resource"]["instances"]


async def test_unsubscribe_stops_the_pushes_of_that_identity_only(
    servers: tuple[Server, Server],
) -> None:
    alpha, beta = servers
    dave, alice = await signed_in(beta, "dave"), await signed_in(beta, "alice")
    await share(dave, "carol@alpha.test")
    await share(alice, "carol@alpha.test")
    carol = await signed_in(alpha, "carol")
    dave_uri, alice_uri = "lime://dave@beta.test/presence", "lime://alice@beta.test/presence"
    for uri in (dave_uri, alice_uri):
        subscribed = await command(carol, method="subscribe", uri=uri)
        assert subscribed["status"] == "success", subscribed
        await carol.expect(observe_of(uri), timeout=STEP)
    await set_status(dave, "busy")
    await carol.expect(observe_of(dave_uri, "busy"), timeout=STEP)
    left = await command(carol, method="unsubscribe", uri=dave_uri)
    assert left["status"] == "success", left
    await set_status(dave, "away")
    # alice's change is pushed after dave's (one outbox, in order): once it is here, a push
    # of dave's would have come before it
    await set_status(alice, "busy")
    await carol.expect(observe_of(alice_uri, "busy"), timeout=STEP)
    assert [e for e in carol.held if observe_of(dave_uri)(e)] == []


async def test_a_subscription_survives_the_owner_server_restarting(
    tmp_path: Path,
) -> None:
    alpha, beta = pair(tmp_path)
    alpha.start()
    beta.start()
    try:
        bob = await signed_in(beta, "bob")
        await share(bob, "alice@alpha.test")
        alice = await signed_in(alpha, "alice")
        uri = "lime://bob@beta.test/presence"
        assert (await command(alice, method="subscribe", uri=uri))["status"] == "success"
        await alice.expect(observe_of(uri), timeout=STEP)
        beta.stop()  # beta forgets its remote subscribers
        beta.start()  # says hello: alpha subscribes again
        bob = await signed_in(beta, "bob")
        await set_status(bob, "busy")
        pushed = await alice.expect(observe_of(uri, "busy"), timeout=STEP)
        assert pushed["from"] == "bob@beta.test"
    finally:
        await WireClient.close_all()
        alpha.stop()
        beta.stop()


async def test_keys_of_another_domain_follow_its_owner_acceptance(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    alpha, beta = servers
    async with Client(
        beta.ws_url, "dave@beta.test", instance="d1", password=PASSWORDS["dave"],
        backoff=FAST, key_dir=tmp_path / "keys",
    ) as dave_keys:  # fmt: skip
        sign_id = dave_keys.sign_id
    dave = await signed_in(beta, "dave")
    closed = await command(
        dave,
        method="merge",
        uri="/account",
        type="application/vnd.lime.account+json",
        resource={"allowUnknownSender": False},
    )
    assert closed["status"] == "success", closed
    alice, carol = await signed_in(alpha, "alice"), await signed_in(alpha, "carol")
    listing = "lime://dave@beta.test/keys"
    refused = await command(alice, method="get", uri=listing)
    assert refused["status"] == "failure"
    assert refused["reason"]["code"] == NOT_SHARED
    added = await command(
        dave, method="set", uri="/contacts", type=CONTACT, resource={"identity": "alice@alpha.test"}
    )
    assert added["status"] == "success", added
    listed = await command(alice, method="get", uri=listing)
    assert listed["status"] == "success", listed
    items = listed["resource"]["items"]
    assert [(i["identity"], i["instance"], i["signId"]) for i in items] == [
        ("dave@beta.test", "d1", sign_id)
    ]
    named = f"{listing}/{quote(sign_id, safe='')}"
    one = await command(carol, method="get", uri=named)  # anyone may ask whose a key is
    assert one["status"] == "success", one
    assert one["resource"]["signId"] == sign_id
    assert one["resource"]["identity"] == "dave@beta.test"
    elsewhere = await command(
        carol, method="get", uri=f"lime://bob@beta.test/keys/{quote(sign_id, safe='')}"
    )
    assert elsewhere["status"] == "failure"
    assert elsewhere["reason"]["code"] == 67  # not bob's key


async def test_a_sealed_message_across_servers_opens_with_its_signer(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    alpha, beta = servers
    async with (
        Client(
            beta.ws_url, "bob@beta.test", instance="b1", password=PASSWORDS["bob"],
            backoff=FAST, key_dir=tmp_path / "bob", directory_ttl=0,
        ) as bob,
        Client(
            alpha.ws_url, "alice@alpha.test", instance="a1", password=PASSWORDS["alice"],
            backoff=FAST, key_dir=tmp_path / "alice", directory_ttl=0,
        ) as alice,
    ):  # fmt: skip
        message_id = await alice.send_sealed("bob@beta.test", {"pin": 7}, "application/json")
        messages = bob.messages()
        async with asyncio.timeout(STEP):
            got = await anext(messages)
        assert (got.id, got.type, got.content) == (message_id, "application/json", {"pin": 7})
        assert got.verified_sender == "alice@alpha.test/a1"
        assert got.verified_sign_id == alice.sign_id
        assert bob.rejections == []
