"""A group-commit writer: one thread, one database connection, one commit (fsync) per batch.

Operations are plain functions of a connection (SQLite's, or the PostgreSQL adapter's: a
``Backend`` names the driver's statements and errors). The thread takes every operation queued
while the previous batch was committing, runs each inside its own savepoint (so one failing
operation does not undo its neighbours), commits once, and hands all the results back to the
event loop in a single callback. Operations of one kind that sit next to each other in a batch
may run together, in one statement (``Together``): on PostgreSQL every statement is a round
trip to the database. Batches form only under load, from what queued while the
previous batch committed: a lone write, or what a writer that had to wait for work got, commits
at once (one fsync), and a writer that found several writes waiting may wait ``window`` seconds
for company when the batch is small. A connection that the driver reports lost (a PostgreSQL
server restarted, a backend terminated) fails its batch and is replaced for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from ..core.histogram import BATCH_SIZES, LATENCY_S, Histogram
from ..core.ports import settling

log = logging.getLogger("tidings.store")

C = TypeVar("C")
Operation = Callable[[C], Any]
Completion = Callable[[Any], None]


@dataclass(frozen=True, eq=False)
class Kind(Generic[C]):
    """Operations that can run several at once: ``run`` takes their arguments and returns their
    results in order. In a stretch of such operations (no other operation between them) each
    kind's run together, the kinds in ``rank`` order. Alone, or when a batch is re-run one
    operation at a time after a failure, an operation runs by itself."""

    run: Callable[[C, list[Any]], list[Any]]
    rank: int
    """Kinds run in rising rank in a stretch: a kind may go before operations of another that
    came earlier only if it never depends on them."""


Together = tuple[Kind[C], Any]
"""An operation's kind and its arguments for ``Kind.run``."""
Item = tuple[Operation[C], "Completion | None", "Together[C] | None"]


@dataclass(frozen=True)
class Backend(Generic[C]):
    """What the writer needs of a driver: its transaction statements and connection state."""

    begin: str
    """Opens the batch's transaction (SQLite: ``BEGIN IMMEDIATE``, to take the write lock)."""
    execute: Callable[[C, str], object]
    in_transaction: Callable[[C], bool]
    lost: Callable[[C], bool]
    """Whether the connection is gone for good (it is then closed and opened anew)."""
    close: Callable[[C], None]
    translate: Callable[[BaseException], BaseException] = lambda exc: exc
    """The exception an operation's completion gets for one the driver raised (a store maps
    driver errors to ``Unavailable`` and ``Conflict`` here, so no caller sees the driver's)."""


def _sqlite_execute(connection: sqlite3.Connection, sql: str) -> object:
    return connection.execute(sql)


SQLITE: Final = Backend[sqlite3.Connection](
    begin="BEGIN IMMEDIATE",
    execute=_sqlite_execute,
    in_transaction=lambda connection: connection.in_transaction,
    lost=lambda connection: False,
    close=sqlite3.Connection.close,
)

_STOP: Final = object()
_SMALL_BATCH: Final = 32
_MAX_BATCH: Final = 2000


