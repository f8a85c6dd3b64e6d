"""The group-commit writer against a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from tidings.store._writer import Backend, GroupCommitWriter


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    return connection


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "w.db"
    with connect(path) as connection:
        connection.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    return path


async def test_batches_commit_together_and_results_come_back(database: Path):
    writer = GroupCommitWriter(lambda: connect(database), asyncio.get_running_loop(), window=0)
    writer.start()
    try:
        futures = [
            writer.run(lambda c, k=k: c.execute("INSERT INTO t VALUES (?)", (k,)).lastrowid)
            for k in range(200)
        ]
        assert await asyncio.gather(*futures) == list(range(200))
        assert writer.operations == 200
        assert writer.batches < 200
    finally:
        writer.stop()
    with connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM t").fetchone()[0] == 200


async def test_a_lone_write_to_an_idle_writer_does_not_wait_for_the_window(database: Path):
    """An hour-long window: an idle writer commits one write at once all the same (issue 15:
    no fixed commit window when the writer is idle)."""
    writer = GroupCommitWriter(lambda: connect(database), asyncio.get_running_loop(), window=3600)
    writer.start()
    try:
        for k in range(3):
            write = writer.run(lambda c, k=k: c.execute("INSERT INTO t VALUES (?)", (k,)).rowcount)
            assert await asyncio.wait_for(write, 60) == 1
        assert writer.batches == 3
    finally:
        writer.stop()


async def test_writes_queued_during_a_commit_form_the_next_batch(database: Path):
    """Batches form under load: what queues while a batch runs commits together next."""
    writer = GroupCommitWriter(lambda: connect(database), asyncio.get_running_loop(), window=0)
    writer.start()
    inside, release = threading.Event(), threading.Event()

    def held(connection: sqlite3.Connection) -> None:
        inside.set()
        release.wait(60)
        connection.execute("INSERT INTO t VALUES (-1)")

    try:
        first = writer.run(held)
        await asyncio.to_thread(inside.wait, 60)
        queued = [
            writer.run(lambda c, k=k: c.execute("INSERT INTO t VALUES (?)", (k,)).rowcount)
            for k in range(5)
        ]
        release.set()
        await first
        assert await asyncio.gather(*queued) == [1] * 5
        assert writer.batches == 2
    finally:
        release.set()
        writer.stop()


async def test_a_failing_operation_fails_alone(database: Path):
    writer = GroupCommitWriter(lambda: connect(database), asyncio.get_running_loop(), window=0.05)
    writer.start()
    try:
        ok_before = writer.run(lambda c: c.execute("INSERT INTO t VALUES (1)").rowcount)
        duplicate = writer.run(lambda c: c.execute("INSERT INTO t VALUES (1)").rowcount)
        ok_after = writer.run(lambda c: c.execute("INSERT INTO t VALUES (2)").rowcount)
        assert await ok_before == 1
        with pytest.raises(sqlite3.IntegrityError):
            await duplicate
        assert await ok_after == 1
    finally:
        writer.stop()
    with connect(database) as connection:
        assert [r[0] for r in connection.execute("SELECT k FROM t ORDER BY k")] == [1, 2]


async def test_stop_commits_what_was_queued(database: Path):
    writer = GroupCommitWriter(lambda: connect(database), asyncio.get_running_loop(), window=0)
    writer.start()
    for k in range(50):
        writer.submit(lambda c, k=k: c.execute("INSERT INTO t VALUES (?)", (k,)))
    writer.stop()
    with connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM t").fetchone()[0] == 50
    with pytest.raises(RuntimeError):
        writer.submit(lambda c: None)


async def test_a_storage_failure_in_the_isolated_run_fails_the_batch_and_the_writer_lives(
    database: Path,
):
    """The isolated re-run can itself fail below the operations (disk full, I/O error): here an
    operation ends the transaction, so the savepoint is gone. Every operation of the batch gets
    the error, and the next batch commits as usual."""
    calls = {"n": 0}

    def breaks_the_transaction(connection: sqlite3.Connection) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            connection.execute("ROLLBACK")  # as SQLite does itself on SQLITE_FULL / IOERR
        raise ValueError("refused")

    writer = GroupCommitWriter(lambda: connect(database), asyncio.get_running_loop(), window=0.05)
    writer.start()
    try:
        stored = writer.run(lambda c: c.execute("INSERT INTO t VALUES (1)").rowcount)
        broken = writer.run(breaks_the_transaction)
        async with asyncio.timeout(10):  # a dead writer would never answer
            with pytest.raises(sqlite3.Error):
                await stored
            with pytest.raises(sqlite3.Error):
                await broken
            inserted = writer.run(lambda c: c.execute("INSERT INTO t VALUES (2)").rowcount)
            assert await inserted == 1
    finally:
        writer.stop()
    with connect(database) as connection:
        assert [r[0] for r in connection.execute("SELECT k FROM t ORDER BY k")] == [2]


async def test_a_completion_that_raises_does_not_cost_the_others_theirs(database: Path):
    writer = GroupCommitWriter(lambda: connect(database), asyncio.get_running_loop(), window=0.05)
    writer.start()
    loop = asyncio.get_running_loop()
    second: asyncio.Future[object] = loop.create_future()

    def explode(result: object) -> None:
        raise RuntimeError("a buggy completion")

    try:
        writer.submit(lambda c: c.execute("INSERT INTO t VALUES (1)"), explode)
        writer.submit(lambda c: c.execute("INSERT INTO t VALUES (2)").rowcount, second.set_result)
        assert await asyncio.wait_for(second, 10) == 1
    finally:
        writer.stop()


class _Droppable:
    """A SQLite connection that an operation can declare lost, as a driver does when the
    server goes away."""

    def __init__(self, path: Path) -> None:
        self.connection = connect(path)
        self.lost = False


def _droppable_backend() -> Backend[_Droppable]:
    return Backend[_Droppable](
        begin="BEGIN IMMEDIATE",
        execute=lambda d, sql: d.connection.execute(sql),
        in_transaction=lambda d: d.connection.in_transaction,
        lost=lambda d: d.lost,
        close=lambda d: d.connection.close(),
        translate=lambda exc: RuntimeError(f"translated: {exc}"),
    )


async def test_a_lost_connection_fails_its_batch_and_the_next_batch_gets_a_new_one(
    database: Path,
):
    opened: list[_Droppable] = []

    def open_one() -> _Droppable:
        opened.append(_Droppable(database))
        return opened[-1]

    def loses_the_connection(d: _Droppable) -> None:
        d.lost = True
        raise sqlite3.OperationalError("server closed the connection unexpectedly")

    loop = asyncio.get_running_loop()
    writer = GroupCommitWriter(open_one, loop, window=0.05, backend=_droppable_backend())
    writer.start()
    try:
        async with asyncio.timeout(10):
            stored = writer.run(lambda d: d.connection.execute("INSERT INTO t VALUES (1)"))
            lost = writer.run(loses_the_connection)
            for failed in (stored, lost):  # the whole batch: nothing of it was committed
                with pytest.raises(RuntimeError, match="translated: server closed"):
                    await failed
            assert await writer.run(lambda d: d.connection.execute("INSERT INTO t VALUES (2)"))
    finally:
        writer.stop()
    assert len(opened) == 2
    with connect(database) as connection:
        assert [r[0] for r in connection.execute("SELECT k FROM t ORDER BY k")] == [2]


async def test_the_writer_counts_its_own_cpu_time(database: Path):
    """``cpu_seconds`` is the writer thread's CPU (what /metrics calls
    ``store_writer_cpu_seconds_total``): work done in an operation shows in it, and it never
    goes back."""
    writer = GroupCommitWriter(lambda: connect(database), asyncio.get_running_loop(), window=0)
    writer.start()
    try:
        assert writer.cpu_seconds == 0.0

        def busy(connection: sqlite3.Connection) -> int:
            # about 0.05 s of CPU in SQLite itself, on the writer's thread
            query = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<200000)"
            return int(connection.execute(query + " SELECT count(*) FROM n").fetchone()[0])

        assert await writer.run(busy) == 200000
        first = writer.cpu_seconds
        assert first > 0.01
        await writer.run(lambda c: None)
        assert writer.cpu_seconds >= first
    finally:
        writer.stop()
