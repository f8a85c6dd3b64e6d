"""App requests: synchronous app handlers that run inside the store's transaction.

A LIME client calls ``set /apps/{name}`` with its arguments. When the command carries a
persistent session's nonce (``metadata["tidings.nonce"]``), the nonce check, the handler's
writes to the app state and the new memento are committed in one transaction, or not at all:
a client that crashes and resumes from its memento can never apply a request twice (reference
section 3.7). Handlers are plain functions (they run in the writer thread) and must be quick.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ErrorId, Invalid, NotFound, TidingsError
from .model import PersistStep
from .ports import RequestStore, StateTable, settling
from .queue_policy import app_step


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


class AppRequestService:
    def __init__(self, store: RequestStore, handlers: dict[str, RequestHandler]) -> None:
        self._store = store
        self._handlers = handlers

    async def execute(self, request: AppRequest, persist: PersistStep | None) -> dict[str, Any]:
        handler = self._handlers.get(request.name)
        if handler is None:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"No app request named {request.name!r}")

        def work(table: StateTable) -> dict[str, Any]:
            try:
                result = handler(request, AppState(table))
            except TidingsError:
                raise
            except Exception as exc:  # the app's bug: refuse the request, keep nothing
                raise AppRefused(f"the {request.name!r} handler failed: {exc!r}") from exc
            if result is not None and not isinstance(result, dict):
                raise AppRefused(f"the {request.name!r} handler returned a non-object")
            return {} if result is None else result

        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._store.transact(app_step(persist, work), settling(future))
        return await future


def _key(key: str) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= 512:
        raise Invalid(ErrorId.INVALID_ARGUMENT, "app state keys are 1-512 character strings")
    return key
