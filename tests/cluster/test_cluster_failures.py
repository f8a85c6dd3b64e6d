"""Failures of a three-node cluster with traffic flowing (issue 11): a node killed with
``kill -9`` (its clients reconnect through HAProxy and resume; every accepted message reaches
the application exactly once; the other nodes keep serving), a persistent session moving to
another node after its node is killed, Redis restarted mid-traffic. Each test brings the
cluster back to three nodes before it ends."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from tests.cluster.support import STEP, guest, sdk

from tidings.devcluster.cluster import LocalCluster
from tidings.sdk import Client, MessageFailed, PersistentSession

pytestmark = pytest.mark.integration

DRAIN_S = 60.0
"""Bound on waiting for every accepted message after a failure (reconnects, catch-up)."""


@pytest.fixture
def revive(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """Restart whatever node a test killed, so the next test finds three."""
    yield cluster
    for node in cluster.members:
        if not node.running:
            cluster.restart_node(node.index)


@dataclass
class Traffic:
    """Senders streaming numbered messages to receivers; what was accepted and what each
    receiving application took (counted there: the SDK drops redeliveries by id)."""

    senders: dict[str, Client]
    receivers: dict[str, Client]
    accepted: dict[str, str] = field(default_factory=dict)  # message id -> receiver node
    taken: Counter[str] = field(default_factory=Counter)
    taken_by: dict[str, list[str]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    phase: str = "before"
    """Stamped into each message id: messages of a phase are told apart at the receiver."""

    async def send(self, name: str, client: Client, pairs: list[str]) -> None:
        n = 0
        while not self.stop.is_set():
            to = pairs[n % len(pairs)]
            message_id = f"{self.phase}:{name}:{n}"
            await client.send_message(to, n, "application/json", id=message_id, timeout=DRAIN_S)
            self.accepted[message_id] = to
            n += 1
            self.changed.set()

    async def receive(self, name: str, client: Client) -> None:
        taken = self.taken_by.setdefault(name, [])
        async for message in client.messages():
            self.taken[message.id] += 1
            taken.append(message.id)
            self.changed.set()

    async def until(self, check: Callable[[], bool], what: str, timeout: float = STEP) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not check():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            pytest.fail(
                f"no {what} within {timeout} s: {len(self.accepted)} accepted, "
                f"{sum(1 for m in self.accepted if self.taken[m])} of them taken"
            )

    def all_taken(self) -> bool:
        return all(self.taken[message_id] for message_id in self.accepted)


def missing(cluster: LocalCluster, traffic: Traffic) -> str:
    """What the failure message needs: the accepted messages not taken, and what the queue
    still holds of them (were they stored and never written, or are they gone?)."""
    lost = [m for m in traffic.accepted if not traffic.taken[m]]
    with psycopg.connect(cluster.postgres_url) as db:
        rows = db.execute(
            "SELECT seq, identity, instance, msg_id FROM queue WHERE msg_id = ANY(%s)", (lost,)
        ).fetchall()
    logs = "".join(
        f"\n--- {node.node_id}:\n" + node.log.read_text(errors="replace")[-3000:]
        for node in cluster.members
        if node.log.exists()
    )
    return f"not taken: {lost} (to {[traffic.accepted[m] for m in lost]}); queued: {rows}{logs}"


async def run_traffic(traffic: Traffic, pairs: dict[str, list[str]]) -> list[asyncio.Task[None]]:
    tasks = [
        asyncio.create_task(traffic.receive(name, client))
        for name, client in traffic.receivers.items()
    ]
    tasks += [
        asyncio.create_task(traffic.send(name, client, pairs[name]))
        for name, client in traffic.senders.items()
    ]
    return tasks


async def test_kill_9_a_node_while_messages_flow_every_accepted_message_once(
    revive: LocalCluster,
) -> None:
    """Senders and receivers on each node; node 2 is killed mid-stream. Its clients reconnect
    through HAProxy and resume their sessions; the senders on nodes 1 and 3 keep getting
    their messages to the receivers on nodes 1 and 3 while it is down; in the end every
    accepted message reached its receiving application exactly once."""
    cluster = revive
    victim = 1
    senders = {f"s{i}": sdk(cluster, guest(f"s{i}"), "out", node=i) for i in range(3)}
    receivers = {f"r{i}": sdk(cluster, guest(f"r{i}"), "in", node=i) for i in range(3)}
    for client in (*senders.values(), *receivers.values()):
        await client.connect()
    targets = [client.node for client in receivers.values()]
    traffic = Traffic(senders, receivers)
    pairs = {name: targets for name in senders}
    tasks = await run_traffic(traffic, pairs)
    try:
        await traffic.until(lambda: len(traffic.accepted) >= 90, "traffic before the kill")
        cluster.kill_node(victim)
        traffic.phase = "down"
        # the survivors serve each other meanwhile: messages sent after the kill between
        # clients on nodes 1 and 3 reach their applications
        surviving = {receivers["r0"].node, receivers["r2"].node}

        def survivors_served() -> bool:
            taken = [
                message_id
                for message_id, to in traffic.accepted.items()
                if message_id.startswith(("down:s0:", "down:s2:")) and to in surviving
            ]
            return len([m for m in taken if traffic.taken[m]]) >= 20

        await traffic.until(survivors_served, "survivors serving each other")
        # the victim's clients came back through HAProxy: their traffic flows again
        await traffic.until(
            lambda: (
                any(m.startswith("down:s1:") for m in traffic.accepted)
                and any(m.startswith("down:") for m in traffic.taken_by["r1"])
            ),
            "the victim's clients back",
            timeout=DRAIN_S,
        )
        traffic.phase = "after"
        await traffic.until(lambda: len(traffic.accepted) >= 400, "more traffic", DRAIN_S)
        traffic.stop.set()
        async with asyncio.timeout(DRAIN_S):
            await asyncio.gather(*tasks[len(receivers) :])  # the senders end
        try:
            await traffic.until(traffic.all_taken, "every accepted message taken", DRAIN_S)
        except pytest.fail.Exception as failure:
            raise AssertionError(f"{failure}; {missing(cluster, traffic)}") from None
    finally:
        traffic.stop.set()
        for task in tasks:
            task.cancel()
        for client in (*senders.values(), *receivers.values()):
            await client.close(timeout=2)
    assert senders["s1"].reconnections >= 1 and receivers["r1"].reconnections >= 1
    assert not [m for m in traffic.accepted if traffic.taken[m] != 1], "lost or duplicated"
    assert set(traffic.taken) == set(traffic.accepted)
    for name in receivers:  # each sender's messages reached each receiver in order
        taken = traffic.taken_by[name]
        for sender in senders:
            numbers = [int(m.rpartition(":")[2]) for m in taken if m.split(":")[1] == sender]
            assert numbers == sorted(numbers), (name, sender)


async def test_a_persistent_session_continues_on_another_node_after_kill_9(
    revive: LocalCluster,
) -> None:
    """A buyer begins a persistent session on node 1 and buys items with mementos; node 1 is
    killed; the same session (its nonce) goes on through HAProxy on another node; a new
    instance that begins again finds the last memento, a crash, and a new nonce, and the old
    nonce is refused (125). The shop on node 3 got each item once, in order."""
    cluster = revive
    buyer_id, shop_id = guest("buyer"), guest("shop")
    shop = sdk(cluster, shop_id, "till", node=2)
    buyer = sdk(cluster, buyer_id, "buy", node=0)
    await shop.connect()
    await buyer.connect()
    till = f"{shop_id}/till"
    try:
        session = await PersistentSession(buyer).begin()
        assert session.memento is None and not session.crashed
        first_nonce = session.nonce
        for item in range(5):
            await session.send_message(till, f"item-{item}", memento=str(item), timeout=STEP)
        cluster.kill_node(0)
        for item in range(5, 10):  # waits across the reconnection to another node
            await session.send_message(till, f"item-{item}", memento=str(item), timeout=DRAIN_S)
        assert buyer.reconnections >= 1
        await buyer.close()
        again = sdk(cluster, buyer_id, "buy", node=None)
        await again.connect()
        try:
            resumed = await PersistentSession(again).begin()
            assert (resumed.memento, resumed.crashed) == ("9", True)
            assert resumed.nonce != first_nonce
            stale = PersistentSession(again)
            stale.nonce = first_nonce
            with pytest.raises(MessageFailed) as refused:
                await stale.send_message(till, "item-again", memento="10", timeout=STEP)
            assert refused.value.code == 125
            await resumed.end()
        finally:
            await again.close()
        items: list[str] = []
        try:
            async with asyncio.timeout(STEP):
                async for message in shop.messages():
                    items.append(message.content)
                    if len(items) == 10:
                        break
        except TimeoutError:
            with psycopg.connect(cluster.postgres_url) as db:
                queued = db.execute(
                    "SELECT seq, instance, sender, msg_id FROM queue WHERE identity = %s",
                    (shop_id,),
                ).fetchall()
            raise AssertionError(f"the shop took {items}; its queue holds {queued}") from None
        assert items == [f"item-{i}" for i in range(10)]
        marker = await sdk_send(cluster, till)
        async with asyncio.timeout(STEP):
            after = await anext(shop.messages())
        assert after.id == marker  # nothing else (no duplicate, no item-again) came between
    finally:
        await buyer.close()
        await shop.close()


async def sdk_send(cluster: LocalCluster, to: str) -> str:
    async with sdk(cluster, guest("marker"), "m", node=1) as client:
        return await client.send_message(to, "marker", timeout=STEP)


async def test_redis_restarted_mid_traffic_nothing_accepted_is_lost(cluster: LocalCluster) -> None:
    """Senders on node 1 stream to receivers on nodes 2 and 3 (every message crosses nodes
    through Redis); Redis is killed and started again mid-stream. Every accepted message is
    taken once (those whose Wake was lost are read from the store when the nodes reconnect),
    and messages sent after the restart arrive."""
    senders = {f"s{i}": sdk(cluster, guest(f"rs{i}"), "out", node=0) for i in range(2)}
    receivers = {f"r{i}": sdk(cluster, guest(f"rr{i}"), "in", node=i) for i in (1, 2)}
    for client in (*senders.values(), *receivers.values()):
        await client.connect()
    targets = [client.node for client in receivers.values()]
    traffic = Traffic(senders, receivers)
    tasks = await run_traffic(traffic, {name: targets for name in senders})
    try:
        await traffic.until(lambda: len(traffic.accepted) >= 60, "traffic before the restart")
        await asyncio.to_thread(cluster.restart_redis)
        traffic.phase = "after"
        await traffic.until(
            lambda: len([m for m in traffic.taken if m.startswith("after:")]) >= 60,
            "traffic after the restart",
            DRAIN_S,
        )
        traffic.stop.set()
        async with asyncio.timeout(DRAIN_S):
            await asyncio.gather(*tasks[len(receivers) :])
        await traffic.until(traffic.all_taken, "every accepted message taken", DRAIN_S)
    finally:
        traffic.stop.set()
        for task in tasks:
            task.cancel()
        for client in (*senders.values(), *receivers.values()):
            await client.close(timeout=2)
    assert not [m for m in traffic.accepted if traffic.taken[m] != 1], "lost or duplicated"
    assert set(traffic.taken) == set(traffic.accepted)
