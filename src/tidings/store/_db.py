"""The connection interface the shared SQL is written against (``sqlite3`` satisfies it as it
is; ``_postgresql.PgDb`` adapts psycopg to it)."""

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
