"""Who may do what: the one place every surface asks (LIME commands and messages, Feedme feed
opens, HTTP routes), so that a rule is written once and a new surface cannot forget one.

A rule answers for an actor (the identity a session signed in as, None for a client without
one), a resource kind, a method and the resource's owner. It raises ``Forbidden`` with the id
the edges translate (``forbidden``, ``not-shared``, ``not-delegated``, ``not-granted``).

What an owner granted another identity through consent (its feeds, presence, account) is asked
of a ``GrantChecker``; ``NoGrants`` (nobody granted anything) stands in where none is wired.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from enum import StrEnum
from typing import Final, Protocol

from .errors import ErrorId, Forbidden


class Resource(StrEnum):
    PRESENCE = "presence"
    ACCOUNT = "account"
    CONTACTS = "contacts"
    DELEGATIONS = "delegations"
    SESSIONS = "sessions"
    APPS = "apps"
    MESSAGES = "messages"
    """Envelopes sent with another identity's ``from``: on its behalf."""
    COMMANDS = "commands"
    FEEDS = "feeds"
    """Feeds an app defines or the server API publishes (not an identity's own)."""
    OWNER_FEEDS = "owner-feeds"
    """An identity's own feeds, ``~name/FEED``: its owner's, and whoever it granted them."""
    KEYS = "keys"
    """Published node info (the key directory): listed by those the owner accepts messages
    from."""
    KEY_OWNERS = "key-owners"
    """Who owns a key one already knows (``get /keys/{signId}``): any identity, since whoever
    received a sealed message must check the key that signed it, and a key id is learned only
    from a message it signed or a listing one was allowed."""
    SERVER_API = "server-api"
    """The HTTP routes that act as the server (publish, notify, read queues)."""


class Method(StrEnum):
    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    SUBSCRIBE = "subscribe"
    SEND = "send"


SERVER_MAY: Final = frozenset(
    {(Resource.SESSIONS, Method.READ), (Resource.SESSIONS, Method.DELETE)}
)
"""What the server (the api_token) may do on resources other than feeds: read and delete any
identity's sessions. It may not speak for an account (send its messages, acknowledge for its
sessions) nor look keys up as one (keys are shown to whom their owner accepts)."""

OWN_ONLY: Final = frozenset(
    {Resource.ACCOUNT, Resource.CONTACTS, Resource.DELEGATIONS, Resource.SESSIONS, Resource.APPS}
)
"""Resources only their owner's own sessions may read or change (a delegate included: a
delegation covers sending envelopes, not managing the account)."""

_ENVELOPE_TYPES: Final = {Resource.MESSAGES: "message", Resource.COMMANDS: "command"}

GRANT_LEVELS: Final = {
    Method.READ: "read",
    Method.SUBSCRIBE: "read",
    Method.WRITE: "contribute",
    Method.DELETE: "manage",
}
"""The grant level a method on an owner's feed needs (``read`` < ``contribute`` < ``manage``)."""


class GrantChecker(Protocol):
    """What owners granted others: the consent service's ``core.grants.Grants`` (wired), or
    a stand-in.

    ``resource`` is ``feed:NAME``, ``presence``, ``account`` or ``messages``; ``level`` is
    ``read``, ``contribute`` or ``manage``. ``listen`` calls back with ``(owner, requester)``
    after any change to what ``owner`` granted ``requester``; it returns the unsubscribe."""

    async def allows(self, actor: str, owner: str, resource: str, level: str) -> bool: ...

    def listen(self, callback: Callable[[str, str], None]) -> Callable[[], None]: ...


class NoGrants:
    """Nobody granted anything: every owner's resources are its own (and the rules' other
    exceptions: contacts, delegations)."""

    async def allows(self, actor: str, owner: str, resource: str, level: str) -> bool:
        return False

    def listen(self, callback: Callable[[str, str], None]) -> Callable[[], None]:
        return lambda: None


class Roster(Protocol):
    """What the rules need to know about contacts and delegations."""

    async def shares_presence_with(self, owner: str, viewer: str) -> bool: ...
    async def is_delegate(self, owner: str, delegate: str, envelope_type: str) -> bool: ...


class Acceptance(Protocol):
    """Whom an identity accepts messages from (``core.trust.TrustCircles``)."""

    async def accepts(self, sender: str, recipient: str) -> bool: ...


