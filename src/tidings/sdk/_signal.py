"""A broadcast wake-up for coroutines that wait on state they re-check themselves."""

from __future__ import annotations

import asyncio

__all__ = ["Signal"]


class Signal:
    """Wakes every current waiter at once; each re-checks its own condition and waits again.

    One signal serves many conditions (room in the outbox, the connection going live, the
    client closing) without a condition variable per predicate: a waiter checks, then waits,
    with no ``await`` in between, so a change cannot slip past it.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()
