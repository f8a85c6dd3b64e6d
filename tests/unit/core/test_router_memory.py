"""Router, queue policy and SessionService over the in-memory store: no disk, milliseconds each.

The property test drives random appends, acknowledgements and limit changes through the router
under both overflow policies and checks the queue rules of DESIGN.md section 3: a queue never
exceeds its bound (twice the limit while delivered entries await acknowledgement), every
dropped message's sender is told exactly once, and the gap marker counts every drop.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tidings.core.address import Address, parse_address
from tidings.core.errors import ErrorId, TidingsError, Unavailable
from tidings.core.model import DeliveryEvent, EnvelopeKind, OverflowPolicy
from tidings.core.router import QueueLimits, Router
from tidings.core.session_registry import LiveSession, SessionRegistry
from tidings.core.session_service import SessionService
from tidings.store.memory import MemoryStore

SERVER = "postmaster@x/server"
BOB = "bob@x"


class Notices:
    def gap(self, node: str, gap_id: str, dropped: int, lost: list[dict[str, str]]) -> bytes:
        return json.dumps({"gap": gap_id, "dropped": dropped, "lost": lost}).encode()

    def failed(self, node: str, message_id: str, error: TidingsError) -> bytes:
        return json.dumps({"failed": message_id, "why": error.error_id}).encode()

    def message(self, node: str, message_id: str, type_: str, content: Any) -> bytes:
        return json.dumps({"id": message_id, "content": content}).encode()


class Client:
    """An ``Outlet`` that records what it was written and told."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.told: list[tuple[str, DeliveryEvent, str | None]] = []

    def deliver(self, payload: bytes, kind: EnvelopeKind = EnvelopeKind.MESSAGE) -> bool:
        self.written.append(payload)
        return True

    def notify(
        self, message_id: str, event: DeliveryEvent, error: TidingsError | None = None
    ) -> None:
        self.told.append((message_id, event, error.error_id if error else None))

    def observe(self, identity: str, presence: dict[str, Any]) -> None: ...
    def end(self, error: TidingsError) -> None: ...


async def _anyone(address: Address) -> bool:
    return address.identity != "nobody@x"


def world(limit: int = 10, policy: OverflowPolicy = OverflowPolicy.REJECT_NEW) -> Any:
    store = MemoryStore()
    registry = SessionRegistry()
    router = Router("x", store, registry, _anyone, QueueLimits(limit, policy), Notices(), SERVER)
    return store, registry, router


async def connect(router: Router, registry: SessionRegistry, identity: str, instance: str) -> Any:
    client = Client()
    live = LiveSession(identity, instance, client, registry.record(identity, instance), guest=False)
    live.receipt = frozenset(DeliveryEvent)
    await router.attach(live)
    return live, client


async def send(
    router: Router, sender: LiveSession, to: str, instance: str | None, mid: str | None
) -> None:
    address = parse_address(to if instance is None else f"{to}/{instance}")
    pending = router.send_message(sender, mid, address, f"{sender.node}:{mid}".encode())
    if pending is not None:
        await pending


async def test_an_acknowledged_message_is_accepted_delivered_and_removed() -> None:
    store, registry, router = world()
    alice, alice_out = await connect(router, registry, "alice@x", "p")
    bob, bob_out = await connect(router, registry, BOB, "a")
    await send(router, alice, BOB, "a", "m1")
    await store.barrier()
    assert bob_out.written == [b"alice@x/p:m1"]
    assert [t[:2] for t in alice_out.told] == [
        ("m1", DeliveryEvent.ACCEPTED),
        ("m1", DeliveryEvent.DISPATCHED),
    ]
    assert bob.record.depth == 1
    router.acknowledge(bob, alice.node, "m1")
    await store.barrier()
    assert bob.record.depth == 0 and await store.backlog(BOB, "a", 0, 10) == []


async def test_an_offline_session_gets_its_backlog_in_order_on_connect() -> None:
    store, registry, router = world()
    alice, _ = await connect(router, registry, "alice@x", "p")
    registry.record(BOB, "a")
    for i in range(3):
        await send(router, alice, BOB, "a", f"m{i}")
    await send(router, alice, BOB, "a", None)  # fire-and-forget, kept for the offline session
    await store.barrier()
    _, bob_out = await connect(router, registry, BOB, "a")
    assert bob_out.written == [b"alice@x/p:m0", b"alice@x/p:m1", b"alice@x/p:m2", b"alice@x/p:None"]
    await store.barrier()
    assert registry.record(BOB, "a").depth == 3  # the fire-and-forget one went once written


