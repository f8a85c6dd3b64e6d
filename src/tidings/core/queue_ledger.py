"""The queue ledger: the one place that changes ``SessionRecord.depth``.

``depth`` is the number of rows in a session's queue (every kind: envelopes, the gap marker,
kept notices), known on the event loop without a store read, because the router compares it
with the queue's limit for every message. It must equal what the store holds, so it changes
only here, and only in two ways:

- ``reserve`` counts an append *before* it is submitted, so that messages still in the writer's
  queue count against the limit (a burst cannot overshoot a reject-new queue);
- every ``settle_*`` applies what a write reported: an append's outcome (stored, duplicate,
  refused, failed: a reservation is kept or released), rows a trim or deletion removed, notices
  a policy transaction queued, rows an acknowledgement or discard removed, rows a claim moved.

Callers never adjust ``depth`` themselves; tests/unit/core/test_queue_ledger.py checks, over
the memory store, that depth equals the stored rows after any sequence of writes.

With several nodes (``core.cluster``) the ledger is per node memory: a node counts what it
wrote and removed, not what the others did, so a depth is approximate there (never below
zero), and so are the queue limits compared with it (enforced per node). Decisions that a
stale depth would make wrong read the store instead (the unclaimed-inbox claim on attach).
"""

from __future__ import annotations

from collections.abc import Sequence

from .model import AppendResult, SessionRecord, TrimResult
from .session_registry import SessionRegistry


class QueueLedger:
    """Keeps each session record's ``depth`` equal to its stored queue rows."""

    __slots__ = ("_registry", "dropped")

    def __init__(self, registry: SessionRegistry) -> None:
        self._registry = registry
        self.dropped = 0
        """Envelopes drop-oldest queues discarded to make room (every result passes here)."""

    def reserve(self, records: Sequence[SessionRecord]) -> None:
        """One row is about to be appended to each of ``records`` (settle it with
        ``settle_append``)."""
        for record in records:
            record.depth += 1

    def settle_append(
        self,
        records: Sequence[SessionRecord],
        result: AppendResult | TrimResult | BaseException,
    ) -> None:
        """Settle the reservation of ``records`` from the append's result: kept when stored,
        released when the write failed, was a duplicate or was refused (stale nonce). What a
        bounded append trimmed and the notices it queued are applied too."""
        if (
            isinstance(result, BaseException)
            or result.duplicate
            or (isinstance(result, TrimResult) and result.refused)
        ):
            for record in records:
                record.depth -= 1
            return
        if isinstance(result, TrimResult):
            self.settle(result)

    def settle(self, result: TrimResult) -> None:
        """Apply rows a policy transaction removed (trims, replaced gap markers, a deleted
        session's queue) and the notices it queued (one row each)."""
        self.dropped += result.dropped
        record = self._registry.record
        for (identity, instance), count in result.removed.items():
            found = record(identity, instance)
            found.depth = max(0, found.depth - count)
        for notice in result.notices:
            record(notice.identity, notice.instance).depth += 1

    def settle_inserted(self, record: SessionRecord, count: int) -> None:
        """Rows another service's transaction inserted into the session's queue, committed
        (a consent operation's copy for a peer's server, ``core.consent_federation``)."""
        record.depth += count

    def settle_removal(self, record: SessionRecord, removed: int | BaseException) -> None:
        """Rows an acknowledgement or a discard removed from the session's queue (nothing when
        the write failed)."""
        if isinstance(removed, int):
            record.depth = max(0, record.depth - removed)

    def settle_claim(self, source: SessionRecord, target: SessionRecord, moved: int) -> None:
        """Rows a claim moved from the unclaimed inbox ``source`` into ``target``."""
        source.depth = max(0, source.depth - moved)
        target.depth += moved
