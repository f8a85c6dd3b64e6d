"""Queue policy that must be atomic with a write: bounds, trims, gap markers, who is told.

Each function here builds the *work* of one store transaction: the store runs it inside its
transaction (on its writer thread, for SQLite) with a ``QueueTransaction``, so that every adapter
applies the same rules and only supplies the transaction. The work may encode notices (through
the core's ``NoticeFactory``) but touches no event-loop state; its ``TrimResult`` is applied on
the loop afterwards (``QueueLedger.settle_append`` or ``settle``, then ``Router.deliver_notices``).

The rules (see ``queues`` for the policies and docs/lime.md for what clients see):

- a drop-oldest queue over its limit loses its oldest envelopes in the same transaction as the
  write that made it overflow, never the envelope being added;
- envelopes already written to the live connection (up to ``QueueBound.delivered_upto``) are in
  the client's hands: not dropped nor reported lost while the queue holds at most twice its limit;
  beyond that (a client that never acknowledges) the oldest delivered ones go too;
- each dropped message's sender is told once (``failed``, kept in the sender's own queue), unless
  it needs no acknowledgement, has no id, or came from the server or the session itself;
- the session gets one gap marker at the head of its queue that counts every drop since it last
  acknowledged a marker and names at most ``MAX_LOST_LISTED`` of the lost;
- an envelope past its expiry (``core.expiry``) goes the same way: removed, its sender told
  (``MESSAGE_EXPIRED``), counted in the gap marker; unless it is in the hands of a live
  connection (the sweep leaves those).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from .address import parse_address
from .errors import Invalid, TidingsError
from .model import (
    OUTBOX_INSTANCE,
    OUTBOX_PREFIX,
    UNCLAIMED,
    ExpiredRow,
    ExpiryPass,
    GapState,
    Notice,
    PersistStep,
    QueueBound,
    QueueEntry,
    QueueRow,
    TrimResult,
)
from .ports import NoticeFactory, QueueTransaction
from .queues import MAX_LOST_LISTED, dropped_error, expired_error, message_expired_error

Key = tuple[str, str]
NO_SEQ: Final = 2**63 - 1
"""Above every sequence number (SQLite's largest integer)."""


class QueuePolicy:
    """Builds transaction work for bounded writes; holds the server's notice encoder."""

    def __init__(self, notices: NoticeFactory, server_node: str) -> None:
        self.notices = notices
        self.server_node = server_node
        self.domain = server_node.partition("@")[2].partition("/")[0]
        """This server's domain: a sender of another is told through the outbox to there."""

    def bounded_append(
        self,
        entries: Sequence[QueueEntry],
        dedupe: tuple[str, str] | None,
        bounds: Sequence[QueueBound],
        persist: PersistStep | None,
    ) -> Callable[[QueueTransaction], TrimResult]:
        """An append plus, atomically: the persistent-session nonce check and memento, and the
        trimming of the drop-oldest queues in ``bounds``."""

        def work(tx: QueueTransaction) -> TrimResult:
            if persist is not None and not tx.nonce_is_current(persist):
                return TrimResult(refused=True)
            seqs = tx.insert(entries, dedupe)
            if seqs is None:
                return TrimResult(duplicate=True)
            if persist is not None and persist.memento is not None:
                tx.store_memento(persist)
            removed: dict[tuple[str, str], int] = {}
            made: list[Notice] = []
            added = {(e.identity, e.instance): seq for e, seq in zip(entries, seqs, strict=True)}
            dropped = 0
            for bound in bounds:
                newest = added.get((bound.identity, bound.instance))
                dropped += self._trim(tx, bound, newest, removed, made)
            return TrimResult(seqs=seqs, removed=removed, notices=made, dropped=dropped)

        return work

    def session_deletion(
        self, identity: str, instance: str
    ) -> Callable[[QueueTransaction], TrimResult]:
        """Remove a session, its queue and persistence state; senders of still-queued messages
        are told (session expired) in the same transaction."""

        def work(tx: QueueTransaction) -> TrimResult:
            rows = tx.envelopes(identity, instance, after=0, before=NO_SEQ, limit=NO_SEQ)
            count = tx.remove_session(identity, instance)
            node = f"{identity}/{instance}"
            made = self._tell_senders(tx, node, rows, expired_error(node))
            return TrimResult(removed={(identity, instance): count}, notices=made)

        return work

    def _trim(
        self,
        tx: QueueTransaction,
        bound: QueueBound,
        newest: int | None,
        removed: dict[tuple[str, str], int],
        made: list[Notice],
    ) -> int:
        """Drop the oldest envelopes beyond ``bound.limit`` (see the module's rules); tell their
        senders; move the gap marker. How many were dropped."""
        identity, instance = bound.identity, bound.instance
        count = tx.count(identity, instance)
        excess = count - bound.limit
        if excess <= 0:
            return 0
        rows = tx.envelopes(
            identity,
            instance,
            after=bound.delivered_upto,
            before=newest or NO_SEQ,
            limit=excess,
        )
        beyond_cap = count - len(rows) - 2 * bound.limit
        if beyond_cap > 0:
            delivered = tx.envelopes(
                identity, instance, after=0, before=bound.delivered_upto + 1, limit=beyond_cap
            )
            rows = delivered + rows
        if not rows:
            return 0
        node = f"{identity}/{instance}"
        self._remove(tx, identity, instance, rows, dropped_error(node), removed, made)
        return len(rows)

    def expiry(
        self, now: float, after: tuple[float, int], limit: int, delivered: Mapping[Key, int]
    ) -> Callable[[QueueTransaction], ExpiryPass]:
        """One pass of the expiry sweep over every session: the envelopes expired at ``now``
        (at most ``limit``, after ``after``) are removed, each sender owed an answer is told
        (``MESSAGE_EXPIRED``) and each session's gap marker moves, as drop-oldest does.

        ``delivered`` maps live sessions to their connection's cursor: envelopes up to it are
        in the client's hands (awaiting its ``received``) and are left alone."""

        def work(tx: QueueTransaction) -> ExpiryPass:
            found = tx.expired(now, after, limit)
            if not found:
                return ExpiryPass(TrimResult(), 0, 0, after)
            last = (found[-1].expires_at, found[-1].row.seq)
            due = [e for e in found if e.row.seq > delivered.get((e.identity, e.instance), 0)]
            return ExpiryPass(self._expire(tx, due), len(found), len(due), last)

        return work

    def session_expiry(
        self, identity: str, instance: str, now: float, after: int, limit: int
    ) -> Callable[[QueueTransaction], TrimResult]:
        """Expire the session's envelopes past ``after`` (its connection's cursor) that are
        expired at ``now``: what a write found expired before the sweep came to it."""

        def work(tx: QueueTransaction) -> TrimResult:
            found = tx.expired_in(identity, instance, now, after=after, limit=limit)
            return self._expire(tx, found)

        return work

    def remove_rows(
        self, identity: str, instance: str, rows: Sequence[QueueRow], error: TidingsError
    ) -> Callable[[QueueTransaction], TrimResult]:
        """Remove these rows of the session's queue, telling their senders ``error`` (a peer
        server refused them for good)."""

        def work(tx: QueueTransaction) -> TrimResult:
            removed: dict[Key, int] = {}
            made: list[Notice] = []
            if rows:
                self._remove(tx, identity, instance, rows, error, removed, made)
            return TrimResult(removed=removed, notices=made)

        return work

    def _expire(self, tx: QueueTransaction, found: Sequence[ExpiredRow]) -> TrimResult:
        by_session: dict[Key, list[QueueRow]] = {}
        for expired in found:
            by_session.setdefault((expired.identity, expired.instance), []).append(expired.row)
        removed: dict[Key, int] = {}
        made: list[Notice] = []
        for (identity, instance), rows in by_session.items():
            rows.sort(key=lambda row: row.seq)
            error = message_expired_error(f"{identity}/{instance}")
            self._remove(tx, identity, instance, rows, error, removed, made)
        return TrimResult(removed=removed, notices=made)

    def _remove(
        self,
        tx: QueueTransaction,
        identity: str,
        instance: str,
        rows: Sequence[QueueRow],
        error: TidingsError,
        removed: dict[Key, int],
        made: list[Notice],
    ) -> None:
        """Delete the session's ``rows`` (in sequence order), tell their senders ``error``, and
        count them in the session's gap marker (one, cumulative, at the last removed row)."""
        tx.delete([row.seq for row in rows])
        node = f"{identity}/{instance}"
        made.extend(self._tell_senders(tx, node, rows, error))
        key = (identity, instance)
        if identity.startswith(OUTBOX_PREFIX):
            # an outbox to another server: nobody reads a gap marker there, the senders were told
            removed[key] = removed.get(key, 0) + len(rows)
            return
        lost = [{"from": r.sender, "id": r.message_id} for r in rows if r.message_id]
        dropped = len(rows)
        gap_seq = rows[-1].seq
        old = tx.gap(identity, instance)
        replaced = 0
        if old is not None:
            dropped += old.dropped
            lost = old.lost + lost
            tx.delete([old.seq])
            gap_seq = max(gap_seq, old.seq)
            replaced = 1
        gap = GapState(gap_seq, dropped, lost[-MAX_LOST_LISTED:])
        gap_id = f"gap-{uuid.uuid4()}"
        payload = self.notices.gap(node, gap_id, gap.dropped, gap.lost)
        tx.put_gap(identity, instance, gap, self.server_node, gap_id, payload)
        removed[key] = removed.get(key, 0) + len(rows) + replaced
        made.append(Notice(identity, instance, gap_seq, payload, True))

    def _tell_senders(
        self, tx: QueueTransaction, node: str, rows: Sequence[QueueRow], error: TidingsError
    ) -> list[Notice]:
        """Keep a ``failed`` for the sender of each removed message that is owed one."""
        made = []
        for row in rows:
            if self.owed_failure(row, node):
                assert row.message_id is not None
                try:
                    sender = parse_address(row.sender)  # a node the router stored: cached
                except Invalid:
                    continue
                payload = self.notices.failed(row.sender, row.message_id, error)
                identity, instance = sender.identity, sender.instance or UNCLAIMED
                if sender.domain != self.domain:
                    # a sender of another domain: its server tells it (the outbox to there)
                    identity, instance = OUTBOX_PREFIX + sender.domain, OUTBOX_INSTANCE
                seq = tx.put_notice(identity, instance, self.server_node, payload)
                made.append(Notice(identity, instance, seq, payload, False))
        return made

    def owed_failure(self, row: QueueRow, node: str) -> bool:
        """Who is told: a sender waiting for the message's fate (it asked for an
        acknowledgement, by id), other than the server and the session itself."""
        return (
            row.needs_ack
            and bool(row.message_id)
            and bool(row.sender)
            and row.sender not in (self.server_node, node)
        )
