"""Runs of appends and of acknowledgements that share a batch go to PostgreSQL in one statement
each (``_writer.Kind``: every statement is a round trip there); they must answer exactly what
one statement per operation answers, which SQLite (one statement each: running them together
measured no cheaper there, bench/writer_cost.py) shows beside it. The writer is held by a first
operation until everything is queued, so the batch is the one the test builds."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tidings.core.errors import Conflict, Unavailable
from tidings.core.model import AppendResult, QueueEntry
from tidings.core.ports import settling
from tidings.store._writer import Kind

pytestmark = pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)


class HeldWriter:
    """Hold the store's writer on an operation until ``release``: what is submitted meanwhile
    forms the next batch."""

    def __init__(self, store: Any) -> None:
        self._gate = threading.Event()
        self._held = threading.Event()
        self.done = store.writer.run(self._hold)

    def _hold(self, connection: Any) -> None:
        self._held.set()
        self._gate.wait(30)

    async def release(self) -> None:
        assert await asyncio.to_thread(self._held.wait, 30)
        self._gate.set()
        await self.done


def count_runs(store: Any, attribute: str) -> list[int]:
    """The sizes of the runs the store's one-statement form of ``attribute`` was given, each
    negated when it failed (stays empty on SQLite, which runs each alone)."""
    runs: list[int] = []
    kind = getattr(store, attribute)
    if kind is not None:

        def counting(db: Any, arguments: list[Any]) -> list[Any]:
            runs.append(-len(arguments))
            results = kind.run(db, arguments)
            runs[-1] = len(arguments)
            return list(results)

        setattr(store, attribute, Kind(counting, kind.rank))
    return runs


def one_statement(store: Any) -> bool:
    return type(store).__name__ == "PostgresStore"


def entry(recipient: str, sender: str, message_id: str, payload: Any = b"x") -> QueueEntry:
    return QueueEntry(recipient, "a", sender, message_id, True, payload)


def append(store: Any, item: QueueEntry) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    assert item.message_id is not None
    store.append([item], (item.sender, item.message_id), settling(future))
    return future


def acknowledge(store: Any, item: QueueEntry) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    assert item.message_id is not None
    store.acknowledge(item.identity, item.instance, item.sender, item.message_id, settling(future))
    return future


async def test_a_run_of_appends_answers_as_one_statement_each_would(store: Any) -> None:
    earlier = entry("bob@x", "alice@x/a", "m0")
    first = await append(store, earlier)
    assert not first.duplicate
    runs = count_runs(store, "_appends_together")
    held = HeldWriter(store)
    items = [
        entry("bob@x", "alice@x/a", "m1"),
        entry("carol@x", "alice@x/a", "m2"),
        entry("bob@x", "alice@x/a", "m1"),  # the same as two before: a duplicate
        entry("bob@x", "alice@x/a", "m0"),  # stored before this batch: a duplicate
        entry("bob@x", "dave@x/a", "m1"),  # another sender's m1: not a duplicate
        entry("bob@x", "alice@x/a", "m3"),
    ]
    futures = [append(store, item) for item in items]
    await held.release()
    results: list[AppendResult] = list(await asyncio.gather(*futures))
    assert runs == ([6] if one_statement(store) else [])
    assert [r.duplicate for r in results] == [False, False, True, True, False, False]
    seqs = [r.seqs[0] for r in results if not r.duplicate]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4  # in the order they were sent
    assert all(seq > first.seqs[0] for seq in seqs)
    bob = await store.backlog("bob@x", "a", 0, 100)
    assert [(e.sender, e.message_id) for e in bob] == [
        ("alice@x/a", "m0"),
        ("alice@x/a", "m1"),
        ("dave@x/a", "m1"),
        ("alice@x/a", "m3"),
    ]


async def test_a_run_of_acknowledgements_counts_each_ones_rows(store: Any) -> None:
    stored = [entry("bob@x", "alice@x/a", f"k{n}") for n in range(3)]
    for item in stored:
        assert not (await append(store, item)).duplicate
    runs = count_runs(store, "_acknowledgements_together")
    held = HeldWriter(store)
    futures = [
        acknowledge(store, stored[0]),
        acknowledge(store, entry("bob@x", "alice@x/a", "never-sent")),
        acknowledge(store, stored[2]),
        acknowledge(store, stored[2]),  # the same row again: removed once
    ]
    await held.release()
    counts = await asyncio.gather(*futures)
    assert runs == ([4] if one_statement(store) else [])
    assert counts == [1, 0, 1, 0]  # the first of two equal ones holds the row
    left = await store.backlog("bob@x", "a", 0, 100)
    assert [e.message_id for e in left] == ["k1"]


async def test_a_failing_append_in_a_run_fails_alone(store: Any) -> None:
    """A run fails as one statement; the batch is then run one operation at a time, and only
    the bad one fails."""
    runs = count_runs(store, "_appends_together")
    held = HeldWriter(store)
    good = append(store, entry("bob@x", "alice@x/a", "g1"))
    bad = append(store, entry("bob@x", "alice@x/a", "g2", payload=None))  # NOT NULL
    also_good = append(store, entry("bob@x", "alice@x/a", "g3"))
    await held.release()
    assert not (await good).duplicate
    assert not (await also_good).duplicate
    assert runs == ([-3] if one_statement(store) else [])  # tried, failed, run one at a time
    assert store.write_counts().runs_failed == (1 if one_statement(store) else 0)
    with pytest.raises((Conflict, Unavailable)):  # the store's translation of the refusal
        await bad
    left = await store.backlog("bob@x", "a", 0, 100)
    assert [e.message_id for e in left] == ["g1", "g3"]
    assert not (await append(store, entry("bob@x", "alice@x/a", "g2"))).duplicate  # not kept


async def test_appends_and_acknowledgements_interleaved_run_as_two_statements(store: Any) -> None:
    """A stretch of appends and acknowledgements, mixed as they arrive under load: all the
    acknowledgements in one statement, then all the appends in one, and every completion in
    the order of submission."""
    acknowledged = [entry("bob@x", "alice@x/a", f"old{n}") for n in range(2)]
    for item in acknowledged:
        assert not (await append(store, item)).duplicate
    appends_run = count_runs(store, "_appends_together")
    acknowledgements_run = count_runs(store, "_acknowledgements_together")
    order: list[str] = []
    held = HeldWriter(store)
    futures = []
    for label, submitted in (
        ("a1", append(store, entry("bob@x", "alice@x/a", "new1"))),
        ("k0", acknowledge(store, acknowledged[0])),
        ("a2", append(store, entry("bob@x", "alice@x/a", "new2"))),
        ("none", acknowledge(store, entry("bob@x", "alice@x/a", "never"))),
        ("k1", acknowledge(store, acknowledged[1])),
        ("a3", append(store, entry("bob@x", "alice@x/a", "new3"))),
    ):
        submitted.add_done_callback(lambda _, label=label: order.append(label))
        futures.append(submitted)
    await held.release()
    outcomes = await asyncio.gather(*futures)
    assert order == ["a1", "k0", "a2", "none", "k1", "a3"]
    assert [o.duplicate for o in (outcomes[0], outcomes[2], outcomes[5])] == [False] * 3
    assert (outcomes[1], outcomes[3], outcomes[4]) == (1, 0, 1)
    if one_statement(store):
        assert (appends_run, acknowledgements_run) == ([3], [3])
    left = await store.backlog("bob@x", "a", 0, 100)
    assert [e.message_id for e in left] == ["new1", "new2", "new3"]


async def test_a_long_run_goes_in_parts_and_answers_the_same(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run is cut into statements of ``RUN_ROWS`` rows (and ``RUN_BYTES`` of payload): a
    duplicate in a later part of one in an earlier part is still a duplicate."""
    from tidings.store import postgresql

    monkeypatch.setattr(postgresql, "RUN_ROWS", 2)
    runs = count_runs(store, "_appends_together")
    held = HeldWriter(store)
    ids = ["p1", "p2", "p3", "p1", "p4"]
    futures = [append(store, entry("bob@x", "alice@x/a", i)) for i in ids]
    await held.release()
    results = await asyncio.gather(*futures)
    assert [r.duplicate for r in results] == [False, False, False, True, False]
    assert runs == ([5] if one_statement(store) else [])
    left = await store.backlog("bob@x", "a", 0, 100)
    assert [e.message_id for e in left] == ["p1", "p2", "p3", "p4"]
