"""The store contract: what every adapter of the core's store ports must do (memory, SQLite;
PostgreSQL next). Written against ``core.ports`` only, never an adapter's internals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tidings.core.app_requests import StateChanges, app_commit
from tidings.core.errors import Conflict, ErrorId, TidingsError
from tidings.core.model import (
    AppendResult,
    OverflowPolicy,
    PersistStep,
    QueueBound,
    QueueEntry,
    QueueKind,
    RoutingRule,
    SessionRecord,
    TrimResult,
)
from tidings.core.ports import QueueTransaction, settling
from tidings.core.queue_policy import QueuePolicy
from tidings.core.queues import MAX_LOST_LISTED

SERVER = "postmaster@x/server"
BOB = "bob@x"


class Notices:
    """A ``NoticeFactory`` whose bytes are plain JSON (the contract is not about LIME)."""

    def gap(self, node: str, gap_id: str, dropped: int, lost: list[dict[str, str]]) -> bytes:
        return json.dumps({"gap": gap_id, "to": node, "dropped": dropped, "lost": lost}).encode()

    def failed(self, node: str, message_id: str, error: TidingsError) -> bytes:
        return json.dumps({"failed": message_id, "to": node, "why": error.error_id}).encode()

    def message(self, node: str, message_id: str, type_: str, content: Any) -> bytes:
        return json.dumps({"id": message_id, "to": node, "content": content}).encode()


POLICY = QueuePolicy(Notices(), SERVER)


async def complete(submit: Callable[..., None], *args: Any) -> Any:
    """Call a completion-style port method and wait for its result (raising its exception)."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    submit(*args, settling(future))
    return await future


def entry(
    sender: str, message_id: str | None, instance: str = "a", *, ack: bool = True
) -> QueueEntry:
    return QueueEntry(BOB, instance, sender, message_id, ack, f"{sender}:{message_id}".encode())


async def append(store: Any, *entries: QueueEntry, dedupe: Any = None) -> AppendResult:
    result: AppendResult = await complete(store.append, list(entries), dedupe)
    return result


async def bounded(
    store: Any,
    entries: list[QueueEntry],
    bounds: list[QueueBound],
    persist: PersistStep | None = None,
    dedupe: tuple[str, str] | None = None,
) -> TrimResult:
    result: TrimResult = await complete(
        store.transact, POLICY.bounded_append(entries, dedupe, bounds, persist)
    )
    return result


async def queue(store: Any, instance: str = "a", identity: str = BOB) -> list[Any]:
    return list(await store.backlog(identity, instance, 0, 10_000))


async def ids(store: Any, instance: str = "a") -> list[str | None]:
    return [row.message_id for row in await queue(store, instance)]


# -- appends, dedupe, acknowledgements -------------------------------------------------------


async def test_append_gives_rising_seqs_and_the_backlog_keeps_order(store: Any) -> None:
    result = await append(store, entry("s/1", "m1"), entry("s/1", "m2"), entry("s/1", "m3"))
    assert not result.duplicate and result.seqs == sorted(result.seqs)
    rows = await queue(store)
    assert [r.seq for r in rows] == result.seqs
    assert [r.payload for r in rows] == [b"s/1:m1", b"s/1:m2", b"s/1:m3"]
    assert all(r.needs_ack and r.sender == "s/1" for r in rows)


async def test_a_dedupe_key_is_stored_once(store: Any) -> None:
    first = await append(store, entry("s/1", "m1"), dedupe=("s/1", "m1"))
    again = await append(store, entry("s/1", "m1"), dedupe=("s/1", "m1"))
    assert not first.duplicate and again.duplicate and again.seqs == []
    assert await ids(store) == ["m1"]
    assert await store.was_stored("s/1", "m1")
    assert not await store.was_stored("s/1", "m2")


