"""The embedded SQLite store: WAL mode, one group-commit writer thread, reads on the loop.

Reads are short indexed lookups done on the event loop's own read connection; they see every
committed batch. Writes go through the ``GroupCommitWriter`` so that many messages share one
fsync. Driver errors become ``Unavailable`` at this boundary.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

from ..core.errors import Conflict, ErrorId, Unavailable
from ..core.model import (
    Account,
    AppendResult,
    Notice,
    OverflowPolicy,
    PersistenceState,
    PersistStep,
    QueueBound,
    QueuedEnvelope,
    QueueEntry,
    QueueKind,
    QueueSnapshotEntry,
    RoutingRule,
    SessionRecord,
    TrimResult,
)
from ..core.queues import MAX_LOST_LISTED, NoticeFactory, dropped_error, expired_error
from ._writer import GroupCommitWriter

__all__ = ["SqliteStore"]

DATABASE_FILE = "tidings.db"


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("tidings.store") / "migrations"
    return sorted(
        (entry.name, entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".sql")
    )


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


def migrate(path: Path) -> None:
    """Apply every migration not applied yet, each in its own transaction (idempotent)."""
    connection = _connect(path)
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY)")
        applied = {row[0] for row in connection.execute("SELECT name FROM schema_migrations")}
        for name, script in _migrations():
            if name not in applied:
                connection.executescript(
                    f"BEGIN;\n{script}\nINSERT INTO schema_migrations VALUES ('{name}');\nCOMMIT;"
                )
    finally:
        connection.close()


class SqliteStore:
    def __init__(self, data_dir: Path, *, commit_window: float = 0.001) -> None:
        self.path = Path(data_dir) / DATABASE_FILE
        self._commit_window = commit_window
        self._reader: sqlite3.Connection | None = None
        self._writer: GroupCommitWriter | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        migrate(self.path)
        self._reader = _connect(self.path)
        self._writer = GroupCommitWriter(
            lambda: _connect(self.path), loop, window=self._commit_window
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

    @property
    def writer(self) -> GroupCommitWriter:
        if self._writer is None:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, "the store is not open")
        return self._writer

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        if self._reader is None:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, "the store is not open")
        try:
            return self._reader.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, f"storage read failed: {exc}") from exc

    async def _write(self, operation: Callable[[sqlite3.Connection], Any]) -> Any:
        try:
            return await self.writer.run(operation)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, f"storage write failed: {exc}") from exc

    # -- messages ---------------------------------------------------------------------------

    def append(
        self,
        entries: Sequence[QueueEntry],
        dedupe: tuple[str, str] | None,
        done: Callable[[AppendResult | BaseException], None],
    ) -> None:
        now = time.time()

        def operation(connection: sqlite3.Connection) -> AppendResult:
            seqs = _insert_once(connection, entries, dedupe, now)
            if seqs is None:
                return AppendResult(duplicate=True)
            return AppendResult(duplicate=False, seqs=seqs)

        self.writer.submit(operation, done)

    def acknowledge(
        self,
        identity: str,
        instance: str,
        sender: str,
        message_id: str,
        done: Callable[[int | BaseException], None],
    ) -> None:
        def operation(connection: sqlite3.Connection) -> int:
            return connection.execute(
                "DELETE FROM queue WHERE identity=? AND instance=? AND sender=? AND msg_id=?",
                (identity, instance, sender, message_id),
            ).rowcount

        self.writer.submit(operation, done)

    def discard(self, seqs: Sequence[int]) -> None:
        rows = [(seq,) for seq in seqs]

        def operation(connection: sqlite3.Connection) -> None:
            connection.executemany("DELETE FROM queue WHERE seq=?", rows)

        self.writer.submit(operation)

    def was_stored(self, sender: str, message_id: str) -> bool:
        return bool(
            self._read(
                "SELECT 1 FROM message_ids WHERE sender=? AND msg_id=?", (sender, message_id)
            )
        )

    def touch_session(self, identity: str, instance: str, last_seen: float) -> None:
        row = (last_seen, identity, instance)

        def operation(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE sessions SET last_seen=? WHERE identity=? AND instance=?", row
            )

        self.writer.submit(operation)

    async def barrier(self) -> None:
        await self._write(lambda connection: None)

    async def backlog(
        self, identity: str, instance: str, after_seq: int, limit: int
    ) -> list[QueuedEnvelope]:
        rows = self._read(
            "SELECT seq, sender, msg_id, needs_ack, payload, enqueued_at FROM queue"
            " WHERE identity=? AND instance=? AND seq>? ORDER BY seq LIMIT ?",
            (identity, instance, after_seq, limit),
        )
        return [QueuedEnvelope(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in rows]

    async def claim_unclaimed(self, identity: str, instance: str) -> int:
        def operation(connection: sqlite3.Connection) -> int:
            return connection.execute(
                "UPDATE queue SET instance=? WHERE identity=? AND instance=''",
                (instance, identity),
            ).rowcount

        return int(await self._write(operation))

    async def load_sessions(self) -> list[SessionRecord]:
        depths = {
            (identity, instance): depth
            for identity, instance, depth in self._read(
                "SELECT identity, instance, count(*) FROM queue GROUP BY identity, instance"
            )
        }
        records = []
        for identity, instance, rule, limit, policy, last_seen in self._read(
            "SELECT identity, instance, routing_rule, queue_limit, policy, last_seen FROM sessions"
        ):
            records.append(
                SessionRecord(
                    identity,
                    instance,
                    RoutingRule(rule),
                    limit,
                    OverflowPolicy(policy) if policy else None,
                    last_seen,
                    depths.pop((identity, instance), 0),
                )
            )
        for (identity, instance), depth in depths.items():
            records.append(
                SessionRecord(identity, instance, RoutingRule.IDENTITY, None, None, 0.0, depth)
            )
        return records

    async def save_session(self, record: SessionRecord) -> None:
        def operation(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO sessions (identity, instance, routing_rule, queue_limit, policy,"
                " last_seen) VALUES (?,?,?,?,?,?) ON CONFLICT (identity, instance) DO UPDATE SET"
                " routing_rule=excluded.routing_rule, queue_limit=excluded.queue_limit,"
                " policy=excluded.policy, last_seen=excluded.last_seen",
                (
                    record.identity,
                    record.instance,
                    record.routing_rule.value,
                    record.queue_limit,
                    record.policy.value if record.policy else None,
                    record.last_seen,
                ),
            )

        await self._write(operation)

    async def forget_message_ids(self, older_than: float) -> int:
        def operation(connection: sqlite3.Connection) -> int:
            return connection.execute(
                "DELETE FROM message_ids WHERE accepted_at < ?", (older_than,)
            ).rowcount

        return int(await self._write(operation))

    # -- accounts ---------------------------------------------------------------------------

    async def create_account(self, name: str, password_hash: str | None) -> None:
        now = time.time()
        await self._write(
            lambda c: c.execute(
                "INSERT INTO accounts (name, password_hash, created_at) VALUES (?,?,?)",
                (name, password_hash, now),
            )
        )

    async def get_account(self, name: str) -> Account | None:
        rows = self._read(
            "SELECT name, password_hash, profile, created_at FROM accounts WHERE name=?", (name,)
        )
        return _account(rows[0]) if rows else None

    def has_account(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM accounts WHERE name=?", (name,)))

    async def list_accounts(self) -> list[Account]:
        rows = self._read(
            "SELECT name, password_hash, profile, created_at FROM accounts ORDER BY name"
        )
        return [_account(row) for row in rows]

    async def delete_account(self, name: str) -> bool:
        def operation(connection: sqlite3.Connection) -> bool:
            connection.execute("DELETE FROM contacts WHERE owner=?", (name,))
            connection.execute("DELETE FROM delegations WHERE owner=?", (name,))
            return connection.execute("DELETE FROM accounts WHERE name=?", (name,)).rowcount > 0

        return bool(await self._write(operation))

    async def update_account(
        self, name: str, *, password_hash: str | None = None, profile: dict[str, Any] | None = None
    ) -> None:
        def operation(connection: sqlite3.Connection) -> None:
            if password_hash is not None:
                connection.execute(
                    "UPDATE accounts SET password_hash=? WHERE name=?", (password_hash, name)
                )
            if profile is not None:
                connection.execute(
                    "UPDATE accounts SET profile=? WHERE name=?", (json.dumps(profile), name)
                )

        await self._write(operation)

    async def add_key(self, name: str, key_hash: bytes, label: str) -> None:
        now = time.time()
        await self._write(
            lambda c: c.execute(
                "INSERT INTO api_keys (key_hash, account, label, created_at) VALUES (?,?,?,?)",
                (key_hash, name, label, now),
            )
        )

    async def account_for_key(self, key_hash: bytes) -> str | None:
        return self.key_owner(key_hash)

    def key_owner(self, key_hash: bytes) -> str | None:
        rows = self._read("SELECT account FROM api_keys WHERE key_hash=?", (key_hash,))
        return str(rows[0][0]) if rows else None

    # -- feeds ------------------------------------------------------------------------------

    async def feed_document(self, name: str, args: Mapping[str, str]) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT document FROM feeds WHERE name=? AND args=?", (name, _args_key(args))
        )
        return dict(json.loads(rows[0][0])) if rows else None

    async def save_feed_document(
        self, name: str, args: Mapping[str, str], document: dict[str, Any]
    ) -> None:
        text = json.dumps(document, ensure_ascii=False, allow_nan=False)
        key = _args_key(args)
        await self._write(
            lambda c: c.execute(
                "INSERT INTO feeds (name, args, document) VALUES (?,?,?)"
                " ON CONFLICT (name, args) DO UPDATE SET document=excluded.document",
                (name, key, text),
            )
        )

    # -- roster -----------------------------------------------------------------------------

    async def contacts(self, owner: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT doc FROM contacts WHERE owner=? ORDER BY identity", (owner,))
        return [json.loads(row[0]) for row in rows]

    async def put_contact(self, owner: str, contact: dict[str, Any]) -> None:
        doc = json.dumps(contact)
        await self._write(
            lambda c: c.execute(
                "INSERT INTO contacts (owner, identity, doc) VALUES (?,?,?)"
                " ON CONFLICT (owner, identity) DO UPDATE SET doc=excluded.doc",
                (owner, contact["identity"], doc),
            )
        )

    async def delete_contact(self, owner: str, identity: str) -> bool:
        result = await self._write(
            lambda c: (
                c.execute(
                    "DELETE FROM contacts WHERE owner=? AND identity=?", (owner, identity)
                ).rowcount
            )
        )
        return bool(result)

    async def delegations(self, owner: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT doc FROM delegations WHERE owner=? ORDER BY target", (owner,))
        return [json.loads(row[0]) for row in rows]

    async def put_delegation(self, owner: str, delegation: dict[str, Any]) -> None:
        doc = json.dumps(delegation)
        await self._write(
            lambda c: c.execute(
                "INSERT INTO delegations (owner, target, doc) VALUES (?,?,?)"
                " ON CONFLICT (owner, target) DO UPDATE SET doc=excluded.doc",
                (owner, delegation["target"], doc),
            )
        )

    async def delete_delegation(self, owner: str, target: str) -> bool:
        result = await self._write(
            lambda c: (
                c.execute(
                    "DELETE FROM delegations WHERE owner=? AND target=?", (owner, target)
                ).rowcount
            )
        )
        return bool(result)

    # -- named sessions: bounded queues, gaps, persistence (issue 4) ------------------------

    def append_bounded(
        self,
        entries: Sequence[QueueEntry],
        dedupe: tuple[str, str] | None,
        bounds: Sequence[QueueBound],
        persist: PersistStep | None,
        notices: NoticeFactory,
        server_node: str,
        done: Callable[[TrimResult | BaseException], None],
    ) -> None:
        """``append`` plus, in the same transaction: the persistent-session nonce check and
        memento update, and the trimming of drop-oldest queues (gap markers, kept failures)."""
        now = time.time()

        def operation(connection: sqlite3.Connection) -> TrimResult:
            if persist is not None and not _nonce_is_current(connection, persist):
                return TrimResult(refused=True)
            seqs = _insert_once(connection, entries, dedupe, now)
            if seqs is None:
                return TrimResult(duplicate=True)
            if persist is not None and persist.memento is not None:
                _store_memento(connection, persist, now)
            removed: dict[tuple[str, str], int] = {}
            made: list[Notice] = []
            added = {(e.identity, e.instance): seq for e, seq in zip(entries, seqs, strict=True)}
            for bound in bounds:
                newest = added.get((bound.identity, bound.instance))
                _trim(connection, bound, notices, server_node, now, removed, made, newest)
            return TrimResult(seqs=seqs, removed=removed, notices=made)

        self.writer.submit(operation, done)

    async def delete_session(
        self, identity: str, instance: str, notices: NoticeFactory, server_node: str
    ) -> TrimResult:
        """Remove a session, its queue and persistence state; senders of still-queued messages
        get a kept ``failed`` (session expired) in the same transaction."""
        now = time.time()

        def operation(connection: sqlite3.Connection) -> TrimResult:
            rows = connection.execute(
                "SELECT seq, sender, msg_id, needs_ack FROM queue WHERE identity=? AND"
                " instance=? AND kind=? ORDER BY seq",
                (identity, instance, QueueKind.ENVELOPE),
            ).fetchall()
            count = connection.execute(
                "DELETE FROM queue WHERE identity=? AND instance=?", (identity, instance)
            ).rowcount
            for table in ("sessions", "persistence", "gaps"):
                connection.execute(
                    f"DELETE FROM {table} WHERE identity=? AND instance=?", (identity, instance)
                )
            made: list[Notice] = []
            node = f"{identity}/{instance}"
            error = expired_error(node)
            for _seq, sender, msg_id, needs_ack in rows:
                if needs_ack and msg_id and sender and sender not in (server_node, node):
                    made.append(
                        _keep_notice(
                            connection,
                            sender,
                            notices.failed(sender, msg_id, error),
                            server_node,
                            now,
                        )
                    )
            return TrimResult(removed={(identity, instance): count}, notices=made)

        result: TrimResult = await self._write(operation)
        return result

    async def queue_snapshot(
        self, identity: str, instance: str, limit: int
    ) -> list[QueueSnapshotEntry]:
        rows = self._read(
            "SELECT seq, kind, sender, msg_id, payload, enqueued_at FROM queue"
            " WHERE identity=? AND instance=? AND kind!=? ORDER BY seq LIMIT ?",
            (identity, instance, QueueKind.NOTICE, limit),
        )
        return [QueueSnapshotEntry(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def run_step(self, persist: PersistStep | None, work: Callable[[Any], Any]) -> Any:
        """Run ``work`` over the app state table; with ``persist``, check the nonce first and
        store the memento after, all in one transaction. A stale nonce raises ``Conflict``."""
        now = time.time()

        def operation(connection: sqlite3.Connection) -> Any:
            if persist is not None and not _nonce_is_current(connection, persist):
                raise Conflict(
                    ErrorId.STALE_NONCE,
                    "The nonce is not the session's current one (another instance began it)",
                )
            result = work(_StateTable(connection))
            if persist is not None and persist.memento is not None:
                _store_memento(connection, persist, now)
            return result

        return await self.writer.run(operation)

    async def begin_persistence(self, identity: str, instance: str) -> PersistenceState:
        """Start a persistent-session instance: a new nonce; ``crashed`` when the previous
        instance never ended, with its last committed memento."""
        nonce = base64.b64encode(os.urandom(15)).decode("ascii")
        now = time.time()

        def operation(connection: sqlite3.Connection) -> PersistenceState:
            row = connection.execute(
                "SELECT nonce, memento FROM persistence WHERE identity=? AND instance=?",
                (identity, instance),
            ).fetchone()
            crashed = row is not None and row[0] is not None
            memento = row[1] if row is not None else None
            connection.execute(
                "INSERT INTO persistence (identity, instance, nonce, memento, updated_at)"
                " VALUES (?,?,?,?,?) ON CONFLICT (identity, instance) DO UPDATE SET"
                " nonce=excluded.nonce, updated_at=excluded.updated_at",
                (identity, instance, nonce, memento, now),
            )
            return PersistenceState(nonce, memento, crashed)

        state: PersistenceState = await self._write(operation)
        return state

    async def end_persistence(self, identity: str, instance: str, nonce: str) -> bool:
        """End with the current nonce (clears nonce and memento); true also when already ended."""

        def operation(connection: sqlite3.Connection) -> bool:
            row = connection.execute(
                "SELECT nonce, memento FROM persistence WHERE identity=? AND instance=?",
                (identity, instance),
            ).fetchone()
            if row is None or (row[0] is None and row[1] is None):
                return True
            if row[0] != nonce:
                return False
            connection.execute(
                "UPDATE persistence SET nonce=NULL, memento=NULL, updated_at=? WHERE"
                " identity=? AND instance=?",
                (time.time(), identity, instance),
            )
            return True

        return bool(await self._write(operation))

    async def persistence_of(self, identity: str) -> dict[str, PersistenceState]:
        rows = self._read(
            "SELECT instance, nonce, memento FROM persistence WHERE identity=?", (identity,)
        )
        return {r[0]: PersistenceState(r[1], r[2]) for r in rows}

    async def idle_sessions(self, seen_before: float) -> list[tuple[str, str]]:
        rows = self._read(
            "SELECT identity, instance FROM sessions WHERE last_seen < ? AND instance != ''",
            (seen_before,),
        )
        return [(r[0], r[1]) for r in rows]


def _nonce_is_current(connection: sqlite3.Connection, persist: PersistStep) -> bool:
    row = connection.execute(
        "SELECT nonce FROM persistence WHERE identity=? AND instance=?",
        (persist.identity, persist.instance),
    ).fetchone()
    return row is not None and row[0] is not None and row[0] == persist.nonce


def _store_memento(connection: sqlite3.Connection, persist: PersistStep, now: float) -> None:
    connection.execute(
        "UPDATE persistence SET memento=?, updated_at=? WHERE identity=? AND instance=?",
        (persist.memento, now, persist.identity, persist.instance),
    )


class _StateTable:
    """``core.app_requests.StateTable`` over the writer's connection, inside its transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def get(self, key: str) -> str | None:
        row = self._connection.execute("SELECT value FROM app_state WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self._connection.execute(
            "INSERT INTO app_state (key, value) VALUES (?,?)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def delete(self, key: str) -> bool:
        return self._connection.execute("DELETE FROM app_state WHERE key=?", (key,)).rowcount > 0

    def keys(self, prefix: str) -> list[str]:
        rows = self._connection.execute(
            "SELECT key FROM app_state WHERE substr(key, 1, ?) = ? ORDER BY key",
            (len(prefix), prefix),
        ).fetchall()
        return [str(row[0]) for row in rows]


def _insert_once(
    connection: sqlite3.Connection,
    entries: Sequence[QueueEntry],
    dedupe: tuple[str, str] | None,
    now: float,
) -> list[int] | None:
    """Queue entries unless (sender, id) was stored before; their sequence numbers, or None."""
    if dedupe is not None:
        cursor = connection.execute(
            "INSERT OR IGNORE INTO message_ids (sender, msg_id, accepted_at) VALUES (?,?,?)",
            (dedupe[0], dedupe[1], now),
        )
        if cursor.rowcount == 0:
            return None
    seqs = []
    for entry in entries:
        cursor = connection.execute(
            "INSERT INTO queue (identity, instance, sender, msg_id, needs_ack, payload,"
            " enqueued_at) VALUES (?,?,?,?,?,?,?)",
            (
                entry.identity,
                entry.instance,
                entry.sender,
                entry.message_id,
                entry.needs_ack,
                entry.payload,
                now,
            ),
        )
        seqs.append(cursor.lastrowid or 0)
    return seqs


def _args_key(args: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(args.items())), ensure_ascii=False, separators=(",", ":"))


