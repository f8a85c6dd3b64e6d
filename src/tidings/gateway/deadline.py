"""The one timer of a connection, following its sans-I/O machine's next deadline: the rule is
the machine's (``next_deadline``/``expire``), the clock is the gateway's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class DeadlineTimer:
    __slots__ = ("_expire", "_handle", "_next_deadline")

    def __init__(
        self, next_deadline: Callable[[], float | None], expire: Callable[[float], None]
    ) -> None:
        self._next_deadline = next_deadline
        self._expire = expire
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        """(Re)start the timer for the machine's next deadline, if it has one."""
        self.cancel()
        deadline = self._next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._expire(time.monotonic())
