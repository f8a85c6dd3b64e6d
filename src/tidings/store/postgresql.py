"""The PostgreSQL store: the same SQL operations as SQLite (``_sql.SqlStore``) over psycopg 3.

Writes go through the group-commit writer on its own thread and connection: every operation
queued while the previous batch committed runs in one transaction, committed once (one WAL
flush for the whole batch). Reads are network round trips, so they never run on the event loop:
each one runs on a small pool of reader threads, each with its own connection (autocommit, so
it sees every committed batch). A connection found lost is replaced: the writer's for its next
batch (the batch that met the loss fails with ``Unavailable``), a reader's at once (a read is
tried once more on a new connection, since reading twice is harmless).

The SQL is written once, in the dialect both databases share; ``PgDb`` turns its ``?``
placeholders into psycopg's ``%s`` (once per statement text) and drops SQLite's index hints.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, Final, TypeVar, cast

import msgspec
import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from ..core.errors import ErrorId, Unavailable
from ..core.model import AppendResult, QueueEntry
from ._db import Db, Progress, Read
from ._sql import DriverErrors, SqlStore, dedupe_key, dedupe_stamp, insert_once, queue_values
from ._writer import Backend, GroupCommitWriter, Kind

T = TypeVar("T")

__all__ = ["PgDb", "PostgresStore", "migrate", "migrations"]

READERS: Final = 4
"""Reader threads (and connections) per store: reads are short; a few in flight hide the
round trip without holding many of the server's connections."""

CONNECT_TIMEOUT_S: Final = 5

_MIGRATION_LOCK: Final = 0x7469_6469_6E67_73
"""``pg_advisory_xact_lock`` key ("tidings"): nodes starting together migrate one at a time."""

_LOCK: Final = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"

_ERRORS: Final = DriverErrors(psycopg.Error, psycopg.IntegrityError)

_PLACEHOLDER: Final = re.compile(r"\?")
_INDEX_HINT: Final = re.compile(r"\s+INDEXED BY \w+")
_translated: dict[str, str] = {}


def _pg_sql(sql: str) -> str:
    """The statement in psycopg's form: ``%`` escaped, ``?`` as ``%s``, no SQLite index hint."""
    found = _translated.get(sql)
    if found is None:
        text = _INDEX_HINT.sub("", sql).replace("%", "%%")
        found = _translated[sql] = _PLACEHOLDER.sub("%s", text)
    return found


def connect(url: str) -> psycopg.Connection[Any]:
    """A connection in autocommit mode: the writer says BEGIN and COMMIT itself, a reader
    sees each committed batch."""
    return psycopg.Connection.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


class PgDb:
    """A psycopg connection as the shared SQL's ``Db``."""

    __slots__ = ("connection",)

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self.connection.execute(_pg_sql(sql), parameters)

    def executemany(self, sql: str, parameters: Any, /) -> psycopg.Cursor[Any]:
        cursor = self.connection.cursor()
        cursor.executemany(_pg_sql(sql), parameters)  # pipelined by psycopg
        return cursor

    def lock(self, key: str, /) -> None:
        """A transaction-scoped advisory lock on a 64-bit hash of ``key`` (a collision only
        serializes two unrelated keys), released at COMMIT or ROLLBACK (or the rollback of
        the savepoint it was taken in)."""
        self.connection.execute(_LOCK, (key,))

    def read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        return self.execute(sql, parameters).fetchall()

    @property
    def lost(self) -> bool:
        return self.connection.closed or self.connection.broken


def _execute(db: PgDb, sql: str) -> object:
    return db.connection.execute(sql)


def _in_transaction(db: PgDb) -> bool:
    return db.connection.info.transaction_status != TransactionStatus.IDLE


BACKEND: Final = Backend[PgDb](
    begin="BEGIN",
    execute=_execute,
    in_transaction=_in_transaction,
    lost=lambda db: db.lost,
    close=lambda db: db.connection.close(),
    translate=_ERRORS.translate,
)


_INSERT_ONE_ONCE: Final = (
    "WITH fresh AS (INSERT INTO message_keys (key, stored_at) VALUES (?,?)"
    " ON CONFLICT DO NOTHING RETURNING 1)"
    " INSERT INTO queue (identity, instance, sender, msg_id, needs_ack, payload, enqueued_at,"
    " expires_at) SELECT ?::text, ?::text, ?::text, ?::text, ?::bigint, ?::bytea,"
    " ?::double precision, ?::double precision FROM fresh RETURNING seq"
)


def _insert_once(
    db: Db, entries: Sequence[QueueEntry], dedupe: tuple[str, str] | None, now: float
) -> list[int] | None:
    """``_sql.insert_once`` in one statement (one round trip, not two) for the common case, a
    message with a sender id for one session: the queue row is written only if the dedupe row
    was (no row back: a duplicate)."""
    if dedupe is None or len(entries) != 1:
        return insert_once(db, entries, dedupe, now, returning=True)
    key = (dedupe_key(*dedupe), dedupe_stamp(now))
    row = db.execute(_INSERT_ONE_ONCE, (*key, *queue_values(entries[0], now))).fetchone()
    return None if row is None else [row[0]]