async def test_queued_at_finds_a_stored_message_where_it_still_waits(store: Any) -> None:
    """A re-send found stored asks where its rows wait: only the sessions asked about, only
    rows not acknowledged yet, only this sender's id."""
    first = await append(
        store,
        entry("s/1", "m1", "a"),
        entry("s/1", "m1", "b"),
        entry("s/1", "m1", "c"),
        entry("s/2", "m1", "d"),
        dedupe=("s/1", "m1"),
    )
    sessions = [(BOB, "a"), (BOB, "b"), (BOB, "d"), ("nobody@x", "a")]
    assert await store.queued_at("s/1", "m1", sessions) == {
        (BOB, "a"): first.seqs[0],
        (BOB, "b"): first.seqs[1],
    }
    assert await complete(store.acknowledge, BOB, "a", "s/1", "m1") == 1
    assert await store.queued_at("s/1", "m1", sessions) == {(BOB, "b"): first.seqs[1]}
    assert await store.queued_at("s/1", "m2", sessions) == {}


async def test_without_dedupe_every_append_is_stored(store: Any) -> None:
    await append(store, entry("s/1", None, ack=False))
    await append(store, entry("s/1", None, ack=False))
    assert len(await queue(store)) == 2


async def test_one_append_reaches_several_sessions_atomically(store: Any) -> None:
    result = await append(
        store, entry("s/1", "m", "a"), entry("s/1", "m", "b"), dedupe=("s/1", "m")
    )
    assert len(result.seqs) == 2
    assert await ids(store, "a") == ["m"] and await ids(store, "b") == ["m"]


async def test_acknowledge_removes_one_sessions_copy(store: Any) -> None:
    await append(store, entry("s/1", "m", "a"), entry("s/1", "m", "b"), entry("s/2", "m", "a"))
    assert await complete(store.acknowledge, BOB, "a", "s/1", "m") == 1
    assert await complete(store.acknowledge, BOB, "a", "s/1", "m") == 0
    assert await complete(store.acknowledge, BOB, "a", "s/9", "zz") == 0
    assert [r.sender for r in await queue(store, "a")] == ["s/2"]
    assert await ids(store, "b") == ["m"]


async def test_discard_removes_by_seq(store: Any) -> None:
    result = await append(store, entry("s/1", None, ack=False), entry("s/1", "m2"))
    store.discard([result.seqs[0]])
    await store.barrier()
    assert await ids(store) == ["m2"]


async def test_backlog_pages_after_a_cursor(store: Any) -> None:
    result = await append(store, *(entry("s/1", f"m{i}") for i in range(5)))
    page = await store.backlog(BOB, "a", result.seqs[1], 2)
    assert [r.message_id for r in page] == ["m2", "m3"]
    assert await store.backlog(BOB, "a", result.seqs[-1], 10) == []


async def test_claim_unclaimed_moves_the_inbox_in_order(store: Any) -> None:
    await append(store, entry("s/1", "m1", ""), entry("s/1", "m2", ""))
    await append(store, entry("s/1", "m0", "a"))
    assert await store.claim_unclaimed(BOB, "a") == 2
    assert await ids(store, "a") == ["m1", "m2", "m0"]  # in sequence order
    assert await queue(store, "") == []
    assert await store.claim_unclaimed(BOB, "a") == 0


async def test_barrier_waits_for_earlier_completions(store: Any) -> None:
    seen: list[Any] = []
    store.append([entry("s/1", "m")], None, seen.append)
    await store.barrier()
    assert len(seen) == 1 and isinstance(seen[0], AppendResult)


async def test_forget_message_ids_lets_an_old_id_be_stored_again(store: Any) -> None:
    await append(store, entry("s/1", "m"), dedupe=("s/1", "m"))
    assert await store.forget_message_ids(0.0, 100) == 0
    assert await store.forget_message_ids(float("inf"), 100) == 1
    assert not await store.was_stored("s/1", "m")
    assert not (await append(store, entry("s/1", "m"), dedupe=("s/1", "m"))).duplicate


async def test_a_resend_inside_the_window_is_stored_once(store: Any) -> None:
    """Keys younger than the cutoff survive any number of pruning passes (the window holds)."""
    first = await append(store, entry("s/1", "m"), dedupe=("s/1", "m"))
    assert not first.duplicate
    assert await store.forget_message_ids(time.time() - 1.0, 100) == 0
    assert (await append(store, entry("s/1", "m"), dedupe=("s/1", "m"))).duplicate
    assert await store.was_stored("s/1", "m")
    assert await ids(store) == ["m"]


