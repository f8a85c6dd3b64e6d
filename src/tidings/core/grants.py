"""Data grants: what an identity may do with another identity's resources, from consent.

An active relationship grants its requester (the actor) the permissions its accepter (the
owner) agreed to (``core.consent``). Every surface asks ``allows`` (through ``core.authz``):
Feedme opens and HTTP reads of ``~owner/NAME`` feeds (``feed:NAME``), presence subscriptions
(``presence``), account reads (``account``) and messages when the owner does not accept unknown
senders (``messages``). Whoever keeps something open on the strength of a grant (an open feed,
a presence subscription) ``listen``s and checks again when a grant of that pair changes.

A relationship with an ``expires_at`` grants nothing from that instant on: every answer checks
the clock, so an expiry is in force before the expiry sweep (``ConsentService.expire_due``)
records it; the sweep then calls ``changed``, which is what tells the listeners.

Resources are ``feed:<name>`` (a permission's ``feed:<pattern>`` matches with ``*`` wildcards,
case-sensitive), ``presence``, ``account`` and ``messages``; levels are ordered
``read`` < ``contribute`` < ``manage``, and a permission allows its level and those below.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Final

from .consent_model import Level, Permission, Relationship, RelationshipState
from .errors import ErrorId, Invalid
from .ports import ConsentStore

__all__ = ["FEED_PREFIX", "GrantListener", "Grants", "covers"]

log = logging.getLogger("tidings.consent")

FEED_PREFIX: Final = "feed:"
DEFAULT_CAPACITY: Final = 100_000

GrantListener = Callable[[str, str], None]
"""Called with (owner, requester) after a grant between them changed."""

_Loaded = tuple[tuple[float | None, tuple[Permission, ...]], ...]
"""What a pair's relationships grant, each with its expiry (None: none)."""


def covers(permission: Permission, resource: str, level: Level) -> bool:
    """Whether ``permission`` allows ``level`` on the concrete ``resource``."""
    if permission.level.rank < level.rank:
        return False
    if permission.resource == resource:
        return True
    if permission.resource.startswith(FEED_PREFIX) and resource.startswith(FEED_PREFIX):
        return fnmatchcase(resource[len(FEED_PREFIX) :], permission.resource[len(FEED_PREFIX) :])
    return False


class Grants:
    """Answers from the store's active relationships, cached per (actor, owner) pair until
    ``changed`` (called by ``ConsentService`` after each commit that changes a grant)."""

    def __init__(
        self,
        store: ConsentStore,
        *,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._capacity = capacity
        self._clock = clock
        self._cache: dict[tuple[str, str], _Loaded] = {}
        self._generation = 0
        """Bumped by ``changed``: a load that began before a change does not cache."""
        self._listeners: dict[int, GrantListener] = {}
        self._next_listener = 0

    async def allows(self, actor: str, owner: str, resource: str, level: Level | str) -> bool:
        """May ``actor`` use ``owner``'s ``resource`` at ``level``? The owner always may.
        Raises ``Invalid`` for a level that is not one."""
        try:
            wanted = Level(level)
        except ValueError:
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"{level!r} is not a level") from None
        if actor == owner:
            return True
        permissions = await self.permissions(actor, owner)
        return any(covers(p, resource, wanted) for p in permissions)

    async def permissions(self, actor: str, owner: str) -> tuple[Permission, ...]:
        """Everything ``owner`` grants ``actor`` through its relationships active now (an
        expired one grants nothing, swept or not)."""
        key = (actor, owner)
        found = self._cache.get(key)
        if found is None:
            generation = self._generation
            relationships = await self._store.consent_relationships_between(actor, owner)
            found = _loaded(relationships)
            if self._generation == generation:
                if len(self._cache) >= self._capacity:
                    self._cache.clear()
                self._cache[key] = found
        if not found:
            return ()
        now = self._clock()
        return tuple(
            p
            for expires_at, granted in found
            if expires_at is None or now < expires_at
            for p in granted
        )

    def listen(self, callback: GrantListener) -> Callable[[], None]:
        """Call ``callback(owner, requester)`` after each grant change; returns the function
        that stops it."""
        token = self._next_listener
        self._next_listener += 1
        self._listeners[token] = callback

        def stop() -> None:
            self._listeners.pop(token, None)

        return stop

    def changed(self, owner: str, requester: str) -> None:
        """A grant of ``owner`` to ``requester`` changed (committed): forget, then tell."""
        self._cache.pop((requester, owner), None)
        self._generation += 1
        for listener in list(self._listeners.values()):
            try:
                listener(owner, requester)
            except Exception:
                log.exception("a grant listener failed")


def _loaded(relationships: list[Relationship]) -> _Loaded:
    return tuple(
        (r.expires_at, r.permissions) for r in relationships if r.state is RelationshipState.ACTIVE
    )