def _appended(arguments: list[Any], queued: Iterable[Sequence[Any]]) -> list[AppendResult]:
    """Each message's result in a run of appends (``appending_arguments`` each), from the
    (seq, sender, id) rows the run queued: the first of equal (sender, id) holds the row, as one
    statement each would have it; the others, and messages not queued, are duplicates."""
    seq_of = {(sender, msg_id): seq for seq, sender, msg_id in queued}
    results = []
    for argument in arguments:
        seq = seq_of.pop((argument[4], argument[5]), None)
        results.append(AppendResult(duplicate=True) if seq is None else AppendResult(False, [seq]))
    return results


def _removed_counts(rows: list[Any], deleted: Iterable[Sequence[Any]]) -> list[int]:
    """Each acknowledgement's row count in a run, from the (identity, instance, sender, id) of
    the rows the run deleted: rows two of them name are counted for the first, as one statement
    each would."""
    left = Counter(tuple(row) for row in deleted)
    return [left.pop(tuple(row), 0) for row in rows]


_APPEND_MANY: Final = """
WITH input AS (
    SELECT decode(r->>0, 'base64') AS key, (r->>1)::bigint AS stored_at, r->>2 AS identity,
        r->>3 AS instance, r->>4 AS sender, r->>5 AS msg_id, (r->>6)::bigint AS needs_ack,
        decode(r->>7, 'base64') AS payload, (r->>8)::double precision AS enqueued_at,
        (r->>9)::double precision AS expires_at, n
    FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS j(r, n)
), fresh AS (
    INSERT INTO message_keys (key, stored_at) SELECT key, stored_at FROM input ORDER BY n
    ON CONFLICT DO NOTHING RETURNING key
), firsts AS (
    SELECT DISTINCT ON (key) * FROM input ORDER BY key, n
)
INSERT INTO queue (identity, instance, sender, msg_id, needs_ack, payload, enqueued_at,
    expires_at)
SELECT f.identity, f.instance, f.sender, f.msg_id, f.needs_ack, f.payload, f.enqueued_at,
    f.expires_at FROM firsts f JOIN fresh USING (key) ORDER BY f.n
RETURNING seq, sender, msg_id
"""


def _appends_together(db: Db, arguments: list[Any]) -> list[AppendResult]:
    """Several ``_insert_once`` in one statement (one round trip for a run of messages, not one
    each): each message's key is inserted unless stored before; the queue row of each message
    whose key went in is written, in the order of the messages (their sequence numbers rise
    with it). A message is a duplicate when its key was stored before or comes earlier in the
    same run: only the first of equal keys is queued, as one statement each would.

    The run goes as one JSON array of rows (bytes in base64), encoded by msgspec: psycopg's
    array parameters are built in Python, escaping every payload (a fifth of a node's CPU
    under load, measured)."""
    queued = []
    for part in _parts(arguments, lambda argument: len(argument[7])):
        queued += _execute_json(db, _APPEND_MANY, part).fetchall()
    return _appended(arguments, queued)


_ACKNOWLEDGE_MANY: Final = """
DELETE FROM queue q
USING jsonb_array_elements(%s::jsonb) AS a(r)
WHERE q.identity = a.r->>0 AND q.instance = a.r->>1 AND q.sender = a.r->>2
    AND q.msg_id = a.r->>3
RETURNING q.identity, q.instance, q.sender, q.msg_id
"""


def _acknowledgements_together(db: Db, rows: list[Any]) -> list[int]:
    """Several acknowledgements in one statement: how many rows each removed."""
    deleted = []
    for part in _parts(rows, lambda row: 0):
        deleted += _execute_json(db, _ACKNOWLEDGE_MANY, part).fetchall()
    return _removed_counts(rows, deleted)


def _execute_json(db: Db, statement: str, rows: list[Any]) -> psycopg.Cursor[Any]:
    """``statement`` with ``rows`` as its one parameter, a JSON array (bytes in base64)."""
    document = Jsonb(rows, dumps=msgspec.json.encode)
    return cast(PgDb, db).connection.execute(statement, (document,), prepare=True)


RUN_ROWS: Final = 500
RUN_BYTES: Final = 16 * 1024 * 1024
"""A run goes in statements of at most ``RUN_ROWS`` rows and about ``RUN_BYTES`` of payload
(jsonb refuses a document over 256 MiB, and a big one is held three times over while sent)."""


def _parts(rows: list[Any], size: Callable[[Any], int]) -> Iterator[list[Any]]:
    part: list[Any] = []
    total = 0
    for row in rows:
        if part and (len(part) == RUN_ROWS or total + size(row) > RUN_BYTES):
            yield part
            part, total = [], 0
        part.append(row)
        total += size(row)
    if part:
        yield part