async def test_forget_message_ids_takes_the_oldest_in_bounded_chunks(store: Any) -> None:
    for n in range(7):
        await append(store, entry("s/1", f"m{n}"), dedupe=("s/1", f"m{n}"))
    assert await store.forget_message_ids(float("inf"), 3) == 3
    assert await store.forget_message_ids(float("inf"), 3) == 3
    assert await store.forget_message_ids(float("inf"), 3) == 1
    assert await store.forget_message_ids(float("inf"), 3) == 0
    assert not any([await store.was_stored("s/1", f"m{n}") for n in range(7)])
    assert len(await ids(store)) == 7  # forgetting keys never touches the queue


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("s/1", "2m"), ("s/12", "m")),  # the same characters, split differently
        (("s/1", "m"), ("s/1", "M")),
        (("s/1", "é"), ("s/1", "e\u0301")),  # not normalized: different ids
        (("s/1", ""), ("s/", "1")),
    ],
)
async def test_different_pairs_are_never_taken_for_one_another(
    store: Any, one: tuple[str, str], other: tuple[str, str]
) -> None:
    """A false duplicate would drop a message silently: pairs that differ stay apart, however
    their characters line up."""
    assert not (await append(store, entry(one[0], one[1]), dedupe=one)).duplicate
    assert not (await append(store, entry(other[0], other[1]), dedupe=other)).duplicate
    assert not await store.was_stored(other[0], other[1] + "x")


# -- session records -----------------------------------------------------------------------


async def test_sessions_are_saved_loaded_and_touched_with_their_depth(store: Any) -> None:
    record = SessionRecord(BOB, "a", RoutingRule.INSTANCE, 5, OverflowPolicy.DROP_OLDEST, 10.0)
    await store.save_session(record)
    await append(store, entry("s/1", "m1"), entry("s/1", "m2"), entry("s/1", "m3", "orphan"))
    store.touch_session(BOB, "a", 20.0)
    store.touch_session(BOB, "never-saved", 20.0)
    await store.barrier()
    loaded = {(r.identity, r.instance): r for r in await store.load_sessions()}
    assert set(loaded) == {(BOB, "a"), (BOB, "orphan")}
    a = loaded[(BOB, "a")]
    assert (a.routing_rule, a.queue_limit, a.policy, a.last_seen, a.depth) == (
        RoutingRule.INSTANCE,
        5,
        OverflowPolicy.DROP_OLDEST,
        20.0,
        2,
    )
    orphan = loaded[(BOB, "orphan")]
    assert (orphan.routing_rule, orphan.depth, orphan.last_seen) == (RoutingRule.IDENTITY, 1, 0.0)


async def test_one_session_loads_as_it_does_among_all(store: Any) -> None:
    """``load_session`` (a node asking for a session another node made) agrees with
    ``load_sessions`` for a saved record, a queue without one, and neither."""
    await store.save_session(SessionRecord(BOB, "a", RoutingRule.INSTANCE, 5, None, 10.0))
    await append(store, entry("s/1", "m1"), entry("s/1", "m2"), entry("s/1", "m3", "orphan"))
    loaded = {(r.identity, r.instance): r for r in await store.load_sessions()}
    for instance in ("a", "orphan"):
        assert await store.load_session(BOB, instance) == loaded[(BOB, instance)]
    assert await store.load_session(BOB, "nothing") is None
    assert await store.load_session("nobody@x", "a") is None


async def test_save_session_overwrites(store: Any) -> None:
    await store.save_session(SessionRecord(BOB, "a", RoutingRule.IDENTITY, None, None, 1.0))
    await store.save_session(SessionRecord(BOB, "a", RoutingRule.PROMISCUOUS, 7, None, 2.0))
    (record,) = await store.load_sessions()
    assert (record.routing_rule, record.queue_limit, record.last_seen) == (
        RoutingRule.PROMISCUOUS,
        7,
        2.0,
    )


