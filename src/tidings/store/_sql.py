"""The SQL store, once for both backends: every port operation as SQL over a tiny connection
interface (``Db``) that both ``sqlite3.Connection`` and the PostgreSQL adapter satisfy.

The statements are written in the dialect both databases accept: ``?`` placeholders (the
PostgreSQL adapter turns them into ``%s`` once per statement text), ``ON CONFLICT ... DO
NOTHING / DO UPDATE`` rather than ``INSERT OR IGNORE / REPLACE``, ``RETURNING`` rather than
``lastrowid`` (SQLite 3.35+; only the hot queue insert keeps ``lastrowid`` on SQLite, where it
is cheaper). A subclass supplies the connections: how the writer's are made
(``GroupCommitWriter`` with its ``Backend``), how committed rows are read (``_reading``), how
driver errors are told apart (``_errors``), and may queue messages in fewer statements
(``_insert_once``, and ``_appends_together`` / ``_acknowledgements_together``: a run of
appends or acknowledgements in one statement, ``_writer.Kind``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from ..core.consent_model import (
    Alert,
    ChatMessage,
    InboxEvent,
    Invite,
    Relationship,
    ScopeRequest,
)
from ..core.errors import Conflict, ErrorId, TidingsError, Unavailable
from ..core.histogram import Histogram
from ..core.model import (
    KEPT_PUBLICATIONS,
    Account,
    AppendResult,
    ExpiredRow,
    GapState,
    KeyPublication,
    OverflowPolicy,
    PersistenceState,
    PersistStep,
    QueuedEnvelope,
    QueueEntry,
    QueueKind,
    QueueRow,
    QueueSnapshotEntry,
    RoutingRule,
    SessionRecord,
    WriteCounts,
)
from ..core.ports import QueueTransaction
from ._consent_sql import ConsentReads, ConsentTable
from ._db import Db, Read
from ._writer import GroupCommitWriter, Kind

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DriverErrors:
    """A driver's exception classes: any ``error`` is the storage failing, except
    ``integrity`` (a constraint refused the row), which the operation may give a meaning."""

    error: type[Exception]
    integrity: type[Exception]

    def translate(self, exc: BaseException) -> BaseException:
        """The backend-neutral exception for a driver's: ``Unavailable`` for a storage
        failure, ``Conflict`` for a refused row, anything else unchanged."""
        if isinstance(exc, self.integrity):
            conflict = Conflict(ErrorId.INVALID_ARGUMENT, f"storage constraint violated: {exc}")
            conflict.__cause__ = exc
            return conflict
        if isinstance(exc, self.error):
            failure = Unavailable(ErrorId.STORAGE_UNAVAILABLE, f"storage failed: {exc}")
            failure.__cause__ = exc
            return failure
        return exc


class SqlStore:
    """Every ``core.ports.Store`` operation in SQL; subclasses open and close connections."""

    _errors: DriverErrors

    def __init__(self) -> None:
        self._writer: GroupCommitWriter[Any] | None = None
        self._insert_once: InsertOnce = insert_once
        """How messages are queued once (a backend may do it in fewer statements)."""
        self._appends_together: Kind[Any] | None = None
        """Several messages for one session each, with an id, queued in one statement: the
        arguments of each are ``appending_arguments``'s, the results ``AppendResult``s (None:
        one statement each)."""
        self._acknowledgements_together: Kind[Any] | None = None
        """Several acknowledgements in one statement, each (identity, instance, sender, id);
        their row counts in order (None: one statement each). Ranked before appends: an
        acknowledgement removes what an earlier commit stored (a message is written to its
        recipient only once committed), so it never needs an append of its own batch; one
        that names a message appended in its own batch (a client acknowledging what it was
        not written yet) removes nothing there, where one statement each may remove it."""

    @property
    def writer(self) -> GroupCommitWriter[Any]:
        if self._writer is None:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, "the store is not open")
        return self._writer

    def write_counts(self) -> WriteCounts:
        """Zeros once closed."""
        writer = self._writer
        if writer is None:
            return WriteCounts()
        return WriteCounts(
            writer.batches, writer.operations, writer.cpu_seconds, writer.runs_failed
        )

    def commit_histograms(self) -> tuple[Histogram, Histogram] | None:
        writer = self._writer
        return (writer.batch_sizes, writer.commit_seconds) if writer is not None else None

    async def _reading(self, fn: Callable[[Read], T]) -> T:
        """Run ``fn`` with a function that reads committed rows."""
        raise NotImplementedError

    async def _rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        return await self._reading(lambda read: read(sql, parameters))

    async def _write(self, operation: Callable[[Db], T], conflict: Conflict | None = None) -> T:
        """Run ``operation`` in the writer's next batch; a constraint it breaks raises
        ``conflict`` when given (the writer already turned driver errors into ``Unavailable``
        and ``Conflict``)."""
        try:
            result: T = await self.writer.run(operation)
        except Conflict as exc:
            if conflict is None or not isinstance(exc.__cause__, self._errors.integrity):
                raise
            raise conflict from None
        except TidingsError:
            raise
        except self._errors.error as exc:  # a writer made without the store's translation
            raise self._errors.translate(exc) from exc
        return result

    # -- messages ---------------------------------------------------------------------------

    def append(
        self,
        entries: Sequence[QueueEntry],
        dedupe: tuple[str, str] | None,
        done: Callable[[AppendResult | BaseException], None],
    ) -> None:
        now = time.time()

        insert = self._insert_once

        def operation(connection: Db) -> AppendResult:
            seqs = insert(connection, entries, dedupe, now)
            if seqs is None:
                return AppendResult(duplicate=True)
            return AppendResult(duplicate=False, seqs=seqs)

        together = self._appends_together
        if together is None or not _runs_with_others(entries, dedupe):
            self.writer.submit(operation, done)
        else:
            assert dedupe is not None
            arguments = appending_arguments(entries[0], dedupe, now)
            self.writer.submit(operation, done, (together, arguments))

    def acknowledge(
        self,
        identity: str,
        instance: str,
        sender: str,
        message_id: str,
        done: Callable[[int | BaseException], None],
    ) -> None:
        row = (identity, instance, sender, message_id)

        def operation(connection: Db) -> int:
            return connection.execute(
                "DELETE FROM queue WHERE identity=? AND instance=? AND sender=? AND msg_id=?", row
            ).rowcount

        together = self._acknowledgements_together
        self.writer.submit(operation, done, None if together is None else (together, row))

    def discard(self, seqs: Sequence[int]) -> None:
        rows = [(seq,) for seq in seqs]

        def operation(connection: Db) -> None:
            connection.executemany("DELETE FROM queue WHERE seq=?", rows)

        self.writer.submit(operation)

    async def was_stored(self, sender: str, message_id: str) -> bool:
        return bool(
            await self._rows(
                "SELECT 1 FROM message_keys WHERE key=?", (dedupe_key(sender, message_id),)
            )
        )

    async def queued_at(
        self, sender: str, message_id: str, sessions: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        found = {}
        for identity, instance in sessions:  # by the queue_by_message index, one at a time
            rows = await self._rows(
                "SELECT seq FROM queue WHERE identity=? AND instance=? AND sender=? AND msg_id=?",
                (identity, instance, sender, message_id),
            )
            if rows:
                found[(identity, instance)] = int(rows[0][0])
        return found

    def touch_session(self, identity: str, instance: str, last_seen: float) -> None:
        row = (last_seen, identity, instance)

        def operation(connection: Db) -> None:
            connection.execute(
                "UPDATE sessions SET last_seen=? WHERE identity=? AND instance=?", row
            )

        self.writer.submit(operation)

    async def barrier(self) -> None:
        await self._write(lambda connection: None)

    async def drain(self) -> None:
        await self.writer.drain()

    async def backlog(
        self, identity: str, instance: str, after_seq: int, limit: int
    ) -> list[QueuedEnvelope]:
        rows = await self._rows(
            "SELECT seq, sender, msg_id, needs_ack, payload, enqueued_at, expires_at FROM queue"
            " WHERE identity=? AND instance=? AND seq>? ORDER BY seq LIMIT ?",
            (identity, instance, after_seq, limit),
        )
        return [QueuedEnvelope(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6]) for r in rows]

    async def claim_unclaimed(self, identity: str, instance: str) -> int:
        def operation(connection: Db) -> int:
            return connection.execute(
                "UPDATE queue SET instance=? WHERE identity=? AND instance=''",
                (instance, identity),
            ).rowcount

        return int(await self._write(operation))

    async def load_sessions(self) -> list[SessionRecord]:
        depths = {
            (identity, instance): depth
            for identity, instance, depth in await self._rows(
                "SELECT identity, instance, count(*) FROM queue GROUP BY identity, instance"
            )
        }
        records = []
        for identity, instance, *stored in await self._rows(
            "SELECT identity, instance, routing_rule, queue_limit, policy, last_seen FROM sessions"
        ):
            depth = depths.pop((identity, instance), 0)
            records.append(_session_record(identity, instance, stored, depth))
        for (identity, instance), depth in depths.items():
            records.append(
                SessionRecord(identity, instance, RoutingRule.IDENTITY, None, None, 0.0, depth)
            )
        return records

    async def load_session(self, identity: str, instance: str) -> SessionRecord | None:
        key = (identity, instance)
        [(depth,)] = await self._rows(
            "SELECT count(*) FROM queue WHERE identity = ? AND instance = ?", key
        )
        rows = await self._rows(
            "SELECT routing_rule, queue_limit, policy, last_seen FROM sessions"
            " WHERE identity = ? AND instance = ?",
            key,
        )
        if not rows:
            if not depth:
                return None
            return SessionRecord(identity, instance, RoutingRule.IDENTITY, None, None, 0.0, depth)
        return _session_record(identity, instance, rows[0], depth)

    async def save_session(self, record: SessionRecord) -> None:
        def operation(connection: Db) -> None:
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

    async def forget_message_ids(self, older_than: float, limit: int) -> int:
        """One bounded chunk: the oldest keys (by the age index) stored before ``older_than``,
        at most ``limit`` of them, deleted in one statement that rides the next group commit.
        A bounded chunk adds a bounded delay (about a microsecond per row) to one batch; the
        caller repeats while chunks come back full, so the table never grows past what the
        window holds."""
        parameters = (int(min(older_than * 1000, _NEVER)), limit)

        def operation(connection: Db) -> int:
            return connection.execute(_FORGET_OLDEST, parameters).rowcount

        return int(await self._write(operation))

    # -- accounts ---------------------------------------------------------------------------

    async def create_account(self, name: str, password_hash: str | None) -> None:
        now = time.time()
        await self._write(
            lambda c: c.execute(
                "INSERT INTO accounts (name, password_hash, created_at) VALUES (?,?,?)",
                (name, password_hash, now),
            ),
            Conflict(ErrorId.ACCOUNT_EXISTS, f"The account {name!r} exists already"),
        )

    async def get_account(self, name: str) -> Account | None:
        rows = await self._rows(
            "SELECT name, password_hash, profile, created_at FROM accounts WHERE name=?", (name,)
        )
        return _account(rows[0]) if rows else None

    async def has_account(self, name: str) -> bool:
        return bool(await self._rows("SELECT 1 FROM accounts WHERE name=?", (name,)))

    async def list_accounts(self) -> list[Account]:
        rows = await self._rows(
            "SELECT name, password_hash, profile, created_at FROM accounts ORDER BY name"
        )
        return [_account(row) for row in rows]

    async def delete_account(self, name: str) -> bool:
        def operation(connection: Db) -> bool:
            connection.execute("DELETE FROM contacts WHERE owner=?", (name,))
            connection.execute("DELETE FROM delegations WHERE owner=?", (name,))
            return connection.execute("DELETE FROM accounts WHERE name=?", (name,)).rowcount > 0

        return bool(await self._write(operation))

    async def update_account(
        self, name: str, *, password_hash: str | None = None, profile: dict[str, Any] | None = None
    ) -> None:
        def operation(connection: Db) -> None:
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
        rows = await self._rows(_KEY_OWNER, (key_hash,))
        return str(rows[0][0]) if rows else None

    # -- feeds ------------------------------------------------------------------------------

    async def feed_document(self, name: str, args: Mapping[str, str]) -> dict[str, Any] | None:
        rows = await self._rows(
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
        rows = await self._rows(
            "SELECT doc FROM contacts WHERE owner=? ORDER BY identity", (owner,)
        )
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
        rows = await self._rows(
            "SELECT doc FROM delegations WHERE owner=? ORDER BY target", (owner,)
        )
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

    # -- key directory ----------------------------------------------------------------------

    async def add_key_publication(self, publication: KeyPublication) -> None:
        await self._write(
            lambda connection: add_publication(connection, publication),
            Conflict(
                ErrorId.KEY_STALE,
                f"A publication of {publication.sign_id} at {publication.published} is kept",
            ),
        )

    async def key_publication(self, sign_id: str) -> KeyPublication | None:
        rows = await self._rows(
            f"{_PUBLICATIONS} WHERE p.sign_id=? ORDER BY p.published DESC LIMIT 1", (sign_id,)
        )
        return _publication(rows[0]) if rows else None

    async def key_publications_of(self, identity: str) -> list[KeyPublication]:
        rows = await self._rows(
            f"{_PUBLICATIONS} WHERE p.identity=? AND p.published = (SELECT max(q.published)"
            " FROM key_publications q WHERE q.sign_id = p.sign_id) ORDER BY p.sign_id",
            (identity,),
        )
        return [_publication(row) for row in rows]

    async def key_history(self, sign_id: str) -> list[KeyPublication]:
        rows = await self._rows(
            f"{_PUBLICATIONS} WHERE p.sign_id=? ORDER BY p.published", (sign_id,)
        )
        return [_publication(row) for row in rows]

    async def revoke_key(self, sign_id: str, revoked: int, by: str) -> int:
        def operation(connection: Db) -> int:
            connection.execute(
                "INSERT INTO key_revocations (sign_id, revoked, revoked_by) VALUES (?,?,?)"
                " ON CONFLICT DO NOTHING",
                (sign_id, revoked, by),
            )
            row = connection.execute(
                "SELECT revoked FROM key_revocations WHERE sign_id=?", (sign_id,)
            ).fetchone()
            return int(row[0])

        return int(await self._write(operation))

    # -- consent (written through ``transact``) -----------------------------------------------

    async def consent_invite(self, invite_id: str) -> Invite | None:
        return await self._reading(lambda read: ConsentReads(read).invite(invite_id))

    async def consent_invite_by_token(self, token_hash: bytes) -> Invite | None:
        return await self._reading(lambda read: ConsentReads(read).invite_by_token(token_hash))

    async def consent_invites_of(self, requester: str) -> list[Invite]:
        return await self._reading(lambda read: ConsentReads(read).invites_of(requester))

    async def consent_relationship(self, relationship_id: str) -> Relationship | None:
        return await self._reading(lambda read: ConsentReads(read).relationship(relationship_id))

    async def consent_relationships_of(self, identity: str) -> list[Relationship]:
        return await self._reading(lambda read: ConsentReads(read).relationships_of(identity))

    async def consent_relationships_between(
        self, requester: str, accepter: str
    ) -> list[Relationship]:
        return await self._reading(
            lambda read: ConsentReads(read).relationships_between(requester, accepter)
        )

    async def consent_relationships_expiring(self, limit: int) -> list[Relationship]:
        return await self._reading(lambda read: ConsentReads(read).relationships_expiring(limit))

    async def consent_scope_request(self, scope_request_id: str) -> ScopeRequest | None:
        return await self._reading(lambda read: ConsentReads(read).scope_request(scope_request_id))

    async def consent_scope_requests(self, relationship_id: str) -> list[ScopeRequest]:
        return await self._reading(lambda read: ConsentReads(read).scope_requests(relationship_id))

    async def consent_chat(self, relationship_id: str, since: int, limit: int) -> list[ChatMessage]:
        return await self._reading(
            lambda read: ConsentReads(read).chat(relationship_id, since, limit)
        )

    async def consent_alert(self, alert_id: str) -> Alert | None:
        return await self._reading(lambda read: ConsentReads(read).alert(alert_id))

    async def consent_inbox(self, identity: str, since: int, limit: int) -> list[InboxEvent]:
        return await self._reading(lambda read: ConsentReads(read).inbox(identity, since, limit))

    # -- transactions for core policy (bounded queues, persistent sessions, app state) -------

    def transact(
        self, work: Callable[[QueueTransaction], T], done: Callable[[T | BaseException], None]
    ) -> None:
        """Run core ``work`` in the writer thread, inside the batch's transaction."""
        insert = self._insert_once

        def operation(connection: Db) -> T:
            return work(_Transaction(connection, time.time(), insert))

        self.writer.submit(operation, done)

    async def app_state_get(self, key: str) -> str | None:
        rows = await self._rows("SELECT value FROM app_state WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    async def app_state_keys(self, prefix: str) -> list[str]:
        rows = await self._rows(
            "SELECT key FROM app_state WHERE substr(key, 1, ?) = ? ORDER BY key",
            (len(prefix), prefix),
        )
        return [str(row[0]) for row in rows]

    async def queue_snapshot(
        self, identity: str, instance: str, limit: int
    ) -> list[QueueSnapshotEntry]:
        rows = await self._rows(
            "SELECT seq, kind, sender, msg_id, payload, enqueued_at FROM queue"
            " WHERE identity=? AND instance=? AND kind!=? ORDER BY seq LIMIT ?",
            (identity, instance, QueueKind.NOTICE, limit),
        )
        return [QueueSnapshotEntry(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def begin_persistence(self, identity: str, instance: str) -> PersistenceState:
        """Start a persistent-session instance: a new nonce; ``crashed`` when the previous
        instance never ended, with its last committed memento."""
        nonce = base64.b64encode(os.urandom(15)).decode("ascii")
        now = time.time()

        def operation(connection: Db) -> PersistenceState:
            connection.lock(persistence_key(identity, instance))
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

        def operation(connection: Db) -> bool:
            connection.lock(persistence_key(identity, instance))
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
        rows = await self._rows(
            "SELECT instance, nonce, memento FROM persistence WHERE identity=?", (identity,)
        )
        return {r[0]: PersistenceState(r[1], r[2]) for r in rows}

    async def idle_sessions(self, seen_before: float) -> list[tuple[str, str]]:
        rows = await self._rows(
            "SELECT identity, instance FROM sessions WHERE last_seen < ? AND instance != ''",
            (seen_before,),
        )
        return [(r[0], r[1]) for r in rows]


class _StateTable:
    """``core.ports.StateTable`` over the writer's connection, inside its transaction."""

    def __init__(self, connection: Db) -> None:
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


_KEY_OWNER: Final = "SELECT account FROM api_keys WHERE key_hash=?"


def add_publication(connection: Db, publication: KeyPublication) -> None:
    """Keep a key publication and only the latest ``KEPT_PUBLICATIONS`` of its key; refuse
    (``KEY_STALE``) one not newer than the latest kept. Serialized per key: two nodes
    publishing the same key at once must not both pass the staleness check."""
    connection.lock(f"key-publication:{publication.sign_id}")
    row = connection.execute(
        "SELECT max(published) FROM key_publications WHERE sign_id=?", (publication.sign_id,)
    ).fetchone()
    if row is not None and row[0] is not None and row[0] >= publication.published:
        raise Conflict(
            ErrorId.KEY_STALE,
            f"A publication of {publication.sign_id} as recent as {publication.published}"
            f" is kept already ({row[0]})",
        )
    connection.execute(
        "INSERT INTO key_publications (sign_id, published, identity, instance,"
        " expires, document) VALUES (?,?,?,?,?,?)",
        (
            publication.sign_id,
            publication.published,
            publication.identity,
            publication.instance,
            publication.expires,
            publication.document,
        ),
    )
    connection.execute(
        "DELETE FROM key_publications WHERE sign_id=? AND published NOT IN (SELECT"
        " published FROM key_publications WHERE sign_id=? ORDER BY published DESC"
        " LIMIT ?)",
        (publication.sign_id, publication.sign_id, KEPT_PUBLICATIONS),
    )


def dedupe_key(sender: str, message_id: str) -> bytes:
    """The bytes that stand for (sender, id) in ``message_keys``: the first 96 bits of SHA-256
    of the sender (UTF-8), then the id itself (UTF-8). The PostgreSQL migration computes the
    same.

    Why: the two strings were stored twice (the key and the age index), 86 bytes a message in
    the soak; a sender is the longer part and the same for all its messages, so 12 bytes stand
    for it. Why keep the id rather than hash it too: a sender's keys then sort by its ids, and
    ids that rise (counters, time-ordered ids) land on the same few pages of the key's b-tree
    in a commit, where random 16-byte hashes dirtied one page per message (each written whole
    to the WAL: measured, a third more CPU per acknowledged message). Why 96 bits: two senders
    sharing a prefix would take each other's equal ids for resends and drop them silently, so
    a collision must be out of reach: among ``S`` senders that ever have keys in the table it
    has probability about ``S**2 / 2**97`` (1e-11 for a billion senders), and a sender cannot
    aim at another's prefix (a 96-bit second preimage). The fixed-length prefix keeps the pair
    unambiguous whatever characters the id holds."""
    return _sender_prefix(sender) + message_id.encode("utf-8")


@functools.lru_cache(maxsize=4096)
def _sender_prefix(sender: str) -> bytes:
    """A sender's 12 bytes, cached: a sender sends many messages (half a microsecond saved on
    each)."""
    return hashlib.sha256(sender.encode("utf-8")).digest()[:12]


def dedupe_stamp(now: float) -> int:
    """A key's ``stored_at``: the next millisecond (never before ``now``), so that a key whose
    stamp is below ``older_than`` was stored at least the window ago. Milliseconds, not
    seconds: the age index is (stored_at, key), and a stamp shared by a whole second's keys
    made each commit insert all over that second's stretch of the index (one dirty page a
    message, as random keys would) where a rising stamp appends to its end; measured, whole
    seconds cost about 6 us more per message than milliseconds."""
    return int(now * 1000) + 1


_NEVER: Final = 2**62
"""A ``stored_at`` no key reaches (``older_than`` may be infinite: forget them all)."""

_FORGET_OLDEST: Final = (
    "DELETE FROM message_keys WHERE key IN (SELECT key FROM message_keys"
    " WHERE stored_at < ? ORDER BY stored_at LIMIT ?)"
)


def _runs_with_others(entries: Sequence[QueueEntry], dedupe: tuple[str, str] | None) -> bool:
    """Whether an append may run with others in one statement: one session's, deduplicated
    on its own sender and id (how the results are told apart), with a finite expiry (JSON
    has no infinity)."""
    if dedupe is None or len(entries) != 1:
        return False
    entry = entries[0]
    expires_at = entry.expires_at
    return (entry.sender, entry.message_id) == dedupe and (
        expires_at is None or math.isfinite(expires_at)
    )


def appending_arguments(entry: QueueEntry, dedupe: tuple[str, str], now: float) -> tuple[Any, ...]:
    """One message's part of a statement that queues several: its dedupe key and stamp, then
    its queue row's values."""
    return (dedupe_key(*dedupe), dedupe_stamp(now), *queue_values(entry, now))


InsertOnce = Callable[
    [Db, Sequence[QueueEntry], "tuple[str, str] | None", float], "list[int] | None"
]


def insert_once(
    connection: Db,
    entries: Sequence[QueueEntry],
    dedupe: tuple[str, str] | None,
    now: float,
    *,
    returning: bool = False,
) -> list[int] | None:
    """Queue entries unless (sender, id) was stored before; their sequence numbers, or None.

    Each row's sequence number comes from SQLite's ``lastrowid`` (a hot path: RETURNING costs
    SQLite a microsecond more per row), or, with ``returning``, from ``RETURNING seq``."""
    if dedupe is not None:
        cursor = connection.execute(
            "INSERT INTO message_keys (key, stored_at) VALUES (?,?) ON CONFLICT DO NOTHING",
            (dedupe_key(*dedupe), dedupe_stamp(now)),
        )
        if cursor.rowcount == 0:
            return None
    statement = _QUEUE_INSERT_RETURNING if returning else _QUEUE_INSERT
    seqs = []
    for entry in entries:
        cursor = connection.execute(statement, queue_values(entry, now))
        seqs.append(cursor.fetchone()[0] if returning else cast(Any, cursor).lastrowid)
    return seqs


def queue_values(entry: QueueEntry, now: float) -> tuple[Any, ...]:
    """A queue row's values, in the order of the queue insert's columns."""
    return (
        entry.identity,
        entry.instance,
        entry.sender,
        entry.message_id,
        int(entry.needs_ack),
        entry.payload,
        now,
        entry.expires_at,
    )


_QUEUE_INSERT: Final = (
    "INSERT INTO queue (identity, instance, sender, msg_id, needs_ack, payload, enqueued_at,"
    " expires_at) VALUES (?,?,?,?,?,?,?,?)"
)
_QUEUE_INSERT_RETURNING: Final = _QUEUE_INSERT + " RETURNING seq"


def _args_key(args: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(args.items())), ensure_ascii=False, separators=(",", ":"))


_PUBLICATIONS: Final = (
    "SELECT p.sign_id, p.identity, p.instance, p.published, p.expires, p.document, r.revoked"
    " FROM key_publications p LEFT JOIN key_revocations r ON r.sign_id = p.sign_id"
)


def _publication(row: Any) -> KeyPublication:
    return KeyPublication(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


def _account(row: Any) -> Account:
    return Account(row[0], row[1], json.loads(row[2]), row[3])


class _Transaction:
    """``core.ports.QueueTransaction`` over the writer's connection, inside its transaction."""

    __slots__ = ("_connection", "_insert_once", "_locked", "_state", "consent", "now")

    def __init__(self, connection: Db, now: float, insert: InsertOnce = insert_once) -> None:
        self._connection = connection
        self._insert_once = insert
        self._locked: set[str] = set()
        self.now = now
        self._state: _StateTable | None = None
        self.consent = ConsentTable(connection, self._lock)

    def _lock(self, key: str) -> None:
        """``Db.lock``, once per key in this operation (a lock is held until the commit)."""
        if key not in self._locked:
            self._locked.add(key)
            self._connection.lock(key)

    def _lock_queue(self, identity: str, instance: str) -> None:
        """Before a session's queue is counted or read to be trimmed (the bound, the gap
        marker): an append alone takes no lock, a policy that decides from the rows does."""
        self._lock(f"queue:{identity}/{instance}")

    @property
    def state(self) -> _StateTable:
        """App state, serialized on one key for the whole deployment: ``app_commit`` checks
        that what a handler read is unchanged, then writes (rare, and one lock is never taken
        out of order)."""
        if self._state is None:
            self._lock("app-state")
            self._state = _StateTable(self._connection)
        return self._state

    def insert(
        self, entries: Sequence[QueueEntry], dedupe: tuple[str, str] | None
    ) -> list[int] | None:
        return self._insert_once(self._connection, entries, dedupe, self.now)

    def count(self, identity: str, instance: str) -> int:
        self._lock_queue(identity, instance)
        row = self._connection.execute(
            "SELECT count(*) FROM queue WHERE identity=? AND instance=? AND kind=?",
            (identity, instance, QueueKind.ENVELOPE),
        ).fetchone()
        return int(row[0])

    def envelopes(
        self, identity: str, instance: str, *, after: int, before: int, limit: int
    ) -> list[QueueRow]:
        self._lock_queue(identity, instance)
        rows = self._connection.execute(
            "SELECT seq, sender, msg_id, needs_ack FROM queue WHERE identity=? AND instance=?"
            " AND kind=? AND seq>? AND seq<? ORDER BY seq LIMIT ?",
            (identity, instance, QueueKind.ENVELOPE, after, before, min(limit, _NO_SEQ)),
        ).fetchall()
        return [QueueRow(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def delete(self, seqs: Sequence[int]) -> None:
        self._connection.executemany("DELETE FROM queue WHERE seq=?", [(seq,) for seq in seqs])

    def expired(self, now: float, after: tuple[float, int], limit: int) -> list[ExpiredRow]:
        # every node sweeps: one sweep at a time, so that a row is told and counted once
        self._lock("queue-sweep")
        # queue_by_expiry: a range of the (expires_at, seq) index, only the expired rows
        rows = self._connection.execute(
            "SELECT identity, instance, expires_at, seq, sender, msg_id, needs_ack FROM queue"
            " WHERE expires_at <= ? AND (expires_at, seq) > (?, ?)"
            " ORDER BY expires_at, seq LIMIT ?",
            (now, after[0], after[1], limit),
        ).fetchall()
        return [ExpiredRow(r[0], r[1], r[2], QueueRow(r[3], r[4], r[5], bool(r[6]))) for r in rows]

    def expired_in(
        self, identity: str, instance: str, now: float, *, after: int, limit: int
    ) -> list[ExpiredRow]:
        self._lock_queue(identity, instance)
        rows = self._connection.execute(
            "SELECT expires_at, seq, sender, msg_id, needs_ack FROM queue INDEXED BY"
            " queue_by_session WHERE identity=? AND instance=? AND seq>? AND expires_at <= ?"
            " ORDER BY seq LIMIT ?",
            (identity, instance, after, now, limit),
        ).fetchall()
        return [
            ExpiredRow(identity, instance, r[0], QueueRow(r[1], r[2], r[3], bool(r[4])))
            for r in rows
        ]

    def gap(self, identity: str, instance: str) -> GapState | None:
        self._lock_queue(identity, instance)
        row = self._connection.execute(
            "SELECT seq FROM queue WHERE identity=? AND instance=? AND kind=?",
            (identity, instance, QueueKind.GAP),
        ).fetchone()
        if row is None:
            return None
        previous = self._connection.execute(
            "SELECT dropped, lost FROM gaps WHERE identity=? AND instance=?", (identity, instance)
        ).fetchone()
        if previous is None:
            return GapState(row[0], 0, [])
        return GapState(row[0], previous[0], json.loads(previous[1]))

    def put_gap(
        self, identity: str, instance: str, gap: GapState, sender: str, gap_id: str, payload: bytes
    ) -> None:
        self._connection.execute(
            "INSERT INTO queue (seq, identity, instance, sender, msg_id, needs_ack, payload,"
            " enqueued_at, kind) VALUES (?,?,?,?,?,1,?,?,?)",
            (gap.seq, identity, instance, sender, gap_id, payload, self.now, QueueKind.GAP),
        )
        self._connection.execute(
            "INSERT INTO gaps (identity, instance, dropped, lost) VALUES (?,?,?,?)"
            " ON CONFLICT (identity, instance) DO UPDATE SET dropped=excluded.dropped,"
            " lost=excluded.lost",
            (identity, instance, gap.dropped, json.dumps(gap.lost)),
        )

    def put_notice(self, identity: str, instance: str, sender: str, payload: bytes) -> int:
        cursor = self._connection.execute(
            "INSERT INTO queue (identity, instance, sender, msg_id, needs_ack, payload,"
            " enqueued_at, kind) VALUES (?,?,?,NULL,0,?,?,?) RETURNING seq",
            (identity, instance, sender, payload, self.now, QueueKind.NOTICE),
        )
        return int(cursor.fetchone()[0])

    def remove_session(self, identity: str, instance: str) -> int:
        self._lock_queue(identity, instance)
        self._lock(persistence_key(identity, instance))
        count = self._connection.execute(
            "DELETE FROM queue WHERE identity=? AND instance=?", (identity, instance)
        ).rowcount
        for table in ("sessions", "persistence", "gaps"):
            self._connection.execute(
                f"DELETE FROM {table} WHERE identity=? AND instance=?", (identity, instance)
            )
        return count

    def nonce_is_current(self, persist: PersistStep) -> bool:
        # held until the commit: a new instance (``begin_persistence``) or the end waits for
        # the memento stored after this check, or this check waits for them
        self._lock(persistence_key(persist.identity, persist.instance))
        row = self._connection.execute(
            "SELECT nonce FROM persistence WHERE identity=? AND instance=?",
            (persist.identity, persist.instance),
        ).fetchone()
        return row is not None and row[0] is not None and row[0] == persist.nonce

    def store_memento(self, persist: PersistStep) -> None:
        self._connection.execute(
            "UPDATE persistence SET memento=?, updated_at=? WHERE identity=? AND instance=?",
            (persist.memento, self.now, persist.identity, persist.instance),
        )


def persistence_key(identity: str, instance: str) -> str:
    """The lock of a persistent session's nonce and memento."""
    return f"persistence:{identity}/{instance}"


_NO_SEQ: Final = 2**63 - 1
"""Above every sequence number (SQLite's largest integer)."""


def _session_record(
    identity: str, instance: str, stored: Sequence[Any], depth: int
) -> SessionRecord:
    """A ``sessions`` row (routing_rule, queue_limit, policy, last_seen) as a record."""
    rule, limit, policy, last_seen = stored
    return SessionRecord(
        identity,
        instance,
        RoutingRule(rule),
        limit,
        OverflowPolicy(policy) if policy else None,
        last_seen,
        depth,
    )
