"""Presence across servers (issue 13): both sides of ``lime://bob@beta.test/presence``.

The owner's server decides, with its own rules: ``PresenceExports`` answers other domains'
servers' ``presence.get`` / ``presence.subscribe`` / ``presence.unsubscribe`` queries after
``Authorizer.check`` (contacts sharing presence, or a consent grant), keeps each remote
subscriber in memory (``RemoteSubscribers``, bounded: a peer must not grow it without end), and
pushes each change to them as an ``observe`` from its server node through the peer's outbox
(durable, in order), checking again at each push as local pushes do.

The subscriber's server (``PeerPresence``) only relays: it asks the owner's server, keeps its
own session subscribed in ``PresenceService`` and hands the pushes that come back to it.

Remote subscriptions live in the owner's server's memory: a restart loses them. The owner's
server says hello when it starts, and the subscriber's server then subscribes again for every
identity of that domain its sessions still follow (``resubscribe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from .address import parse_address
from .authz import Authorizer, Method, Resource
from .errors import ErrorId, Forbidden, Invalid, LimitExceeded, TidingsError
from .session_registry import LiveSession

__all__ = [
    "MAX_PER_SUBSCRIBER",
    "MAX_TOTAL",
    "PeerPresence",
    "PresenceExports",
    "RemoteSubscribers",
    "check_actor",
]

log = logging.getLogger("tidings.federation")
ObserveEncoder = Callable[[str, str, dict[str, Any]], bytes]
"""(owner identity, remote subscriber identity, presence) -> the ``observe`` envelope pushed
(``gateway.federation.presence_observe``: the core speaks no LIME)."""
MAX_PER_SUBSCRIBER: Final = 100
"""Identities here one identity of another domain may follow."""
MAX_TOTAL: Final = 100_000
"""Remote subscriptions this server keeps, all peers together."""


def check_actor(origin: str, body: dict[str, Any], domain: str) -> tuple[str, str]:
    """The (actor, identity) of a query: the actor an identity of ``origin`` (a server speaks
    only for its own users), the identity one of this ``domain``'s."""
    actor, identity = body.get("actor"), body.get("identity")
    if not isinstance(actor, str) or not isinstance(identity, str):
        raise Invalid(ErrorId.INVALID_ARGUMENT, "A query names its 'actor' and 'identity'")
    actor_address = parse_address(actor)
    if actor_address.instance is not None or actor_address.domain != origin:
        raise Forbidden(
            ErrorId.FORBIDDEN, f"{origin} may ask only for identities of {origin}, not {actor}"
        )
    owner = parse_address(identity)
    if owner.instance is not None or owner.domain != domain:
        raise Invalid(ErrorId.INVALID_ADDRESS, f"{identity} is no identity of {domain}")
    return actor_address.identity, owner.identity


PUSH_TTL_S: Final = 300.0
"""How long a presence push may wait for the subscriber's server."""


class RemoteSubscribers:
    """Which identities of other domains follow which identities here, in memory, bounded:
    ``per_subscriber`` identities per remote subscriber, ``total`` pairs in all."""

    def __init__(self, per_subscriber: int = MAX_PER_SUBSCRIBER, total: int = MAX_TOTAL) -> None:
        self.per_subscriber = per_subscriber
        self.total = total
        self._of: dict[str, set[str]] = {}
        """Owner identity here -> remote subscriber identities."""
        self._follows: dict[str, set[str]] = {}
        """Remote subscriber -> owners here it follows."""
        self._count = 0

    def add(self, owner: str, subscriber: str) -> None:
        """Remember ``subscriber`` follows ``owner`` (again: no change); ``LimitExceeded``
        when a bound is reached."""
        follows = self._follows.get(subscriber, set())
        if owner in follows:
            return
        if len(follows) >= self.per_subscriber:
            raise LimitExceeded(
                ErrorId.SESSION_LIMIT,
                f"{subscriber} follows {len(follows)} identities here, the most it may",
            )
        if self._count >= self.total:
            raise LimitExceeded(
                ErrorId.SESSION_LIMIT, "This server follows no more presence for other servers"
            )
        self._follows.setdefault(subscriber, set()).add(owner)
        self._of.setdefault(owner, set()).add(subscriber)
        self._count += 1

    def remove(self, owner: str, subscriber: str) -> None:
        follows = self._follows.get(subscriber)
        if follows is None or owner not in follows:
            return
        follows.discard(owner)
        if not follows:
            del self._follows[subscriber]
        subscribers = self._of[owner]
        subscribers.discard(subscriber)
        if not subscribers:
            del self._of[owner]
        self._count -= 1

    def of(self, owner: str) -> list[str]:
        """The remote subscribers of ``owner``, sorted (a stable push order)."""
        return sorted(self._of.get(owner, ()))

    def follows(self, subscriber: str) -> set[str]:
        return set(self._follows.get(subscriber, ()))

    def __len__(self) -> int:
        return self._count


class PresenceOf(Protocol):
    """``PresenceService`` as the exports read it."""

    def of_identity(self, identity: str) -> dict[str, Any]: ...


class Relay(Protocol):
    """``Federation`` as presence uses it."""

    def relay(self, to: Any, payload: bytes, expires_at: float | None = None) -> None: ...

    async def ask(self, domain: str, kind: str, actor: str, **fields: Any) -> Any: ...


