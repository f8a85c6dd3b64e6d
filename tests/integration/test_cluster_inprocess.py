"""Three Tidings nodes in one event loop acting as one service: each a full ``TidingsServer`` on
its own loopback ports, all sharing one store (memory, then one SQLite file) and one in-process
broker bus, driven by the SDK and raw LIME / Feedme clients (DESIGN.md section 5, issue 11)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.lime_wire import WireClient

from tidings.broker.inprocess import Bus, InProcessBroker
from tidings.config import Settings
from tidings.core.address import parse_identity
from tidings.core.consent_model import InboxEvent, InboxKind
from tidings.core.ports import Store
from tidings.sdk import Backoff, Client, ReceivedMessage, SessionFailed
from tidings.store.memory import MemoryStore
from tidings.store.sqlite import SqliteStore
from tidings.wiring import Services, TidingsServer

pytestmark = pytest.mark.integration

STEP = 10.0
FAST = Backoff(initial=0.02, maximum=0.2)
NAMES = ("alice", "bob", "carol")
PRESENCE = "application/vnd.lime.presence+json"


@dataclass
class Clock:
    """The cluster's clock, moved by hand (heartbeat expiry without waiting)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


class GatedBroker(InProcessBroker):
    """Node A's broker: while ``gate`` is clear, what it published has not "reached the
    broker" (``flushed`` waits), as a Redis reply still on its way; while ``muted``, what it
    publishes is lost, as from a node about to die."""

    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.gate = asyncio.Event()
        self.gate.set()
        self.muted = False

    def publish(self, channel: str, message: bytes) -> None:
        if not self.muted:
            super().publish(channel, message)

    async def flushed(self) -> None:
        await self.gate.wait()


@dataclass
class Cluster:
    nodes: list[TidingsServer]
    bus: Bus
    clock: Clock
    store: Store
    first: GatedBroker
    keys: dict[str, str] = field(default_factory=dict)

    def url(self, node: int) -> str:
        return f"ws://127.0.0.1:{self.nodes[node].ws_port}/"

    def http(self, node: int) -> str:
        return f"http://127.0.0.1:{self.nodes[node].http_port}"

    def services(self, node: int) -> Services:
        services = self.nodes[node].services
        assert services is not None
        return services

    def client(self, node: int, name: str, instance: str, **kwargs: Any) -> Client:
        return Client(
            self.url(node), f"{name}@localhost", instance=instance, password=f"{name}-pw",
            backoff=FAST, **kwargs,
        )  # fmt: skip


@pytest.fixture(params=["memory", "sqlite"])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    store: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    first = GatedBroker("node-a")
    clock = Clock()
    nodes = []
    for index, node_id in enumerate(("node-a", "node-b", "node-c")):
        settings = Settings(ws_port=0, http_port=0, data_dir=tmp_path / node_id, store="memory")
        broker = first if index == 0 else first.join(node_id)
        nodes.append(TidingsServer(settings, store=store, broker=broker, cluster_clock=clock))
    running = Cluster(nodes, first.bus, clock, store, first)
    try:
        for node in nodes:
            await node.start()
        accounts = running.services(0).accounts
        for name in NAMES:
            await accounts.add(name, f"{name}-pw")
            running.keys[name] = await accounts.create_key(name)
        yield running
    finally:
        await WireClient.close_all()
        for node in reversed(nodes):
            await node.stop()
        store.close()


async def take(messages: AsyncIterator[ReceivedMessage], count: int = 1) -> list[ReceivedMessage]:
    taken: list[ReceivedMessage] = []
    async with asyncio.timeout(STEP):
        while len(taken) < count:
            taken.append(await anext(messages))
    return taken


async def login(cluster: Cluster, node: int, who: str) -> WireClient:
    client = await WireClient.connect(cluster.url(node))
    name = who.partition("@")[0]
    session = await client.establish(who, password=f"{name}-pw")
    assert session["state"] == "established", session
    return client


async def eventually(check: Any) -> None:
    """Wait (bounded) until ``check()`` is true: the nodes' tasks run in this loop."""
    async with asyncio.timeout(STEP):
        while not check():
            await asyncio.sleep(0.01)


async def test_every_node_knows_the_others(cluster: Cluster) -> None:
    for index in range(3):
        peers = set(cluster.services(index).cluster.directory.nodes)
        assert peers == {"node-a", "node-b", "node-c"} - {f"node-{'abc'[index]}"}