async def test_a_duplicate_is_accepted_once_stored_once() -> None:
    store, registry, router = world()
    alice, alice_out = await connect(router, registry, "alice@x", "p")
    registry.record(BOB, "a")
    await send(router, alice, BOB, "a", "m1")
    await send(router, alice, BOB, "a", "m1")
    await store.barrier()
    assert [t[1] for t in alice_out.told] == [DeliveryEvent.ACCEPTED] * 2
    assert len(await store.backlog(BOB, "a", 0, 10)) == 1 and registry.record(BOB, "a").depth == 1


async def test_reject_new_refuses_a_full_queue_but_not_a_resend() -> None:
    store, registry, router = world(limit=1)
    alice, alice_out = await connect(router, registry, "alice@x", "p")
    registry.record(BOB, "a")
    await send(router, alice, BOB, "a", "m1")
    await store.barrier()
    with pytest.raises(TidingsError) as refused:
        await send(router, alice, BOB, "a", "m2")
    assert refused.value.error_id is ErrorId.QUEUE_FULL
    await send(router, alice, BOB, "a", "m1")  # its accepted was lost: accepted again
    assert [t[:2] for t in alice_out.told][-1] == ("m1", DeliveryEvent.ACCEPTED)


async def test_unknown_identities_are_refused_after_asking_the_store() -> None:
    _, registry, router = world()
    alice, _ = await connect(router, registry, "alice@x", "p")
    with pytest.raises(TidingsError) as refused:
        await send(router, alice, "nobody@x", None, "m1")
    assert refused.value.error_id is ErrorId.ACCOUNT_NOT_FOUND
    pending = router.forward_command(parse_address("carol@x"), b"{}")
    assert pending is not None
    with pytest.raises(TidingsError) as offline:
        await pending
    assert offline.value.error_id is ErrorId.DESTINATION_OFFLINE


async def test_session_service_notify_delete_and_persistence() -> None:
    store, registry, router = world()
    sessions = SessionService(router, registry, store, Notices(), SERVER)
    outcome = await sessions.notify(
        parse_address(BOB), message_id="n1", type_="t", content=1, session="a"
    )
    assert outcome.sessions == ["a"] and registry.record(BOB, "a").depth == 1
    state = await sessions.begin(BOB, "a")
    assert (await sessions.info(BOB, "a"))["persistent"]
    await sessions.end(BOB, "a", state.nonce)
    assert await sessions.delete(BOB, "a") == 1
    assert "a" not in registry.records_of(BOB)


class DownStore(MemoryStore):
    """A store whose transactions fail (the database went away)."""

    def transact(self, work: Any, done: Any) -> None:
        done(Unavailable(ErrorId.STORAGE_UNAVAILABLE, "the database is down"))


async def test_a_failed_notify_leaves_no_session_behind() -> None:
    store = DownStore()
    registry = SessionRegistry()
    router = Router("x", store, registry, _anyone, QueueLimits(10), Notices(), SERVER)
    sessions = SessionService(router, registry, store, Notices(), SERVER)
    registry.record(BOB, "old")
    with pytest.raises(Unavailable):
        await sessions.notify(
            parse_address(BOB), message_id="n1", type_="t", content=1, session="new"
        )
    with pytest.raises(Unavailable):
        await sessions.notify(
            parse_address(BOB), message_id="n2", type_="t", content=1, session="old"
        )
    assert set(registry.records_of(BOB)) == {"old"}


# -- the queue rules as a property ---------------------------------------------------------

Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 2)),  # from one of three senders
        st.tuples(st.just("send-ff"), st.integers(0, 2)),
        st.tuples(st.just("ack"), st.integers(0, 5)),  # the n-th oldest queued envelope
        st.tuples(st.just("limit"), st.integers(1, 6)),
        st.tuples(st.just("deliver"), st.just(0)),  # bob connects and reads, or disconnects
    ),
    max_size=40,
)


@example(OverflowPolicy.DROP_OLDEST, [("send", 0)] * 5 + [("deliver", 0), ("send", 1)] * 3)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(policy=st.sampled_from(list(OverflowPolicy)), script=steps)
def test_queues_stay_bounded_and_every_drop_is_told_once(
    policy: OverflowPolicy, script: list[Step]
) -> None:
    asyncio.run(_run_script(policy, script))


