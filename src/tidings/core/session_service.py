"""``SessionService``: what clients and apps do with named sessions (the sessions resource):
listing, limits, deletion, garbage collection, server-side notify, and the persistent-session
protocol (begin / nonce / memento / end). The sessions themselves, durable records and live
connections, are kept by ``session_registry.SessionRegistry``.

Persistent sessions (Bernstein, Hsu & Mann 1990, as in Caf.js ``caf_session``):

- ``begin(name)`` gives a fresh nonce and the last committed memento. ``crashed`` is true when
  the previous instance began and never ended: the client resumes after its memento.
- Every request of the instance carries the nonce and its new memento; the server checks the
  nonce and commits the request's effect and the memento in **one** transaction
  (``QueuePolicy.bounded_append``, run by the store's ``transact``). A request whose nonce is
  not the current one (an older instance, a concurrent client, a session that ended) changes
  nothing and fails with ``STALE_NONCE``.
- A request repeated verbatim (same message id) is stored once: the (sender, id) dedupe of the
  delivery contract closes the retry gap of the original (reference section 3.7) within the
  duplicate window (``message_id_retention_s``); past it a client begins again, and the new
  nonce and the memento keep the request exactly-once.
- ``end(name, nonce)`` with the current nonce clears nonce and memento; ending a session that
  has neither is a no-op success (idempotent); any other nonce fails with ``STALE_NONCE``.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .address import Address
from .errors import Conflict, ErrorId, Invalid, NotFound, TidingsError
from .model import (
    UNCLAIMED,
    OverflowPolicy,
    PersistenceState,
    QueueBound,
    QueueEntry,
    SessionRecord,
    TrimResult,
)
from .ports import MessageStore, NoticeFactory, settling
from .queue_policy import QueuePolicy
from .queues import MAX_SNAPSHOT, check_limit, check_pattern, matches
from .router import Router
from .session_registry import SessionRegistry

MAX_SESSION_NAME = 128


@dataclass(frozen=True, slots=True)
class SessionGcLimits:
    idle_s: float = 30 * 24 * 3600.0
    """Sessions not connected for this long are deleted (0 disables idle collection)."""
    max_per_identity: int = 0
    """Keep at most this many offline sessions per identity, oldest-seen deleted first
    (0: no bound)."""


@dataclass(frozen=True, slots=True)
class NotifyOutcome:
    message_id: str
    sessions: list[str]
    refused: list[dict[str, Any]]


def check_name(name: str) -> str:
    if not name or len(name) > MAX_SESSION_NAME or "/" in name or "@" in name:
        raise Invalid(
            ErrorId.INVALID_ARGUMENT,
            f"A session name is 1..{MAX_SESSION_NAME} characters without '/' or '@'",
        )
    return name


class SessionService:
    def __init__(
        self,
        router: Router,
        registry: SessionRegistry,
        store: MessageStore,
        notices: NoticeFactory,
        server_node: str,
        max_limit: int = 10_000_000,
    ) -> None:
        self._router = router
        self._registry = registry
        self._store = store
        self._notices = notices
        self._server_node = server_node
        self._policy = QueuePolicy(notices, server_node)
        self._max_limit = max_limit

    # -- reading --------------------------------------------------------------------------

    async def sessions_of(self, identity: str) -> list[dict[str, Any]]:
        """The identity's sessions with depth, limit, policy and last-seen time."""
        persistence = await self._store.persistence_of(identity)
        return [
            self._describe(identity, name, persistence.get(name))
            for name in sorted(self._registry.records_of(identity))
            if name != UNCLAIMED
        ]

    def deepest(self, top: int) -> list[dict[str, Any]]:
        """The ``top`` sessions of every identity with the most queued rows, deepest first
        (federation outboxes and not yet claimed inboxes included: they hold rows too)."""
        records = heapq.nlargest(top, self._registry.all_records(), key=lambda r: r.depth)
        return [
            {
                "identity": r.identity,
                "instance": r.instance,
                "depth": r.depth,
                "limit": self._router.limit_of(r),
                "policy": self._router.policy_of(r).value,
                "online": self._registry.live(r.identity, r.instance) is not None
                or self._held_elsewhere(r.identity, r.instance),
                "lastSeen": r.last_seen,
            }
            for r in records
        ]

    async def info(self, identity: str, name: str, snapshot: int = 100) -> dict[str, Any]:
        """One session, with a snapshot of the first ``snapshot`` queued envelopes."""
        check_name(name)
        if name not in self._registry.records_of(identity):
            raise NotFound(ErrorId.SESSION_NOT_FOUND, f"{identity} has no session {name!r}")
        persistence = (await self._store.persistence_of(identity)).get(name)
        document = self._describe(identity, name, persistence)
        entries = await self._store.queue_snapshot(
            identity, name, max(0, min(snapshot, MAX_SNAPSHOT))
        )
        document["queue"] = [
            {
                "seq": e.seq,
                "kind": ("envelope", "gap", "notice")[e.kind],
                "from": e.sender,
                "id": e.message_id,
                "enqueuedAt": e.enqueued_at,
                "envelope": e.payload,
            }
            for e in entries
        ]
        return document

    def _describe(
        self, identity: str, name: str, persistence: PersistenceState | None
    ) -> dict[str, Any]:
        record = self._registry.record(identity, name)
        live = self._registry.live(identity, name)
        online = live is not None or self._held_elsewhere(identity, name)
        return {
            "name": name,
            "node": f"{identity}/{name}",
            "online": online,
            "depth": record.depth,
            "limit": self._router.limit_of(record),
            "policy": self._router.policy_of(record).value,
            "ownLimit": record.queue_limit is not None or record.policy is not None,
            "lastSeen": time.time() if online else record.last_seen,
            "persistent": persistence is not None and persistence.nonce is not None,
        }

    # -- changing -------------------------------------------------------------------------

    async def configure(self, identity: str, name: str, document: Any) -> dict[str, Any]:
        """``{"limit": N | null, "policy": "drop-oldest" | "reject-new" | null}``; lowering
        the limit of a drop-oldest queue trims it at once (senders and session are told)."""
        check_name(name)
        if not isinstance(document, dict) or not set(document) <= {"limit", "policy"}:
            raise Invalid(
                ErrorId.INVALID_ARGUMENT, 'A session document is {"limit": N, "policy": ...}'
            )
        record = self._registry.open(identity, name)
        if "limit" in document:
            record.queue_limit = check_limit(document["limit"], self._max_limit)
        if "policy" in document:
            policy = document["policy"]
            if policy is None:
                record.policy = None
            elif policy in OverflowPolicy._value2member_map_:
                record.policy = OverflowPolicy(policy)
            else:
                raise Invalid(
                    ErrorId.INVALID_ARGUMENT,
                    "'policy' must be 'drop-oldest', 'reject-new' or null",
                )
        if record.last_seen == 0.0:
            record.last_seen = time.time()
        await self._store.save_session(record)
        self._record_changed(identity, name)
        limit = self._router.limit_of(record)
        if self._router.policy_of(record) is OverflowPolicy.DROP_OLDEST and record.depth > limit:
            await self._write([], None, [self._router.bound_of(record, limit)])
        return self._describe(identity, name, None)

    def _offline(self, identity: str, name: str, while_connected: str) -> None:
        """Raise unless ``name`` is an existing session of ``identity`` connected nowhere
        (``while_connected``: what the refusal tells the caller to do instead)."""
        check_name(name)
        if self._registry.live(identity, name) is not None or self._held_elsewhere(identity, name):
            raise Conflict(
                ErrorId.SESSION_CONNECTED, f"The session {name!r} is connected: {while_connected}"
            )
        if name not in self._registry.records_of(identity):
            raise NotFound(ErrorId.SESSION_NOT_FOUND, f"{identity} has no session {name!r}")

    async def delete(self, identity: str, name: str) -> int:
        """Delete an offline session; senders of its queued messages get ``SESSION_EXPIRED``.

        Returns how many queue rows were removed."""
        self._offline(identity, name, "end it first")
        future: asyncio.Future[TrimResult] = asyncio.get_running_loop().create_future()
        self._store.transact(self._policy.session_deletion(identity, name), settling(future))
        result = await future
        self._router.ledger.settle(result)
        record = self._registry.record(identity, name)
        if self._registry.live(identity, name) is None and record.depth == 0:
            self._registry.forget(identity, name)
        else:
            # Reconnected, or messages were queued after the delete was submitted: those are
            # in a queue again, so the session must go on existing (and be stored as such).
            await self._store.save_session(record)
        self._router.deliver_notices(result)
        self._record_changed(identity, name)
        return sum(result.removed.values())

    async def acknowledge(
        self,
        identity: str,
        name: str,
        sender: Address,
        message_id: str,
        event: str,
        reason: tuple[int, str] | None = None,
    ) -> bool:
        """What a connected session does with a ``received``, ``consumed`` or ``failed``
        notification, for an offline one (an account that reads its queue over HTTP): the
        message ``message_id`` from ``sender`` leaves the session's queue, then the
        notification goes to ``sender`` (kept for it when offline, relayed to its server
        when of another domain). Whether a queued message was removed.

        A connected session is refused (``SESSION_CONNECTED``): its connection reads and
        acknowledges its queue, and rows under its cursor are its own to settle."""
        self._offline(identity, name, "its client acknowledges its messages")
        payload = self._notices.notification(
            f"{identity}/{name}", sender.text, message_id, event, reason
        )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._store.acknowledge(identity, name, sender.text, message_id, settling(future))
        removed = await future
        self._router.ledger.settle_removal(self._registry.record(identity, name), removed)
        self._router.forward_notification(sender, payload)
        return removed > 0

    def _held_elsewhere(self, identity: str, name: str) -> bool:
        """Whether another node holds the session live now (``core.cluster``)."""
        peers = self._router.peers
        return peers is not None and name in peers.held_elsewhere().get(identity, {})

    def _record_changed(self, identity: str, name: str) -> None:
        peers = self._router.peers
        if peers is not None:
            peers.record_changed(identity, name)

    async def collect(self, limits: SessionGcLimits, now: float | None = None) -> list[str]:
        """Garbage-collect offline sessions (idle too long, or beyond the per-identity bound).

        Never silent: every sender of a still-queued message gets ``SESSION_EXPIRED``.

        Safe on several nodes at once: the records are read again from the store first (the
        last-seen times other nodes wrote), a session live on any node is left alone, and a
        deletion is one transaction that removes what is still there (a session another
        node collected first gives nothing, and its senders are told once)."""
        now = time.time() if now is None else now
        peers = self._router.peers
        if peers is not None:
            await peers.refresh()
        victims: list[tuple[str, str]] = []
        by_identity: dict[str, list[tuple[float, str]]] = {}
        for record in list(self._registry.all_records()):
            if record.instance == UNCLAIMED:
                continue
            if self._held_elsewhere(record.identity, record.instance):
                continue  # its node records its last-seen time
            if self._registry.live(record.identity, record.instance) is not None:
                # Connected now: stored as seen now, so that after a crash (no disconnect
                # recorded) its idle time counts from about here, not from its connect.
                record.last_seen = now
                self._router.note_seen(record)
                continue
            if record.last_seen == 0.0:
                record.last_seen = now  # never connected: its idle clock starts now
            if limits.idle_s > 0 and record.last_seen < now - limits.idle_s:
                victims.append((record.identity, record.instance))
            else:
                by_identity.setdefault(record.identity, []).append(
                    (record.last_seen, record.instance)
                )
        if limits.max_per_identity > 0:
            for identity, sessions in by_identity.items():
                sessions.sort()
                for _, name in sessions[: max(0, len(sessions) - limits.max_per_identity)]:
                    victims.append((identity, name))
        collected = []
        for identity, name in victims:
            try:
                await self.delete(identity, name)
            except TidingsError:
                continue  # reconnected meanwhile
            collected.append(f"{identity}/{name}")
        return collected

    async def collect_forever(self, limits: SessionGcLimits, interval: float) -> None:
        """Run ``collect`` every ``interval`` seconds until cancelled (a storage error waits for
        the next round)."""
        if limits.idle_s <= 0 and limits.max_per_identity <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                await self.collect(limits)
            except TidingsError:
                continue

    # -- server-side notify ---------------------------------------------------------------

    async def notify(
        self,
        address: Address,
        *,
        message_id: str,
        type_: str,
        content: Any,
        session: str | None = None,
        pattern: str | None = None,
        sender: str | None = None,
    ) -> NotifyOutcome:
        """Queue a server message for one session (created if new), for every session of the
        identity, or for the existing sessions whose name matches ``pattern`` (a glob).

        ``sender`` (an identity or node) is the message's ``from`` instead of the server's
        node, and the address its acknowledgements go to (a message the server delivers on
        behalf of someone, such as a consent chat message).

        Stored once per message id (a retry with the same id is not queued twice). Full
        reject-new queues are skipped and listed in ``refused``; drop-oldest ones are trimmed."""
        if session is not None and pattern is not None:
            raise Invalid(ErrorId.INVALID_ARGUMENT, "Give 'session' or 'pattern', not both")
        await self._router.check_identity(address)
        identity = address.identity
        origin = sender if sender is not None else self._server_node
        if session is not None:
            names = [check_name(session)]
        else:
            existing = [n for n in self._registry.records_of(identity) if n != UNCLAIMED]
            if pattern is not None:
                check_pattern(pattern)
                existing = [n for n in existing if matches(pattern, n)]
            names = sorted(existing)
        known = set(self._registry.records_of(identity))
        entries = []
        bounds: list[QueueBound] = []
        refused: list[dict[str, Any]] = []
        taken = []
        for name in names:
            try:
                record = self._registry.open(identity, name)
                bounds.extend(self._router.bounds_for([record]))
            except TidingsError as error:
                if error.error_id is ErrorId.QUEUE_FULL:
                    self._router.refused_full += 1
                refused.append(
                    {"session": name, "error_id": error.error_id.value, "detail": error.message}
                )
                continue
            node = f"{identity}/{name}"
            payload = (
                self._notices.message(node, message_id, type_, content)
                if sender is None
                else self._notices.message(node, message_id, type_, content, sender=sender)
            )
            entries.append(
                QueueEntry(
                    identity,
                    name,
                    origin,
                    message_id,
                    True,
                    payload,
                    self._router.expiry_of(),
                )
            )
            taken.append(record)
        if not entries:
            return NotifyOutcome(message_id, [], refused)
        try:
            result = await self._write(entries, (origin, message_id), bounds, taken)
        except TidingsError:
            self._forget_unused(identity, [n for n in names if n not in known])
            raise
        router = self._router
        if result.duplicate:
            # a retry: the node that stored it may have died before its wakes went out
            await router.wake_again(origin, message_id, taken)
        await router.announced()  # "stored" is not answered before the wakes are out
        queued = [] if result.duplicate else [r.instance for r in taken]
        return NotifyOutcome(message_id, queued, refused)

    def _forget_unused(self, identity: str, names: list[str]) -> None:
        """Sessions that a failed notify made: gone again unless something used them meanwhile
        (a queued row, a connection), so that a storage failure leaves no empty session."""
        registry = self._registry
        for name in names:
            record = registry.records_of(identity).get(name)
            if record is not None and not record.depth and registry.live(identity, name) is None:
                registry.forget(identity, name)

    async def _write(
        self,
        entries: list[QueueEntry],
        dedupe: tuple[str, str] | None,
        bounds: list[QueueBound],
        targets: Sequence[SessionRecord] = (),
    ) -> TrimResult:
        """A bounded append of one entry per record of ``targets``, settled in the ledger and
        written to the live ones in the write's own completion: before any later write's, so
        that a later message cannot move a live session's cursor past this one."""
        ledger = self._router.ledger
        router = self._router
        ledger.reserve(targets)
        future: asyncio.Future[TrimResult] = asyncio.get_running_loop().create_future()
        settle = settling(future)

        def written(result: TrimResult | BaseException) -> None:
            ledger.settle_append(targets, result)
            if not isinstance(result, BaseException):
                router.deliver_notices(result)
                if not result.duplicate:
                    fanout = len(targets) > 1
                    for record, seq, entry in zip(targets, result.seqs, entries, strict=False):
                        router.deliver_stored(
                            record, seq, entry.payload, entry.expires_at, fanout=fanout
                        )
            settle(result)

        self._store.transact(self._policy.bounded_append(entries, dedupe, bounds, None), written)
        return await future

    # -- persistent sessions --------------------------------------------------------------

    async def begin(self, identity: str, name: str) -> PersistenceState:
        check_name(name)
        self._registry.open(identity, name)
        return await self._store.begin_persistence(identity, name)

    async def end(self, identity: str, name: str, nonce: Any) -> None:
        check_name(name)
        if not isinstance(nonce, str) or not nonce:
            raise Invalid(ErrorId.INVALID_ARGUMENT, "Ending a persistent session needs its nonce")
        if not await self._store.end_persistence(identity, name, nonce):
            raise Conflict(
                ErrorId.STALE_NONCE,
                "The nonce is not the current one of this persistent session",
            )
