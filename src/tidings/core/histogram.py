"""A fixed-bucket histogram for /metrics: bumped where things happen (one thread each), read
by the scrape; no locks, no allocation per observation."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence


class Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        """``bounds``: the buckets' upper bounds (inclusive), rising; one more bucket holds
        what is above the last."""
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (upper bound, observations at or below it), ending at +Inf
        (the count: derived here, so a scrape during an observation stays consistent)."""
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return buckets


LATENCY_S: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
"""Buckets of a latency, seconds."""
BATCH_SIZES: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
"""Buckets of a commit's operations."""
DEPTHS: tuple[float, ...] = (0, 1, 10, 100, 1000, 10_000, 100_000, 1_000_000)
"""Buckets of a queue's depth."""