async def test_a_message_crosses_nodes_with_its_receipts(cluster: Cluster) -> None:
    async with (
        cluster.client(0, "alice", "a1") as alice,
        cluster.client(1, "bob", "b1") as bob,
    ):
        dispatched = await alice.send_message("bob@localhost/b1", "one", wait="dispatched")
        sending = asyncio.create_task(
            alice.send_message("bob@localhost/b1", "two", wait="received", timeout=STEP)
        )
        got = await take(bob.messages(), 2)
        async with asyncio.timeout(STEP):
            received = await sending
        assert [(m.id, m.content, m.sender) for m in got] == [
            (dispatched, "one", "alice@localhost/a1"),
            (received, "two", "alice@localhost/a1"),
        ]


async def test_raw_receipts_accepted_dispatched_received(cluster: Cluster) -> None:
    alice = await login(cluster, 0, "alice@localhost/r1")
    bob = await login(cluster, 2, "bob@localhost/r2")
    await alice.set_receipt("accepted", "dispatched", "received", "consumed")
    alice.send({"id": "m1", "to": "bob@localhost/r2", "type": "text/plain", "content": "hi"})
    await alice.expect_id("m1", event="accepted")
    message = await bob.expect_id("m1")
    assert message["from"] == "alice@localhost/r1"
    await alice.expect_id("m1", event="dispatched")
    bob.send({"id": "m1", "to": "alice@localhost/r1", "event": "received"})
    await alice.expect_id("m1", event="received")
    bob.send({"id": "m1", "to": "alice@localhost/r1", "event": "consumed"})
    await alice.expect_id("m1", event="consumed")


@pytest.mark.parametrize("local", [False, True], ids=["from-another-node", "from-this-node"])
async def test_a_notification_that_overtakes_accepted_waits_for_it(
    cluster: Cluster, local: bool
) -> None:
    """Bob answers ``received`` while the ``accepted`` of alice's message is still waiting for
    node A's wakes to reach the broker: alice still hears accepted first. Bob's answer comes
    through the bus (bob on node B) or from node A itself (another session of bob's there,
    beside the one on node B that the wake is for)."""
    alice = await login(cluster, 0, "alice@localhost/o1")
    bob_b = await login(cluster, 1, "bob@localhost/o2")
    bob = await login(cluster, 0, "bob@localhost/o3") if local else bob_b
    await alice.set_receipt("accepted", "received")
    here = cluster.services(0).cluster
    await eventually(lambda: here.directory.owner("bob@localhost", "o2") == "node-b")
    cluster.first.gate.clear()
    alice.send({"id": "m1", "to": "bob@localhost", "type": "text/plain", "content": "hi"})
    await bob.expect_id("m1")
    bob.send({"id": "m1", "to": "alice@localhost/o1", "event": "received"})
    await eventually(lambda: len(here._accepting.get("m1", ())) == 1)
    assert not [e for e in alice.held if e.get("id") == "m1"]
    cluster.first.gate.set()
    told = [await alice.expect(lambda e: e.get("id") == "m1") for _ in range(2)]
    assert [e["event"] for e in told] == ["accepted", "received"]


async def test_a_resent_message_whose_node_died_before_its_wake_is_written(
    cluster: Cluster,
) -> None:
    """Node A stores alice's message for bob (live on node B), then dies before its wake and
    its "accepted" go out. Carol's message to bob, stored on node B, is written live past
    that row. Alice re-sends hers on node C: it is found stored, and node C wakes node B for
    its row before answering "accepted" again. Bob gets it, before alice's next."""
    bob = await login(cluster, 1, "bob@localhost/w")
    carol = await login(cluster, 1, "carol@localhost/w")
    here = cluster.services(0).cluster
    await eventually(lambda: here.directory.owner("bob@localhost", "w") == "node-b")
    alice = await login(cluster, 0, "alice@localhost/s")
    await alice.set_receipt("accepted")
    alice.send({"id": "m0", "to": "bob@localhost/w", "type": "text/plain", "content": "0"})
    await bob.expect_id("m0")
    cluster.first.muted = True  # node A's last words are lost
    cluster.first.gate.clear()
    alice.send({"id": "m1", "to": "bob@localhost/w", "type": "text/plain", "content": "1"})
    async with asyncio.timeout(STEP):
        while not await cluster.store.queued_at(
            "alice@localhost/s", "m1", [("bob@localhost", "w")]
        ):
            await asyncio.sleep(0.01)
    carol.send({"id": "c1", "to": "bob@localhost/w", "type": "text/plain", "content": "c"})
    await bob.expect_id("c1")  # bob's cursor is past alice's m1 now
    again = await login(cluster, 2, "alice@localhost/s")
    await again.set_receipt("accepted")
    again.send({"id": "m1", "to": "bob@localhost/w", "type": "text/plain", "content": "1"})
    await again.expect_id("m1", event="accepted")
    again.send({"id": "m2", "to": "bob@localhost/w", "type": "text/plain", "content": "2"})
    await again.expect_id("m2", event="accepted")
    first = await bob.expect(lambda e: e.get("id") in ("m1", "m2"))
    assert first["id"] == "m1"
    await bob.expect_id("m2")
    cluster.first.gate.set()


