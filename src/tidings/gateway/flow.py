"""Backpressure both ways: a connection sending too fast is not read, and a connection not
reading what it is sent is not written to (and not read either).

Refusing a fast sender would have to fail the whole session for envelopes without an id (nobody
to tell) and would turn a burst of acknowledgements after a reconnect into lost work. Pausing the
socket lets TCP slow the client down instead; what was already read is handled, nothing is
dropped. A client that stops reading is held the same way: while its output is over the bound,
nothing it sends is read, so it cannot make the server answer it without end either.
"""

from __future__ import annotations

import asyncio

from picows import WSTransport

from ..core.limits import TokenBucket


class ReadThrottle:
    __slots__ = ("_bucket", "_held", "_paused", "_transport")

    def __init__(self, rate: float, burst: int, transport: WSTransport) -> None:
        self._bucket = TokenBucket(rate, burst)
        self._transport = transport
        self._paused = False
        """Over the rate: reading resumes when the bucket has refilled."""
        self._held = False
        """Output over its bound: reading resumes when the client has read it."""

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

    def hold(self) -> None:
        """Stop reading until ``release``: the client is not reading what it was sent."""
        if not self._held:
            self._held = True
            if not self._paused:
                self._transport.underlying_transport.pause_reading()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._resume_unless_stopped()

    def _resume(self) -> None:
        self._paused = False
        self._resume_unless_stopped()

    def _resume_unless_stopped(self) -> None:
        if not (self._paused or self._held or self._transport.is_disconnected):
            self._transport.underlying_transport.resume_reading()
