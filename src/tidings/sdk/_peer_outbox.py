"""The durable outbox of a peer node: every remote send waits here until it is acknowledged.

This is mm-platform's documented intent (a persistent per-destination queue, reference 2.6)
rather than its code (an in-memory queue lost on exit). One SQLite file, WAL with
``synchronous=FULL``: ``add`` and ``remove`` return once their transaction is committed, so a
message whose ``add`` returned survives a crash of the process and of the machine.

Group commit: every ``add``/``remove`` made in one loop turn goes into one transaction, run on
one worker thread that owns the connection; batches that queue up while the thread is committing
are merged into its next transaction. A transaction costs an fsync, so under load the number of
fsyncs follows the number of loop turns, not the number of messages. A batch is all or nothing:
when its commit fails, every waiter of the batch gets the error and nothing of it was applied.

The server has ``tidings.store._writer.GroupCommitWriter``; it is not used here because the SDK
depends on the protocol layer only, and because it gives each operation a savepoint so that one
failure stays with its own operation (a batch may be partly applied), and it collects a batch
by waiting a time window on its thread, where this one collects a loop turn.

An in-memory index mirrors the table (loaded at open, changed when a commit succeeds), so
``pending``, ``destinations`` and ``expired`` never touch the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from ._exceptions import ClientClosed, OutboxFull

__all__ = ["SCHEMA_VERSION", "Outgoing", "PeerOutbox"]

log = logging.getLogger("tidings.sdk.outbox")

SCHEMA_VERSION: Final = 1
DEFAULT_MAX_ITEMS: Final = 100_000

_TABLES: Final = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    destination TEXT NOT NULL,
    topic TEXT,
    protocol TEXT,
    payload BLOB,
    created_ms INTEGER,
    expires_ms INTEGER,
    realtime INTEGER
)
"""
_COLUMNS: Final = "id, destination, topic, protocol, payload, created_ms, expires_ms, realtime"
_INSERT: Final = f"INSERT INTO outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_DELETE: Final = "DELETE FROM outbox WHERE id = ?"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message waiting for its destination's acknowledgement."""

    id: str
    destination: str
    topic: str
    protocol: str
    payload: bytes
    created_ms: int
    expires_ms: int
    realtime: bool


_Operation: TypeAlias = tuple[Literal["add"], Outgoing] | tuple[Literal["remove"], list[str]]
_Job: TypeAlias = tuple[list[_Operation], list[asyncio.Future[None]]]