async def test_a_retried_notify_whose_node_died_before_its_wake_is_written(
    cluster: Cluster,
) -> None:
    """The same for a server-side notify (an application's, through the HTTP API): node A
    stores it and dies before its wake goes out (and before it answers); the application
    retries on node C, where the row is found stored and node B is woken for it."""
    bob = await login(cluster, 1, "bob@localhost/w")
    carol = await login(cluster, 1, "carol@localhost/w")
    here = cluster.services(0).cluster
    await eventually(lambda: here.directory.owner("bob@localhost", "w") == "node-b")
    to = parse_identity("bob@localhost")
    notify = {"message_id": "n1", "type_": "text/plain", "content": "1", "session": "w"}
    cluster.first.muted = True  # node A's last words are lost
    cluster.first.gate.clear()
    first = asyncio.create_task(cluster.services(0).sessions.notify(to, **notify))
    origin = cluster.services(0).lime.server_node.text
    try:
        async with asyncio.timeout(STEP):
            while not await cluster.store.queued_at(origin, "n1", [("bob@localhost", "w")]):
                await asyncio.sleep(0.01)
        assert not first.done()  # node A answers only once its wakes are out: never
        carol.send({"id": "c1", "to": "bob@localhost/w", "type": "text/plain", "content": "c"})
        await bob.expect_id("c1")  # bob's cursor is past the notify's row now
        again = await cluster.services(2).sessions.notify(to, **notify)
        assert again.message_id == "n1"
        got = await bob.expect_id("n1")
        assert got["from"] == origin
    finally:
        first.cancel()
        cluster.first.gate.set()


async def test_a_message_to_a_session_not_heard_of_yet_goes_to_that_session(
    cluster: Cluster,
) -> None:
    """Bob's new session on node B is unknown on node A (its Attached lost with the broker
    down), though node A knows bob: alice's message to bob@localhost/new still goes to that
    session (its record is read from the store), not where bob's identity address goes."""
    old = await login(cluster, 1, "bob@localhost/old")
    here = cluster.services(0).cluster
    await eventually(lambda: here.directory.owner("bob@localhost", "old") == "node-b")
    alice = await login(cluster, 0, "alice@localhost/a")
    await alice.set_receipt("accepted")
    # node A has bob's circle now (who may write to bob): the next message needs no store read
    alice.send({"id": "m0", "to": "bob@localhost/old", "type": "text/plain", "content": "hi"})
    await old.expect_id("m0")
    cluster.bus.suspend()
    new = await login(cluster, 1, "bob@localhost/new")
    alice.send({"id": "m1", "to": "bob@localhost/new", "type": "text/plain", "content": "hi"})
    await alice.expect_id("m1", event="accepted")
    cluster.bus.restore()  # node A hears of bob/new now, and wakes node B for the row
    got = await new.expect_id("m1")
    assert got["to"] == "bob@localhost/new"
    assert not [e for e in old.held if e.get("id") == "m1"]


async def test_an_identity_address_reaches_a_session_that_exists_only_on_another_node(
    cluster: Cluster,
) -> None:
    async with cluster.client(2, "carol", "phone") as carol:
        await eventually(lambda: cluster.services(0).cluster.directory.owner(
            "carol@localhost", "phone") == "node-c")  # fmt: skip
        async with cluster.client(0, "alice", "a2") as alice:
            sent = [await alice.send_message("carol@localhost", f"m{i}") for i in range(5)]
            got = await take(carol.messages(), 5)
            assert [m.id for m in got] == sent


