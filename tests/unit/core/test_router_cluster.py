"""The router with other nodes writing the same queues (two routers over one memory store): a
row another node stored is written once to the live connection, whether a replay reads it or a
live write of a newer row jumped the cursor past it before its ``Wake`` came."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.unit.core.test_router_memory import Client, Notices, _anyone
from tidings.core.address import parse_address
from tidings.core.cluster_directory import Holes
from tidings.core.model import DeliveryEvent
from tidings.core.router import QueueLimits, Router
from tidings.core.session_registry import LiveSession, SessionRegistry
from tidings.store.memory import MemoryStore

SERVER = "postmaster@x/server"


class Peers:
    """What a router asks of the other nodes, recorded: every row stored for a session not
    live here (a ``Wake`` in a deployment)."""

    def __init__(self) -> None:
        self.woken: list[tuple[str, str, int]] = []
        self.receipts: list[tuple[str, str, str, DeliveryEvent]] = []
        self.unannounced = 0
        self.held: list[Callable[[], None]] | None = None
        """When a list: what waits for the wakes to be out (not released by itself)."""

    def stored(self, record: Any, seq: int) -> None:
        self.woken.append((record.identity, record.instance, seq))
        self.unannounced += 1

    def waking(self) -> bool:
        return self.unannounced > 0

    def once_announced(self, then: Callable[[], None], message_id: str) -> None:
        self.unannounced = 0
        if self.held is None:
            then()
        else:
            self.held.append(then)

    async def announced(self) -> None:
        self.unannounced = 0

    def held_back(self, message_id: str, then: Callable[[], None]) -> bool:
        return False

    async def look_up(self, identity: str, instance: str) -> None: ...

    def forward(
        self, identity: str, instance: str, payload: bytes, *, command: bool, about: str = ""
    ) -> bool:
        return False

    def receipt(self, identity: str, instance: str, message_id: str, event: DeliveryEvent) -> None:
        self.receipts.append((identity, instance, message_id, event))

    def attaching(self, live: LiveSession) -> None:
        live.holes = Holes()

    def detached(self, live: LiveSession) -> None: ...

    def held_elsewhere(self) -> dict[str, dict[str, Any]]:
        return {}

    def record_changed(self, identity: str, instance: str) -> None: ...

    async def refresh(self) -> None: ...


async def test_accepted_waits_until_the_wakes_are_out() -> None:
    """A node that answered "accepted" and died before its wake left would leave the message
    in its recipient's queue behind what the sender sends next through another node."""
    store = MemoryStore()
    reg_a, router_a, peers_a = node(store)
    reg_b, router_b, _ = node(store)
    await connect(router_b, reg_b, "bob@x/b")
    alice, alice_client = await connect(router_a, reg_a, "alice@x/a")
    reg_a.record("bob@x", "b")
    peers_a.held = []
    await send(store, router_a, alice, "m1", "bob@x/b")
    assert alice_client.told == [] and len(peers_a.held) == 1
    peers_a.held.pop()()
    assert alice_client.told == [("m1", DeliveryEvent.ACCEPTED, None)]


def node(store: MemoryStore) -> tuple[SessionRegistry, Router, Peers]:
    registry = SessionRegistry()
    router = Router("x", store, registry, _anyone, QueueLimits(100), Notices(), SERVER)
    peers = Peers()
    router.peers = peers
    return registry, router, peers


async def connect(router: Router, registry: SessionRegistry, node_text: str) -> Any:
    identity, _, instance = node_text.partition("/")
    client = Client()
    live = LiveSession(identity, instance, client, registry.record(identity, instance), guest=False)
    live.receipt = frozenset(DeliveryEvent)
    await router.attach(live)
    return live, client


async def send(
    store: MemoryStore, router: Router, sender: LiveSession, message_id: str, to: str
) -> None:
    pending = router.send_message(sender, message_id, parse_address(to), message_id.encode())
    if pending is not None:
        await pending
    await store.barrier()


async def test_a_row_jumped_over_by_a_live_write_is_written_once_when_its_wake_comes() -> None:
    store = MemoryStore()
    reg_a, router_a, peers_a = node(store)
    reg_b, router_b, peers_b = node(store)
    bob, bob_client = await connect(router_b, reg_b, "bob@x/b")
    carol, _ = await connect(router_b, reg_b, "carol@x/c")
    alice, alice_client = await connect(router_a, reg_a, "alice@x/a")
    reg_a.record("bob@x", "b")  # node A knows the session (from its Attached)
    await send(store, router_a, alice, "from-a", "bob@x/b")
    ((_, _, seq),) = [w for w in peers_a.woken if w[:2] == ("bob@x", "b")]
    await send(store, router_b, carol, "from-c", "bob@x/b")  # live here: the cursor jumps past seq
    assert bob_client.written == [b"from-c"] and bob.cursor > seq
    await router_b.woken(bob, [seq])
    assert bob_client.written == [b"from-c", b"from-a"]
    await router_b.woken(bob, [seq])  # the same news again: not written twice
    assert bob_client.written == [b"from-c", b"from-a"]
    assert ("alice@x", "a", "from-a", DeliveryEvent.DISPATCHED) in peers_b.receipts
    assert alice_client.told[0] == ("from-a", DeliveryEvent.ACCEPTED, None)


async def test_a_row_a_replay_wrote_is_not_written_again_when_its_wake_comes_late() -> None:
    store = MemoryStore()
    reg_a, router_a, peers_a = node(store)
    reg_b, router_b, _ = node(store)
    bob, bob_client = await connect(router_b, reg_b, "bob@x/b")
    alice, _ = await connect(router_a, reg_a, "alice@x/a")
    reg_a.record("bob@x", "b")
    await send(store, router_a, alice, "one", "bob@x/b")
    await send(store, router_a, alice, "two", "bob@x/b")
    seqs = [w[2] for w in peers_a.woken if w[:2] == ("bob@x", "b")]
    await router_b.woken(bob, seqs[:1])  # the replay reads both rows
    assert bob_client.written == [b"one", b"two"]
    await router_b.woken(bob, seqs[1:])  # the second wake, late
    assert bob_client.written == [b"one", b"two"]


async def test_a_wake_during_a_replay_for_a_row_that_page_jumped_over_is_written() -> None:
    """A replay reads a page before another node's row commits, the row's wake comes while
    that page is on its way (the row is past the cursor still), then the page moves the
    cursor past the row: the replay's re-read from the cursor would miss it. It is written."""
    store = MemoryStore()
    reg_a, router_a, peers_a = node(store)
    reg_b, router_b, _ = node(store)
    bob, bob_client = await connect(router_b, reg_b, "bob@x/b")
    alice, _ = await connect(router_a, reg_a, "alice@x/a")
    reg_a.record("bob@x", "b")
    for message_id in ("one", "two", "three"):
        await send(store, router_a, alice, message_id, "bob@x/b")
    one, two, three = [w[2] for w in peers_a.woken if w[:2] == ("bob@x", "b")]
    read = store.backlog
    first = True

    async def backlog_before_two_commits(*args: Any) -> Any:
        nonlocal first
        page = await read(*args)
        if first:
            first = False
            page = [e for e in page if e.seq != two]  # "two" not committed when it was read
            woken = asyncio.ensure_future(router_b.woken(bob, [two]))  # its wake comes now
            await asyncio.sleep(0)
            assert not woken.done() or woken.exception() is None
        return page

    store.backlog = backlog_before_two_commits  # type: ignore[method-assign]
    await router_b.woken(bob, [one, three])
    assert sorted(bob_client.written) == [b"one", b"three", b"two"]
    assert bob.cursor == three
