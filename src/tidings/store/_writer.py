"""A group-commit writer: one thread, one SQLite connection, one fsync per batch.

Operations are plain functions of a connection. The thread takes every operation queued while
the previous batch was committing, runs each inside its own savepoint (so one failing operation
does not undo its neighbours), commits once, and hands all the results back to the event loop in
a single callback. Under load, batches grow by themselves; when the batch is small the writer
waits up to ``window`` seconds for company before it commits.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ..core.ports import settling

log = logging.getLogger("tidings.store")

Operation = Callable[[sqlite3.Connection], Any]
Completion = Callable[[Any], None]

_STOP: Final = object()
_SMALL_BATCH: Final = 32
_MAX_BATCH: Final = 2000


class GroupCommitWriter:
    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        loop: asyncio.AbstractEventLoop,
        *,
        window: float = 0.001,
    ) -> None:
        self._connect = connect
        self._loop = loop
        self._window = window
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tidings-writer", daemon=True)
        self._ready = threading.Event()
        self._stopped = False
        self.batches = 0
        self.operations = 0

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def submit(self, operation: Operation, done: Completion | None = None) -> None:
        """Queue an operation; ``done`` gets its result (or exception) on the event loop."""
        if self._stopped:
            raise RuntimeError("the writer is stopped")
        self._queue.put((operation, done))

    def run(self, operation: Operation) -> asyncio.Future[Any]:
        """Queue an operation and return a future for its result."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self.submit(operation, settling(future))
        return future

    def stop(self) -> None:
        """Commit everything queued so far, then stop the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        connection = self._connect()
        self._ready.set()
        try:
            while True:
                batch, stopping = self._take_batch()
                if batch:
                    self._commit(connection, batch)
                if stopping:
                    return
        finally:
            connection.close()

    def _take_batch(self) -> tuple[list[tuple[Operation, Completion | None]], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        stopping = self._drain(batch)
        if not stopping and len(batch) < _SMALL_BATCH and self._window > 0:
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

    def _commit(
        self, connection: sqlite3.Connection, batch: list[tuple[Operation, Completion | None]]
    ) -> None:
        try:
            try:
                results = self._run_batch(connection, batch, isolate=False)
            except _OperationFailed:
                results = self._run_batch(connection, batch, isolate=True)
        except Exception as exc:
            # The storage itself failed (disk full, I/O error, busy), possibly in the isolated
            # re-run: every operation of the batch fails with it, and the writer lives on.
            log.error("a commit failed: %s", exc)
            results = [(done, exc) for _, done in batch]
        self.batches += 1
        self.operations += len(batch)
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_complete, results)

    @staticmethod
    def _run_batch(
        connection: sqlite3.Connection,
        batch: list[tuple[Operation, Completion | None]],
        *,
        isolate: bool,
    ) -> list[tuple[Completion | None, Any]]:
        """One transaction for the batch. Optimistically without savepoints; when an operation
        fails, the caller runs the batch again with one savepoint per operation, so that the
        failure stays with its own operation."""
        results: list[tuple[Completion | None, Any]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for operation, done in batch:
                if not isolate:
                    try:
                        results.append((done, operation(connection)))
                    except Exception as exc:
                        raise _OperationFailed from exc
                    continue
                connection.execute("SAVEPOINT op")
                try:
                    result = operation(connection)
                except Exception as exc:
                    connection.execute("ROLLBACK TO op")
                    result = exc
                connection.execute("RELEASE op")
                results.append((done, result))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return results


class _OperationFailed(Exception):
    """An operation of an optimistic batch failed; the batch is rolled back and isolated."""


def _complete(results: list[tuple[Completion | None, Any]]) -> None:
    """Hand each result to its completion; one that raises must not cost the others theirs
    (their senders would never hear ``accepted``)."""
    for done, result in results:
        if done is not None:
            try:
                done(result)
            except Exception:
                log.exception("a store completion failed")