async def _run_script(policy: OverflowPolicy, script: list[Step]) -> None:
    store, registry, router = world(limit=3, policy=policy)
    senders = [await connect(router, registry, f"s{i}@x", "p") for i in range(3)]
    record = registry.open(BOB, "a")
    record.policy = policy
    bob: LiveSession | None = None
    sent: dict[str, int] = {}  # message id -> sender index, for acknowledged messages
    refused: set[str] = set()
    counter = 0
    highest = 3
    for action, value in script:
        if action in ("send", "send-ff"):
            sender, _ = senders[value]
            counter += 1
            mid = f"m{counter}" if action == "send" else None
            try:
                await send(router, sender, BOB, "a", mid)
            except TidingsError as error:
                assert error.error_id is ErrorId.QUEUE_FULL and policy is OverflowPolicy.REJECT_NEW
                if mid is not None:
                    refused.add(mid)
                continue
            if mid is not None:
                sent[mid] = value
        elif action == "ack" and bob is not None:
            rows = [  # the gap marker is never acknowledged here: it counts the whole run
                r
                for r in await store.backlog(BOB, "a", 0, 100)
                if r.seq <= bob.cursor and r.sender != SERVER
            ]
            if rows:
                row = rows[min(value, len(rows) - 1)]
                if row.message_id is not None:
                    router.acknowledge(bob, row.sender, row.message_id)
        elif action == "limit":
            sessions = SessionService(router, registry, store, Notices(), SERVER)
            await sessions.configure(BOB, "a", {"limit": value})
        elif action == "deliver":
            if bob is None:
                bob, _ = await connect(router, registry, BOB, "a")
            else:
                router.detach(bob)
                bob = None
        await store.barrier()
        rows = await store.backlog(BOB, "a", 0, 1000)
        envelopes = [r for r in rows if r.sender != SERVER]
        limit = router.limit_of(record)
        highest = max(highest, limit)
        if policy is OverflowPolicy.DROP_OLDEST:
            assert len(envelopes) <= 2 * limit
        else:  # nothing is trimmed: lowering the limit only refuses what comes next
            assert len(envelopes) <= highest
        assert record.depth == len(rows)
    await store.barrier()
    rows = await store.backlog(BOB, "a", 0, 1000)
    queued = {r.message_id for r in rows if r.sender != SERVER}
    told: Counter[str] = Counter()
    for i, (_, client) in enumerate(senders):
        # live senders are written their failures; the store keeps none they were written
        kept = [r.payload for r in await store.backlog(f"s{i}@x", "p", 0, 1000)]
        assert not kept
        for payload in client.written:
            document = json.loads(payload)
            told[document["failed"]] += 1
            assert sent[document["failed"]] == i  # told to its own sender
    assert all(count == 1 for count in told.values())
    gaps = [json.loads(r.payload) for r in rows if r.sender == SERVER]
    assert len(gaps) <= 1
    if policy is OverflowPolicy.REJECT_NEW:
        assert not told and not gaps
    if gaps:  # it names every lost message with an id (fewer than MAX_LOST_LISTED here)
        (gap,) = gaps
        assert Counter(x["id"] for x in gap["lost"]) == told
        assert gap["dropped"] >= len(told) and gap["dropped"] > 0
    else:
        assert not told
    # every acknowledged message that is neither queued, acknowledged nor refused was dropped
    # and its sender told
    assert set(told) <= set(sent) - queued - refused


async def test_another_domain_is_refused_before_anything_is_stored() -> None:
    store, registry, router = world()
    alice, _ = await connect(router, registry, "alice@x", "p")
    with pytest.raises(TidingsError) as refused:
        await send(router, alice, "bob@elsewhere", None, "m1")
    assert refused.value.error_id is ErrorId.DESTINATION_NOT_FOUND
    assert refused.value.message == (
        "The domain 'elsewhere' is not served here (this server is 'x')"
    )
    assert not await store.was_stored(alice.node, "m1")


async def test_a_server_notify_is_written_live_before_a_message_stored_after_it() -> None:
    """The notify's completion writes it; a later message's completion (same batch) must not
    move the cursor past it first (it was written only after the notify's coroutine resumed)."""
    store, registry, router = world()
    alice, _ = await connect(router, registry, "alice@x", "p")
    _, bob_out = await connect(router, registry, BOB, "a")
    sessions = SessionService(router, registry, store, Notices(), SERVER)
    notify = asyncio.get_running_loop().create_task(
        sessions.notify(parse_address(BOB), message_id="n1", type_="t", content=1, session="a")
    )
    await asyncio.sleep(0)  # one loop step: the notify's write is submitted, not yet completed
    await send(router, alice, BOB, "a", "m2")
    await notify
    await store.barrier()
    assert [json.loads(p)["id"] if p.startswith(b"{") else p for p in bob_out.written] == [
        "n1",
        b"alice@x/p:m2",
    ]