class GroupCommitWriter(Generic[C]):
    def __init__(
        self,
        connect: Callable[[], C],
        loop: asyncio.AbstractEventLoop,
        *,
        window: float = 0.001,
        backend: Backend[C] = SQLITE,  # type: ignore[assignment]
    ) -> None:
        self._connect = connect
        self._backend = backend
        self._loop = loop
        self._window = window
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tidings-writer", daemon=True)
        self._ready = threading.Event()
        self._stopped = False
        self.batches = 0
        self.operations = 0
        self.submitted = 0
        """Operations submitted so far (counted on the event loop, like ``completed``)."""
        self.completed = 0
        """Operations whose completion has run (or had none to run)."""
        self.runs_failed = 0
        """Runs of operations together (``Kind``) that failed, their batch then run one
        operation at a time: a bad member (refused by the database), or a bug."""
        self.cpu_seconds = 0.0
        """CPU time of the writer thread so far (updated after each batch)."""
        self.batch_sizes = Histogram(BATCH_SIZES)
        """Operations per commit (written by the writer thread only)."""
        self.commit_seconds = Histogram(LATENCY_S)
        """Time from a batch's first statement to its commit, fsync included."""

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def submit(
        self,
        operation: Operation[C],
        done: Completion | None = None,
        together: Together[C] | None = None,
    ) -> None:
        """Queue an operation; ``done`` gets its result (or exception) on the event loop."""
        if self._stopped:
            raise RuntimeError("the writer is stopped")
        self.submitted += 1
        self._queue.put((operation, done, together))

    def run(self, operation: Operation[C]) -> asyncio.Future[Any]:
        """Queue an operation and return a future for its result."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self.submit(operation, settling(future))
        return future

    async def drain(self, rounds: int = 100) -> None:
        """Wait until every operation submitted so far, and every one their completions submit
        in turn, is committed and its completion has run: before ``stop``, whose last batch's
        completions would otherwise find the store closed (an acknowledgement's completion
        keeps ``received`` for a sender gone offline). Bounded: writes that keep coming (a
        chain of completions that keeps writing) are left after ``rounds`` barriers."""
        for _ in range(rounds):
            if self.submitted == self.completed:
                return
            await self.run(_nothing)
        log.warning("writes were still coming after %d rounds of draining", rounds)

    def stop(self) -> None:
        """Commit everything queued so far, then stop the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        connection: C | None = None
        try:
            connection = self._connect()
        except Exception as exc:  # the next batch tries again, and fails if it cannot connect
            log.error("the writer could not connect: %s", exc)
        self._ready.set()
        try:
            while True:
                batch, stopping = self._take_batch()
                if batch:
                    connection = self._commit(connection, batch)
                if stopping:
                    return
        finally:
            if connection is not None:
                self._backend.close(connection)

    def _take_batch(self) -> tuple[list[Item[C]], bool]:
        """What queued while the previous batch committed. A lone write commits at once (one
        fsync, not the window too), as does whatever a writer that had to wait for work got;
        a writer that found several writes waiting is under load and may wait ``window`` for
        a bigger batch."""
        try:
            first = self._queue.get_nowait()
            busy = True
        except queue.Empty:
            first = self._queue.get()
            busy = False
        if first is _STOP:
            return [], True
        batch = [first]
        stopping = self._drain(batch)
        if busy and not stopping and 1 < len(batch) < _SMALL_BATCH and self._window > 0:
            time.sleep(self._window)
            stopping = self._drain(batch)
        return batch, stopping

    def _drain(self, batch: list[Any]) -> bool:
        while len(batch) < _MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            batch.append(item)
        return False

    def _commit(self, connection: C | None, batch: list[Item[C]]) -> C | None:
        """Run and commit the batch; the connection for the next one (a new one when this one
        was lost, None when no new one could be made yet)."""
        started = time.perf_counter()
        try:
            if connection is None:
                connection = self._connect()
                started = time.perf_counter()  # commit_seconds times the batch, not the connect
            try:
                results = self._run_batch(connection, batch, isolate=False)
            except _OperationFailed:
                results = self._run_batch(connection, batch, isolate=True)
        except Exception as exc:
            # The storage itself failed (disk full, I/O error, busy, connection lost), possibly
            # in the isolated re-run: every operation of the batch fails with it, and the writer
            # lives on (with a new connection next time if this one is gone).
            log.error("a commit failed: %s", exc)
            failure = self._backend.translate(exc)
            results = [(done, failure) for _, done, _ in batch]
            if connection is not None and self._backend.lost(connection):
                self._backend.close(connection)
                connection = None
        self.batches += 1
        self.operations += len(batch)
        self.batch_sizes.observe(len(batch))
        self.commit_seconds.observe(time.perf_counter() - started)
        self.cpu_seconds = time.thread_time()  # before the results: they may be awaited on it
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._complete, results)
        return connection

    def _complete(self, results: list[tuple[Completion | None, Any]]) -> None:
        try:
            _complete(results)
        finally:
            self.completed += len(results)

    def _run_batch(
        self, connection: C, batch: list[Item[C]], *, isolate: bool
    ) -> list[tuple[Completion | None, Any]]:
        """One transaction for the batch. Optimistically without savepoints, runs of operations
        that can go together together; when an operation fails, the caller runs the batch again
        one operation at a time, each in its own savepoint, so that the failure stays with its
        own operation."""
        results: list[tuple[Completion | None, Any]] = []
        execute = self._backend.execute
        try:
            execute(connection, self._backend.begin)
            if not isolate:
                self._run_optimistically(connection, batch, results)
                batch = []
            for operation, done, _ in batch:
                execute(connection, "SAVEPOINT op")
                try:
                    result = operation(connection)
                except Exception as exc:
                    if self._backend.lost(connection):
                        raise
                    execute(connection, "ROLLBACK TO SAVEPOINT op")
                    result = self._backend.translate(exc)
                execute(connection, "RELEASE SAVEPOINT op")
                results.append((done, result))
            execute(connection, "COMMIT")
        except BaseException:
            if not self._backend.lost(connection) and self._backend.in_transaction(connection):
                execute(connection, "ROLLBACK")
            raise
        return results

    def _run_optimistically(
        self, connection: C, batch: list[Item[C]], results: list[tuple[Completion | None, Any]]
    ) -> None:
        """Every operation of the batch, the stretches of those that can run together by kind
        (``Kind``); the results in the batch's order. Any failure is ``_OperationFailed``
        (unless the connection is lost)."""
        outcomes: list[Any] = [None] * len(batch)
        stretch: list[tuple[int, Together[C]]] = []
        try:
            for index, (operation, _, together) in enumerate(batch):
                if together is not None:
                    stretch.append((index, together))
                    continue
                if stretch:
                    self._run_stretch(connection, batch, stretch, outcomes)
                    stretch = []
                outcomes[index] = operation(connection)
            if stretch:
                self._run_stretch(connection, batch, stretch, outcomes)
        except Exception as exc:
            if self._backend.lost(connection):
                raise
            raise _OperationFailed from exc
        results.extend(zip([done for _, done, _ in batch], outcomes, strict=True))

    def _run_stretch(
        self,
        connection: C,
        batch: list[Item[C]],
        stretch: list[tuple[int, Together[C]]],
        outcomes: list[Any],
    ) -> None:
        """Operations that can run together, next to each other in a batch: each kind's at
        once (or the one alone), the kinds in rank order."""
        kinds: dict[Kind[C], list[tuple[int, Any]]] = {}
        for index, (kind, arguments) in stretch:
            kinds.setdefault(kind, []).append((index, arguments))
        for kind in sorted(kinds, key=lambda kind: kind.rank):
            members = kinds[kind]
            if len(members) == 1:
                index = members[0][0]
                outcomes[index] = batch[index][0](connection)
                continue
            try:
                answers = kind.run(connection, [arguments for _, arguments in members])
                for (index, _), answer in zip(members, answers, strict=True):
                    outcomes[index] = answer
            except Exception:
                # a member the database refuses (then it fails alone in the re-run), or a bug
                # in ``run`` (then every member is run by itself, correctly but slower)
                self.runs_failed += 1
                log.debug("a run of %d operations failed", len(members), exc_info=True)
                raise


class _OperationFailed(Exception):
    """An operation of an optimistic batch failed; the batch is rolled back and isolated."""


def _nothing(connection: object) -> None:
    """A barrier: an operation that writes nothing."""


def _complete(results: list[tuple[Completion | None, Any]]) -> None:
    """Hand each result to its completion; one that raises must not cost the others theirs
    (their senders would never hear ``accepted``)."""
    for done, result in results:
        if done is not None:
            try:
                done(result)
            except Exception:
                log.exception("a store completion failed")
