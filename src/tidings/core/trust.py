"""Trust scopes: how close a message's sender is to its recipient, and whom a recipient accepts.

mm-platform computes a scope for every received message from two circles of keys: the
recipient's own devices (``self``) and its friends (``friends``), everyone else ``public``
(reference 2.5, devices first). Tidings keeps the circles on the server, per identity: another
instance of the same identity is ``self``; an identity in the recipient's contacts that is not
pending is ``friends``, provided it is an account: a guest may use any name that is not an
account's (one never created, or one removed since), so a guest using a name in the contacts
is ``public``. The recipient's account decides whether ``public`` senders may reach it
at all (``allowUnknownSender``), and the same rule decides who may look up its keys.

Circles are cached per identity because the router asks on every delivery; whoever changes a
contact or an account calls ``forget`` (one process: several nodes share changes through the
broker, issue 11).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from .consent_model import Level
from .grants import covers
from .ports import AccountStore, ConsentStore, RosterStore

MESSAGES: Final = "messages"
"""The consent resource that lets a requester write to an accepter who refuses strangers."""

DEFAULT_CAPACITY: Final = 100_000
NOBODY: Final[frozenset[str]] = frozenset()
"""The one empty set a circle holds: each ``frozenset()`` is a new 216-byte object, and most
circles (every guest's) are empty (issue 15: memory per connection)."""


class Scope(StrEnum):
    SELF = "self"
    FRIENDS = "friends"
    PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class Circle:
    """What an identity trusts: its accepted contacts, whether strangers may write, and whom
    it granted ``messages`` through consent (they may write; their scope stays ``public``)."""

    friends: frozenset[str] = NOBODY
    allow_unknown: bool = True
    granted: frozenset[str] = NOBODY
    granted_until: float | None = None
    """The soonest ``expires_at`` of the relationships behind ``granted``: from then on the
    circle is stale (``TrustCircles`` loads it again), even before the expiry sweep runs."""

    def accepts(self, sender: str) -> bool:
        """May ``sender`` (another identity) write to the circle's owner?"""
        return self.allow_unknown or sender in self.friends or sender in self.granted


def scope_of(sender: str, recipient: str, circle: Circle) -> Scope:
    """The scope of a message from identity ``sender`` to identity ``recipient``."""
    if sender == recipient:
        return Scope.SELF
    if sender in circle.friends:
        return Scope.FRIENDS
    return Scope.PUBLIC


class TrustCircles:
    """The circles of identities, loaded from the roster and account stores on first use."""

    def __init__(
        self,
        roster: RosterStore,
        accounts: AccountStore,
        *,
        capacity: int = DEFAULT_CAPACITY,
        consent: ConsentStore | None = None,
        clock: Callable[[], float] = time.time,
        federated: Callable[[str], bool] = lambda domain: False,
    ) -> None:
        """``federated(domain)``: whether ``domain`` is a federation peer's, whose server
        vouches for its senders (it relays no guest's message)."""
        self._roster = roster
        self._federated = federated
        self._clock = clock
        self._accounts = accounts
        self._consent = consent
        self._capacity = capacity
        self._circles: dict[str, Circle] = {}
        self._generation = 0
        """Bumped by ``forget``: a load that started before a change does not cache its
        (possibly stale) answer."""

    def cached(self, identity: str) -> Circle | None:
        """The circle if it is loaded and current (None once a grant in it expired)."""
        found = self._circles.get(identity)
        if (
            found is not None
            and found.granted_until is not None
            and self._clock() >= found.granted_until
        ):
            return None
        return found

    async def circle(self, identity: str) -> Circle:
        found = self.cached(identity)
        if found is not None:
            return found
        generation = self._generation
        loaded = await self._load(identity)
        if self._generation == generation:
            self._remember(identity, loaded)
        return loaded

    def scope(self, sender: str, recipient: str) -> Scope | None:
        """The scope now, or None when the recipient's circle is not loaded (``circle`` it)."""
        if sender == recipient:
            return Scope.SELF
        circle = self._circles.get(recipient)
        return None if circle is None else scope_of(sender, recipient, circle)

    async def accepts(self, sender: str, recipient: str) -> bool:
        """May identity ``sender`` write to (and look up the keys of) identity ``recipient``?"""
        if sender == recipient:
            return True
        return (await self.circle(recipient)).accepts(sender)

    def forget(self, identity: str) -> None:
        """The identity's contacts or account changed: read them again next time."""
        self._circles.pop(identity, None)
        self._generation += 1

    def forget_all(self) -> None:
        """An account was created or removed: whether a contact is an account changed for
        every circle that lists it."""
        self._circles.clear()
        self._generation += 1

    async def _load(self, identity: str) -> Circle:
        name, _, _domain = identity.partition("@")
        account = await self._accounts.get_account(name)
        allow_unknown = True if account is None else account.profile.get("allowUnknownSender")
        friends = (
            frozenset(
                [
                    contact["identity"]
                    for contact in await self._roster.contacts(identity)
                    if not contact.get("isPending", False)
                    and await self._is_account(contact["identity"], _domain)
                ]
            )
            or NOBODY
        )
        granted, until = await self._granted(identity)
        return Circle(friends, allow_unknown is not False, granted, until)

    async def _granted(self, identity: str) -> tuple[frozenset[str], float | None]:
        """Who ``identity`` granted ``messages`` (contribute) in a relationship active now,
        and the soonest expiry among those relationships."""
        if self._consent is None:
            return NOBODY, None
        wanted = Level.CONTRIBUTE
        now = self._clock()
        granting = [
            relationship
            for relationship in await self._consent.consent_relationships_of(identity)
            if relationship.accepter == identity
            and relationship.active_at(now)
            and any(covers(p, MESSAGES, wanted) for p in relationship.permissions)
        ]
        expiries = [r.expires_at for r in granting if r.expires_at is not None]
        return frozenset(r.requester for r in granting) or NOBODY, min(expiries, default=None)

    async def _is_account(self, identity: str, domain: str) -> bool:
        """A contact is a friend only as an account of this server (a guest can take any other
        name), or as an identity of a federation peer (whose server relays no guest)."""
        name, _, contact_domain = identity.partition("@")
        if contact_domain != domain:
            return self._federated(contact_domain)
        return await self._accounts.has_account(name)

    def _remember(self, identity: str, circle: Circle) -> None:
        circles = self._circles
        if len(circles) >= self._capacity:
            del circles[next(iter(circles))]  # the oldest loaded; it loads again when asked
        circles[identity] = circle
