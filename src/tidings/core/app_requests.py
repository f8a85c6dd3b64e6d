"""App requests: synchronous app handlers, run outside the store's transaction, committed
atomically with the persistent session's nonce check and memento.

A LIME client calls ``set /apps/{name}`` with its arguments. The handler runs in a worker thread
(never the writer's, never the event loop's), against an ``AppState`` that reads committed rows
through the store's read port and buffers its writes. Then one store transaction checks the
nonce (``metadata["tidings.nonce"]``), checks that nothing the handler read has changed since
(optimistic concurrency), applies the buffered writes and stores the memento, or does none of
it: a client that crashes and resumes from its memento can never apply a request twice
(reference section 3.7). When a read changed, the handler runs again on the new state, so a
slow handler delays only its own request, and two requests on the same keys still serialize.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from .errors import Conflict, ErrorId, Invalid, NotFound, TidingsError, Unavailable
from .model import PersistStep
from .ports import QueueTransaction, RequestStore, StateTable, settling

T = TypeVar("T")

MAX_RUNS: Final = 32
"""Runs of one request whose reads kept being changed by others before it gives up."""
HANDLER_THREADS: Final = 4
"""Handlers running at once; a pool of its own, so that slow handlers never hold up the
threads that hash passwords."""


@dataclass(frozen=True, slots=True)
class AppRequest:
    identity: str
    instance: str
    name: str
    args: dict[str, Any]
    persistent: bool


class AppRefused(TidingsError):
    """Raised by a handler to refuse a request; nothing it wrote is kept."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorId.APP_REFUSED, message)


class AppState:
    """JSON values under string keys; what a handler writes is kept only if it returns."""

    def __init__(self, table: StateTable) -> None:
        self._table = table

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._table.get(_key(key))
        return default if raw is None else json.loads(raw)

    def put(self, key: str, value: Any) -> None:
        try:
            text = json.dumps(value, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"app state {key!r}: {exc}") from None
        self._table.put(_key(key), text)

    def delete(self, key: str) -> bool:
        return self._table.delete(_key(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        yield from self._table.keys(prefix)


RequestHandler = Callable[[AppRequest, AppState], dict[str, Any] | None]


@dataclass(slots=True)
class StateChanges:
    """What one handler run read (to validate at commit) and wrote (to apply at commit)."""

    reads: dict[str, str | None] = field(default_factory=dict)
    listings: dict[str, list[str]] = field(default_factory=dict)
    writes: dict[str, str | None] = field(default_factory=dict)
    """Key to new value; None deletes."""


class BufferedState:
    """``StateTable`` over committed rows plus the run's own writes, recording what it read.

    ``fetch`` runs a store read to completion; the handler's thread waits for it."""

    def __init__(self, store: RequestStore, fetch: Callable[[Awaitable[Any]], Any]) -> None:
        self._store = store
        self._fetch = fetch
        self.changes = StateChanges()

    def get(self, key: str) -> str | None:
        changes = self.changes
        if key in changes.writes:
            return changes.writes[key]
        if key not in changes.reads:
            changes.reads[key] = self._fetch(self._store.app_state_get(key))
        return changes.reads[key]

    def put(self, key: str, value: str) -> None:
        self.changes.writes[key] = value

    def delete(self, key: str) -> bool:
        existed = self.get(key) is not None
        self.changes.writes[key] = None
        return existed

    def keys(self, prefix: str) -> list[str]:
        listings = self.changes.listings
        if prefix not in listings:
            listings[prefix] = self._fetch(self._store.app_state_keys(prefix))
        found = set(listings[prefix])
        for key, value in self.changes.writes.items():
            if key.startswith(prefix):
                if value is None:
                    found.discard(key)
                else:
                    found.add(key)
        return sorted(found)


def app_commit(
    persist: PersistStep | None, changes: StateChanges
) -> Callable[[QueueTransaction], bool]:
    """The transaction that commits one handler run: the nonce check (a stale nonce raises
    ``Conflict``), then False, writing nothing, if anything the run read has changed since;
    else its writes and the memento, and True."""

    def work(tx: QueueTransaction) -> bool:
        if persist is not None and not tx.nonce_is_current(persist):
            raise _stale()
        table = tx.state
        if any(table.get(key) != seen for key, seen in changes.reads.items()):
            return False
        if any(table.keys(prefix) != seen for prefix, seen in changes.listings.items()):
            return False
        for key, value in changes.writes.items():
            if value is None:
                table.delete(key)
            else:
                table.put(key, value)
        if persist is not None and persist.memento is not None:
            tx.store_memento(persist)
        return True

    return work


class AppRequestService:
    def __init__(self, store: RequestStore, handlers: dict[str, RequestHandler]) -> None:
        self._store = store
        self._handlers = handlers
        self._threads: ThreadPoolExecutor | None = None

    async def execute(self, request: AppRequest, persist: PersistStep | None) -> dict[str, Any]:
        """Run the request's handler and commit its effect (with the memento); raises
        ``NotFound``, ``AppRefused``, ``Conflict`` (stale nonce) or ``Unavailable``."""
        handler = self._handlers.get(request.name)
        if handler is None:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"No app request named {request.name!r}")
        if persist is not None and not await self._transact(_nonce_check(persist)):
            raise _stale()  # before running the handler: its refusal must not hide this
        loop = asyncio.get_running_loop()
        if self._threads is None:
            self._threads = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="tidings-app")
        for _ in range(MAX_RUNS):
            state = BufferedState(self._store, _fetcher(loop))
            result = await loop.run_in_executor(self._threads, _run, handler, request, state)
            if await self._transact(app_commit(persist, state.changes)):
                return result
        raise Unavailable(
            ErrorId.STORAGE_UNAVAILABLE,
            f"the {request.name!r} request kept conflicting with others: try again",
        )

    async def _transact(self, work: Callable[[QueueTransaction], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._store.transact(work, settling(future))
        return await future


def _run(handler: RequestHandler, request: AppRequest, table: StateTable) -> dict[str, Any]:
    """One run of the handler (in a worker thread); its failures become refusals."""
    try:
        result = handler(request, AppState(table))
    except TidingsError:
        raise
    except Exception as exc:  # the app's bug: refuse the request, keep nothing
        raise AppRefused(f"the {request.name!r} handler failed: {exc!r}") from exc
    if result is not None and not isinstance(result, dict):
        raise AppRefused(f"the {request.name!r} handler returned a non-object")
    return {} if result is None else result


def _fetcher(loop: asyncio.AbstractEventLoop) -> Callable[[Awaitable[Any]], Any]:
    """Runs a store read on the event loop and waits for it (from a handler's thread)."""

    def fetch(read: Awaitable[Any]) -> Any:
        async def wrapped() -> Any:
            return await read

        return asyncio.run_coroutine_threadsafe(wrapped(), loop).result()

    return fetch


def _nonce_check(persist: PersistStep) -> Callable[[QueueTransaction], bool]:
    def work(tx: QueueTransaction) -> bool:
        return tx.nonce_is_current(persist)

    return work


def _stale() -> Conflict:
    return Conflict(
        ErrorId.STALE_NONCE,
        "The nonce is not the session's current one (another instance began it)",
    )


def _key(key: str) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= 512:
        raise Invalid(ErrorId.INVALID_ARGUMENT, "app state keys are 1-512 character strings")
    return key
