"""One store fixture over every adapter: each contract test runs against memory, SQLite and
PostgreSQL.

PostgreSQL: one server per test session (``devcluster.services.Postgres``, installed from
Debian when missing; failing to start is an error, not a skip), one migrated database for the
session (a copy of the migrated template), emptied before each test (``TRUNCATE``: faster than
a fresh copy per test).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import PostgresDatabases
from tidings.store.memory import MemoryStore
from tidings.store.postgresql import PostgresStore
from tidings.store.sqlite import SqliteStore

ADAPTERS = ["memory", "sqlite", "postgresql"]


@pytest.fixture(scope="session")
def contract_database(postgres: PostgresDatabases) -> Iterator[str]:
    url = postgres.fresh()
    yield url
    postgres.drop(url)


@pytest.fixture(params=ADAPTERS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "postgresql":
        databases: PostgresDatabases = request.getfixturevalue("postgres")
        url = request.getfixturevalue("contract_database")
        databases.clear(url)
        pg = PostgresStore(url)
        pg.open(asyncio.get_running_loop())
        try:
            yield pg
        finally:
            pg.close()
        return
    sqlite = SqliteStore(tmp_path)
    sqlite.open(asyncio.get_running_loop())
    try:
        yield sqlite
    finally:
        sqlite.close()
