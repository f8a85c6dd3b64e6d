"""The delivery contract across three real nodes behind HAProxy (issue 11, "Tests that must
exist"): messages with receipts between clients on different nodes (lime-js and the SDK), a
feed with subscribers on every node (feedme-client), presence across nodes, a named session
resumed on another node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.cluster.support import (
    STEP,
    FeedWatcher,
    established,
    guest,
    lime_account,
    lime_js,
    password,
    sdk,
)
from tests.lime_wire import WireClient

from tidings.devcluster.cluster import LocalCluster
from tidings.sdk import ReceivedMessage

pytestmark = pytest.mark.integration

PRESENCE = "application/vnd.lime.presence+json"


async def take(messages: AsyncIterator[ReceivedMessage], count: int) -> list[ReceivedMessage]:
    taken: list[ReceivedMessage] = []
    async with asyncio.timeout(STEP):
        while len(taken) < count:
            taken.append(await anext(messages))
    return taken


# -- messages and receipts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "recipient"),
    [(0, 1), (1, 2), (2, 0), (None, None)],
    ids=["node1-to-node2", "node2-to-node3", "node3-to-node1", "both-through-haproxy"],
)
def test_lime_js_message_with_receipts_between_nodes(
    cluster: LocalCluster, sender: int | None, recipient: int | None
) -> None:
    """lime-js alice on one node, lime-js bob on another: the message crosses, and accepted,
    dispatched (server), received and consumed (bob) come back to alice, each once."""
    instance = f"{sender}-{recipient}"
    result = lime_js(
        cluster,
        "sendReceive",
        sender=lime_account("alice", sender, cluster, instance=f"s{instance}"),
        recipient=lime_account("bob", recipient, cluster, instance=f"r{instance}"),
        to=f"bob@localhost/r{instance}",
        content=f"across {instance}",
        receipt=["accepted", "dispatched"],
        consume=True,
    )
    delivered = result["delivered"]
    assert delivered["content"] == f"across {instance}"
    assert delivered["from"] == f"alice@localhost/s{instance}"
    events = [n["event"] for n in result["senderNotifications"]]
    assert events[:2] == ["accepted", "dispatched"], result["senderNotifications"]
    assert sorted(events[2:]) == ["consumed", "received"], result["senderNotifications"]
    for notification in result["senderNotifications"][2:]:
        assert notification["from"] == f"bob@localhost/r{instance}"


async def test_sdk_receipts_come_back_to_a_sender_on_another_node(cluster: LocalCluster) -> None:
    sender, recipient = guest("alice"), guest("bob")
    async with (
        sdk(cluster, sender, "a", node=0) as alice,
        sdk(cluster, recipient, "b", node=2) as bob,
    ):
        to = f"{recipient}/b"
        accepted = await alice.send_message(to, "one", wait="accepted", timeout=STEP)
        dispatched = await alice.send_message(to, "two", wait="dispatched", timeout=STEP)
        receiving = asyncio.create_task(
            alice.send_message(to, "three", wait="received", timeout=STEP)
        )
        got = await take(bob.messages(), 3)  # taking one acknowledges it: "received"
        async with asyncio.timeout(STEP):
            received = await receiving
        assert [(m.id, m.content, m.sender) for m in got] == [
            (accepted, "one", f"{sender}/a"),
            (dispatched, "two", f"{sender}/a"),
            (received, "three", f"{sender}/a"),
        ]


# -- feeds ----------------------------------------------------------------------------------------


async def feedme(url: str) -> WireClient:
    client = await WireClient.connect(url, subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    await client.expect(lambda m: m.get("MessageType") == "HandshakeResponse")
    return client


async def act(client: WireClient, name: str, args: dict[str, Any], callback: str) -> None:
    client.send(
        {"MessageType": "Action", "ActionName": name, "ActionArgs": args, "CallbackId": callback}
    )
    answer = await client.expect(
        lambda m: m.get("MessageType") == "ActionResponse" and m.get("CallbackId") == callback
    )
    assert answer["Success"], answer


async def test_feed_with_real_subscribers_on_every_node_gets_each_revelation_once_in_order(
    cluster: LocalCluster,
) -> None:
    """feedme-client processes on each node's own port and through HAProxy open ``ticker``;
    actions reach the app on every node in turn (and through HAProxy); each client sees
    every revelation once, in order, its FeedMd5 verified by feedme-client."""
    urls = [node.ws_url for node in cluster.members] + [cluster.ws_url]
    watchers = [FeedWatcher(url, "ticker") for url in urls]
    try:
        for watcher in watchers:
            await watcher.start()
        actors = [await feedme(url) for url in urls]
        count = 20
        for n in range(count):
            await act(actors[n % len(actors)], "tick", {"n": n}, f"t{n}")
        await act(actors[0], "end", {"n": count - 1}, "end")
        results = [await watcher.finish() for watcher in watchers]
    finally:
        for watcher in watchers:
            watcher.kill()
    for url, result in zip(urls, results, strict=True):
        ending = next((i for i, line in enumerate(result.lines) if line.get("name") == "end"), None)
        assert ending is not None, (url, result.lines)
        early = [line for line in result.lines[:ending] if line["kind"] != "action"]
        assert early == [{"kind": "open", "data": {"n": -1}}], (url, result)  # no close, no bad
        ticks = [line["actionData"]["n"] for line in result.kinds("action")[:-1]]
        assert ticks == list(range(count)), url
        assert result.kinds("action")[-1]["name"] == "end"
        assert result.kinds("action")[-2]["newData"] == {"n": count - 1}


# -- presence -------------------------------------------------------------------------------------


def test_lime_js_presence_subscription_across_nodes(cluster: LocalCluster) -> None:
    """lime-js dave on node 2 subscribes to erin's presence; erin's session is on node 1: the
    initial status and erin's change arrive as observe commands."""
    result = lime_js(
        cluster,
        "presenceSubscribe",
        owner=lime_account("erin", 0, cluster),
        watcher=lime_account("dave", 1, cluster),
    )
    assert result["refused"]["status"] == "failure"
    assert result["subscribed"]["status"] == "success", result["subscribed"]
    assert result["initial"]["resource"]["status"] == "available"
    assert result["pushed"]["resource"]["status"] == "busy"
    assert result["ownerNode"] == "erin@localhost/owner"


