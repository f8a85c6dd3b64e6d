"""The federation outbox and its relay over the memory store, with a scripted peer: whatever
the peer answers (taken, unreachable, refused, too large), every message is delivered once and
in order, or failed to its sender once with the peer's reason; never both, never lost."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.address import parse_address
from tidings.core.errors import ErrorId, TidingsError
from tidings.core.federation import Federation, PeerRefusal, PeerUnreachable, outbox_of
from tidings.core.model import OUTBOX_INSTANCE
from tidings.core.session_registry import DeliveryEvent, LiveSession, SessionRegistry
from tidings.store.memory import MemoryStore

from .test_router_memory import SERVER, Client, Notices, world

PEER = "beta.test"
Outcome = str  # "ok" | "down" | "refused" | "large"


class FederationNotices(Notices):
    def dispatched(self, node: str, message_id: str) -> bytes:
        return json.dumps({"dispatched": message_id}).encode()


class ScriptedPeer:
    """A ``PeerChannel`` answering each post with the next outcome of its script (then ok)."""

    def __init__(self, script: list[Outcome]) -> None:
        self.script = list(script)
        self.taken: list[str] = []
        self.posts = 0
        self.answered = asyncio.Event()

    async def post(self, domain: str, route: str, body: bytes) -> Any:
        assert domain == PEER and route == "envelopes"
        self.posts += 1
        outcome = self.script.pop(0) if self.script else "ok"
        self.answered.set()
        batch = json.loads(body)["envelopes"]
        if outcome == "down":
            raise PeerUnreachable("connection refused")
        if outcome == "refused":
            raise PeerRefusal(403, {"error_id": "federation-denied", "detail": "go away"})
        if outcome == "large" and len(batch) > 1:
            raise PeerRefusal(413, {"detail": "too large"})
        if outcome == "large":
            raise PeerRefusal(413, {"detail": "too large even alone"})
        self.taken += [item["e"]["id"] for item in batch]
        return {"taken": len(batch)}


def build(
    peer: ScriptedPeer, registry: SessionRegistry, store: MemoryStore, router: Any
) -> Federation:
    federation = Federation(
        "x",
        store,
        registry,
        router.ledger,
        FederationNotices(),
        SERVER,
        peer,
        reachable=lambda domain: domain == PEER,
        outbox_limit=1000,
        retry_max_s=0.001,
    )
    router.federation = federation

    def delivered(result: Any) -> None:
        router.deliver_notices(result)
        peer.answered.set()  # a refusal's rows are gone: a step as much as a post

    federation.on_notices = delivered
    return federation


async def sender(router: Any, registry: SessionRegistry) -> tuple[LiveSession, Client]:
    client = Client()
    live = LiveSession("alice@x", "p", client, registry.record("alice@x", "p"), guest=False)
    live.receipt = frozenset(DeliveryEvent)
    await router.attach(live)
    return live, client


async def settle(federation: Federation, peer: ScriptedPeer, store: MemoryStore) -> None:
    """Until the outbox is empty: each round waits for the relay's next step (a post
    answered, or a refusal's failures delivered), checked after the event is cleared so that
    no step is missed."""
    async with asyncio.timeout(10):
        while True:
            peer.answered.clear()
            await store.barrier()
            if federation.depth(PEER) == 0:
                return
            await peer.answered.wait()


async def run(script: list[Outcome], count: int) -> tuple[ScriptedPeer, Client, list[str]]:
    store, registry, router = world()
    peer = ScriptedPeer(script)
    federation = build(peer, registry, store, router)
    federation.start([PEER])
    alice, told = await sender(router, registry)
    ids = [f"m{i}" for i in range(count)]
    for message_id in ids:
        payload = json.dumps({"id": message_id, "to": f"bob@{PEER}"}).encode()
        router.send_message(alice, message_id, parse_address(f"bob@{PEER}"), payload)
    await settle(federation, peer, store)
    await federation.stop()
    return peer, told, ids


async def test_a_message_is_accepted_once_stored_and_the_batch_discarded_once_taken() -> None:
    peer, told, ids = await run([], 3)
    assert peer.taken == ids
    assert [(i, e) for i, e, _ in told.told] == [(i, DeliveryEvent.ACCEPTED) for i in ids]


async def test_an_unreachable_peer_is_retried_until_it_takes_them_in_order() -> None:
    peer, told, ids = await run(["down", "down", "down"], 5)
    assert peer.posts >= 4
    assert peer.taken == ids
    assert all(event is DeliveryEvent.ACCEPTED for _, event, _ in told.told)


async def queued_then_relayed(script: list[Outcome]) -> tuple[ScriptedPeer, Federation, Client]:
    """Messages "a" and "b" queued while the relay is off, then relayed to a peer answering
    ``script``, until the outbox is empty."""
    store, registry, router = world()
    peer = ScriptedPeer(script)
    federation = build(peer, registry, store, router)
    alice, told = await sender(router, registry)
    for message_id in ("a", "b"):
        router.send_message(
            alice, message_id, parse_address(f"bob@{PEER}"), b'{"id":"%s"}' % message_id.encode()
        )
    await store.barrier()
    federation.start([PEER])
    await settle(federation, peer, store)
    await federation.stop()
    return peer, federation, told


async def test_a_refused_batch_fails_each_message_to_its_sender_with_the_peer_reason() -> None:
    peer, federation, told = await queued_then_relayed(["refused"])
    assert peer.taken == []
    failures = [json.loads(w) for w in told.written]
    assert failures == [
        {"failed": "a", "why": ErrorId.PEER_REFUSED},
        {"failed": "b", "why": ErrorId.PEER_REFUSED},
    ]
    assert federation.peers[PEER].last_error.startswith("403")


async def test_retries_count_the_backoffs_and_failures_also_the_refusals() -> None:
    """``federation_retries_total`` is the attempts made again; ``federation_failures_total``
    every failed attempt, a batch refused for good (not retried) included."""
    peer, federation, _ = await queued_then_relayed(["down", "large", "down", "refused"])
    state = federation.peers[PEER]
    # down, 413 for two (retried in halves), down, then "a" refused; "b" taken
    assert (peer.posts, peer.taken) == (5, ["b"])
    assert (state.retries, state.failures, state.refused) == (3, 4, 1)


async def test_the_outbox_is_bounded_and_names_no_outbox_or_guest() -> None:
    store, registry, router = world()
    federation = build(ScriptedPeer([]), registry, store, router)
    federation.outbox_limit = 1
    alice, _ = await sender(router, registry)
    router.send_message(alice, "one", parse_address(f"bob@{PEER}"), b"{}")
    await store.barrier()
    assert federation.depth(PEER) == 1
    refusals = []
    for to, guest in ((f"bob@{PEER}", False), (f"~federation@{PEER}/outbox", False)):
        try:
            alice.guest = guest
            router.send_message(alice, "two", parse_address(to), b"{}")
        except TidingsError as error:
            refusals.append(error.error_id)
    assert refusals == [ErrorId.QUEUE_FULL, ErrorId.ACCOUNT_NOT_FOUND]
    federation.outbox_limit = 10
    alice.guest = True
    try:
        router.send_message(alice, "three", parse_address(f"bob@{PEER}"), b"{}")
    except TidingsError as error:
        assert error.error_id is ErrorId.FORBIDDEN
    else:
        raise AssertionError("a guest reached another domain")
    assert registry.record(outbox_of(PEER), OUTBOX_INSTANCE).depth == 1


@settings(max_examples=40, deadline=None)
@given(
    script=st.lists(st.sampled_from(["ok", "down", "refused", "large"]), max_size=8),
    count=st.integers(min_value=1, max_value=12),
)
def test_every_message_is_taken_once_in_order_or_failed_once(script: list[str], count: int) -> None:
    peer, told, ids = asyncio.run(run(script, count))
    failed = [json.loads(w)["failed"] for w in told.written]
    assert sorted(peer.taken + failed, key=ids.index) == ids  # each exactly once
    assert peer.taken == sorted(peer.taken, key=ids.index)  # in the order sent
    assert not set(peer.taken) & set(failed)


class FlakyPeer(ScriptedPeer):
    """Raises what no relay expects, once: the relay must live on."""

    async def post(self, domain: str, route: str, body: bytes) -> Any:
        if self.posts == 0:
            self.posts += 1
            self.answered.set()
            raise ValueError("could not convert string to float: '²'")
        return await super().post(domain, route, body)


async def test_an_unexpected_error_does_not_end_the_relay() -> None:
    store, registry, router = world()
    peer = FlakyPeer([])
    federation = build(peer, registry, store, router)
    federation.start([PEER])
    alice, _ = await sender(router, registry)
    router.send_message(alice, "m0", parse_address(f"bob@{PEER}"), b'{"id":"m0"}')
    await settle(federation, peer, store)
    await federation.stop()
    assert peer.taken == ["m0"]
    assert "ValueError" in federation.peers[PEER].last_error


async def test_new_messages_do_not_cut_a_backoff_short_but_hello_does() -> None:
    store, registry, router = world()
    peer = ScriptedPeer(["down"])
    federation = build(peer, registry, store, router)
    federation.retry_max_s = 60.0  # the first pause: 0.2 s, far longer than this test's steps
    federation.start([PEER])
    alice, _ = await sender(router, registry)
    router.send_message(alice, "m0", parse_address(f"bob@{PEER}"), b'{"id":"m0"}')
    await peer.answered.wait()  # refused: the relay pauses now
    for i in range(1, 20):
        router.send_message(alice, f"m{i}", parse_address(f"bob@{PEER}"), b'{"id":"m%d"}' % i)
    for _ in range(5):
        await store.barrier()
    assert peer.posts == 1  # 19 new messages, and the peer was not asked again
    federation.hello(PEER)
    await settle(federation, peer, store)
    await federation.stop()
    assert peer.taken == [f"m{i}" for i in range(20)]


class HeldPeer(ScriptedPeer):
    """Takes a batch only when the test lets it."""

    def __init__(self) -> None:
        super().__init__([])
        self.release = asyncio.Event()
        self.posting = asyncio.Event()

    async def post(self, domain: str, route: str, body: bytes) -> Any:
        self.posting.set()
        await self.release.wait()
        return await super().post(domain, route, body)


async def test_the_sweep_leaves_a_batch_in_flight_alone() -> None:
    store, registry, router = world()
    peer = HeldPeer()
    federation = build(peer, registry, store, router)
    federation.start([PEER])
    alice, told = await sender(router, registry)
    router.send_message(
        alice, "m0", parse_address(f"bob@{PEER}"), b'{"id":"m0"}', expire_after=3600
    )
    await peer.posting.wait()
    assert await router.sweep(time.time() + 7200) == 0  # past its expiry, but in the peer's hands
    peer.release.set()
    await settle(federation, peer, store)
    await federation.stop()
    assert peer.taken == ["m0"]
    assert told.written == []  # no failed for what the peer took


async def test_a_full_outbox_drops_what_needs_no_acknowledgement_and_counts_it() -> None:
    """A notification into a full outbox has no sender to tell: it is dropped and counted
    (``federation_dropped_total``); an essential one (a ``failed`` owed) still goes in."""
    store, registry, router = world()
    federation = build(ScriptedPeer([]), registry, store, router)
    federation.outbox_limit = 1
    to = parse_address(f"bob@{PEER}")
    federation.relay(to, b'{"n": 1}')
    await store.barrier()
    federation.relay(to, b'{"n": 2}')
    federation.relay(to, b'{"n": 3}')
    await store.barrier()
    assert federation.depth(PEER) == 1
    assert federation.peers[PEER].dropped == 2
    federation.relay(to, b'{"n": 4}', essential=True)
    await store.barrier()
    assert federation.depth(PEER) == 2
    assert federation.peers[PEER].dropped == 2
    [status] = await federation.status()
    assert status["dropped"] == 2
