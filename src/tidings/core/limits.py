"""Per-connection rate limiting: a token bucket, refilled continuously."""

from __future__ import annotations

import time

_monotonic = time.monotonic  # one global lookup on the hot path (tests replace it)


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = _monotonic()

    def spend(self) -> float:
        """Spend one token, into debt if need be; returns the seconds until the debt is repaid
        (0.0 while there is none)."""
        now = _monotonic()
        tokens = self._tokens + (now - self._stamp) * self._rate
        if tokens > self._burst:
            tokens = self._burst
        self._stamp = now
        tokens -= 1.0
        self._tokens = tokens
        return 0.0 if tokens >= 0.0 else -tokens / self._rate