async def test_a_command_and_its_response_cross_nodes(cluster: Cluster) -> None:
    alice = await login(cluster, 0, "alice@localhost/c1")
    bob = await login(cluster, 1, "bob@localhost/c2")
    alice.send({"id": "q1", "to": "bob@localhost/c2", "method": "get", "uri": "/ping"})
    request = await bob.expect_id("q1")
    assert request["from"] == "alice@localhost/c1"
    bob.send(
        {"id": "q1", "to": request["from"], "method": "get", "status": "success",
         "type": "application/vnd.lime.ping+json", "resource": {}}
    )  # fmt: skip
    response = await alice.expect_id("q1")
    assert response["status"] == "success"


async def test_reconnecting_to_another_node_resumes_the_session_and_takes_it_over(
    cluster: Cluster,
) -> None:
    async with cluster.client(0, "alice", "a3") as alice:
        old = await login(cluster, 0, "bob@localhost/desk")
        first = []
        for i in range(3):
            alice_id = await alice.send_message("bob@localhost/desk", f"before-{i}")
            first.append(alice_id)
            await old.expect_id(alice_id)  # written to the old connection, not acknowledged
        backlog = [await alice.send_message("bob@localhost/desk", f"queued-{i}") for i in range(3)]
        async with cluster.client(1, "bob", "desk") as bob:
            ended = await old.expect(lambda e: e.get("state") == "failed")
            assert ended["reason"]["code"] == 12  # taken over
            later = [await alice.send_message("bob@localhost/desk", f"after-{i}") for i in range(3)]
            got = await take(bob.messages(), 9)
            assert [m.id for m in got] == first + backlog + later


async def test_the_sdk_sees_a_takeover_across_nodes(cluster: Cluster) -> None:
    old = cluster.client(0, "bob", "b5")
    await old.connect()
    try:
        async with cluster.client(2, "bob", "b5"):
            with pytest.raises(SessionFailed) as caught:
                await take(old.messages())
            assert caught.value.code == 12
    finally:
        await old.close()


async def test_presence_is_seen_across_nodes(cluster: Cluster) -> None:
    bob = await login(cluster, 0, "bob@localhost/p1")
    await bob.command(
        id="c", method="set", uri="/contacts", type="application/vnd.lime.contact+json",
        resource={"identity": "alice@localhost"},
    )  # fmt: skip
    alice = await login(cluster, 1, "alice@localhost/p1")
    subscribed = await alice.command(
        id="s", method="subscribe", uri="lime://bob@localhost/presence"
    )
    assert subscribed["status"] == "success", subscribed
    first = await alice.expect(lambda e: e.get("method") == "observe")
    assert first["resource"]["instances"] == ["p1"]
    await bob.command(
        id="p", method="set", uri="/presence", type=PRESENCE,
        resource={"status": "busy", "message": "meeting"},
    )  # fmt: skip
    busy = await alice.expect(
        lambda e: e.get("method") == "observe" and e["resource"].get("status") == "busy"
    )
    assert busy["resource"]["message"] == "meeting"
    other = await login(cluster, 2, "bob@localhost/p2")
    both = await alice.expect(
        lambda e: e.get("method") == "observe" and e["resource"].get("instances") == ["p1", "p2"]
    )
    assert both["resource"]["status"] == "available"  # the best of the two sessions
    read = await alice.command(id="r", method="get", uri="lime://bob@localhost/presence")
    assert read["resource"]["instances"] == ["p1", "p2"]
    bob.drop()
    other.drop()
    await alice.expect(
        lambda e: e.get("method") == "observe" and e["resource"].get("status") == "unavailable"
    )


async def test_a_feed_with_subscribers_on_every_node_gets_each_revelation_once_in_order(
    cluster: Cluster,
) -> None:
    clients = []
    for node in range(3):
        client = await WireClient.connect(
            f"{cluster.url(node)}?token={cluster.keys['bob']}", subprotocol="feedme"
        )
        client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
        await client.expect(lambda m: m.get("MessageType") == "HandshakeResponse")
        client.send({"MessageType": "FeedOpen", "FeedName": "~bob/scores", "FeedArgs": {}})
        opened = await client.expect(lambda m: m.get("MessageType") == "FeedOpenResponse")
        assert opened["Success"], opened
        clients.append(client)
    async with httpx.AsyncClient() as http:

        async def goal(n: int) -> None:
            answer = await http.post(
                f"{cluster.http(n % 3)}/feeds/~bob/scores/actions",
                headers={"Authorization": f"Bearer {cluster.keys['bob']}"},
                json={"action_name": "goal", "action_data": {"n": n}, "feed_data": {"n": n}},
            )
            assert answer.status_code == 200, answer.text

        async def next_goal(client: WireClient) -> int:
            revealed = await client.expect(lambda m: m.get("MessageType") == "ActionRevelation")
            n: int = revealed["ActionData"]["n"]
            return n

        for n in range(5):
            await goal(n)
        for client in clients:
            assert [await next_goal(client) for _ in range(5)] == [0, 1, 2, 3, 4]
        # a last goal, revealed once all five were seen: it comes next everywhere, so none of
        # the five came twice
        await goal(5)
        for client in clients:
            assert await next_goal(client) == 5