async def test_idle_sessions_skip_the_unclaimed_inbox(store: Any) -> None:
    for instance, seen in (("old", 1.0), ("new", 100.0), ("", 1.0)):
        await store.save_session(
            SessionRecord(BOB, instance, RoutingRule.IDENTITY, None, None, seen)
        )
    assert await store.idle_sessions(50.0) == [(BOB, "old")]


# -- transactions ---------------------------------------------------------------------------


async def test_a_transaction_that_raises_keeps_nothing(store: Any) -> None:
    def work(tx: QueueTransaction) -> None:
        tx.insert([entry("s/1", "m")], ("s/1", "m"))
        tx.state.put("k", "v")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        await complete(store.transact, work)
    assert await queue(store) == []
    assert not await store.was_stored("s/1", "m")
    assert await complete(store.transact, lambda tx: tx.state.get("k")) is None


async def test_a_failed_transaction_does_not_undo_its_neighbours(store: Any) -> None:
    results: list[Any] = []
    store.append([entry("s/1", "m1")], None, results.append)
    store.transact(lambda tx: 1 / 0, results.append)
    store.append([entry("s/1", "m2")], None, results.append)
    await store.barrier()
    assert isinstance(results[1], ZeroDivisionError)
    assert await ids(store) == ["m1", "m2"]


# -- bounded queues: drop-oldest trims, gap markers, who is told ----------------------------


def bound(limit: int, upto: int = 0, instance: str = "a") -> QueueBound:
    return QueueBound(BOB, instance, limit, upto)


def gap_of(rows: list[Any]) -> dict[str, Any]:
    assert rows[0].sender == SERVER and rows[0].needs_ack
    document: dict[str, Any] = json.loads(rows[0].payload)
    assert document["gap"] == rows[0].message_id
    return document


async def test_drop_oldest_trims_puts_a_gap_marker_and_tells_the_sender(store: Any) -> None:
    await append(store, *(entry("alice@x/p", f"m{i}") for i in range(3)))
    result = await bounded(
        store, [entry("alice@x/p", "m3")], [bound(3)], dedupe=("alice@x/p", "m3")
    )
    rows = await queue(store)
    assert [r.message_id for r in rows[1:]] == ["m1", "m2", "m3"]
    assert gap_of(rows)["dropped"] == 1
    assert gap_of(rows)["lost"] == [{"from": "alice@x/p", "id": "m0"}]
    assert result.removed == {(BOB, "a"): 1}
    (told,) = await queue(store, "p", "alice@x")
    assert json.loads(told.payload) == {"failed": "m0", "to": "alice@x/p", "why": "queue-dropped"}
    assert not told.needs_ack and told.sender == SERVER
    kinds = sorted((n.identity, n.instance, n.needs_ack) for n in result.notices)
    assert kinds == [("alice@x", "p", False), (BOB, "a", True)]


async def test_a_second_overflow_merges_into_one_gap_marker_at_the_head(store: Any) -> None:
    await append(store, *(entry("alice@x/p", f"m{i}") for i in range(2)))
    await bounded(store, [entry("alice@x/p", "m2")], [bound(2)])
    result = await bounded(store, [entry("alice@x/p", "m3")], [bound(2)])
    rows = await queue(store)
    assert [r.message_id for r in rows[1:]] == ["m2", "m3"]
    assert sum(1 for r in rows if r.sender == SERVER) == 1
    assert gap_of(rows)["dropped"] == 2
    assert [x["id"] for x in gap_of(rows)["lost"]] == ["m0", "m1"]
    assert result.removed == {(BOB, "a"): 2}  # the dropped envelope and the replaced marker
    snapshot = await store.queue_snapshot(BOB, "a", 10)
    assert [e.kind for e in snapshot] == [QueueKind.GAP, QueueKind.ENVELOPE, QueueKind.ENVELOPE]


