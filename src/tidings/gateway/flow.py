"""Rate limits as backpressure: a connection over its rate is not refused, it is not read.

Refusing would have to fail the whole session for envelopes without an id (nobody to tell) and
would turn a burst of acknowledgements after a reconnect into lost work. Pausing the socket lets
TCP slow the client down instead; what was already read is handled, nothing is dropped.
"""

from __future__ import annotations

import asyncio

from picows import WSTransport

from ..core.limits import TokenBucket


class ReadThrottle:
    __slots__ = ("_bucket", "_paused", "_transport")

    def __init__(self, rate: float, burst: int, transport: WSTransport) -> None:
        self._bucket = TokenBucket(rate, burst)
        self._transport = transport
        self._paused = False

    def spend(self) -> bool:
        """Count one message; past the rate, stop reading until the bucket has refilled.

        Returns True when this frame paused the connection (for the metrics)."""
        wait = self._bucket.spend()
        if wait <= 0.0 or self._paused:
            return False
        self._paused = True
        self._transport.underlying_transport.pause_reading()
        asyncio.get_running_loop().call_later(wait, self._resume)
        return True

    def _resume(self) -> None:
        self._paused = False
        if not self._transport.is_disconnected:
            self._transport.underlying_transport.resume_reading()