ACKNOWLEDGEMENTS: Final = Kind[Any](_acknowledgements_together, rank=0)
APPENDS: Final = Kind[Any](_appends_together, rank=1)


# -- migrations -------------------------------------------------------------------------------


def migrations() -> list[tuple[str, str]]:
    """(name, script) of every PostgreSQL migration, in order (names as SQLite's)."""
    folder = resources.files("tidings.store") / "migrations" / "postgresql"
    return sorted(
        (entry.name, entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".sql")
    )


def migrate(url: str, progress: Progress | None = None) -> list[str]:
    """Apply every migration the database lacks, each in its own transaction, recorded in
    ``schema_migrations``; the names applied. Several nodes may start at once: each
    transaction first takes a transaction-scoped advisory lock, then looks again at what is
    applied, so a migration runs once and the others wait for it, then skip it."""
    try:
        with connect(url) as connection:
            applied = _applied(connection)
            pending = [(n, s) for n, s in migrations() if n not in applied]
            done: list[str] = []
            for number, (name, script) in enumerate(pending, 1):
                if progress is not None:
                    progress(name, number, len(pending))
                with connection.transaction():
                    connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    found = "SELECT 1 FROM schema_migrations WHERE name = %s"
                    if connection.execute(found, (name,)).fetchone() is not None:
                        continue
                    connection.execute(script.encode())
                    connection.execute("INSERT INTO schema_migrations VALUES (%s)", (name,))
                done.append(name)
            return done
    except psycopg.Error as exc:
        raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, f"migrating failed: {exc}") from exc


def _applied(connection: psycopg.Connection[Any]) -> set[str]:
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY)")
        return {row[0] for row in connection.execute("SELECT name FROM schema_migrations")}


# -- the store --------------------------------------------------------------------------------


class PostgresStore(SqlStore):
    """``core.ports.Store`` on PostgreSQL (``postgresql://user@host:port/database``)."""

    _errors = _ERRORS

    def __init__(
        self, url: str, *, commit_window: float = 0.001, migrate_on_open: bool = True
    ) -> None:
        super().__init__()
        self.url = url
        self._commit_window = commit_window
        self._migrate_on_open = migrate_on_open
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[PgDb] = []
        self._lock = threading.Lock()
        self._key_reader: PgDb | None = None
        self._insert_once = _insert_once
        self._appends_together = APPENDS
        self._acknowledgements_together = ACKNOWLEDGEMENTS

    # -- lifecycle --------------------------------------------------------------------------

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._migrate_on_open:
            migrate(self.url)
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="tidings-pg-reader")
        self._writer = GroupCommitWriter(
            self._connect, loop, window=self._commit_window, backend=BACKEND
        )
        self._writer.start()

    def close(self) -> None:
        """Commit what is queued, then close every connection (safe to call twice)."""
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        with self._lock:
            connections, self._connections = self._connections, []
            self._key_reader = None
        for db in connections:
            db.connection.close()

    def _connect(self) -> PgDb:
        db = PgDb(connect(self.url))
        with self._lock:
            self._connections.append(db)
        return db

    def _forget(self, db: PgDb) -> None:
        with self._lock:
            if db in self._connections:
                self._connections.remove(db)
        db.connection.close()

    # -- reads ------------------------------------------------------------------------------

    async def _reading(self, fn: Callable[[Read], T]) -> T:
        """On a reader thread, never on the loop: a read is a round trip to the server."""
        if self._readers is None:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, "the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._read, fn)

    def _read(self, fn: Callable[[Read], T]) -> T:
        """Run ``fn`` with this reader thread's connection; once more on a new connection when
        the old one turns out lost (the server restarted, the backend was terminated)."""
        for attempt in (1, 2):
            db: PgDb | None = getattr(self._local, "db", None)
            try:
                if db is None or db.lost:
                    db = self._local.db = self._connect()
                return fn(db.read)
            except psycopg.Error as exc:
                if db is not None and db.lost:
                    self._forget(db)
                    self._local.db = None
                    if attempt == 1:
                        continue
                raise Unavailable(
                    ErrorId.STORAGE_UNAVAILABLE, f"storage read failed: {exc}"
                ) from exc
        raise AssertionError("unreachable")

    def key_owner(self, key_hash: bytes) -> str | None:
        """The account of an API key, read on the calling thread (the loop).

        The port keeps this read synchronous for the WebSocket upgrade and the HTTP API's key
        check, which cannot await. It is one indexed lookup on a connection of its own (not
        the writer's, which may be in the middle of a batch); it costs the loop one round
        trip to the server (about 0.1 ms on loopback). ``account_for_key`` is the awaitable
        read."""
        if self._readers is None:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, "the store is not open")
        db = self._key_reader
        try:
            if db is None or db.lost:
                if db is not None:
                    self._forget(db)
                db = self._key_reader = self._connect()
            rows = db.read("SELECT account FROM api_keys WHERE key_hash=?", (key_hash,))
        except psycopg.Error as exc:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, f"storage read failed: {exc}") from exc
        return str(rows[0][0]) if rows else None
