"""A broadcast wake-up for coroutines that wait on state they re-check themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal

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

    def wait(self) -> Coroutine[Any, Any, Literal[True]]:
        """The wait for the next ``notify``, bound now: a wait wrapped in a task (to wait on
        two signals at once) is woken by a ``notify`` that comes before the task first runs."""
        return self._event.wait()
