"""The local bus: ak-eventemitter's patterns (``.`` and ``*``), dispatched on the next turn."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.sdk._bus import MAX_TOPIC_LENGTH, LocalBus

Event = tuple[str, Any, Any]


class Recorder:
    """A sync handler that records what it got, under a name."""

    def __init__(self, log: list[tuple[str, Event]], name: str) -> None:
        self.log = log
        self.name = name

    def __call__(self, topic: str, sender: Any, payload: Any) -> None:
        self.log.append((self.name, (topic, sender, payload)))


def matches(pattern: str, topic: str) -> bool:
    """Whether a synchronous bus delivers ``topic`` to ``pattern``: run it on a fresh loop."""

    async def run() -> bool:
        bus = LocalBus()
        got: list[str] = []
        bus.on(pattern, lambda t, s, p: got.append(t))
        bus.emit(topic, "local", None)
        await bus.drained()
        return got == [topic]

    return asyncio.run(run())


# -- the pattern matcher --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("self.test.testMessage", "self.test.testMessage", True),
        ("self.test.testMessage", "self.test", False),
        ("self.test", "self.test.testMessage", False),
        ("self.*", "self.test.testMessage", True),  # the examples
        ("public.chat.*", "public.chat.room.x", True),
        ("public.chat.*", "public.chat.room", True),
        ("public.chat.*", "public.chat", False),  # a trailing * needs one segment at least
        ("public.chat.*", "public.chatter.room", False),
        ("*", "anything.at.all", True),
        ("*", "one", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.x.c", False),  # an inner * is one segment
        ("a.*.c", "a.c", False),
        ("*.b.*", "a.b.c.d", True),
        ("*.b.*", "a.x.c", False),
        ("a*", "a*", True),  # * inside a segment is literal
        ("a*", "ab", False),
        ("a.*", "a.*", True),
    ],
)
def test_pattern_semantics(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


def reference_regex(pattern: str) -> re.Pattern[str]:
    """The same semantics written differently: a regular expression over the whole topic."""
    segments = pattern.split(".")
    parts = [r"[^.]+" if s == "*" else re.escape(s) for s in segments[:-1]]
    parts.append(r"[^.]+(?:\.[^.]+)*" if segments[-1] == "*" else re.escape(segments[-1]))
    return re.compile(r"\.".join(parts))


segment = st.sampled_from(["a", "b", "chat", "x*", "*"])
patterns = st.lists(segment, min_size=1, max_size=5).map(".".join)
topics = st.lists(st.sampled_from(["a", "b", "chat", "x*", "*", "zz"]), min_size=1, max_size=6).map(
    ".".join
)


@given(pattern=patterns, topic=topics)
def test_matcher_agrees_with_a_regular_expression(pattern: str, topic: str) -> None:
    assert matches(pattern, topic) is (reference_regex(pattern).fullmatch(topic) is not None)


@given(subscriptions=st.lists(patterns, min_size=1, max_size=8), topic=topics)
def test_dispatch_order_is_exact_then_wildcard_each_by_registration(
    subscriptions: list[str], topic: str
) -> None:
    async def run() -> list[int]:
        bus = LocalBus()
        got: list[int] = []
        for n, pattern in enumerate(subscriptions):
            bus.on(pattern, functools.partial(lambda n, t, s, p: got.append(n), n))
        bus.emit(topic, "local", None)
        await bus.drained()
        return got

    exact = [n for n, p in enumerate(subscriptions) if "*" not in p.split(".") and p == topic]
    wild = [
        n
        for n, p in enumerate(subscriptions)
        if "*" in p.split(".") and reference_regex(p).fullmatch(topic)
    ]
    assert asyncio.run(run()) == exact + wild


# -- dispatch -------------------------------------------------------------------------------


async def test_emit_dispatches_on_the_next_loop_turn() -> None:
    bus = LocalBus()
    log: list[tuple[str, Event]] = []
    bus.on("self.test", Recorder(log, "h"))
    bus.emit("self.test", "local", {"x": 1})
    assert log == []  # never inside emit
    await bus.drained()
    assert log == [("h", ("self.test", "local", {"x": 1}))]


async def test_events_keep_their_order() -> None:
    bus = LocalBus()
    log: list[tuple[str, Event]] = []
    bus.on("a.*", Recorder(log, "h"))
    for n in range(5):
        bus.emit(f"a.{n}", "local", n)
    await bus.drained()
    assert [event[2] for _, event in log] == [0, 1, 2, 3, 4]


async def test_once_fires_once_and_off_stops_delivery() -> None:
    bus = LocalBus()
    log: list[tuple[str, Event]] = []
    bus.once("t", Recorder(log, "once"))
    off = bus.on("t", Recorder(log, "on"))
    wild = Recorder(log, "wild")
    bus.on("*", wild)
    bus.emit("t", "s", 1)
    await bus.drained()
    off()
    off()  # a second call is harmless
    bus.off("*", wild)
    bus.off("never.subscribed", wild)
    bus.emit("t", "s", 2)
    await bus.drained()
    assert [name for name, _ in log] == ["once", "on", "wild"]


async def test_off_by_pattern_removes_every_subscription_of_that_handler() -> None:
    bus = LocalBus()
    log: list[tuple[str, Event]] = []
    handler = Recorder(log, "h")
    bus.on("a.b", handler)
    bus.once("a.b", handler)
    bus.on("a.*", handler)
    bus.off("a.b", handler)
    bus.emit("a.b", "s", None)
    await bus.drained()
    assert len(log) == 1  # the a.* subscription only


async def test_a_handler_removed_by_an_earlier_one_is_not_called_for_the_same_event() -> None:
    bus = LocalBus()
    log: list[tuple[str, Event]] = []
    second = Recorder(log, "second")

    def first(topic: str, sender: Any, payload: Any) -> None:
        log.append(("first", (topic, sender, payload)))
        bus.off("t", second)

    bus.on("t", first)
    bus.on("t", second)
    bus.emit("t", "s", None)
    await bus.drained()
    assert [name for name, _ in log] == ["first"]


async def test_a_handler_subscribed_during_dispatch_waits_for_the_next_event() -> None:
    bus = LocalBus()
    log: list[tuple[str, Event]] = []

    def first(topic: str, sender: Any, payload: Any) -> None:
        log.append(("first", (topic, sender, payload)))
        bus.on("t", Recorder(log, "late"))

    bus.once("t", first)
    bus.emit("t", "s", 1)
    await bus.drained()
    bus.emit("t", "s", 2)
    await bus.drained()
    assert [(name, event[2]) for name, event in log] == [("first", 1), ("late", 2)]


async def test_async_handlers_run_in_tasks_and_drained_waits_for_them() -> None:
    bus = LocalBus()
    started = asyncio.Event()
    gate = asyncio.Event()
    done: list[Any] = []

    async def slow(topic: str, sender: Any, payload: Any) -> None:
        started.set()
        await gate.wait()
        done.append(payload)

    fast_done = asyncio.Event()

    async def fast(topic: str, sender: Any, payload: Any) -> None:
        done.append(("fast", payload))
        fast_done.set()

    bus.on("t", slow)
    bus.on("t", fast)
    bus.emit("t", "s", 1)
    draining = asyncio.create_task(bus.drained())
    await started.wait()
    await fast_done.wait()
    # the slow handler does not hold back the fast one, and drained waits for the slow one
    assert done == [("fast", 1)]
    assert not draining.done()
    gate.set()
    await draining
    assert done == [("fast", 1), 1]


async def test_drained_follows_events_emitted_by_handlers() -> None:
    bus = LocalBus()
    log: list[tuple[str, Event]] = []

    async def relay(topic: str, sender: Any, payload: Any) -> None:
        if payload < 3:
            bus.emit("chain", sender, payload + 1)

    bus.on("chain", relay)
    bus.on("chain", Recorder(log, "h"))
    bus.emit("chain", "s", 0)
    await bus.drained()
    assert [event[2] for _, event in log] == [0, 1, 2, 3]


async def test_a_failing_handler_never_stops_the_others() -> None:
    errors: list[tuple[str, str]] = []
    bus = LocalBus(on_error=lambda topic, exc: errors.append((topic, str(exc))))
    log: list[tuple[str, Event]] = []

    def broken(topic: str, sender: Any, payload: Any) -> None:
        raise RuntimeError("sync boom")

    async def broken_async(topic: str, sender: Any, payload: Any) -> None:
        raise RuntimeError("async boom")

    bus.on("t", broken)
    bus.on("t", broken_async)
    bus.on("*", Recorder(log, "after"))
    bus.emit("t", "s", None)
    await bus.drained()
    assert [name for name, _ in log] == ["after"]
    assert sorted(errors) == [("t", "async boom"), ("t", "sync boom")]


async def test_errors_are_logged_without_on_error(caplog: pytest.LogCaptureFixture) -> None:
    bus = LocalBus()

    def broken(topic: str, sender: Any, payload: Any) -> None:
        raise RuntimeError("boom")

    bus.on("t", broken)
    with caplog.at_level(logging.ERROR, logger="tidings.sdk.bus"):
        bus.emit("t", "s", None)
        await bus.drained()
    assert "a handler of 't' failed" in caplog.text


async def test_a_failing_on_error_is_logged_too(caplog: pytest.LogCaptureFixture) -> None:
    def bad_on_error(topic: str, exc: BaseException) -> None:
        raise ValueError("on_error broke")

    def broken(topic: str, sender: Any, payload: Any) -> None:
        raise ZeroDivisionError

    bus = LocalBus(on_error=bad_on_error)
    bus.on("t", broken)
    with caplog.at_level(logging.ERROR, logger="tidings.sdk.bus"):
        bus.emit("t", "s", None)
        await bus.drained()
    assert "on_error failed" in caplog.text
    assert "a handler of 't' failed" in caplog.text


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "cannot be empty"),
        ("a..b", "empty segment"),
        (".a", "empty segment"),
        ("a.", "empty segment"),
        ("a" * (MAX_TOPIC_LENGTH + 1), "longer than 1024"),
    ],
)
async def test_bad_patterns_and_topics_are_refused(text: str, problem: str) -> None:
    bus = LocalBus()
    with pytest.raises(ValueError, match=f"pattern.*{problem}|{problem}"):
        bus.on(text, lambda t, s, p: None)
    with pytest.raises(ValueError, match=problem):
        bus.emit(text, "s", None)
    with pytest.raises(ValueError, match=problem):
        bus.off(text, lambda t, s, p: None)


async def test_the_longest_topic_is_fine() -> None:
    bus = LocalBus()
    topic = "a" * MAX_TOPIC_LENGTH
    got: list[str] = []
    bus.on(topic, lambda t, s, p: got.append(t))
    bus.emit(topic, "s", None)
    await bus.drained()
    assert got == [topic]


def test_emit_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        LocalBus().emit("t", "s", None)
