"""A data folder written by the version before expiring messages opens and upgrades in place:
its queued envelopes get an expiry (7 days after they were queued), server rows get none."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from tidings.core.model import QueueKind
from tidings.store.sqlite import DATABASE_FILE, SqliteStore, _migrations

EXPIRY_MIGRATION = "0006_message_expiry.sql"


def _schema_before(path: Path, migration: str) -> sqlite3.Connection:
    """A database as a version before ``migration`` left it: every migration before it."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY)")
    for name, script in _migrations():
        if name >= migration:
            break
        connection.executescript(
            f"BEGIN;\n{script}\nINSERT INTO schema_migrations VALUES ('{name}');\nCOMMIT;"
        )
    return connection


def _previous_version(path: Path) -> None:
    """The schema as the previous version left it: every migration before expiry."""
    connection = _schema_before(path, EXPIRY_MIGRATION)
    connection.executemany(
        "INSERT INTO queue (identity, instance, sender, msg_id, needs_ack, payload, enqueued_at,"
        " kind) VALUES ('bob@x', 'a', ?, ?, 1, x'00', 1000.0, ?)",
        [("alice@x/p", "m1", QueueKind.ENVELOPE), ("postmaster@x/server", "gap-1", QueueKind.GAP)],
    )
    connection.close()


async def test_an_existing_data_folder_upgrades(tmp_path: Path) -> None:
    _previous_version(tmp_path / DATABASE_FILE)
    for _ in range(2):  # the second open finds the migration applied: nothing changes
        store = SqliteStore(tmp_path)
        store.open(asyncio.get_running_loop())
        try:
            rows = await store.backlog("bob@x", "a", 0, 10)
            assert [(r.message_id, r.expires_at) for r in rows] == [
                ("m1", 1000.0 + 604800),
                ("gap-1", None),
            ]
        finally:
            store.close()


RELATIONSHIP_EXPIRY_MIGRATION = "0008_relationship_expiry.sql"


async def test_consent_rows_of_the_version_before_relationship_expiry_never_expire(
    tmp_path: Path,
) -> None:
    """Invites and relationships written before migration 0008 read back with no expiry."""
    path = tmp_path / DATABASE_FILE
    connection = _schema_before(path, RELATIONSHIP_EXPIRY_MIGRATION)
    connection.execute(
        "INSERT INTO consent_invites (id, requester, token_hash, app_code, display_name, consent,"
        " permissions, mode, features, created_at, expires_at, status, status_at) VALUES"
        " ('i1', 'alice@x', x'01', 'study', 'S', '{\"en\":\"y\"}',"
        ' \'[{"resource":"presence","level":"read"}]\', \'single-use\', \'{}\', 1.0, 2.0,'
        " 'accepted', 1.5)"
    )
    connection.execute(
        "INSERT INTO consent_relationships (id, invite_id, requester, accepter, permissions,"
        " features, app_code, created_at, state) VALUES ('r1', 'i1', 'alice@x', 'bob@x',"
        " '[{\"resource\":\"presence\",\"level\":\"read\"}]', '{}', 'study', 1.5, 'active')"
    )
    connection.close()
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    try:
        invite = await store.consent_invite("i1")
        relationship = await store.consent_relationship("r1")
        assert invite is not None and invite.grant_expires_at is None
        assert relationship is not None and relationship.expires_at is None
        assert await store.consent_relationships_expiring(10) == []
    finally:
        store.close()


MESSAGE_KEYS_MIGRATION = "0009_message_keys.sql"


async def test_dedupe_keys_of_the_version_before_message_keys_still_hold(tmp_path: Path) -> None:
    """Migration 0009 carries every kept (sender, id) over into message_keys, hashed the way
    the store hashes them: a resend of a message stored before the upgrade is still a
    duplicate, and its age is kept (so the pruner forgets it on time)."""
    path = tmp_path / DATABASE_FILE
    connection = _schema_before(path, MESSAGE_KEYS_MIGRATION)
    now = time.time()
    connection.executemany(
        "INSERT INTO message_ids (sender, msg_id, accepted_at) VALUES (?,?,?)",
        [("alice@x/p", "m1", now - 10.0), ("alice@x/p", "ancient", 1000.5)],
    )
    connection.close()
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    try:
        assert await store.was_stored("alice@x/p", "m1")
        assert await store.was_stored("alice@x/p", "ancient")
        assert not await store.was_stored("alice@x/p", "m2")
        assert await store.forget_message_ids(now - 60.0, 100) == 1
        assert not await store.was_stored("alice@x/p", "ancient")
        assert await store.was_stored("alice@x/p", "m1")
    finally:
        store.close()
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert ("message_ids",) not in tables
