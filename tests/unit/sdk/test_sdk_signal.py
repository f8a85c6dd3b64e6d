"""The SDK's broadcast wake-up (``sdk._signal.Signal``)."""

from __future__ import annotations

import asyncio

from tidings.sdk._signal import Signal


async def test_a_wait_in_a_task_is_woken_by_a_notify_before_the_task_runs() -> None:
    """The consent inbox waits on two signals through tasks: an event that arrives between the
    tasks' creation and their first step must still wake them (it hung a browser test)."""
    signal = Signal()
    waiter = asyncio.ensure_future(signal.wait())
    signal.notify()  # before the task's first step
    for _ in range(3):
        await asyncio.sleep(0)
    assert waiter.done()
    waiter.cancel()


async def test_a_wait_is_woken_by_the_next_notify_only() -> None:
    signal = Signal()
    signal.notify()  # nobody waits: nothing is kept for later waiters
    waiter = asyncio.ensure_future(signal.wait())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiter.done()
    signal.notify()
    for _ in range(3):
        await asyncio.sleep(0)
    assert waiter.done()