async def test_an_acknowledged_gap_marker_starts_the_count_again(store: Any) -> None:
    await append(store, entry("alice@x/p", "m0"))
    await bounded(store, [entry("alice@x/p", "m1")], [bound(1)])
    gap = (await queue(store))[0]
    assert await complete(store.acknowledge, BOB, "a", SERVER, gap.message_id) == 1
    await bounded(store, [entry("alice@x/p", "m2")], [bound(1)])
    rows = await queue(store)
    assert gap_of(rows)["dropped"] == 1 and gap_of(rows)["lost"] == [
        {"from": "alice@x/p", "id": "m1"}
    ]


async def test_only_senders_owed_an_answer_are_told(store: Any) -> None:
    await append(
        store,
        entry("carol@x/c", None, ack=False),  # fire-and-forget: nobody waits
        entry(SERVER, "notify-1"),  # the server's own message
        entry(f"{BOB}/a", "self"),  # the session's own
        entry("alice@x/p", "m"),  # the one owed a failure
    )
    result = await bounded(store, [entry("dave@x/d", "new")], [bound(1)])
    told = [(n.identity, n.instance) for n in result.notices if not n.needs_ack]
    assert told == [("alice@x", "p")]
    assert gap_of(await queue(store))["dropped"] == 4
    assert [x["id"] for x in gap_of(await queue(store))["lost"]] == ["notify-1", "self", "m"]


async def test_the_gap_marker_lists_at_most_max_lost(store: Any) -> None:
    many = MAX_LOST_LISTED + 5
    await append(store, *(entry("s/1", f"m{i}", ack=False) for i in range(many)))
    await bounded(store, [entry("s/1", "last", ack=False)], [bound(1)])
    document = gap_of(await queue(store))
    assert document["dropped"] == many
    assert len(document["lost"]) == MAX_LOST_LISTED
    assert document["lost"][-1]["id"] == f"m{many - 1}"


async def test_delivered_entries_are_kept_up_to_twice_the_limit(store: Any) -> None:
    first = await append(store, *(entry("s/1", f"m{i}") for i in range(3)))
    upto = first.seqs[-1]  # all three written to the live client, awaiting its received

    async def envelopes() -> list[str | None]:
        return [r.message_id for r in await queue(store) if r.sender != SERVER]

    await bounded(store, [entry("s/1", "m3")], [bound(2, upto)])
    assert await envelopes() == ["m0", "m1", "m2", "m3"]  # m3 goes: not in the client's hands
    await bounded(store, [entry("s/1", "m4")], [bound(2, upto)])
    # undelivered m3 went (the marker takes its place, after what the client has); 4 <= 2 x 2
    assert await envelopes() == ["m0", "m1", "m2", "m4"]
    await bounded(store, [entry("s/1", "m5")], [bound(2, upto)])
    assert await envelopes() == ["m0", "m1", "m2", "m5"]
    everything = (await queue(store))[-1].seq  # now the client has all of them
    await bounded(store, [entry("s/1", "m6")], [bound(2, everything)])
    # 5 > 2 x 2 and nothing undelivered is left: the oldest delivered goes, never the newest
    assert await envelopes() == ["m1", "m2", "m5", "m6"]
    rows = [r for r in await queue(store) if r.sender == SERVER]
    assert [x["id"] for x in gap_of(rows)["lost"]] == ["m3", "m4", "m0"]


async def test_the_envelope_being_added_is_never_dropped(store: Any) -> None:
    await append(store, entry("s/1", "old"))
    result = await bounded(store, [entry("s/1", "new")], [bound(1)])
    assert (await ids(store))[1:] == ["new"]
    assert result.seqs and not result.refused


async def test_reject_new_is_an_append_without_bounds(store: Any) -> None:
    """Under reject-new the core refuses before writing; an unbounded write never trims."""
    await append(store, entry("s/1", "m0"))
    result = await bounded(store, [entry("s/1", "m1")], [])
    assert result.removed == {} and result.notices == []
    assert await ids(store) == ["m0", "m1"]


# -- expiring messages: stored expiry, sweep, delivery-time expiry ----------------------------


def expiring(sender: str, message_id: str | None, at: float | None, instance: str = "a") -> Any:
    return QueueEntry(BOB, instance, sender, message_id, True, b"x", at)


