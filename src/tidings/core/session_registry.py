"""``SessionRegistry``: the sessions known to the server, durable records for every named
session and ``LiveSession`` objects for those connected now (what ``SessionService`` acts on).

A session is an identity plus an instance name (a LIME node). Its record and queue outlive its
connections; ``LiveSession`` is the part that exists only while a connection is attached.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from .cluster_directory import Holes
from .errors import ErrorId, LimitExceeded, TidingsError
from .model import UNCLAIMED, EnvelopeKind, RoutingRule, SessionRecord
from .model import DeliveryEvent as DeliveryEvent
from .ports import Outlet

DEFAULT_RECEIPT: frozenset[DeliveryEvent] = frozenset({DeliveryEvent.FAILED})


class SenderOutlet:
    """The ``Outlet`` of a sender that is no connection here (a client of another server, an
    account over HTTP): the router only tells it what became of its messages (``notify``,
    for a subclass to say); nothing is written to it, pushed to it or ended."""

    __slots__ = ()

    def deliver(self, payload: bytes, kind: EnvelopeKind = EnvelopeKind.MESSAGE) -> bool:
        return False

    def notify(
        self, message_id: str, event: DeliveryEvent, error: TidingsError | None = None
    ) -> None:
        raise NotImplementedError

    def observe(self, identity: str, presence: dict[str, Any]) -> None:
        pass

    def observe_resource(self, owner: str, uri: str, type_: str, resource: Any) -> None:
        pass

    def end(self, error: TidingsError) -> None:
        pass


class LiveSession:
    """A session with a connection attached."""

    __slots__ = (
        "again",
        "behind",
        "cursor",
        "guest",
        "holes",
        "identity",
        "instance",
        "missed",
        "node",
        "outlet",
        "presence",
        "receipt",
        "record",
        "replay_running",
        "replaying",
        "subscriptions",
    )

    def __init__(
        self, identity: str, instance: str, outlet: Outlet, record: SessionRecord, *, guest: bool
    ) -> None:
        self.identity = identity
        self.instance = instance
        self.node = f"{identity}/{instance}"
        self.outlet = outlet
        self.record = record
        self.guest = guest
        self.presence: dict[str, Any] = {"status": "available", "routingRule": record.routing_rule}
        self.receipt: frozenset[DeliveryEvent] = DEFAULT_RECEIPT
        self.cursor = 0
        """Highest queue sequence number written to this connection."""
        self.replaying = True
        """True until the backlog has been written, and again while the client is behind
        reading: live deliveries wait in the queue for ``Router.replay``."""
        self.replay_running = False
        self.behind = False
        """The client is behind reading what it was sent (see ``Router.stall``)."""
        self.subscriptions: set[str] | None = None
        """The identities whose presence it follows; None until the first (an empty set is
        216 bytes: most sessions follow nobody, issue 15)."""
        self.again = False
        """Rows were stored for it while a replay ran: the replay reads once more."""
        self.holes: Holes | None = None
        """With other nodes writing its queue: rows its live writes jumped over (``Holes``)."""
        self.missed: list[int] | None = None
        """With other nodes: rows this node stored while a replay ran, which that replay may
        have read past before they committed (``Router.replay`` writes them at its end); None
        while there are none."""

    @property
    def available(self) -> bool:
        return self.presence.get("status", "available") not in ("unavailable",)

    def wants(self, event: DeliveryEvent) -> bool:
        return event in self.receipt


class SessionRegistry:
    """Every known session record, and the live sessions among them."""

    def __init__(self, max_per_identity: int = 0) -> None:
        self._records: dict[str, dict[str, SessionRecord]] = {}
        self._live: dict[str, dict[str, LiveSession]] = {}
        self._max_per_identity = max_per_identity
        """Most named sessions one identity may have (0: no bound); see ``open``."""

    def load(self, records: list[SessionRecord]) -> None:
        for record in records:
            self._records.setdefault(record.identity, {})[record.instance] = record

    def record(self, identity: str, instance: str) -> SessionRecord:
        """The session's record, created (in memory) on first use."""
        sessions = self._records.setdefault(identity, {})
        record = sessions.get(instance)
        if record is None:
            record = SessionRecord(identity, instance, RoutingRule.IDENTITY, None, None, 0.0)
            sessions[instance] = record
        return record

    def open(self, identity: str, instance: str) -> SessionRecord:
        """The session's record; a new one only within the identity's bound, since anyone who
        can address a node creates a durable queue (``LimitExceeded`` beyond it)."""
        sessions = self._records.get(identity, {})
        if instance not in sessions and instance != UNCLAIMED and self._max_per_identity:
            named = len(sessions) - (UNCLAIMED in sessions)
            if named >= self._max_per_identity:
                raise LimitExceeded(
                    ErrorId.SESSION_LIMIT,
                    f"{identity} already has {named} sessions, the most allowed: use one of "
                    "them or delete one (delete /sessions/{name})",
                )
        return self.record(identity, instance)

    def records_of(self, identity: str) -> dict[str, SessionRecord]:
        return self._records.get(identity, {})

    def knows(self, identity: str) -> bool:
        return bool(self._records.get(identity))

    def all_records(self) -> Iterator[SessionRecord]:
        for sessions in self._records.values():
            yield from sessions.values()

    def forget(self, identity: str, instance: str) -> None:
        """Drop a deleted session's record (it must not be live)."""
        sessions = self._records.get(identity)
        if sessions is not None:
            sessions.pop(instance, None)
            if not sessions:
                del self._records[identity]

    def live(self, identity: str, instance: str) -> LiveSession | None:
        sessions = self._live.get(identity)
        return sessions.get(instance) if sessions else None

    def live_of(self, identity: str) -> dict[str, LiveSession]:
        return self._live.get(identity, {})

    def all_live(self) -> Iterator[LiveSession]:
        for sessions in self._live.values():
            yield from sessions.values()

    def attach(self, live: LiveSession) -> LiveSession | None:
        """Register a live session; returns the one it displaced, if any."""
        sessions = self._live.setdefault(live.identity, {})
        previous = sessions.get(live.instance)
        sessions[live.instance] = live
        live.record.last_seen = time.time()
        return previous

    def detach(self, live: LiveSession) -> bool:
        sessions = self._live.get(live.identity)
        if not sessions or sessions.get(live.instance) is not live:
            return False
        del sessions[live.instance]
        if not sessions:
            del self._live[live.identity]
        live.record.last_seen = time.time()
        return True

    def targets(
        self, identity: str, instance: str | None, *, create: bool = True
    ) -> list[SessionRecord]:
        """The sessions that receive an envelope addressed to ``identity[/instance]``.

        A node address reaches that session and the identity's promiscuous sessions. An
        identity address reaches every session whose rule is ``identity`` or ``promiscuous``,
        or, when there is none yet, the identity's unclaimed inbox. Without ``create`` only
        sessions that exist are named (a notification must not create a queue).
        """
        sessions = self._records.get(identity, {})
        if instance is not None:
            if create:
                found = [self.open(identity, instance)]
            else:
                found = [sessions[instance]] if instance in sessions else []
            found.extend(
                r
                for r in sessions.values()
                if r.routing_rule is RoutingRule.PROMISCUOUS
                and r.instance != instance
                and r.instance != UNCLAIMED
            )
            return found
        found = [
            r
            for r in sessions.values()
            if r.instance != UNCLAIMED and r.routing_rule is not RoutingRule.INSTANCE
        ]
        if found or not create:
            return found
        return [self.record(identity, UNCLAIMED)]
