"""Replay protection: the nonces of accepted requests, kept while their ``created`` is fresh.

A request is accepted only while ``|now - created| <= skew``, so a nonce needs remembering
until ``created + skew``; it is kept until ``created + 2 * skew`` for margin. Memory is bounded:
when the cache is full the request is refused as rate-limited (429, with a ``Retry-After``),
never accepted unchecked, because forgetting a live nonce would let that request be replayed.
A per-origin bound keeps one flooding peer from locking every other peer out.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable

from ._errors import FederationErrorId, FederationRefused

__all__ = ["NonceCache"]


class NonceCache:
    """Seen (origin, nonce) pairs with their expiry; pure, the caller passes ``now``.

    ``skew_s`` must be at least the ``max_skew_s`` given to ``verify_request``. The defaults
    allow 25,000 live nonces per peer (200 requests/s over a 2 * 60 s window) and 250,000 in all,
    roughly 100 MB at worst.
    """

    def __init__(
        self, *, skew_s: float, max_entries: int = 250_000, max_per_origin: int = 25_000
    ) -> None:
        if skew_s <= 0 or max_entries <= 0 or max_per_origin <= 0:
            raise ValueError("skew_s, max_entries and max_per_origin must be positive")
        self.skew_s = skew_s
        self.max_entries = max_entries
        self.max_per_origin = max_per_origin
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str]] = []
        self._per_origin: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._expiry)

    def seen(self, origin: str, nonce: str, created: float, *, now: float) -> bool:
        """Record the nonce; ``True`` if it was already recorded and has not expired.

        Raises ``FederationRefused`` (``federation-rate-limited``) when it cannot be recorded.
        """
        self.expire(now)
        key = (origin, nonce)
        if key in self._expiry:
            return True
        if len(self._expiry) >= self.max_entries:
            wait = self._heap[0][0] - now
            raise FederationRefused(
                FederationErrorId.RATE_LIMITED,
                "too many requests in flight to check for replay",
                retry_after_s=max(1.0, wait),
            )
        if self._per_origin[origin] >= self.max_per_origin:
            raise FederationRefused(
                FederationErrorId.RATE_LIMITED,
                f"too many requests from {origin} to check for replay",
                retry_after_s=2 * self.skew_s,
            )
        expires = created + 2 * self.skew_s
        self._expiry[key] = expires
        heapq.heappush(self._heap, (expires, origin, nonce))
        self._per_origin[origin] += 1
        return False

    def at(self, now: float) -> Callable[[str, str, float], bool]:
        """``seen`` with ``now`` bound: the ``nonce_seen`` argument of ``verify_request``."""
        return lambda origin, nonce, created: self.seen(origin, nonce, created, now=now)

    def expire(self, now: float) -> None:
        """Forget every nonce whose request would now be refused as stale anyway."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, origin, nonce = heapq.heappop(heap)
            del self._expiry[(origin, nonce)]
            self._per_origin[origin] -= 1
            if not self._per_origin[origin]:
                del self._per_origin[origin]