async def test_caches_are_forgotten_on_every_node(cluster: Cluster) -> None:
    far = cluster.services(2)
    circle = await far.trust.circle("bob@localhost")
    assert "alice@localhost" not in circle.friends
    await cluster.services(0).lime.roster.put_contact(
        "bob@localhost", {"identity": "alice@localhost"}, merge=False
    )
    assert far.trust.cached("bob@localhost") is None
    assert "alice@localhost" in (await far.trust.circle("bob@localhost")).friends
    heard: list[tuple[str, str]] = []
    far.grants.listen(lambda owner, requester: heard.append((owner, requester)))
    cluster.services(0).grants.changed("bob@localhost", "carol@localhost")
    assert heard == [("bob@localhost", "carol@localhost")]


async def test_consent_events_reach_listeners_on_other_nodes(cluster: Cluster) -> None:
    events: list[InboxEvent] = []
    cluster.services(1).consent.subscribe("bob@localhost", events.append)
    event = InboxEvent(7, "bob@localhost", InboxKind.INVITE_REFUSED, {"x": 1}, 5.0)
    announce = cluster.services(0).consent.announce  # what the service calls after a commit
    assert announce is not None
    announce(event)
    assert events == [event]


async def test_key_directory_changes_reach_subscribers_on_other_nodes(cluster: Cluster) -> None:
    heard: list[tuple[str, dict[str, Any]]] = []

    class Sub:
        identity = "bob@localhost"
        instance = "k"

    far = cluster.services(2).lime.keys
    await far.subscribe(Sub(), "bob@localhost", lambda i, d: heard.append((i, d)))
    keys_a = cluster.services(0).lime.keys
    assert keys_a.announce is not None
    keys_a.announce("bob@localhost", {"signId": "s1"})
    await eventually(lambda: heard == [("bob@localhost", {"signId": "s1"})])


async def test_a_dead_nodes_sessions_leave_the_directory(cluster: Cluster) -> None:
    async with cluster.client(2, "carol", "gone"):
        directory = cluster.services(0).cluster.directory
        await eventually(lambda: directory.owner("carol@localhost", "gone") == "node-c")
        cluster.services(2).cluster.halt()  # no heartbeats, no Detached: a crash
        cluster.clock.now += 3 * cluster.services(0).cluster.heartbeat_s
        cluster.services(0).cluster.tick()
        assert directory.owner("carol@localhost", "gone") is None
        assert "node-c" not in directory.nodes


async def test_a_broker_outage_is_caught_up_from_the_store(cluster: Cluster) -> None:
    async with (
        cluster.client(0, "alice", "o1") as alice,
        cluster.client(1, "bob", "o2") as bob,
    ):
        await eventually(lambda: cluster.services(0).cluster.directory.owner(
            "bob@localhost", "o2") == "node-b")  # fmt: skip
        before = await alice.send_message("bob@localhost/o2", "before")
        (got,) = await take(bob.messages())
        assert got.id == before
        cluster.bus.suspend()
        during = [await alice.send_message("bob@localhost/o2", f"during-{i}") for i in range(4)]
        cluster.bus.restore()
        after = await alice.send_message("bob@localhost/o2", "after")
        got_all = await take(bob.messages(), 5)
        ids = [m.id for m in got_all]
        assert sorted(ids) == sorted([*during, after]) and len(set(ids)) == 5
        assert [i for i in ids if i in during] == during


async def test_a_node_taken_for_dead_is_known_again_with_its_sessions(cluster: Cluster) -> None:
    async with cluster.client(1, "bob", "back"):
        here = cluster.services(0).cluster
        await eventually(lambda: here.directory.owner("bob@localhost", "back") == "node-b")
        cluster.clock.now += 3 * here.heartbeat_s  # node A hears nothing for three beats
        here.tick()
        assert here.directory.owner("bob@localhost", "back") is None
        cluster.services(1).cluster.tick()  # node B's next heartbeat
        assert here.directory.owner("bob@localhost", "back") == "node-b"