async def sweep(store: Any, now: float, delivered: dict[Any, int] | None = None) -> Any:
    return await complete(store.transact, POLICY.expiry(now, (-1.0, 0), 100, delivered or {}))


async def test_entries_carry_their_expiry_into_the_backlog(store: Any) -> None:
    await append(store, expiring("s/1", "m1", 1000.5), expiring("s/1", "m2", None))
    assert [(r.message_id, r.expires_at) for r in await queue(store)] == [
        ("m1", 1000.5),
        ("m2", None),
    ]


async def test_expired_rows_come_in_expiry_order_after_a_key(store: Any) -> None:
    first = await append(
        store,
        expiring("s/1", "late", 30.0),
        expiring("s/1", "early", 10.0),
        expiring("s/1", "b", 20.0, "b"),
        expiring("s/1", "future", 99.0),
        expiring("s/1", "never", None),
    )

    def read(now: float, after: tuple[float, int], limit: int) -> Any:
        return complete(store.transact, lambda tx: tx.expired(now, after, limit))

    found = await read(50.0, (-1.0, 0), 10)
    assert [(e.row.message_id, e.instance, e.expires_at) for e in found] == [
        ("early", "a", 10.0),
        ("b", "b", 20.0),
        ("late", "a", 30.0),
    ]
    assert found[0].row.seq == first.seqs[1] and found[0].row.needs_ack
    assert [e.row.message_id for e in await read(50.0, (-1.0, 0), 2)] == ["early", "b"]
    after = (found[1].expires_at, found[1].row.seq)
    assert [e.row.message_id for e in await read(50.0, after, 10)] == ["late"]
    in_a = await complete(
        store.transact, lambda tx: tx.expired_in(BOB, "a", 50.0, after=first.seqs[0], limit=10)
    )
    assert [e.row.message_id for e in in_a] == ["early"]  # "late" is not after the cursor


async def test_the_sweep_removes_tells_the_sender_and_marks_a_gap(store: Any) -> None:
    await append(
        store,
        expiring("alice@x/p", "m0", 10.0),
        expiring("alice@x/p", "m1", 100.0),
        expiring("alice@x/p", "m2", 10.0),
    )
    swept = await sweep(store, 50.0)
    assert (swept.scanned, swept.expired) == (2, 2)
    rows = await queue(store)
    assert rows[0].message_id == "m1"  # the marker takes the place of the last one removed
    assert gap_of(rows[1:])["dropped"] == 2
    assert [x["id"] for x in gap_of(rows[1:])["lost"]] == ["m0", "m2"]
    told = [json.loads(r.payload) for r in await queue(store, "p", "alice@x")]
    assert [(t["failed"], t["why"]) for t in told] == [
        ("m0", "message-expired"),
        ("m2", "message-expired"),
    ]
    assert swept.result.removed == {(BOB, "a"): 2}
    assert sorted((n.identity, n.needs_ack) for n in swept.result.notices) == [
        ("alice@x", False),
        ("alice@x", False),
        (BOB, True),
    ]
    # gap markers and kept failures never expire; nothing is due twice
    again = await sweep(store, 10_000.0)
    rows = await queue(store)
    assert again.expired == 1 and len(rows) == 1 and gap_of(rows)["dropped"] == 3
    assert len(await queue(store, "p", "alice@x")) == 3


async def test_the_sweep_leaves_what_a_live_connection_holds(store: Any) -> None:
    first = await append(
        store, expiring("alice@x/p", "m0", 10.0), expiring("alice@x/p", "m1", 10.0)
    )
    swept = await sweep(store, 50.0, {(BOB, "a"): first.seqs[0]})
    assert (swept.scanned, swept.expired) == (2, 1)
    assert [r.message_id for r in await queue(store) if r.sender != SERVER] == ["m0"]


async def test_session_expiry_after_a_cursor(store: Any) -> None:
    first = await append(
        store,
        *(expiring("alice@x/p", f"m{i}", 10.0) for i in range(3)),
        expiring("c@x/c", "n", 90.0),
    )
    result = await complete(
        store.transact, POLICY.session_expiry(BOB, "a", 50.0, first.seqs[0], 100)
    )
    assert result.removed == {(BOB, "a"): 2}
    rows = await queue(store)
    assert [r.message_id for r in rows if r.sender != SERVER] == ["m0", "n"]
    assert gap_of([r for r in rows if r.sender == SERVER])["dropped"] == 2


