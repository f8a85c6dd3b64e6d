"""Two nodes on one PostgreSQL database: two ``PostgresStore`` (two group-commit writers, each
its own transaction at READ COMMITTED) racing on the same keys. Every check-then-write that
SQLite's ``BEGIN IMMEDIATE`` serialized must stay exact (see docs/postgresql.md, "Several nodes
on one database").

Two kinds of test: many operations at once from both stores (they overlap in practice), and a
deterministic interleaving: node B's transaction stops right after its check (``Held``) while
node A runs the competing operation, which must wait for B's commit (seen in
``pg_stat_activity`` as a wait on a lock) rather than act on what B has not committed yet.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
from tests.postgres import PostgresDatabases

from tidings.core.consent import ConsentService
from tidings.core.consent_model import InboxKind
from tidings.core.errors import Conflict, ErrorId, TidingsError
from tidings.core.model import KeyPublication, PersistStep, QueueBound, QueueEntry, QueueKind
from tidings.core.ports import QueueTransaction, settling
from tidings.core.queue_policy import QueuePolicy
from tidings.store._sql import add_publication
from tidings.store.postgresql import PgDb, PostgresStore

ALICE, BOB = "alice@x", "bob@x"
SERVER = "postmaster@x/server"
OFFER: dict[str, Any] = {
    "app_code": "study",
    "display_name": "Study",
    "consent": {"en": "Share"},
    "permissions": [{"resource": "feed:heart*", "level": "read"}],
    "mode": "single-use",
}
N = 40


class Notices:
    """A ``NoticeFactory`` in plain JSON (these tests are not about LIME)."""

    def gap(self, node: str, gap_id: str, dropped: int, lost: list[dict[str, str]]) -> bytes:
        return json.dumps({"gap": gap_id, "dropped": dropped}).encode()

    def failed(self, node: str, message_id: str, error: TidingsError) -> bytes:
        return json.dumps({"failed": message_id}).encode()

    def message(self, node: str, message_id: str, type_: str, content: Any) -> bytes:
        return json.dumps({"id": message_id}).encode()


POLICY = QueuePolicy(Notices(), SERVER)


@pytest.fixture
async def nodes(postgres: PostgresDatabases) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores (two nodes' writers) on one fresh database."""
    url = postgres.fresh()
    loop = asyncio.get_running_loop()
    a, b = PostgresStore(url), PostgresStore(url)
    a.open(loop)
    b.open(loop)
    try:
        yield a, b
    finally:
        a.close()
        b.close()
        postgres.drop(url)


async def transact(store: PostgresStore, work: Callable[[QueueTransaction], Any]) -> Any:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    store.transact(work, settling(future))
    return await future


class Held:
    """A transaction on one node stopped between its check and its write: ``first`` runs,
    then the writer thread waits until ``release``, then ``rest`` runs and the batch commits."""

    def __init__(
        self,
        store: PostgresStore,
        first: Callable[[QueueTransaction], Any],
        rest: Callable[[QueueTransaction, Any], Any],
    ) -> None:
        self._checked = threading.Event()
        self._go = threading.Event()

        def work(tx: QueueTransaction) -> Any:
            seen = first(tx)
            self._checked.set()
            self._go.wait(30)
            return rest(tx, seen)

        self.result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        store.transact(work, settling(self.result))

    async def checked(self) -> None:
        await asyncio.to_thread(self._checked.wait, 30)

    def release(self) -> None:
        self._go.set()


def lock_waits(url: str) -> int:
    """Backends of this database waiting on a lock (advisory or row) right now."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
        assert row is not None
        return int(row[0])


async def waits_or_finishes(url: str, competing: asyncio.Future[Any]) -> bool:
    """True once the competing operation waits on a lock, False if it finished instead."""
    for _ in range(3000):
        if competing.done():
            return False
        if await asyncio.to_thread(lock_waits, url):
            return True
        await asyncio.sleep(0.01)  # polling a condition, bounded: not a synchronization sleep
    raise AssertionError("the competing operation neither waited nor finished")


async def interleave(
    url: str,
    held: Held,
    competing: Callable[[], Awaitable[Any]],
) -> tuple[Any, Any, bool]:
    """B (``held``) has checked; A runs ``competing``; B then writes and commits. Returns B's
    result, A's result (or exception) and whether A had to wait for B."""
    await held.checked()
    task = asyncio.ensure_future(competing())
    waited = await waits_or_finishes(url, task)
    held.release()
    b_result = await held.result
    a_result = await asyncio.gather(task, return_exceptions=True)
    return b_result, a_result[0], waited