async def login(url: str, who: str) -> WireClient:
    client = await WireClient.connect(url)
    name = who.partition("@")[0]
    session = await client.establish(who, password=password(name))
    assert session["state"] == "established", session
    return client


def observed(status: str, instances: list[str] | None = None) -> Any:
    def match(envelope: dict[str, Any]) -> bool:
        resource = envelope.get("resource") or {}
        return (
            envelope.get("method") == "observe"
            and resource.get("status") == status
            and (instances is None or resource.get("instances") == instances)
        )

    return match


async def test_presence_status_changes_and_sessions_seen_across_nodes(
    cluster: LocalCluster,
) -> None:
    """quinn (node 3) watches pat: pat's sessions on nodes 1 and 2 come and go, pat's status
    changes; each change reaches quinn, and pat gone everywhere is unavailable."""
    pat = await login(cluster.node(0).ws_url, "pat@localhost/p1")
    shared = await pat.command(
        id="c", method="set", uri="/contacts", type="application/vnd.lime.contact+json",
        resource={"identity": "quinn@localhost", "sharePresence": True},
    )  # fmt: skip
    assert shared["status"] == "success", shared
    quinn = await login(cluster.node(2).ws_url, "quinn@localhost/w")
    subscribed = await quinn.command(
        id="s", method="subscribe", uri="lime://pat@localhost/presence"
    )
    assert subscribed["status"] == "success", subscribed
    await quinn.expect(observed("available", ["p1"]), timeout=STEP)
    busy = await pat.command(
        id="p", method="set", uri="/presence", type=PRESENCE,
        resource={"status": "busy", "message": "meeting"},
    )  # fmt: skip
    assert busy["status"] == "success", busy
    seen = await quinn.expect(observed("busy"), timeout=STEP)
    assert seen["resource"]["message"] == "meeting"
    other = await login(cluster.node(1).ws_url, "pat@localhost/p2")
    await quinn.expect(observed("available", ["p1", "p2"]), timeout=STEP)
    pat.drop()
    await quinn.expect(observed("available", ["p2"]), timeout=STEP)
    other.drop()
    await quinn.expect(observed("unavailable"), timeout=STEP)


# -- a named session resumed on another node ------------------------------------------------------


async def test_named_session_resumed_through_haproxy_on_another_node_backlog_first(
    cluster: LocalCluster,
) -> None:
    """bob's session "desk" lives on node 1 and leaves with messages queued; bob comes back
    through HAProxy and lands on another node (tried until it does): the backlog comes in
    order, then what was sent after it came back."""
    sender, recipient = guest("alice"), guest("bob")
    to = f"{recipient}/desk"
    async with sdk(cluster, sender, "s", node=1) as alice:
        async with sdk(cluster, recipient, "desk", node=0) as first:
            early = [await alice.send_message(to, f"early-{i}", timeout=STEP) for i in range(3)]
            assert [m.id for m in await take(first.messages(), 3)] == early
        backlog = [await alice.send_message(to, f"queued-{i}", timeout=STEP) for i in range(10)]
        for _attempt in range(6):
            before = established(cluster)
            bob = sdk(cluster, recipient, "desk", node=None)
            await bob.connect()
            landed = [a - b for a, b in zip(established(cluster), before, strict=True)]
            if landed.index(max(landed)) != 0:
                break
            await bob.close()  # on node 1 again: nothing taken, so nothing acknowledged
        else:
            pytest.fail("HAProxy never sent the session to another node")
        try:
            later = [await alice.send_message(to, f"new-{i}", timeout=STEP) for i in range(5)]
            got = await take(bob.messages(), 15)
            assert [m.id for m in got] == backlog + later
        finally:
            await bob.close()
