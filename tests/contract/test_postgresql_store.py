"""What only PostgreSQL has: migrations raced by several nodes, lost connections, and
``tidings migrate`` against a real server (the shared operations are in the contract suite)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest

from tests.postgres import PostgresDatabases
from tidings.core.errors import Unavailable
from tidings.store.postgresql import PostgresStore, migrate, migrations

NAMES = [name for name, _ in migrations()]


def _applied(url: str) -> list[str]:
    with psycopg.connect(url) as connection:
        return [r[0] for r in connection.execute("SELECT name FROM schema_migrations ORDER BY 1")]


def test_the_migrations_have_sqlites_names():
    from tidings.store.sqlite import _migrations

    assert [name for name, _ in _migrations()] == NAMES


def test_nodes_migrating_one_empty_database_at_once_both_succeed(postgres: PostgresDatabases):
    url = postgres.empty()
    start = threading.Barrier(3)
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def node() -> None:
        start.wait()
        try:
            applied.append(migrate(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=node) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(name for names in applied for name in names) == NAMES  # each once
    assert _applied(url) == NAMES
    assert migrate(url) == []


def _terminate_others(url: str) -> None:
    """Terminate every other backend of the database, and wait until they are gone."""
    database = url.rsplit("/", 1)[1]
    others = "SELECT pid FROM pg_stat_activity WHERE datname=%s AND pid <> pg_backend_pid()"
    with psycopg.connect(url, autocommit=True) as admin:
        pids = [row[0] for row in admin.execute(others, (database,))]
        assert pids
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute(others, (database,)).fetchall():
            assert time.monotonic() < deadline, "terminated backends did not go"
            time.sleep(0.01)


async def test_a_lost_connection_fails_one_write_then_the_store_reconnects(
    postgres: PostgresDatabases,
):
    url = postgres.fresh()
    store = PostgresStore(url)
    store.open(asyncio.get_running_loop())
    try:
        await store.create_account("before", None)
        assert await store.has_account("before")
        await asyncio.to_thread(_terminate_others, url)
        with pytest.raises(Unavailable):
            await store.create_account("lost", None)
        await store.create_account("after", None)
        assert [a.name for a in await store.list_accounts()] == ["after", "before"]
        assert store.key_owner(b"no such key") is None  # its connection was terminated too
    finally:
        store.close()


def test_tidings_migrate_applies_then_has_nothing_to_do(postgres: PostgresDatabases):
    url = postgres.empty()

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tidings", "migrate", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )

    first = run("--store", url)
    assert first.returncode == 0, first.stderr
    assert [line.split()[1] for line in first.stdout.splitlines()[:-1]] == NAMES
    assert first.stdout.splitlines()[-1].startswith(f"{len(NAMES)} migration(s) applied")
    assert _applied(url) == NAMES
    again = run(TIDINGS_STORE=url)  # the environment names the store too
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"0 migration(s) applied to {url}; the schema is up to date"
    ]


def test_tidings_migrate_says_why_it_cannot(postgres: PostgresDatabases):
    url = postgres.url("no_such_database")
    failed: Any = subprocess.run(
        [sys.executable, "-m", "tidings", "migrate", "--store", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1
    assert "no_such_database" in failed.stderr


async def test_the_server_leaves_migrations_to_tidings_migrate_when_told(
    postgres: PostgresDatabases,
):
    from tidings.config import Settings
    from tidings.store import open_store

    url = postgres.empty()

    def migrations_table() -> bool:
        with psycopg.connect(url) as connection:
            row = connection.execute("SELECT to_regclass('schema_migrations')").fetchone()
        return row is not None and row[0] is not None

    for migrate_on_start in (False, True):
        store = open_store(Settings(store=url, migrate_on_start=migrate_on_start))
        assert isinstance(store, PostgresStore)
        store.open(asyncio.get_running_loop())
        store.close()
        assert migrations_table() == migrate_on_start
    assert _applied(url) == NAMES


async def test_dedupe_keys_of_the_version_before_message_keys_still_hold(
    postgres: PostgresDatabases,
) -> None:
    """Migration 0009 hashes the kept (sender, id) pairs in SQL exactly as the store does in
    Python (``_sql.dedupe_key``), non-ASCII included: a resend of a message stored before the
    upgrade is still a duplicate."""
    url = postgres.empty()
    try:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY)")
            for name, script in migrations():
                if name >= "0009_message_keys.sql":
                    break
                connection.execute(script.encode())
                connection.execute("INSERT INTO schema_migrations VALUES (%s)", (name,))
            connection.execute(
                "INSERT INTO message_ids (sender, msg_id, accepted_at) VALUES"
                " ('alice@x/p', 'm1', %s), ('zoë@x/p', 'ü-2', %s)",
                (time.time() - 10.0, 1000.5),
            )
        store = PostgresStore(url)
        store.open(asyncio.get_running_loop())
        try:
            assert await store.was_stored("alice@x/p", "m1")
            assert await store.was_stored("zoë@x/p", "ü-2")
            assert not await store.was_stored("zoë@x/p", "ü-3")
            assert await store.forget_message_ids(time.time() - 60.0, 100) == 1
            assert await store.was_stored("alice@x/p", "m1")
        finally:
            store.close()
    finally:
        postgres.drop(url)
