"""Migrations of a new data folder opened by several processes at once (found by running
``tidings account add`` in parallel on a fresh folder: "table accounts already exists")."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

import tidings.store.sqlite as sqlite_store
from tidings.store.sqlite import DATABASE_FILE, _migrations, migrate


def test_concurrent_migrations_of_a_new_folder_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_FILE
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            migrate(path)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sqlite3.connect(path) as connection:
        applied = [row[0] for row in connection.execute("SELECT name FROM schema_migrations")]
    assert sorted(applied) == [name for name, _ in _migrations()]


def test_a_migration_that_really_fails_still_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_migrations", lambda: [("9999_broken.sql", "NOT SQL;")])
    with pytest.raises(sqlite3.Error):
        migrate(tmp_path / DATABASE_FILE)
