"""Per-session rate limiting: a token bucket, refilled continuously."""

from __future__ import annotations

import time


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False when the bucket is empty."""
        tokens = self._tokens
        if tokens < 1.0:
            now = time.monotonic()
            tokens = min(self._burst, tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if tokens < 1.0:
                self._tokens = tokens
                return False
        self._tokens = tokens - 1.0
        return True