class PresenceExports:
    """The owner's side: answers peers' presence queries and pushes changes to them."""

    def __init__(
        self,
        domain: str,
        encode: ObserveEncoder,
        presence: PresenceOf,
        authz: Authorizer,
        federation: Relay,
        subscribers: RemoteSubscribers | None = None,
    ) -> None:
        self._domain = domain
        self._encode = encode
        self._presence = presence
        self._authz = authz
        self._federation = federation
        self.subscribers = subscribers if subscribers is not None else RemoteSubscribers()
        self._tasks: set[asyncio.Task[None]] = set()

    def queries(self) -> dict[str, Callable[[str, dict[str, Any]], Any]]:
        """The query handlers, by kind (``FederationEndpoint.queries``)."""
        return {
            "presence.get": self.get,
            "presence.subscribe": self.subscribe,
            "presence.unsubscribe": self.unsubscribe,
        }

    async def get(self, origin: str, body: dict[str, Any]) -> dict[str, Any]:
        actor, owner = check_actor(origin, body, self._domain)
        await self._authz.check(actor, Resource.PRESENCE, Method.READ, owner)
        return self._presence.of_identity(owner)

    async def subscribe(self, origin: str, body: dict[str, Any]) -> dict[str, Any]:
        """Remember the subscriber; the owner's presence now (the subscriber's first
        ``observe``)."""
        actor, owner = check_actor(origin, body, self._domain)
        await self._authz.check(actor, Resource.PRESENCE, Method.SUBSCRIBE, owner)
        self.subscribers.add(owner, actor)
        return self._presence.of_identity(owner)

    async def unsubscribe(self, origin: str, body: dict[str, Any]) -> None:
        actor, owner = check_actor(origin, body, self._domain)
        self.subscribers.remove(owner, actor)

    def changed(self, identity: str) -> None:
        """``identity``'s presence changed: push it to its remote subscribers."""
        subscribers = self.subscribers.of(identity)
        if not subscribers:
            return
        task = asyncio.get_running_loop().create_task(self._push(identity, subscribers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel what is under way (the server stops; the client it uses closes next)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _push(self, identity: str, subscribers: list[str]) -> None:
        try:
            await self._push_to(identity, subscribers)
        except Exception:  # a store failure in a check: these pushes are lost, not the next
            log.exception("pushing the presence of %s to other servers failed", identity)

    async def _push_to(self, identity: str, subscribers: list[str]) -> None:
        for subscriber in subscribers:
            if not await self._authz.allows(subscriber, Resource.PRESENCE, Method.READ, identity):
                continue
            # read now, not when the change was seen: of pushes racing through the checks,
            # the one queued last carries the latest presence
            presence = self._presence.of_identity(identity)
            to = parse_address(subscriber)
            # a presence is stale soon: one that waited long for a peer is not worth sending
            # (and must not fill the outbox others' messages need)
            expires_at = time.time() + PUSH_TTL_S
            self._federation.relay(to, self._encode(identity, subscriber, presence), expires_at)


class PeerPresence:
    """The subscriber's side: asks the owner's server (``PresenceService.remote``)."""

    def __init__(self, domain: str, federation: Relay) -> None:
        self._domain = domain
        self._federation = federation
        self._tasks: set[asyncio.Task[None]] = set()

    def serves(self, identity: str) -> bool:
        """Whether ``identity`` is another domain's (asked of its server)."""
        return identity.rpartition("@")[2] != self._domain

    async def read(self, viewer: LiveSession, identity: str) -> dict[str, Any]:
        return await self._ask(viewer, "presence.get", identity)

    async def subscribe(self, viewer: LiveSession, identity: str) -> dict[str, Any]:
        """Subscribe ``viewer``'s identity at the owner's server; its presence now."""
        return await self._ask(viewer, "presence.subscribe", identity)

    def unsubscribed(self, viewer: str, identity: str) -> asyncio.Task[None]:
        """No session of ``viewer`` follows ``identity`` any more: tell its server (best
        effort: a lost one costs the owner's server pushes we drop)."""
        return self._spawn(self._tell(viewer, "presence.unsubscribe", identity))

    def resubscribe(
        self,
        domain: str,
        followed: Iterable[tuple[str, str]],
        observed: Callable[[str, str, dict[str, Any]], None],
    ) -> None:
        """``domain``'s server said hello (it may have restarted, losing its subscribers):
        subscribe again each (viewer, identity) of that domain, its answer handed to
        ``observed`` (``PresenceService.observed``: what changed while it was away)."""
        for viewer, identity in followed:
            if identity.rpartition("@")[2] == domain:
                self._spawn(self._again(viewer, identity, observed))

    async def _again(
        self, viewer: str, identity: str, observed: Callable[[str, str, dict[str, Any]], None]
    ) -> None:
        try:
            answer = await self._federation.ask(
                parse_address(identity).domain, "presence.subscribe", viewer, identity=identity
            )
        except TidingsError as error:
            log.info("%s no longer follows %s: %s", viewer, identity, error.message)
            return
        if isinstance(answer, dict):
            observed(viewer, identity, answer)

    async def _ask(self, viewer: LiveSession, kind: str, identity: str) -> dict[str, Any]:
        if viewer.guest:
            raise Forbidden(
                ErrorId.FORBIDDEN, "Guests see only this server's identities, not other domains'"
            )
        domain = parse_address(identity).domain
        answer = await self._federation.ask(domain, kind, viewer.identity, identity=identity)
        if not isinstance(answer, dict):
            raise TidingsError(ErrorId.PEER_REFUSED, f"{domain} answered no presence document")
        return answer

    async def _tell(self, viewer: str, kind: str, identity: str) -> None:
        with contextlib.suppress(TidingsError):
            await self._federation.ask(
                parse_address(identity).domain, kind, viewer, identity=identity
            )

    async def stop(self) -> None:
        """Cancel what is under way (the server stops; the client it uses closes next)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