async def test_a_claimed_inbox_keeps_its_expiry(store: Any) -> None:
    await append(store, expiring("s/1", "m", 10.0, ""))
    await store.claim_unclaimed(BOB, "a")
    assert [r.expires_at for r in await queue(store)] == [10.0]


# -- persistent sessions -------------------------------------------------------------------


async def test_persistence_begin_step_and_end(store: Any) -> None:
    first = await store.begin_persistence(BOB, "a")
    assert first.nonce and first.memento is None and not first.crashed
    step = PersistStep(BOB, "a", first.nonce, "after-1")
    result = await bounded(store, [entry(f"{BOB}/a", "r1", "shop")], [], step, (f"{BOB}/a", "r1"))
    assert not result.refused
    again = await store.begin_persistence(BOB, "a")
    assert again.crashed and again.memento == "after-1" and again.nonce != first.nonce
    stale = await bounded(store, [entry(f"{BOB}/a", "r2", "shop")], [], step, (f"{BOB}/a", "r2"))
    assert stale.refused and stale.seqs == []
    assert await ids(store, "shop") == ["r1"]
    assert not await store.was_stored(f"{BOB}/a", "r2")
    assert not await store.end_persistence(BOB, "a", first.nonce)
    assert again.nonce is not None
    assert await store.end_persistence(BOB, "a", again.nonce)
    assert await store.end_persistence(BOB, "a", "anything")  # ended: idempotent
    state = (await store.persistence_of(BOB))["a"]
    assert state.nonce is None and state.memento is None
    assert not (await store.begin_persistence(BOB, "a")).crashed


async def test_a_step_without_a_memento_keeps_the_committed_one(store: Any) -> None:
    state = await store.begin_persistence(BOB, "a")
    await bounded(store, [entry("s/1", "r1")], [], PersistStep(BOB, "a", state.nonce, "m1"))
    await bounded(store, [entry("s/1", "r2")], [], PersistStep(BOB, "a", state.nonce, None))
    assert (await store.persistence_of(BOB))["a"].memento == "m1"


async def test_session_deletion_removes_everything_and_tells_senders(store: Any) -> None:
    await store.save_session(SessionRecord(BOB, "a", RoutingRule.IDENTITY, None, None, 1.0))
    await store.begin_persistence(BOB, "a")
    await append(store, entry("alice@x/p", "m0"), entry("carol@x/c", None, ack=False))
    await bounded(store, [entry("alice@x/p", "m1")], [bound(1)])
    result = await complete(store.transact, POLICY.session_deletion(BOB, "a"))
    assert result.removed == {(BOB, "a"): 2}  # the gap marker and m1
    assert await queue(store) == []
    assert "a" not in await store.persistence_of(BOB)
    assert (BOB, "a") not in {(r.identity, r.instance) for r in await store.load_sessions()}
    told = [json.loads(r.payload) for r in await queue(store, "p", "alice@x")]
    assert [(t["failed"], t["why"]) for t in told] == [
        ("m0", "queue-dropped"),
        ("m1", "session-expired"),
    ]


async def test_the_snapshot_leaves_out_notices(store: Any) -> None:
    await append(store, entry("alice@x/p", "m0"))
    await bounded(store, [entry("alice@x/p", "m1")], [bound(1)])
    assert await store.queue_snapshot("alice@x", "p", 10) == []
    assert [e.message_id for e in await store.queue_snapshot(BOB, "a", 1)] != []


# -- app state ------------------------------------------------------------------------------


