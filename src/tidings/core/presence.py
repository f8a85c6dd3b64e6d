"""Presence: each live session's status and routing rule, and pushes to subscribed contacts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from .authz import Authorizer, Method, Resource
from .cluster_directory import SessionDirectory
from .documents import FieldTypes, check_fields
from .errors import ErrorId, Invalid
from .model import RoutingRule
from .ports import MessageStore
from .router import Router
from .session_registry import LiveSession, SessionRegistry

STATUSES: Final = ("available", "busy", "away", "invisible", "unavailable")
"""Best first: an identity shows the best status among its sessions."""
RULES: Final[dict[str, RoutingRule]] = {
    "instance": RoutingRule.INSTANCE,
    "identity": RoutingRule.IDENTITY,
    "identityByPriority": RoutingRule.IDENTITY,
    "promiscuous": RoutingRule.PROMISCUOUS,
    "domain": RoutingRule.IDENTITY,
    "rootDomain": RoutingRule.IDENTITY,
}
FIELDS: Final[FieldTypes] = {
    "status": str,
    "message": str,
    "routingRule": str,
    "priority": int,
    "filterByDistance": bool,
    "roundRobin": bool,
    "echo": bool,
    "promiscuous": bool,
    "lastSeen": str,
}


def check_presence(document: Any) -> dict[str, Any]:
    presence = check_fields(document, FIELDS, "presence")
    if "status" in presence and presence["status"] not in STATUSES:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"'status' must be one of {', '.join(STATUSES)}")
    if "routingRule" in presence and presence["routingRule"] not in RULES:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"'routingRule' must be one of {', '.join(RULES)}")
    return presence


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class RemotePresence(Protocol):
    """Presence of other domains' identities, asked of their servers
    (``core.federation_presence.PeerPresence``): they decide who may see it."""

    def serves(self, identity: str) -> bool: ...
    async def read(self, viewer: LiveSession, identity: str) -> dict[str, Any]: ...
    async def subscribe(self, viewer: LiveSession, identity: str) -> dict[str, Any]: ...
    def unsubscribed(self, viewer: str, identity: str) -> asyncio.Task[None]: ...


class PresenceService:
    def __init__(
        self,
        registry: SessionRegistry,
        authz: Authorizer,
        store: MessageStore,
        router: Router,
    ) -> None:
        self._registry = registry
        self._authz = authz
        self._store = store
        self._router = router
        self._subscribers: dict[str, set[LiveSession]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.directory: SessionDirectory | None = None
        """The sessions live on other nodes (``core.cluster``): an identity's presence
        merges them with this node's."""
        self.announce: Callable[[LiveSession], None] | None = None
        """Told when a live session's presence changed (the other nodes' subscribers)."""
        self.remote: RemotePresence | None = None
        """Other domains' identities (federation): asked of their servers."""
        self.on_changed: Callable[[str], None] | None = None
        """Told each identity whose presence changed (other servers' subscribers)."""

    def own(self, live: LiveSession) -> dict[str, Any]:
        return dict(live.presence)

    def of_identity(self, identity: str) -> dict[str, Any]:
        """The identity's presence: its best live session (on any node), with the list of
        instances."""
        live: dict[str, Any] = self._registry.live_of(identity)
        directory = self.directory
        if directory is not None:
            remote = directory.of_identity(identity)
            if remote:
                live = {**remote, **live}  # a session here is fresher than the news of it
        if not live:
            seen = [r.last_seen for r in self._registry.records_of(identity).values()]
            presence: dict[str, Any] = {"status": "unavailable"}
            if seen and max(seen) > 0:
                presence["lastSeen"] = _iso(max(seen))
            return presence
        shown = [s for s in live.values() if s.presence.get("status") != "invisible"]
        best = min(
            shown or list(live.values()),
            key=lambda s: STATUSES.index(s.presence.get("status", "available")),
        )
        presence = {k: v for k, v in best.presence.items() if k != "routingRule"}
        if best.presence.get("status") == "invisible":
            presence["status"] = "unavailable"
        presence["instances"] = sorted(live)
        return presence

    async def read(self, viewer: LiveSession, identity: str) -> dict[str, Any]:
        if identity == viewer.identity:
            return self.own(viewer)
        remote = self.remote
        if remote is not None and remote.serves(identity):
            return await remote.read(viewer, identity)
        await self._authz.check(viewer.identity, Resource.PRESENCE, Method.READ, identity)
        return self.of_identity(identity)

    async def update(self, live: LiveSession, document: Any, *, merge: bool) -> None:
        presence = check_presence(document)
        was_available = live.available
        live.presence = {**live.presence, **presence} if merge else presence
        live.presence.setdefault("status", "available")
        woke = live.available and not was_available
        if woke:
            live.replaying = True  # hold live deliveries until the backlog is out, in order
        rule = RULES[live.presence.get("routingRule", live.record.routing_rule.value)]
        if live.presence.get("promiscuous") is True:
            rule = RoutingRule.PROMISCUOUS
        live.presence["routingRule"] = live.presence.get("routingRule", rule.value)
        if rule is not live.record.routing_rule:
            live.record.routing_rule = rule
            await self._store.save_session(live.record)
            peers = self._router.peers
            if peers is not None:
                peers.record_changed(live.identity, live.instance)
        if woke:
            await self._router.replay(live)
        if self.announce is not None:
            self.announce(live)
        self.changed(live.identity)

    async def subscribe(self, live: LiveSession, identity: str) -> None:
        remote = self.remote
        if remote is not None and remote.serves(identity):
            presence = await remote.subscribe(live, identity)
            if self._registry.live(live.identity, live.instance) is not live:
                # the connection went while the other server answered: nobody to push to
                self._subscribers.setdefault(identity, set()).add(live)
                self.unsubscribe(live, identity)
                return
        else:
            await self._authz.check(live.identity, Resource.PRESENCE, Method.SUBSCRIBE, identity)
            presence = self.of_identity(identity)
        self._subscribers.setdefault(identity, set()).add(live)
        if live.subscriptions is None:
            live.subscriptions = set()
        live.subscriptions.add(identity)
        live.outlet.observe(identity, presence)

    def unsubscribe(self, live: LiveSession, identity: str) -> asyncio.Task[None] | None:
        """Stop pushing ``identity``'s presence to ``live``. When that was the last session of
        its identity following another domain's identity, that server is told: the task
        telling it (it never fails), for a caller that answers once it is done."""
        told = None
        subscribers = self._subscribers.get(identity)
        if subscribers is not None and live in subscribers:
            subscribers.discard(live)
            if not subscribers:
                del self._subscribers[identity]
            remote = self.remote
            if (
                remote is not None
                and remote.serves(identity)
                and not any(s.identity == live.identity for s in subscribers)
            ):
                told = remote.unsubscribed(live.identity, identity)
        if live.subscriptions is not None:
            live.subscriptions.discard(identity)
        return told

    def observed(self, viewer: str, identity: str, presence: dict[str, Any]) -> None:
        """``identity``'s server pushed its presence for ``viewer`` (it checked sharing):
        to ``viewer``'s sessions subscribed to it."""
        for subscriber in list(self._subscribers.get(identity, ())):
            if subscriber.identity == viewer:
                subscriber.outlet.observe(identity, presence)

    def followed(self) -> Iterator[tuple[str, str]]:
        """Each (subscriber identity, identity) some session here follows, once."""
        for identity, subscribers in list(self._subscribers.items()):
            for viewer in {s.identity for s in subscribers}:
                yield viewer, identity

    def forget(self, live: LiveSession) -> None:
        """The session is gone: drop its subscriptions and tell its own subscribers."""
        for identity in list(live.subscriptions or ()):
            self.unsubscribe(live, identity)
        self.changed(live.identity)

    def changed(self, identity: str) -> None:
        """Push the identity's presence to its subscribers (each still checked for sharing)."""
        if self.on_changed is not None:
            self.on_changed(identity)
        subscribers = self._subscribers.get(identity)
        if not subscribers:
            return
        presence = self.of_identity(identity)
        task = asyncio.get_running_loop().create_task(
            self._push(identity, presence, list(subscribers))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(
        self, identity: str, presence: dict[str, Any], subscribers: list[LiveSession]
    ) -> None:
        for subscriber in subscribers:
            if await self._authz.allows(
                subscriber.identity, Resource.PRESENCE, Method.READ, identity
            ):
                subscriber.outlet.observe(identity, presence)