# -- consent sequence numbers -----------------------------------------------------------------


async def relationship_between(service: ConsentService) -> str:
    _, token = await service.create_invite(ALICE, **OFFER)
    return (await service.accept(token, BOB)).id


async def test_chat_from_two_nodes_gets_distinct_consecutive_seqs(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    on_a, on_b = ConsentService(a), ConsentService(b)
    relationship = await relationship_between(on_a)
    sent = [
        (on_a if i % 2 else on_b).chat(relationship, ALICE if i % 3 else BOB, f"m{i}")
        for i in range(2 * N)
    ]
    messages = await asyncio.gather(*sent)  # none refused
    assert sorted(m.seq for m in messages) == list(range(1, 2 * N + 1))
    history = await on_a.chat_history(relationship, ALICE, limit=1000)
    assert [m.seq for m in history] == list(range(1, 2 * N + 1))
    assert sorted(m.text for m in history) == sorted(f"m{i}" for i in range(2 * N))
    for side in (ALICE, BOB):
        seqs = [e.seq for e in await on_b.inbox(side, limit=1000)]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_inbox_events_from_two_nodes_get_distinct_consecutive_seqs(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    on_a, on_b = ConsentService(a), ConsentService(b)
    made = [(on_a if i % 2 else on_b).create_invite(ALICE, **OFFER) for i in range(2 * N)]
    await asyncio.gather(*made)  # each writes one event to ALICE's inbox: none refused
    events = await on_a.inbox(ALICE, limit=1000)
    assert [e.seq for e in events] == list(range(1, 2 * N + 1))


async def test_a_chat_waits_for_the_other_nodes_uncommitted_seq(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    """A takes the next seq after B's commit, at its first try: no duplicate seq refused by
    the unique key (which would re-run A's whole batch, and refuse the message if it
    collided again)."""
    a, b = nodes
    relationship = await relationship_between(ConsentService(a))
    held = Held(
        b,
        lambda tx: tx.consent.add_chat(relationship, ALICE, "from b", 1.0).seq,
        lambda tx, seq: seq,
    )
    runs: list[int] = []

    def chat(tx: QueueTransaction) -> int:
        runs.append(1)
        return tx.consent.add_chat(relationship, BOB, "from a", 2.0).seq

    b_seq, a_seq, waited = await interleave(a.url, held, lambda: transact(a, chat))
    assert waited
    assert (b_seq, a_seq, len(runs)) == (1, 2, 1)


async def test_an_inbox_event_waits_for_the_other_nodes_uncommitted_seq(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    held = Held(
        b,
        lambda tx: tx.consent.add_event(ALICE, InboxKind.CHAT, {"n": 1}, 1.0).seq,
        lambda tx, seq: seq,
    )
    runs: list[int] = []

    def event(tx: QueueTransaction) -> int:
        runs.append(1)
        return tx.consent.add_event(ALICE, InboxKind.CHAT, {"n": 2}, 2.0).seq

    b_seq, a_seq, waited = await interleave(a.url, held, lambda: transact(a, event))
    assert waited
    assert (b_seq, a_seq, len(runs)) == (1, 2, 1)


# -- persistent sessions: the nonce check and the memento -----------------------------------


async def test_a_new_instance_waits_for_a_memento_checked_with_the_old_nonce(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    """B checked the old nonce and is about to store its memento; A begins a new instance.
    Either B's step comes first (A then sees B's memento as the crashed instance's) or it is
    refused: never accepted and written into the instance A began without it."""
    a, b = nodes
    old = await a.begin_persistence(BOB, "phone")
    step = PersistStep(BOB, "phone", old.nonce, "memento-b")
    entries = [QueueEntry(ALICE, "a", f"{BOB}/phone", "m1", True, b"x")]
    held = Held(
        b,
        lambda tx: tx.nonce_is_current(step),
        lambda tx, current: POLICY.bounded_append(entries, None, [], step)(tx) if current else None,
    )
    b_result, begun, waited = await interleave(
        a.url, held, lambda: a.begin_persistence(BOB, "phone")
    )
    assert waited
    assert not b_result.refused
    assert begun.crashed and begun.memento == "memento-b"
    state = (await a.persistence_of(BOB))["phone"]
    assert (state.nonce, state.memento) == (begun.nonce, "memento-b")


async def test_a_step_with_the_old_nonce_waits_for_the_new_instance(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    """The other order: B began a new instance (not committed yet); A's step with the old
    nonce must wait for it and be refused, not accepted on the old row."""
    a, b = nodes
    old = await a.begin_persistence(BOB, "phone")
    step = PersistStep(BOB, "phone", old.nonce, "memento-a")
    entries = [QueueEntry(ALICE, "a", f"{BOB}/phone", "m1", True, b"x")]

    def begin(tx: QueueTransaction) -> None:
        tx.nonce_is_current(step)  # the same key as begin_persistence
        tx_connection_begin(tx)

    held = Held(b, begin, lambda tx, _: None)
    _, appended, waited = await interleave(
        a.url, held, lambda: transact(a, POLICY.bounded_append(entries, None, [], step))
    )
    assert waited
    assert appended.refused
    assert (await a.persistence_of(BOB))["phone"].memento is None


def tx_connection_begin(tx: QueueTransaction) -> None:
    """What ``begin_persistence`` writes: a new nonce (through the transaction's connection)."""
    connection = tx._connection  # type: ignore[attr-defined]
    connection.execute(
        "UPDATE persistence SET nonce='new' WHERE identity=? AND instance=?", (BOB, "phone")
    )


# -- bounded queues ---------------------------------------------------------------------------


async def test_a_drop_oldest_queue_filled_from_two_nodes_keeps_its_limit(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    limit = 5
    bound = QueueBound(BOB, "a", limit)
    appends = [
        transact(
            a if i % 2 else b,
            POLICY.bounded_append(
                [QueueEntry(BOB, "a", f"{ALICE}/a", f"m{i}", True, b"x")],
                (f"{ALICE}/a", f"m{i}"),
                [bound],
                None,
            ),
        )
        for i in range(2 * N)
    ]
    results = await asyncio.gather(*appends)  # none failed (no conflicting gap markers)
    assert all(r.seqs for r in results)
    kinds = await a._rows("SELECT kind FROM queue WHERE identity=? AND instance='a'", (BOB,))
    assert sum(1 for (kind,) in kinds if kind == QueueKind.ENVELOPE) == limit
    assert sum(1 for (kind,) in kinds if kind == QueueKind.GAP) == 1
    dropped = sum(sum(r.removed.values()) for r in results)
    gaps_replaced = sum(1 for r in results if r.removed) - 1
    assert dropped - gaps_replaced == 2 * N - limit  # each envelope dropped (and told) once


async def test_a_trim_waits_for_the_other_nodes_uncommitted_append(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    limit = 2
    bound = QueueBound(BOB, "a", limit)

    def append(i: int) -> Callable[[QueueTransaction], Any]:
        entry = QueueEntry(BOB, "a", f"{ALICE}/a", f"m{i}", True, b"x")
        return POLICY.bounded_append([entry], None, [bound], None)

    for i in range(limit):
        await transact(a, append(i))
    held = Held(b, append(10), lambda tx, result: result)
    await interleave(a.url, held, lambda: transact(a, append(11)))
    rows = await a._rows("SELECT kind FROM queue WHERE identity=? AND instance='a'", (BOB,))
    assert sorted(kind for (kind,) in rows) == sorted(
        [QueueKind.ENVELOPE] * limit + [QueueKind.GAP]
    )


# -- key directory ----------------------------------------------------------------------------


async def test_an_older_publication_waits_and_is_stale(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    """B is publishing a key at 10 (not committed); A's publication of the same key at 5
    must wait and be refused as stale, not kept beside the newer one."""
    a, b = nodes

    def publication(published: int) -> KeyPublication:
        return KeyPublication("k1", BOB, "phone", published, published + 1000, "{}")

    await a.add_key_publication(publication(1))
    connection = "_connection"
    held = Held(
        b,
        lambda tx: add_publication(getattr(tx, connection), publication(10)),
        lambda tx, _: None,
    )
    _, refused, waited = await interleave(
        a.url, held, lambda: a.add_key_publication(publication(5))
    )
    assert waited
    assert isinstance(refused, Conflict) and refused.error_id is ErrorId.KEY_STALE
    assert [p.published for p in await a.key_history("k1")] == [1, 10]


# -- the hot path -----------------------------------------------------------------------------


async def test_a_plain_append_takes_no_lock(
    nodes: tuple[PostgresStore, PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message append (no bound, no persistent session) is not a check-then-write: the
    unique key of the sender id is its only check. It pays no lock round trip."""
    a, _ = nodes
    taken: list[str] = []
    monkeypatch.setattr(PgDb, "lock", lambda db, key: taken.append(key))
    entry = QueueEntry(BOB, "a", f"{ALICE}/a", "m1", True, b"x")
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    a.append([entry], (f"{ALICE}/a", "m1"), settling(future))
    assert (await future).seqs
    await transact(a, POLICY.bounded_append([entry], None, [], None))  # no bound: no lock
    assert taken == []