async def test_app_commits_go_with_the_memento_only_if_their_reads_are_unchanged(
    store: Any,
) -> None:
    state = await store.begin_persistence(BOB, "a")
    assert state.nonce is not None
    persist = PersistStep(BOB, "a", state.nonce, "m1")
    first = StateChanges(reads={"n": None}, writes={"n": "1", "other": "2"})
    assert await complete(store.transact, app_commit(persist, first)) is True
    assert await store.app_state_get("n") == "1"
    assert await store.app_state_keys("") == ["n", "other"]
    assert await store.app_state_keys("o") == ["other"]
    assert (await store.persistence_of(BOB))["a"].memento == "m1"

    # what it read changed since (n was None): nothing is written, the memento stays
    stale_read = StateChanges(reads={"n": None}, writes={"n": "2"})
    again = PersistStep(BOB, "a", state.nonce, "m2")
    assert await complete(store.transact, app_commit(again, stale_read)) is False
    listing = StateChanges(listings={"": ["n"]}, writes={"x": "1"})
    assert await complete(store.transact, app_commit(again, listing)) is False
    stale = PersistStep(BOB, "a", "not-the-nonce", "m3")
    with pytest.raises(Conflict) as raised:
        await complete(store.transact, app_commit(stale, StateChanges(writes={"n": "3"})))
    assert raised.value.error_id is ErrorId.STALE_NONCE
    assert await store.app_state_get("n") == "1"
    assert (await store.persistence_of(BOB))["a"].memento == "m1"

    deleting = StateChanges(reads={"other": "2"}, writes={"other": None})
    assert await complete(store.transact, app_commit(None, deleting)) is True
    assert await store.app_state_keys("") == ["n"] and await store.app_state_get("other") is None


# -- accounts, keys, roster, feeds ----------------------------------------------------------


async def test_accounts(store: Any) -> None:
    await store.create_account("bob", "hash")
    with pytest.raises(Conflict):
        await store.create_account("bob", "other")
    assert await store.has_account("bob") and not await store.has_account("eve")
    account = await store.get_account("bob")
    assert account is not None and (account.password_hash, account.profile) == ("hash", {})
    await store.update_account("bob", profile={"fullName": "Bob"})
    await store.update_account("bob", password_hash="new")
    account = await store.get_account("bob")
    assert account is not None
    assert (account.password_hash, account.profile) == ("new", {"fullName": "Bob"})
    await store.create_account("alice", None)
    assert [a.name for a in await store.list_accounts()] == ["alice", "bob"]
    assert await store.delete_account("bob") and not await store.delete_account("bob")
    assert await store.get_account("bob") is None


async def test_keys_belong_to_an_account_and_go_with_it(store: Any) -> None:
    await store.create_account("bob", None)
    await store.add_key("bob", b"h" * 32, "laptop")
    assert await store.account_for_key(b"h" * 32) == "bob"
    assert store.key_owner(b"h" * 32) == "bob"
    assert await store.account_for_key(b"x" * 32) is None
    await store.delete_account("bob")
    assert await store.account_for_key(b"h" * 32) is None


async def test_roster(store: Any) -> None:
    await store.put_contact("bob", {"identity": "zed@x", "name": "Z"})
    await store.put_contact("bob", {"identity": "amy@x"})
    await store.put_contact("bob", {"identity": "zed@x", "name": "Zed"})
    assert await store.contacts("bob") == [
        {"identity": "amy@x"},
        {"identity": "zed@x", "name": "Zed"},
    ]
    assert await store.delete_contact("bob", "amy@x") and not await store.delete_contact(
        "bob", "amy@x"
    )
    await store.put_delegation("bob", {"target": "amy@x", "envelopeTypes": ["message"]})
    assert await store.delegations("bob") == [{"target": "amy@x", "envelopeTypes": ["message"]}]
    assert await store.delete_delegation("bob", "amy@x")
    assert await store.delegations("bob") == [] and await store.contacts("alice") == []


async def test_feed_documents_by_name_and_args(store: Any) -> None:
    assert await store.feed_document("f", {"a": "1"}) is None
    await store.save_feed_document("f", {"a": "1", "b": "2"}, {"value": 1})
    await store.save_feed_document("f", {"b": "2", "a": "1"}, {"value": 2, "é": "ü"})
    assert await store.feed_document("f", {"b": "2", "a": "1"}) == {"value": 2, "é": "ü"}
    assert await store.feed_document("f", {"a": "1"}) is None
