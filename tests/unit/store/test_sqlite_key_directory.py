"""The key directory in SQLite: durable across reopening, and added to a data folder that an
earlier version made (the migration runs on a database that has everything else already)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tidings.core.model import KeyPublication
from tidings.store import sqlite as sqlite_store
from tidings.store.sqlite import DATABASE_FILE, SqliteStore

PUBLICATION = KeyPublication("k1", "alice@x", "laptop", 10, 20, '{"signId":"k1"}')


def _older_migrations() -> list[tuple[str, str]]:
    return [m for m in sqlite_store._migrations() if m[0] < "0005_key_directory.sql"]


def test_the_key_tables_come_with_a_migration_of_their_own() -> None:
    names = [name for name, _ in sqlite_store._migrations()]
    assert "0005_key_directory.sql" in names
    assert names == sorted(names)


async def test_an_earlier_data_folder_gains_the_key_directory_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / DATABASE_FILE
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY)")
    for name, script in _older_migrations():
        connection.executescript(
            f"BEGIN;\n{script}\nINSERT INTO schema_migrations VALUES ('{name}');\nCOMMIT;"
        )
    connection.execute(
        "INSERT INTO accounts (name, password_hash, created_at) VALUES ('bob', NULL, 0)"
    )
    assert not connection.execute(
        "SELECT 1 FROM sqlite_master WHERE name='key_publications'"
    ).fetchall()
    connection.close()

    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    try:
        assert await store.has_account("bob")
        await store.add_key_publication(PUBLICATION)
        await store.revoke_key("k1", 15, "alice@x/laptop")
    finally:
        store.close()

    again = SqliteStore(tmp_path)
    again.open(asyncio.get_running_loop())
    try:
        kept = await again.key_publication("k1")
        assert kept is not None and kept.document == PUBLICATION.document and kept.revoked == 15
        assert await again.has_account("bob")
    finally:
        again.close()