def _account(row: Any) -> Account:
    return Account(row[0], row[1], json.loads(row[2]), row[3])


def _keep_notice(
    connection: sqlite3.Connection, node: str, payload: bytes, server_node: str, now: float
) -> Notice:
    """Queue a server notice (delivered once, never acknowledged) for the session ``node``."""
    identity, _, instance = node.partition("/")
    cursor = connection.execute(
        "INSERT INTO queue (identity, instance, sender, msg_id, needs_ack, payload, enqueued_at,"
        " kind) VALUES (?,?,?,NULL,0,?,?,?)",
        (identity, instance, server_node, payload, now, QueueKind.NOTICE),
    )
    return Notice(identity, instance, cursor.lastrowid or 0, payload, False)


_NO_SEQ: Final = 2**63 - 1
"""Above every sequence number (SQLite's largest integer)."""


def _trim(
    connection: sqlite3.Connection,
    bound: QueueBound,
    notices: NoticeFactory,
    server_node: str,
    now: float,
    removed: dict[tuple[str, str], int],
    made: list[Notice],
    newest: int | None = None,
) -> None:
    """Drop the oldest envelopes beyond ``bound.limit``; tell senders; move the gap marker.

    Envelopes already written to the live connection (up to ``bound.delivered_upto``) are in
    the client's hands: they are neither dropped nor reported lost. Nor is ``newest``, the one
    this write adds. Until the client's ``received`` comes, the queue may hold more than its
    limit, up to twice the limit: beyond that (a client that never acknowledges) the oldest
    delivered ones go too, reported lost like the others, so that the queue stays bounded."""
    key = (bound.identity, bound.instance)
    count = connection.execute(
        "SELECT count(*) FROM queue WHERE identity=? AND instance=? AND kind=?",
        (*key, QueueKind.ENVELOPE),
    ).fetchone()[0]
    excess = count - bound.limit
    if excess <= 0:
        return
    rows = connection.execute(
        "SELECT seq, sender, msg_id, needs_ack FROM queue WHERE identity=? AND instance=?"
        " AND kind=? AND seq>? AND seq<? ORDER BY seq LIMIT ?",
        (*key, QueueKind.ENVELOPE, bound.delivered_upto, newest or _NO_SEQ, excess),
    ).fetchall()
    beyond_cap = count - len(rows) - 2 * bound.limit
    if beyond_cap > 0:
        rows = (
            connection.execute(
                "SELECT seq, sender, msg_id, needs_ack FROM queue WHERE identity=? AND instance=?"
                " AND kind=? AND seq<=? ORDER BY seq LIMIT ?",
                (*key, QueueKind.ENVELOPE, bound.delivered_upto, beyond_cap),
            ).fetchall()
            + rows
        )
    if not rows:
        return
    connection.executemany("DELETE FROM queue WHERE seq=?", [(r[0],) for r in rows])
    node = f"{bound.identity}/{bound.instance}"
    error = dropped_error(node)
    lost: list[dict[str, str]] = []
    for _seq, sender, msg_id, needs_ack in rows:
        if msg_id:
            lost.append({"from": sender, "id": msg_id})
        if needs_ack and msg_id and sender and sender not in (server_node, node):
            made.append(
                _keep_notice(
                    connection, sender, notices.failed(sender, msg_id, error), server_node, now
                )
            )
    old = connection.execute(
        "SELECT seq FROM queue WHERE identity=? AND instance=? AND kind=?",
        (*key, QueueKind.GAP),
    ).fetchall()
    dropped = len(rows)
    gap_seq = rows[-1][0]
    if old:
        previous = connection.execute(
            "SELECT dropped, lost FROM gaps WHERE identity=? AND instance=?", key
        ).fetchone()
        if previous is not None:
            dropped += previous[0]
            lost = json.loads(previous[1]) + lost
        connection.executemany("DELETE FROM queue WHERE seq=?", [(r[0],) for r in old])
        gap_seq = max(gap_seq, *(r[0] for r in old))
    lost = lost[-MAX_LOST_LISTED:]
    removed[key] = removed.get(key, 0) + len(rows) + len(old)
    gap_id = f"gap-{uuid.uuid4()}"
    payload = notices.gap(node, gap_id, dropped, lost)
    connection.execute(
        "INSERT INTO queue (seq, identity, instance, sender, msg_id, needs_ack, payload,"
        " enqueued_at, kind) VALUES (?,?,?,?,?,1,?,?,?)",
        (gap_seq, *key, server_node, gap_id, payload, now, QueueKind.GAP),
    )
    connection.execute(
        "INSERT INTO gaps (identity, instance, dropped, lost) VALUES (?,?,?,?)"
        " ON CONFLICT (identity, instance) DO UPDATE SET dropped=excluded.dropped,"
        " lost=excluded.lost",
        (*key, dropped, json.dumps(lost)),
    )
    made.append(Notice(bound.identity, bound.instance, gap_seq, payload, True))
