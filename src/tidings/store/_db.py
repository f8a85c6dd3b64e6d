"""The connection interface the shared SQL is written against (``sqlite.SqliteDb``, a
``sqlite3.Connection`` with a no-op ``lock``; ``postgresql.PgDb`` adapts psycopg to it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

Read = Callable[[str, Sequence[Any]], list[Any]]
"""Runs a query, returns every row (the store's reader, or a transaction's connection)."""

Progress = Callable[[str, int, int], None]
"""Told ``(name, number, total)`` before each pending migration is applied (from 1)."""


class Rows(Protocol):
    """What a statement gives back (``sqlite3.Cursor``, ``psycopg.Cursor``)."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """A connection inside a transaction: the part of ``sqlite3.Connection`` the SQL uses."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Rows: ...
    def executemany(self, sql: str, parameters: Any, /) -> Any: ...
    def lock(self, key: str, /) -> None:
        """Serialize, until the transaction ends, with every other transaction that locks
        ``key``: a check-then-write calls it before its check (in a statement of its own, so
        that the check reads what the previous holder committed). SQLite: nothing (``BEGIN
        IMMEDIATE`` already serializes every writer); PostgreSQL: an advisory lock, since
        several nodes' writers run at once at READ COMMITTED."""
        ...
