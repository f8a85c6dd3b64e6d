"""Failed-login throttling: a few free failures, then a backoff that doubles, up to a bound.

A ``LoginThrottle`` counts failures per key (an identity's name, or a source address) and says
how long a key must wait before it may try again. It is pure (no I/O, an injectable clock) and
bounded: a key that stayed quiet for ``FORGET_AFTER_BACKOFFS`` maximum backoffs is forgotten, and
at most ``max_keys`` keys are kept (the least recently failed go first), because whoever guesses
can spray any number of names and addresses.

The rule, for a key with ``n`` failures, the last at ``t``: no wait while ``n <= free_failures``;
then it may try again at ``t + min(max_s, base_s * 2 ** (n - free_failures - 1))``. A success
clears the key (``succeeded``). The caller refuses an attempt while ``wait(key) > 0`` without
checking anything, and such a refusal is not a failure: the wait never grows beyond ``max_s``
after the last real failure, so the real owner is never locked out for longer than that.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

FORGET_AFTER_BACKOFFS: Final = 10
"""A key without a failure for this many ``max_s`` is forgotten (its count starts again)."""
MAX_KEYS: Final = 100_000
"""Keys one throttle tracks at most (an entry costs about 150 bytes)."""
_MAX_EXPONENT: Final = 62


@dataclass(frozen=True, slots=True)
class LoginRule:
    """The tunables (``login_*`` settings): free failures per identity and per source address,
    and the first and the largest backoff, in seconds."""

    free_failures: int = 5
    free_failures_per_address: int = 20
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0


class _Entry:
    __slots__ = ("failures", "last")

    def __init__(self, last: float) -> None:
        self.failures = 0
        self.last = last


class LoginThrottle:
    def __init__(
        self,
        *,
        free_failures: int,
        base_s: float,
        max_s: float,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if free_failures < 0 or not 0 < base_s <= max_s or max_keys < 1:
            raise ValueError("need free_failures >= 0, 0 < base_s <= max_s and max_keys >= 1")
        self.free_failures = free_failures
        self.base_s = base_s
        self.max_s = max_s
        self.max_keys = max_keys
        self.forget_s = FORGET_AFTER_BACKOFFS * max_s
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        """Least recently failed first."""

    def __len__(self) -> int:
        return len(self._entries)

    def backoff(self, failures: int) -> float:
        """The wait after the ``failures``-th failure."""
        extra = failures - self.free_failures
        if extra <= 0:
            return 0.0
        return min(self.max_s, self.base_s * 2.0 ** min(extra - 1, _MAX_EXPONENT))

    def wait(self, key: str) -> float:
        """Seconds before ``key`` may try again: 0 when it may now, never above ``max_s``."""
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return min(self.max_s, max(0.0, entry.last + self.backoff(entry.failures) - now))

    def failed(self, key: str) -> None:
        now = self._clock()
        self._expire(now)
        entry = self._entries.pop(key, None)
        if entry is None:
            while len(self._entries) >= self.max_keys:
                self._entries.popitem(last=False)
            entry = _Entry(now)
        entry.failures += 1
        entry.last = now
        self._entries[key] = entry

    def succeeded(self, key: str) -> None:
        """The key's owner proved who it is: forget its failures."""
        self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if now - entry.last < self.forget_s:
                return
            del entries[key]


def source_key(peername: object) -> str | None:
    """The key a peer address (``get_extra_info("peername")``) is throttled by: the IPv4
    address, or the /64 network of an IPv6 one (a single host usually holds a whole /64).
    None when there is no IP address (a Unix socket, a test transport)."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return None
    try:
        address = ipaddress.ip_address(peername[0].partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
