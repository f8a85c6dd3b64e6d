"""The embedded SQLite store: WAL mode, one group-commit writer thread, reads on the loop.

Reads are short indexed lookups done on the event loop's own read connection; they see every
committed batch. Writes go through the ``GroupCommitWriter`` so that many messages share one
fsync. The operations themselves are ``_sql.SqlStore``'s, shared with PostgreSQL. Driver errors
become ``Unavailable`` (and ``Conflict``) at this boundary.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final, TypeVar

from ..core.errors import ErrorId, Unavailable
from ._db import Progress, Read
from ._sql import DriverErrors, SqlStore, dedupe_key
from ._writer import SQLITE, GroupCommitWriter

T = TypeVar("T")

_ERRORS: Final = DriverErrors(sqlite3.Error, sqlite3.IntegrityError)
_BACKEND: Final = dataclasses.replace(SQLITE, translate=_ERRORS.translate)

__all__ = ["SqliteDb", "SqliteStore"]

DATABASE_FILE = "tidings.db"


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("tidings.store") / "migrations"
    return sorted(
        (entry.name, entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".sql")
    )


def _use_wal(connection: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch to WAL. On a brand-new file opened by several processes at once, the switch can
    answer "database is locked" at once, without waiting for the busy timeout (it needs the
    file to itself): try again, briefly, while another opener finishes."""
    for attempt in range(attempts):
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.005 * (attempt + 1))


class SqliteDb(sqlite3.Connection):
    """A SQLite connection as the shared SQL's ``Db``: ``execute`` is sqlite3's own (the hot
    path pays nothing), ``lock`` does nothing since ``BEGIN IMMEDIATE`` already makes every
    write transaction wait for the one before."""

    def lock(self, key: str, /) -> None:
        pass


def _connect(path: Path) -> SqliteDb:
    # The busy timeout first (``timeout``): switching a new file to WAL takes a lock that
    # another process opening the same new folder may hold for a moment.
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=5.0, factory=SqliteDb
    )
    connection.execute("PRAGMA busy_timeout=5000")
    _use_wal(connection)
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    # The migration that replaced message_ids with message_keys hashes the kept rows in SQL.
    connection.create_function("tidings_dedupe_key", 2, dedupe_key, deterministic=True)
    return connection


def migrate(path: Path, progress: Progress | None = None) -> list[str]:
    """Apply every migration not applied yet, each in its own transaction (idempotent); the
    names applied.

    Several processes may open a new data folder at once (``tidings account add`` run in
    parallel, say): a migration that another one applied after this one looked is rolled back
    here and skipped, not an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = _connect(path)
    done: list[str] = []
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY)")
        applied = {row[0] for row in connection.execute("SELECT name FROM schema_migrations")}
        pending = [(name, script) for name, script in _migrations() if name not in applied]
        for number, (name, script) in enumerate(pending, 1):
            if progress is not None:
                progress(name, number, len(pending))
            try:
                connection.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\n"
                    f"INSERT INTO schema_migrations VALUES ('{name}');\nCOMMIT;"
                )
                done.append(name)
            except sqlite3.Error:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                found = "SELECT 1 FROM schema_migrations WHERE name = ?"
                if connection.execute(found, (name,)).fetchone() is None:
                    raise
    finally:
        connection.close()
    return done


class SqliteStore(SqlStore):
    _errors = _ERRORS

    def __init__(
        self, data_dir: Path, *, commit_window: float = 0.001, migrate_on_open: bool = True
    ) -> None:
        super().__init__()
        self.path = Path(data_dir) / DATABASE_FILE
        self._commit_window = commit_window
        self._migrate_on_open = migrate_on_open
        self._reader: sqlite3.Connection | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._migrate_on_open:
            migrate(self.path)
        self._reader = _connect(self.path)
        self._writer = GroupCommitWriter(
            lambda: _connect(self.path), loop, window=self._commit_window, backend=_BACKEND
        )
        self._writer.start()

    def close(self) -> None:
        """Commit what is queued, then close (safe to call twice)."""
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        if self._reader is None:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, "the store is not open")
        try:
            return self._reader.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, f"storage read failed: {exc}") from exc

    async def _reading(self, fn: Callable[[Read], T]) -> T:
        """On the loop: a read of a local file is shorter than a hop to another thread."""
        return fn(self._read)

    def key_owner(self, key_hash: bytes) -> str | None:
        rows = self._read("SELECT account FROM api_keys WHERE key_hash=?", (key_hash,))
        return str(rows[0][0]) if rows else None
