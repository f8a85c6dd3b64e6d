"""The local bus: topics and wildcard patterns, as mm-platform's ak-eventemitter.

Topics are segments joined by ``.``. In a pattern, a segment that is exactly ``*`` matches one
segment, and a trailing ``*`` matches one or more remaining segments (``self.*`` matches
``self.test.testMessage``). A pattern without ``*`` matches only the same topic. Topics are
literal: a ``*`` in a topic is an ordinary segment.

``emit`` never calls a handler itself: it schedules the dispatch for the next loop turn, as the
seed does (``process.nextTick``), so an emitter's own state is consistent before any handler
runs and a handler may emit without recursing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

__all__ = ["MAX_TOPIC_LENGTH", "WILDCARD", "Handler", "LocalBus"]

log = logging.getLogger("tidings.sdk.bus")

Handler: TypeAlias = Callable[[str, Any, Any], Awaitable[None] | None]
"""``(full topic, sender, payload)``; sync, or async (then run in a task of its own)."""

WILDCARD: Final = "*"
MAX_TOPIC_LENGTH: Final = 1024


def _segments(text: str, what: str) -> tuple[str, ...]:
    if not isinstance(text, str):
        raise ValueError(f"a {what} is a string, not {type(text).__name__}")
    if not text:
        raise ValueError(f"a {what} cannot be empty")
    if len(text) > MAX_TOPIC_LENGTH:
        raise ValueError(f"the {what} is longer than {MAX_TOPIC_LENGTH} characters")
    segments = tuple(text.split("."))
    if "" in segments:
        raise ValueError(f"the {what} {text!r} has an empty segment")
    return segments


def check_topic(topic: str) -> None:
    """``ValueError`` naming the problem unless ``topic`` can be emitted on a bus."""
    _segments(topic, "topic")


@dataclass(eq=False, slots=True)
class _Subscription:
    pattern: str
    handler: Handler
    once: bool
    segments: tuple[str, ...] = ()
    """Wildcard patterns only: the segments, the trailing ``*`` excluded when ``rest``."""
    rest: bool = False
    """The pattern ends with ``*``: one or more further segments match."""
    wildcard: bool = False
    active: bool = field(default=True)

    def matches(self, topic: tuple[str, ...]) -> bool:
        count = len(self.segments)
        if self.rest:
            if len(topic) <= count:
                return False
        elif len(topic) != count:
            return False
        return all(want in (WILDCARD, got) for want, got in zip(self.segments, topic, strict=False))


class LocalBus:
    """Publish/subscribe inside one process, dispatched on the event loop."""

    def __init__(self, *, on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self._on_error = on_error
        # Exact patterns are a dict lookup; only wildcard patterns are tried one by one.
        self._exact: dict[str, list[_Subscription]] = {}
        self._wildcard: list[_Subscription] = []
        self._scheduled = 0
        self._tasks: set[asyncio.Future[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def on(self, pattern: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler`` for every topic ``pattern`` matches; returns the matching ``off``."""
        return self._add(pattern, handler, once=False)

    def once(self, pattern: str, handler: Handler) -> Callable[[], None]:
        """Like ``on``, for the first matching event only."""
        return self._add(pattern, handler, once=True)

    def off(self, pattern: str, handler: Handler) -> None:
        """Remove every subscription of ``handler`` to exactly ``pattern`` (none: no error)."""
        _segments(pattern, "pattern")
        for subscription in self._subscriptions(pattern):
            if subscription.handler == handler:
                self._remove(subscription)

    def emit(self, topic: str, sender: Any, payload: Any) -> None:
        """Dispatch ``(topic, sender, payload)`` on the next loop turn (needs a running loop)."""
        segments = _segments(topic, "topic")
        asyncio.get_running_loop().call_soon(self._dispatch, topic, segments, sender, payload)
        self._scheduled += 1
        self._idle.clear()

    async def drained(self) -> None:
        """Wait until every event emitted so far, and every event its handlers emitted, was
        dispatched and every async handler finished."""
        while not self._idle.is_set():
            await self._idle.wait()

    # -- internals ---------------------------------------------------------------------------

    def _add(self, pattern: str, handler: Handler, *, once: bool) -> Callable[[], None]:
        segments = _segments(pattern, "pattern")
        if not callable(handler):
            raise ValueError("a handler must be callable")
        if WILDCARD in segments:
            rest = segments[-1] == WILDCARD
            subscription = _Subscription(
                pattern, handler, once, segments[:-1] if rest else segments, rest, wildcard=True
            )
            self._wildcard.append(subscription)
        else:
            subscription = _Subscription(pattern, handler, once)
            self._exact.setdefault(pattern, []).append(subscription)
        return lambda: self._remove(subscription)

    def _subscriptions(self, pattern: str) -> list[_Subscription]:
        exact = self._exact.get(pattern)
        if exact is not None:
            return list(exact)
        return [s for s in self._wildcard if s.pattern == pattern]

    def _remove(self, subscription: _Subscription) -> None:
        if not subscription.active:
            return
        subscription.active = False
        if subscription.wildcard:
            self._wildcard.remove(subscription)
            return
        exact = self._exact[subscription.pattern]
        exact.remove(subscription)
        if not exact:
            del self._exact[subscription.pattern]

    def _dispatch(self, topic: str, segments: tuple[str, ...], sender: Any, payload: Any) -> None:
        try:
            # Snapshots: a handler that subscribes or unsubscribes affects the next event only.
            chosen = list(self._exact.get(topic, ()))
            chosen.extend(s for s in self._wildcard if s.matches(segments))
            for subscription in chosen:
                if not subscription.active:
                    continue  # removed by a handler that ran before it for this very event
                if subscription.once:
                    self._remove(subscription)
                self._call(subscription.handler, topic, sender, payload)
        finally:
            self._scheduled -= 1
            self._check_idle()

    def _call(self, handler: Handler, topic: str, sender: Any, payload: Any) -> None:
        try:
            result = handler(topic, sender, payload)
        except Exception as exc:
            self._report(topic, exc)
            return
        if not inspect.isawaitable(result):
            return
        task = asyncio.ensure_future(result)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(topic, done))

    def _finished(self, topic: str, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._report(topic, exc)
        self._check_idle()

    def _report(self, topic: str, exc: BaseException) -> None:
        if self._on_error is not None:
            try:
                self._on_error(topic, exc)
                return
            except Exception:
                log.exception("the bus's on_error failed")
        log.error("a handler of %r failed", topic, exc_info=exc)

    def _check_idle(self) -> None:
        if self._scheduled == 0 and not self._tasks:
            self._idle.set()
