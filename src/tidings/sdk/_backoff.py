"""Reconnection delays: capped exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnection attempts.

    Attempt ``n`` (from 0) waits ``min(maximum, initial * factor**n)`` reduced by a random share
    of up to ``jitter`` of itself, so that many clients cut off together do not reconnect
    together. ``max_attempts=None`` retries for ever.
    """

    initial: float = 0.05
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial:
            raise ValueError("need 0 <= initial <= maximum")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delays(self, rng: Callable[[], float] = random.random) -> Iterator[float]:
        """The delay before each attempt; ``rng`` returns floats in [0, 1)."""
        base = self.initial
        attempt = 0
        while self.max_attempts is None or attempt < self.max_attempts:
            yield base * (1.0 - self.jitter * rng())
            attempt += 1
            base = min(self.maximum, base * self.factor)
