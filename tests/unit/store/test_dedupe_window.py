"""The duplicate window over a stream, on the memory and SQLite stores with a fake clock: a
resend inside the window is stored once, pruning never forgets a key early, and the table stays
at about rate x window however long the stream runs (``wiring.forget_expired_ids``, the
server's pruning pass, in small chunks)."""

from __future__ import annotations

import asyncio
import tempfile
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.model import QueueEntry
from tidings.core.ports import settling
from tidings.store import _sql, memory
from tidings.store.memory import MemoryStore
from tidings.store.sqlite import SqliteStore
from tidings.wiring import forget_expired_ids

WINDOW = 10.0
SENDER = "alice@x/a"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


@asynccontextmanager
async def a_store(kind: str, clock: Clock) -> AsyncIterator[Any]:
    """A store whose ``time.time()`` is ``clock`` (both stores stamp keys when they append)."""
    fake_time = types.SimpleNamespace(time=clock.time)
    saved = _sql.time, memory.time
    _sql.time = memory.time = fake_time  # type: ignore[assignment]
    try:
        if kind == "memory":
            yield MemoryStore()
            return
        with tempfile.TemporaryDirectory() as folder:
            store = SqliteStore(Path(folder))
            store.open(asyncio.get_running_loop())
            try:
                yield store
            finally:
                store.close()
    finally:
        _sql.time, memory.time = saved


async def send(store: Any, message_id: str) -> bool:
    """Append one message with a dedupe key; whether it was a duplicate."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    entry = QueueEntry("bob@x", "a", SENDER, message_id, True, b"x")
    store.append([entry], (SENDER, message_id), settling(future))
    return bool((await future).duplicate)


async def keys(store: Any) -> int:
    if isinstance(store, MemoryStore):
        return len(store._state.message_ids)
    return int(store._read("SELECT count(*) FROM message_keys")[0][0])


async def prune(store: Any, clock: Clock, chunk: int = 7) -> int:
    return await forget_expired_ids(store, lambda: clock.time() - WINDOW, chunk)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_the_table_stays_at_rate_times_window_under_a_stream(kind: str) -> None:
    """40 windows' worth of seconds at 50 messages/s, each resent once a few seconds later:
    every resend is a duplicate, and the keys kept never pass rate x (window + 2 s)."""
    rate, clock = 50, Clock()
    async with a_store(kind, clock) as store:
        most = 0
        for second in range(40):
            for n in range(rate):
                assert not await send(store, f"m{second}-{n}")
                if second >= 5:
                    assert await send(store, f"m{second - 5}-{n}")  # a resend inside the window
            clock.now += 1.0
            await prune(store, clock)
            most = max(most, await keys(store))
        assert most <= rate * (WINDOW + 2)
        assert await keys(store) >= rate * WINDOW  # ... and nothing inside the window went


operations = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0.0, 4.0)),
        st.tuples(st.just("new"), st.integers(0, 3)),
        st.tuples(st.just("resend"), st.integers(0, 1000)),
        st.tuples(st.just("prune"), st.integers(1, 5)),
    ),
    max_size=60,
)


async def check(kind: str, steps: list[tuple[str, Any]]) -> None:
    clock = Clock()
    stored: dict[str, float] = {}  # id -> when its key was (last) stored
    async with a_store(kind, clock) as store:
        counter = 0
        for op, arg in steps:
            if op == "advance":
                clock.now += arg
            elif op == "new":
                for _ in range(arg + 1):
                    counter += 1
                    assert not await send(store, f"n{counter}")
                    stored[f"n{counter}"] = clock.now
            elif op == "resend" and stored:
                message_id = sorted(stored)[arg % len(stored)]
                age = clock.now - stored[message_id]
                duplicate = await send(store, message_id)
                if age <= WINDOW:
                    assert duplicate, f"{message_id} resent {age} s later was stored again"
                if not duplicate:
                    stored[message_id] = clock.now
            elif op == "prune":
                await prune(store, clock, chunk=arg)
                kept = await keys(store)
                assert kept >= sum(clock.now - at <= WINDOW for at in stored.values())
                assert kept <= sum(clock.now - at < WINDOW + 2 for at in stored.values())


@settings(max_examples=60, deadline=None)
@given(steps=operations)
def test_memory_window_holds_whatever_the_stream(steps: list[tuple[str, Any]]) -> None:
    asyncio.run(check("memory", steps))


@settings(max_examples=25, deadline=None)
@given(steps=operations)
def test_sqlite_window_holds_whatever_the_stream(steps: list[tuple[str, Any]]) -> None:
    asyncio.run(check("sqlite", steps))