class PeerOutbox:
    """The per-destination outbox in one SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.path = os.fspath(path)
        self.max_items = max_items
        self.commits = 0
        """Transactions committed so far (how well group commit works)."""
        self._clock = clock
        self._items: dict[str, Outgoing] = {}
        self._by_destination: dict[str, dict[str, Outgoing]] = {}
        self._position: dict[str, int] = {}
        """Each pending id's place in the commit order (the table's ``seq`` order)."""
        self._added = 0
        self._adding: set[str] = set()
        """Ids of adds queued or committing (counted against duplicates and ``max_items``)."""
        self._operations: list[_Operation] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flush_scheduled = False
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        """Jobs for the worker thread; None stops it."""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closed = False
        # Opened here, then used only by the worker thread (the index is loaded first).
        self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._open()
        except BaseException:
            self._connection.close()
            raise

    # -- reading (the index only) ------------------------------------------------------------

    def pending(self, destination: str | None = None) -> list[Outgoing]:
        """The messages still to deliver, oldest first (for one destination, or all)."""
        if destination is None:
            return list(self._items.values())
        return list(self._by_destination.get(destination, {}).values())

    def destinations(self) -> list[str]:
        """The destinations with messages pending, the one with the oldest message first."""
        return sorted(
            self._by_destination,
            key=lambda destination: self._position[next(iter(self._by_destination[destination]))],
        )

    def expired(self, now_ms: int | None = None) -> list[Outgoing]:
        """The pending messages whose ``expires_ms`` is reached (now: the outbox's clock)."""
        if now_ms is None:
            now_ms = int(self._clock() * 1000)
        return [item for item in self._items.values() if item.expires_ms <= now_ms]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._items

    # -- writing ------------------------------------------------------------------------------

    async def add(self, item: Outgoing) -> None:
        """Keep ``item``; it is committed to disk when this returns.

        ``OutboxFull`` at ``max_items``; ``ValueError`` for an id the outbox already holds.
        """
        self._check_open()
        if not isinstance(item, Outgoing):
            raise TypeError(f"add takes an Outgoing, not {type(item).__name__}")
        if not item.id or not item.destination:
            raise ValueError("an outgoing message needs an id and a destination")
        if item.id in self._items or item.id in self._adding:
            raise ValueError(f"the outbox already holds a message {item.id!r}")
        if len(self._items) + len(self._adding) >= self.max_items:
            raise OutboxFull(f"the outbox holds {self.max_items} messages, its maximum")
        self._adding.add(item.id)
        await self._submit(("add", item))

    async def remove(self, ids: Iterable[str]) -> None:
        """Forget the messages ``ids`` (unknown ids are ignored); committed when this returns."""
        self._check_open()
        wanted = list(ids) if not isinstance(ids, str) else [ids]
        if not wanted:
            return
        await self._submit(("remove", wanted))

    async def close(self) -> None:
        """Commit what was submitted, stop the worker thread and close the file."""
        if self._closed:
            return
        self._closed = True
        self._flush()  # what this turn submitted (the scheduled flush would come too late)
        if self._thread is None:
            self._connection.close()
            return
        assert self._stopped is not None
        self._queue.put(None)
        await self._stopped  # every completion before it has run on the loop
        self._thread.join()

    # -- internals ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the outbox is closed")

    def _open(self) -> None:
        connection = self._connection
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
            )
            row = connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            if row is None:
                connection.execute(_TABLES)
                connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (SCHEMA_VERSION,),
                )
            elif row[0] != SCHEMA_VERSION:
                newer = row[0] > SCHEMA_VERSION
                raise RuntimeError(
                    f"the outbox {self.path} has schema version {row[0]}, this SDK knows "
                    f"version {SCHEMA_VERSION}"
                    + ("; it was written by a newer Tidings SDK: upgrade" if newer else "")
                )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        rows = connection.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY seq")
        for row in rows:
            item = Outgoing(
                row[0], row[1], row[2], row[3], bytes(row[4]), row[5], row[6], bool(row[7])
            )
            self._index_add(item)

    def _index_add(self, item: Outgoing) -> None:
        self._items[item.id] = item
        self._position[item.id] = self._added
        self._added += 1
        self._by_destination.setdefault(item.destination, {})[item.id] = item

    def _index_remove(self, message_id: str) -> None:
        item = self._items.pop(message_id, None)
        if item is None:
            return
        del self._position[message_id]
        queued = self._by_destination[item.destination]
        del queued[message_id]
        if not queued:
            del self._by_destination[item.destination]

    async def _submit(self, operation: _Operation) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._stopped = loop.create_future()
        elif loop is not self._loop:
            raise RuntimeError("a PeerOutbox is used from the event loop of its first write")
        waiter = loop.create_future()
        self._operations.append(operation)
        self._waiters.append(waiter)
        if not self._flush_scheduled:
            # Whatever else is submitted during this turn joins the same transaction.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        await waiter

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._operations:
            return
        job: _Job = (self._operations, self._waiters)
        self._operations, self._waiters = [], []
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tidings-outbox", daemon=True)
            self._thread.start()
        self._queue.put(job)

    def _run(self) -> None:
        """The worker thread: take every queued job, commit them as one transaction."""
        try:
            while True:
                first = self._queue.get()
                stopping = first is None
                jobs: list[_Job] = [] if first is None else [first]
                while not stopping:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                    else:
                        jobs.append(more)
                if jobs:
                    error = self._commit([op for operations, _ in jobs for op in operations])
                    self._call_loop(self._completed, jobs, error)
                if stopping:
                    return
        finally:
            self._connection.close()
            if self._stopped is not None:
                self._call_loop(_settle, self._stopped)

    def _commit(self, operations: list[_Operation]) -> BaseException | None:
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
            for kind, value in operations:
                if kind == "add":
                    assert isinstance(value, Outgoing)
                    connection.execute(
                        _INSERT,
                        (
                            value.id,
                            value.destination,
                            value.topic,
                            value.protocol,
                            bytes(value.payload),
                            value.created_ms,
                            value.expires_ms,
                            int(value.realtime),
                        ),
                    )
                else:
                    assert isinstance(value, list)
                    connection.executemany(_DELETE, [(message_id,) for message_id in value])
            connection.execute("COMMIT")
        except Exception as exc:
            log.error("an outbox commit failed (%d operations): %s", len(operations), exc)
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("the outbox could not roll back")
            return exc
        return None

    def _call_loop(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            self._loop.call_soon_threadsafe(callback, *args)

    def _completed(self, jobs: list[_Job], error: BaseException | None) -> None:
        """On the loop: apply the committed batch to the index, then wake its waiters."""
        if error is None:
            self.commits += 1
        for operations, _ in jobs:
            for kind, value in operations:
                if kind == "add":
                    assert isinstance(value, Outgoing)
                    self._adding.discard(value.id)
                    if error is None:
                        self._index_add(value)
                elif error is None:
                    assert isinstance(value, list)
                    for message_id in value:
                        self._index_remove(message_id)
        for _, waiters in jobs:
            for waiter in waiters:
                if waiter.done():  # its caller was cancelled; the write happened all the same
                    continue
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
