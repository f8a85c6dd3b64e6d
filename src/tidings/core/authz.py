"""Who may do what: the one place every surface asks (LIME commands and messages, Feedme feed
opens, HTTP routes), so that a rule is written once and a new surface cannot forget one.

A rule answers for an actor (the identity a session signed in as, None for a client without
one), a resource kind, a method and the resource's owner. It raises ``Forbidden`` with the id
the edges translate (``forbidden``, ``not-shared``, ``not-delegated``).
"""

from __future__ import annotations

import hmac
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


OWN_ONLY: Final = frozenset(
    {Resource.ACCOUNT, Resource.CONTACTS, Resource.DELEGATIONS, Resource.SESSIONS, Resource.APPS}
)
"""Resources only their owner's own sessions may read or change (a delegate included: a
delegation covers sending envelopes, not managing the account)."""

_ENVELOPE_TYPES: Final = {Resource.MESSAGES: "message", Resource.COMMANDS: "command"}


class Roster(Protocol):
    """What the rules need to know about contacts and delegations."""

    async def shares_presence_with(self, owner: str, viewer: str) -> bool: ...
    async def is_delegate(self, owner: str, delegate: str, envelope_type: str) -> bool: ...


class Acceptance(Protocol):
    """Whom an identity accepts messages from (``core.trust.TrustCircles``)."""

    async def accepts(self, sender: str, recipient: str) -> bool: ...


class Authorizer:
    def __init__(self, roster: Roster, trust: Acceptance, api_token: str | None = None) -> None:
        self._roster = roster
        self._trust = trust
        self._api_token = api_token.encode() if api_token else None

    async def check(
        self,
        actor: str | None,
        resource: Resource,
        method: Method,
        owner: str | None = None,
        *,
        public: bool = False,
    ) -> None:
        """Raise ``Forbidden`` unless ``actor`` may ``method`` the ``owner``'s ``resource``."""
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
        if resource in OWN_ONLY:
            raise Forbidden(ErrorId.FORBIDDEN, f"Only {owner} may use its {resource}")
        if resource is Resource.PRESENCE:
            if method is Method.READ or method is Method.SUBSCRIBE:
                if await self._roster.shares_presence_with(owner, actor):
                    return
                raise Forbidden(
                    ErrorId.NOT_SHARED,
                    f"{owner} does not share its presence with {actor} (not in its contacts, "
                    "or sharePresence is false)",
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

    async def allows(
        self, actor: str | None, resource: Resource, method: Method, owner: str | None = None
    ) -> bool:
        """``check`` as a yes or no, for filtering (whose presence pushes go where)."""
        try:
            await self.check(actor, resource, method, owner)
        except Forbidden:
            return False
        return True

    def bearer(self, authorization: str | None) -> None:
        """The HTTP routes that act as the server: ``Authorization: Bearer <api_token>``,
        compared in constant time (a timing difference must not spell the token out)."""
        if self._api_token is None:
            raise Forbidden(ErrorId.FORBIDDEN, "Set api_token to enable the HTTP write routes")
        presented = (authorization or "").encode()
        if not hmac.compare_digest(presented, b"Bearer " + self._api_token):
            raise Forbidden(ErrorId.FORBIDDEN, "A valid 'Authorization: Bearer <api_token>'")
