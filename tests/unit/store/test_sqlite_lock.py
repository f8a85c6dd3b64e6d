"""On SQLite ``Db.lock`` is a no-op: ``BEGIN IMMEDIATE`` already serializes every writer, so
the single-node durable path runs not one statement more than before the PostgreSQL locks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tidings.store.sqlite import SqliteDb, SqliteStore, _connect


def test_lock_runs_no_statement(tmp_path: Path) -> None:
    connection = _connect(tmp_path / "t.db")
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    connection.execute("BEGIN IMMEDIATE")
    connection.lock("queue:bob@x/a")
    connection.execute("COMMIT")
    assert statements == ["BEGIN IMMEDIATE", "COMMIT"]
    connection.close()


async def test_the_writer_and_reader_connections_are_sqlite_dbs(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    try:
        kinds = await store.writer.run(type)
        assert kinds is SqliteDb
        assert isinstance(store._reader, SqliteDb)
    finally:
        store.close()