class Authorizer:
    def __init__(
        self,
        roster: Roster,
        trust: Acceptance,
        api_token: str | None = None,
        grants: GrantChecker | None = None,
        admin_token: str | None = None,
    ) -> None:
        self._roster = roster
        self._trust = trust
        self._api_token = api_token.encode() if api_token else None
        self._admin_token = admin_token.encode() if admin_token else None
        self.grants: GrantChecker = grants if grants is not None else NoGrants()

    async def check(
        self,
        actor: str | None,
        resource: Resource,
        method: Method,
        owner: str | None = None,
        *,
        public: bool = False,
        feed: str | None = None,
        server: bool = False,
    ) -> None:
        """Raise ``Forbidden`` unless ``actor`` may ``method`` the ``owner``'s ``resource``
        (``feed``: the feed's name without ``~owner/``, for ``OWNER_FEEDS``; ``server``: the
        caller presented the api_token, see ``is_server``, and acts as the server, which keeps
        every owner's feeds and may read and publish them all, and ``SERVER_MAY``)."""
        if resource is Resource.OWNER_FEEDS:
            if not server:
                await self._owner_feed(actor, method, owner, feed)
            return
        if server:
            if (resource, method) in SERVER_MAY:
                return
            raise Forbidden(
                ErrorId.FORBIDDEN,
                f"The api_token acts as the server, which may not {method} {resource} as an "
                "account: use the account's API key",
            )
        if resource is Resource.FEEDS:
            if not public and actor is None:
                raise Forbidden(ErrorId.FORBIDDEN, "This feed needs an identity (token)")
            return
        if resource is Resource.SERVER_API:
            raise Forbidden(ErrorId.FORBIDDEN, "The server API takes a bearer token: use bearer()")
        if actor is None:
            raise Forbidden(ErrorId.FORBIDDEN, f"The {resource} resource needs an identity")
        if owner is None or owner == actor:
            return
        if resource is Resource.KEY_OWNERS and method is Method.READ:
            return
        if (
            resource is Resource.ACCOUNT
            and method is Method.READ
            and await self.grants.allows(actor, owner, "account", "read")
        ):
            return
        if resource in OWN_ONLY:
            raise Forbidden(ErrorId.FORBIDDEN, f"Only {owner} may use its {resource}")
        if resource is Resource.PRESENCE:
            if method is Method.READ or method is Method.SUBSCRIBE:
                if await self._roster.shares_presence_with(owner, actor):
                    return
                if await self.grants.allows(actor, owner, "presence", "read"):
                    return
                raise Forbidden(
                    ErrorId.NOT_SHARED,
                    f"{owner} does not share its presence with {actor} (not in its contacts, "
                    "or sharePresence is false, and no presence grant)",
                )
            raise Forbidden(ErrorId.FORBIDDEN, f"Only {owner} may change its presence")
        if resource is Resource.KEYS:
            if method is Method.READ or method is Method.SUBSCRIBE:
                if await self._trust.accepts(actor, owner):
                    return
                raise Forbidden(
                    ErrorId.NOT_SHARED,
                    f"{owner} accepts messages (and key lookups) only from its contacts",
                )
            raise Forbidden(ErrorId.FORBIDDEN, f"Only {owner} may publish or revoke its keys")
        envelope_type = _ENVELOPE_TYPES.get(resource)
        if envelope_type is not None and method is Method.SEND:
            if await self._roster.is_delegate(owner, actor, envelope_type):
                return
            raise Forbidden(
                ErrorId.NOT_DELEGATED,
                f"{actor} has no delegation from {owner} to send {envelope_type}s on its behalf",
            )
        raise Forbidden(ErrorId.FORBIDDEN, f"{actor} may not {method} the {resource} of {owner}")

    async def _owner_feed(
        self, actor: str | None, method: Method, owner: str | None, feed: str | None
    ) -> None:
        if owner is None or feed is None:
            raise Forbidden(ErrorId.FORBIDDEN, "An owner's feed needs its owner and its name")
        if actor is None:
            raise Forbidden(ErrorId.FORBIDDEN, f"The feeds of {owner} need an identity (token)")
        if actor == owner:
            return
        level = GRANT_LEVELS.get(method)
        if level is not None and await self.grants.allows(actor, owner, f"feed:{feed}", level):
            return
        raise Forbidden(
            ErrorId.NOT_GRANTED,
            f"{owner} has not granted {actor} {level or method} access to its feed {feed!r}",
        )

    async def allows(
        self,
        actor: str | None,
        resource: Resource,
        method: Method,
        owner: str | None = None,
        *,
        feed: str | None = None,
    ) -> bool:
        """``check`` as a yes or no, for filtering (whose presence pushes go where, which open
        feeds stay open)."""
        try:
            await self.check(actor, resource, method, owner, feed=feed)
        except Forbidden:
            return False
        return True

    def is_server(self, authorization: str | None) -> bool:
        """Whether ``authorization`` is ``Bearer <api_token>`` (constant time); False while
        no api_token is set."""
        return _presents(authorization, self._api_token)

    def is_admin(self, authorization: str | None) -> bool:
        """Whether ``authorization`` is ``Bearer <admin_token>`` (constant time); False while
        no admin_token is set."""
        return _presents(authorization, self._admin_token)

    @property
    def admin_enabled(self) -> bool:
        """Whether an admin_token is set (the admin routes refuse everyone while not)."""
        return self._admin_token is not None

    def bearer(self, authorization: str | None) -> None:
        """The HTTP routes that act as the server: ``Authorization: Bearer <api_token>``,
        compared in constant time (a timing difference must not spell the token out)."""
        if self._api_token is None:
            raise Forbidden(ErrorId.FORBIDDEN, "Set api_token to enable the HTTP write routes")
        if self.is_admin(authorization):
            raise Forbidden(
                ErrorId.FORBIDDEN,
                "The admin_token is for admin routes: these take the api_token",
            )
        if not self.is_server(authorization):
            raise Forbidden(ErrorId.FORBIDDEN, "A valid 'Authorization: Bearer <api_token>'")


def _presents(authorization: str | None, token: bytes | None) -> bool:
    """Whether ``authorization`` is ``Bearer <token>``, compared in constant time."""
    if token is None:
        return False
    return hmac.compare_digest((authorization or "").encode(), b"Bearer " + token)
