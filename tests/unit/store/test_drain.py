"""Stopping a server commits the writes that completions make (``Store.drain``): an
acknowledgement's completion forwards ``received`` to a sender gone offline by keeping it in
the sender's queue, a write submitted while the store is closing (found by bench/durable.py
on PostgreSQL: hundreds of receipts lost at every stop under load)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tidings.core.model import QueueEntry
from tidings.store.sqlite import SqliteStore


def chain(store: Any, depth: int, written: list[int]) -> None:
    """An append whose completion appends the next one, ``depth`` deep."""
    entry = QueueEntry("bob@x", "a", "alice@x/a", None, False, b"x")

    def done(result: Any) -> None:
        assert not isinstance(result, BaseException), result
        written.append(depth)
        if depth > 1:
            chain(store, depth - 1, written)

    store.append([entry], None, done)


def queued(path: Path) -> int:
    store = SqliteStore(path)
    store.open(asyncio.get_running_loop())
    try:
        return len(store._read("SELECT seq FROM queue"))
    finally:
        store.close()


async def test_writes_made_by_completions_are_committed_before_the_store_closes(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    written: list[int] = []
    for _ in range(50):
        chain(store, 4, written)
    await store.drain()
    store.close()
    assert sorted(written) == sorted([4, 3, 2, 1] * 50)
    assert queued(tmp_path) == 200


async def test_without_draining_a_closed_store_refuses_what_completions_write(
    tmp_path: Path,
) -> None:
    """What the drain is for: close at once and the write a completion makes is refused."""
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    entry = QueueEntry("bob@x", "a", "alice@x/a", None, False, b"x")

    def done(result: Any) -> None:
        try:
            store.append([entry], None, lambda result: None)
        except Exception as exc:
            refused.set_result(exc)

    store.append([entry], None, done)
    store.close()
    assert "not open" in str(await asyncio.wait_for(refused, 30))
    assert queued(tmp_path) == 1
