"""Consent between two identities: invites, capability links, relationships, scope requests,
chat, system alerts and a per-identity inbox (issue 10; reference section 1, Pryv CMC).

The requester creates an invite and gets a capability token (256 random bits, kept only as its
SHA-256). Whoever holds the token reads the offer and, signed in, accepts or refuses it: the
accepter is always the authenticated identity (D12). Accepting creates a relationship that
grants the requester the permissions the accepter agreed to (``core.grants``), carries chat and
system alerts when the offer enabled them (features come from the offer, D15), and lasts until
either side revokes it, which ends it for both (D4), or until the ``grantExpiresAt`` its invite
set, if any (then it is ``expired``).

Every operation is one store transaction (``ConsentStore.transact``): its checks, its writes
and the inbox events of each side it concerns commit together or not at all. A single-use
accept flips the invite with a conditional update (``status = pending``) inside the transaction
that creates the relationship, so of concurrent accepts exactly one wins and the others get
``cmc-capability-consumed`` (D5). After the commit, and only then, live inbox subscribers are
called and ``Grants`` is told when a grant changed.

State machines (the ``status`` / ``state`` kept; an invite's ``expired`` is derived from the
clock, a relationship's is derived until the expiry sweep records it):

    invite, single-use:  pending -accept-> accepted | pending -refuse-> refused
                         pending -invalidate-> invalidated     (others: no change, idempotent)
    invite, open-link:   pending -accept (each identity once)-> pending  (+ accepted_by)
                         pending -refuse-> pending (+ refused_by)
                         pending -invalidate-> invalidated
    relationship:        active -revoke (either side)-> revoked     (revoked: idempotent)
                         active -expires_at reached (the sweep)-> expired
                         (revoking an expired one returns it unchanged)
    scope request:       pending -accept (accepter; applies the permissions, D8)-> accepted
                         pending -refuse (accepter)-> refused

A refusal reaches the requester's inbox (D6). Errors are permanent (D14): each has one id.

Expiry is in force at ``expires_at`` on every answer: ``Grants`` and the trust circles check the
clock, and chat, alerts, acks and scope requests on an expired relationship get
``cmc-relationship-expired``. ``expire_forever`` (a task of the server) records each expiry as
it comes: the state becomes ``expired``, both inboxes get ``relationship-expired``, and the
grant listeners are told, which ends feeds already open on the strength of the grant. Expiries
that fell while the server was down are recorded when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Generic, Protocol, TypeVar
from uuid import uuid4

from .consent_model import (
    Acceptance,
    Alert,
    AlertLevel,
    ChatMessage,
    InboxEvent,
    InboxKind,
    Invite,
    InviteMode,
    InviteStatus,
    Level,
    Permission,
    Refusal,
    Relationship,
    RelationshipState,
    ScopeRequest,
    ScopeState,
)
from .errors import Conflict, ErrorId, Forbidden, Invalid, NotFound, TidingsError, Unavailable
from .grants import FEED_PREFIX, Grants
from .ports import ConsentStore, ConsentTable, QueueTransaction, settling

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_CHAT_CHARS",
    "MAX_GRANT_TTL_S",
    "MAX_PERMISSIONS",
    "MAX_TTL_S",
    "MIN_TTL_S",
    "ConsentOutbound",
    "ConsentService",
    "InboxListener",
    "PendingAccept",
    "RemoteOffers",
    "SyncOp",
    "hash_token",
    "parse_features",
    "parse_language_map",
    "parse_permissions",
]

log = logging.getLogger("tidings.consent")

T = TypeVar("T")

DAY_S: Final = 86_400
MIN_TTL_S: Final = 60
MAX_TTL_S: Final = 30 * DAY_S
DEFAULT_TTL_S: Final = 7 * DAY_S
MAX_GRANT_TTL_S: Final = 365 * DAY_S
"""The furthest ahead an invite's ``grantExpiresAt`` may be."""
EXPIRY_BATCH: Final = 100
"""Relationships the expiry sweep reads at a time."""
EXPIRY_SLACK_S: Final = 0.005
"""Added to the wait for the next expiry: the loop's timer may fire a little early."""
MAX_EXPIRY_WAIT_S: Final = 60.0
"""The longest the expiry task sleeps without looking again (a safety net: it is woken when an
accept makes a relationship that expires)."""
MAX_PERMISSIONS: Final = 64
MAX_CHAT_CHARS: Final = 10_240
MAX_LANGUAGES: Final = 32
MAX_LANGUAGE_TEXT_BYTES: Final = 10 * 1024
MAX_DISPLAY_NAME: Final = 256
MAX_REASON: Final = 1024
MAX_ACK_ID: Final = 256
MAX_TOKEN: Final = 256
MAX_PAGE: Final = 1000
MAX_FEED_PATTERN: Final = 128

_APP_CODE: Final = re.compile(r"[a-z0-9-]{1,64}")
_LANGUAGE: Final = re.compile(r"[a-z]{2,3}")
_FEED_PATTERN: Final = re.compile(r"[A-Za-z0-9._*-]{1,128}")
_LEVELS_OF: Final[dict[str, frozenset[Level]]] = {
    "presence": frozenset({Level.READ}),
    "account": frozenset({Level.READ}),
    "messages": frozenset({Level.CONTRIBUTE}),
}
_PENDING: Final = "consent/accepting/"
"""State keys of accepts of other servers' invites this server's users asked for."""
_SYNC_IN: Final = "consent/sync-in/"
"""State keys of the last operation applied per relationship, from the other server."""
_RELATIONSHIP_ID: Final = re.compile(r"[0-9a-f]{32}")
_FEATURES: Final = frozenset({"chat", "system_messaging"})
_FEATURE_ALIASES: Final = {"systemMessaging": "system_messaging"}

InboxListener = Callable[[InboxEvent], None]


# -- validation (bounded inputs; only TidingsError ever escapes) ----------------------------


def _text(value: Any, what: str, error_id: ErrorId, *, low: int, high: int) -> str:
    """A string of ``low``..``high`` characters that UTF-8 can encode (no lone surrogates) and
    a store can hold (no NUL: PostgreSQL's text cannot, and SQLite's answer must be the same)."""
    if not isinstance(value, str):
        raise Invalid(error_id, f"{what} must be a string")
    if not low <= len(value) <= high:
        raise Invalid(error_id, f"{what} must be {low} to {high} characters")
    if "\x00" in value:
        raise Invalid(error_id, f"{what} may not contain NUL (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(error_id, f"{what} is not valid Unicode text") from None
    return value


def _optional_text(value: Any, what: str, error_id: ErrorId, *, high: int) -> str | None:
    return None if value is None else _text(value, what, error_id, low=0, high=high)


def parse_language_map(
    value: Any, what: str, error_id: ErrorId = ErrorId.INVALID_ARGUMENT
) -> dict[str, str]:
    """A language map: 1..32 keys of 2-3 lowercase letters, each text at most 10 KiB."""
    if not isinstance(value, dict):
        raise Invalid(error_id, f"{what} must be an object of language: text")
    if not 1 <= len(value) <= MAX_LANGUAGES:
        raise Invalid(error_id, f"{what} must have 1 to {MAX_LANGUAGES} languages")
    parsed: dict[str, str] = {}
    for language, text in value.items():
        if not isinstance(language, str) or _LANGUAGE.fullmatch(language) is None:
            raise Invalid(error_id, f"{what}: {language!r} is not a language code (en, fr, ...)")
        checked = _text(text, f"{what}.{language}", error_id, low=0, high=MAX_LANGUAGE_TEXT_BYTES)
        if len(checked.encode("utf-8")) > MAX_LANGUAGE_TEXT_BYTES:
            raise Invalid(error_id, f"{what}.{language} is over {MAX_LANGUAGE_TEXT_BYTES} bytes")
        parsed[language] = checked
    return parsed


def _permission(value: Any) -> Permission:
    invalid = ErrorId.OFFER_INVALID_PERMISSIONS
    if not isinstance(value, dict) or set(value) != {"resource", "level"}:
        raise Invalid(invalid, 'A permission is {"resource": ..., "level": ...}')
    resource, level = value["resource"], value["level"]
    if not isinstance(level, str) or level not in Level.__members__.values():
        raise Invalid(invalid, f"{level!r} is not a level (read, contribute, manage)")
    parsed = Level(level)
    if not isinstance(resource, str):
        raise Invalid(invalid, "A permission's resource must be a string")
    if resource.startswith(FEED_PREFIX):
        pattern = resource[len(FEED_PREFIX) :]
        if _FEED_PATTERN.fullmatch(pattern) is None:
            raise Invalid(
                invalid,
                f"{resource[:80]!r}: a feed pattern is 1 to {MAX_FEED_PATTERN} of A-Z a-z 0-9 "
                ". _ - and * (any characters)",
            )
        return Permission(resource, parsed)
    allowed = _LEVELS_OF.get(resource)
    if allowed is None:
        raise Invalid(
            invalid,
            f"{resource[:80]!r} is not a resource (feed:<pattern>, presence, account, messages)",
        )
    if parsed not in allowed:
        raise Invalid(invalid, f"{resource} takes the level {next(iter(allowed))}, not {level}")
    return Permission(resource, parsed)


def parse_permissions(value: Any) -> tuple[Permission, ...]:
    """A permission list: 1..64 distinct resources, each with a level it may take."""
    if not isinstance(value, list | tuple):
        raise Invalid(ErrorId.OFFER_INVALID_PERMISSIONS, "Permissions must be a list")
    if not value:
        raise Invalid(ErrorId.OFFER_EMPTY_PERMISSIONS, "At least one permission is needed")
    if len(value) > MAX_PERMISSIONS:
        raise Invalid(ErrorId.OFFER_INVALID_PERMISSIONS, f"At most {MAX_PERMISSIONS} permissions")
    parsed = tuple(item if isinstance(item, Permission) else _permission(item) for item in value)
    resources = [p.resource for p in parsed]
    if len(set(resources)) != len(resources):
        raise Invalid(ErrorId.OFFER_INVALID_PERMISSIONS, "A resource is named twice")
    return parsed


def parse_features(value: Any) -> dict[str, bool]:
    """``chat`` and ``system_messaging`` (or ``systemMessaging``), booleans, default true."""
    features = {"chat": True, "system_messaging": True}
    if value is None:
        return features
    if not isinstance(value, dict):
        raise Invalid(ErrorId.INVALID_ARGUMENT, "features must be an object")
    for key, flag in value.items():
        name = _FEATURE_ALIASES.get(key, key) if isinstance(key, str) else None
        if name not in _FEATURES:
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"{key!r} is not a feature")
        if not isinstance(flag, bool):
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"feature {key} must be true or false")
        features[name] = flag
    return features


def _mode(value: Any) -> InviteMode:
    if not isinstance(value, str) or value not in InviteMode.__members__.values():
        raise Invalid(ErrorId.INVALID_ARGUMENT, "mode must be single-use or open-link")
    return InviteMode(value)


def _expiry(value: Any, now: float) -> float:
    if value is None:
        return now + DEFAULT_TTL_S
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(ErrorId.INVALID_ARGUMENT, "expiresAt must be a number (Unix seconds)")
    ttl = float(value) - now
    if not (math.isfinite(ttl) and MIN_TTL_S <= ttl <= MAX_TTL_S):
        raise Invalid(
            ErrorId.CAPABILITY_TTL_OUT_OF_RANGE,
            f"expiresAt must be {MIN_TTL_S} s to {MAX_TTL_S} s (30 days) from now",
            {"minTtlSeconds": MIN_TTL_S, "maxTtlSeconds": MAX_TTL_S},
        )
    return float(value)


def _grant_expiry(value: Any, now: float) -> float | None:
    """``grantExpiresAt``: None (the relationship lasts until revoked) or Unix seconds after
    now and at most 365 days ahead (before or after the invite's own ``expiresAt``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(ErrorId.INVALID_ARGUMENT, "grantExpiresAt must be a number (Unix seconds)")
    ahead = float(value) - now
    if not (math.isfinite(ahead) and 0 < ahead <= MAX_GRANT_TTL_S):
        raise Invalid(
            ErrorId.GRANT_EXPIRY_OUT_OF_RANGE,
            f"grantExpiresAt must be in the future and at most {MAX_GRANT_TTL_S} s (365 days)"
            " from now",
            {"maxGrantTtlSeconds": MAX_GRANT_TTL_S},
        )
    return float(value)


MAX_CURSOR: Final = 2**53
"""The largest cursor a client may give (the JSON-safe integers; SQLite's are 64-bit)."""


def _page(since: Any, limit: Any) -> tuple[int, int]:
    for name, value in (("since", since), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"{name} must be an integer")
    if not 0 <= since <= MAX_CURSOR:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"since must be 0 to {MAX_CURSOR}")
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"limit must be 1 to {MAX_PAGE}")
    return since, limit


def hash_token(token: Any) -> bytes:
    """The SHA-256 a capability token is kept as; ``cmc-capability-invalid`` when the token
    cannot be one (not a short ASCII string)."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN or not token.isascii():
        raise Forbidden(ErrorId.CAPABILITY_INVALID, "The capability link is not valid")
    return hashlib.sha256(token.encode("ascii")).digest()


def _known(value: Any, what: str) -> str:
    """An id from a client: ours are 32 hex digits, so anything not short ASCII names nothing
    (and never reaches the store, which could not encode it; NUL is ASCII, but PostgreSQL's
    text cannot hold it either)."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 64
        or not value.isascii()
        or "\x00" in value
    ):
        raise NotFound(ErrorId.CONSENT_NOT_FOUND, f"No such {what}")
    return value


def _same(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


def _subset(granted: tuple[Permission, ...], offered: tuple[Permission, ...]) -> None:
    levels = {p.resource: p.level for p in offered}
    for permission in granted:
        offered_level = levels.get(permission.resource)
        if offered_level is None or permission.level.rank > offered_level.rank:
            raise Invalid(
                ErrorId.GRANTED_PERMISSIONS_NOT_SUBSET,
                f"{permission.resource} ({permission.level}) was not asked for in the offer",
            )


def _permissions_json(permissions: tuple[Permission, ...]) -> list[dict[str, str]]:
    return [p.to_json() for p in permissions]


# -- the rules inside one transaction ------------------------------------------------------


@dataclass(slots=True)
class _Outcome(Generic[T]):
    value: T
    events: list[InboxEvent] = field(default_factory=list)
    grant: tuple[str, str] | None = None
    """(owner, requester) when a grant changed."""
    sync: list[SyncOp] = field(default_factory=list)
    """What the other side's server must hear (a relationship across servers)."""


def _open_invite(invite: Invite | None, now: float) -> Invite:
    """The invite a token names, if it may still be answered; else the precise error."""
    if invite is None:
        raise Forbidden(ErrorId.CAPABILITY_INVALID, "The capability link is not valid")
    if invite.status is InviteStatus.INVALIDATED:
        raise Conflict(
            ErrorId.CAPABILITY_INVALIDATED,
            "The requester invalidated this invite",
            {"stateChangedAt": invite.status_at},
        )
    if invite.status in (InviteStatus.ACCEPTED, InviteStatus.REFUSED):
        raise Conflict(
            ErrorId.CAPABILITY_CONSUMED,
            "This single-use invite was answered already",
            {"stateChangedAt": invite.status_at},
        )
    if invite.status_at_time(now) is InviteStatus.EXPIRED:
        raise Conflict(
            ErrorId.CAPABILITY_EXPIRED,
            "This invite has expired",
            {"expiresAt": invite.expires_at},
        )
    return invite


def _not_yours(invite: Invite, actor: str) -> None:
    if _same(invite.requester, actor):
        raise Conflict(ErrorId.OWN_INVITE, "One cannot answer one's own invite")
    for acceptance in invite.accepted_by:
        if _same(acceptance.identity, actor):
            raise Conflict(
                ErrorId.CAPABILITY_ALREADY_ACCEPTED_BY_YOU,
                "You accepted this invite already",
                {"acceptedAt": acceptance.at, "relationshipId": acceptance.relationship_id},
            )


def _party_relationship(table: ConsentTable, relationship_id: str, actor: str) -> Relationship:
    relationship = table.relationship(relationship_id)
    if relationship is None or not relationship.party(actor):
        raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such relationship")
    return relationship


def _active(relationship: Relationship, now: float) -> Relationship:
    state = relationship.state_at(now)
    if state is RelationshipState.REVOKED:
        raise Conflict(
            ErrorId.RELATIONSHIP_REVOKED,
            "This relationship was revoked",
            {"revokedAt": relationship.revoked_at},
        )
    if state is RelationshipState.EXPIRED:
        raise Conflict(
            ErrorId.RELATIONSHIP_EXPIRED,
            "This relationship has expired",
            {"expiresAt": relationship.expires_at},
        )
    return relationship


def _seen_relationship(relationship: Relationship, now: float) -> Relationship:
    """The relationship as seen at ``now`` (expired once past ``expires_at``)."""
    state = relationship.state_at(now)
    return relationship if state is relationship.state else replace(relationship, state=state)


@dataclass(frozen=True, slots=True)
class SyncOp:
    """An operation for the server of a relationship's other side, which applies it to its own
    copy of the relationship (``apply_remote``) and tells its own user."""

    to: str
    """The other side (an identity of another domain)."""
    relationship_id: str
    op: dict[str, Any]
    """``{"op": ..., "author": ..., ...}``, JSON."""


@dataclass(frozen=True, slots=True)
class PendingAccept:
    """An accept of another server's invite by a user of this one, recorded before that
    server is asked: what the user agreed to (from the offer it read, and its choice)."""

    relationship_id: str
    origin: str
    """The invite's server's domain."""
    accepter: str
    requester: str
    app_code: str
    permissions: tuple[Permission, ...]
    features: dict[str, bool]
    expires_at: float | None
    """The offer's ``grantExpiresAt``."""

    def to_json(self) -> dict[str, Any]:
        return {
            "relationshipId": self.relationship_id,
            "origin": self.origin,
            "accepter": self.accepter,
            "requester": self.requester,
            "appCode": self.app_code,
            "permissions": _permissions_json(self.permissions),
            "features": self.features,
            "expiresAt": self.expires_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingAccept:
        return cls(
            data["relationshipId"],
            data["origin"],
            data["accepter"],
            data["requester"],
            data["appCode"],
            parse_permissions(data["permissions"]),
            parse_features(data["features"]),
            data["expiresAt"],
        )


class RemoteOffers(Protocol):
    """Capabilities of other servers' invites (``core.consent_federation``)."""

    def names(self, capability: str) -> tuple[str, str] | None:
        """(peer domain, token) when ``capability`` is a peer's capability URL, else None."""

    async def accept(
        self, domain: str, token: str, actor: str, granted: list[dict[str, Any]] | None
    ) -> Relationship: ...

    async def refuse(self, domain: str, token: str, actor: str, reason: str | None) -> None: ...


class ConsentOutbound(Protocol):
    """Carries ``SyncOp``s to other servers, durably and in order (``core.consent_federation``)."""

    def stage(self, transaction: QueueTransaction, ops: list[SyncOp]) -> None:
        """Queue ``ops`` inside the operation's own transaction (they commit with it)."""

    def staged(self, ops: list[SyncOp]) -> None:
        """After the commit: send them."""


class ConsentService:
    """The consent operations; every method is a coroutine that raises ``TidingsError``
    subclasses with the ``cmc-*`` ids (``core.errors``). ``actor`` is the authenticated
    identity (``name@domain``)."""

    def __init__(
        self,
        store: ConsentStore,
        clock: Callable[[], float] = time.time,
        events: Callable[[InboxEvent], None] | None = None,
        *,
        grants: Grants | None = None,
        domain: str = "",
    ) -> None:
        """``events`` (optional) is called with every inbox event after its commit, beside
        the per-identity ``subscribe`` listeners; ``grants`` is told of grant changes.
        ``domain``: this server's; identities of other domains get no inbox here (their
        server keeps theirs), and operations on a relationship with one are sent there
        (``outbound``). Empty: every identity is local."""
        self._store = store
        self.domain = domain.casefold()
        self.outbound: ConsentOutbound | None = None
        """Set by the wiring when federation is on (``core.consent_federation``)."""
        self.remote: RemoteOffers | None = None
        """Accepts and refusals of other servers' capabilities (set with ``outbound``)."""
        self._clock = clock
        self._events = events
        self.grants = grants if grants is not None else Grants(store, clock=clock)
        self._listeners: dict[str, dict[int, InboxListener]] = {}
        self._next_listener = 0
        self._expiry_wake = asyncio.Event()
        """Set when a relationship that expires is made: the expiry task looks again."""
        self.announce: Callable[[InboxEvent], None] | None = None
        """Told each committed inbox event after this node's listeners (``core.cluster``:
        the other nodes' listeners hear of it through ``tell``)."""

    # -- plumbing -------------------------------------------------------------------------

    def local(self, identity: str) -> bool:
        """Whether ``identity`` is an account of this server's domain."""
        return not self.domain or identity.rpartition("@")[2].casefold() == self.domain

    def _tell(
        self,
        table: ConsentTable,
        identities: tuple[str, ...],
        kind: InboxKind,
        data: dict[str, Any],
        now: float,
    ) -> list[InboxEvent]:
        """The same event in the inbox of each local identity concerned (once each): the
        other domain's server writes its own user's."""
        return [
            table.add_event(identity, kind, data, now)
            for identity in dict.fromkeys(identities)
            if self.local(identity)
        ]

    def _sync(self, relationship: Relationship, op: dict[str, Any]) -> list[SyncOp]:
        """``op`` for the other side's server when the relationship crosses servers. Raised
        inside the transaction, so nothing is kept, when this server cannot send it."""
        remote = [i for i in (relationship.requester, relationship.accepter) if not self.local(i)]
        if not remote:
            return []
        if self.outbound is None:
            raise Unavailable(
                ErrorId.STORAGE_UNAVAILABLE,
                f"{remote[0]} is on another server and federation is off here",
            )
        return [SyncOp(remote[0], relationship.id, op)]

    async def _commit(self, work: Callable[[ConsentTable], _Outcome[T]]) -> T:
        return await self._commit_in(lambda transaction: work(transaction.consent))

    async def _commit_in(self, work: Callable[[QueueTransaction], _Outcome[T]]) -> T:
        """Run ``work`` in one transaction with the sync ops it makes; then tell."""
        future: asyncio.Future[_Outcome[T]] = asyncio.get_running_loop().create_future()
        outbound = self.outbound

        def run(transaction: QueueTransaction) -> _Outcome[T]:
            outcome = work(transaction)
            if outcome.sync and outbound is not None:
                outbound.stage(transaction, outcome.sync)
            return outcome

        self._store.transact(run, settling(future))
        outcome = await future
        if outcome.sync and outbound is not None:
            outbound.staged(outcome.sync)
        self._announce(outcome)
        return outcome.value

    def _announce(self, outcome: _Outcome[Any]) -> None:
        """After the commit: live listeners, then grant listeners."""
        for event in outcome.events:
            self.tell(event)
            if self.announce is not None:
                try:
                    self.announce(event)
                except Exception:
                    log.exception("announcing an inbox event failed")
            if self._events is not None:
                try:
                    self._events(event)
                except Exception:
                    log.exception("the consent event hook failed")
        if outcome.grant is not None:
            self.grants.changed(*outcome.grant)

    def _remote(self, capability: str | None, token: str) -> tuple[RemoteOffers, str, str] | None:
        """(remote, domain, token) when ``capability`` is another server's; its token must be
        the one named (``cmc-capability-invalid`` otherwise)."""
        if capability is None:
            return None
        if not isinstance(capability, str):
            raise Invalid(ErrorId.INVALID_ARGUMENT, "capabilityUrl must be a string")
        named = self.remote.names(capability) if self.remote is not None else None
        if named is None:
            if capability.rstrip("/").rpartition("/")[2] != token:
                raise Forbidden(ErrorId.CAPABILITY_INVALID, "The capability link is not valid")
            return None
        if named[1] != token:
            raise Forbidden(ErrorId.CAPABILITY_INVALID, "The capability link is not valid")
        assert self.remote is not None
        return self.remote, named[0], named[1]

    def _seen(self, invite: Invite, now: float) -> Invite:
        status = invite.status_at_time(now)
        return invite if status is invite.status else replace(invite, status=status)

    # -- invites --------------------------------------------------------------------------

    async def create_invite(
        self,
        actor: str,
        *,
        app_code: str,
        display_name: str,
        consent: dict[str, str],
        permissions: list[dict[str, Any]],
        mode: str = InviteMode.SINGLE_USE,
        features: dict[str, bool] | None = None,
        expires_at: float | None = None,
        grant_expires_at: float | None = None,
    ) -> tuple[Invite, str]:
        """A new pending invite and its capability token (shown once: only its hash is
        kept). ``grant_expires_at`` (Unix seconds, optional) ends the relationships its
        acceptance makes; an invite past it can no longer be accepted (``expired``). Raises
        ``invalid-argument``, ``cmc-offer-empty-permissions``,
        ``cmc-offer-invalid-permissions``, ``cmc-capability-ttl-out-of-range``,
        ``cmc-grant-expiry-out-of-range``."""
        now = self._clock()
        if not isinstance(app_code, str) or _APP_CODE.fullmatch(app_code) is None:
            raise Invalid(ErrorId.INVALID_ARGUMENT, "appCode must match [a-z0-9-]{1,64}")
        name = _text(
            display_name, "displayName", ErrorId.INVALID_ARGUMENT, low=1, high=MAX_DISPLAY_NAME
        )
        consent_text = parse_language_map(consent, "consent")
        offered = parse_permissions(permissions)
        parsed_mode = _mode(mode)
        parsed_features = parse_features(features)
        expiry = _expiry(expires_at, now)
        grant_expiry = _grant_expiry(grant_expires_at, now)
        token = secrets.token_urlsafe(32)
        invite = Invite(
            id=uuid4().hex,
            requester=actor,
            app_code=app_code,
            display_name=name,
            consent=consent_text,
            permissions=offered,
            mode=parsed_mode,
            features=parsed_features,
            created_at=now,
            expires_at=expiry,
            status=InviteStatus.PENDING,
            token_hash=hash_token(token),
            grant_expires_at=grant_expiry,
        )

        def work(table: ConsentTable) -> _Outcome[Invite]:
            table.add_invite(invite)
            data: dict[str, Any] = {
                "inviteId": invite.id,
                "mode": parsed_mode.value,
                "expiresAt": int(expiry),
            }
            if grant_expiry is not None:
                data["grantExpiresAt"] = int(grant_expiry)
            return _Outcome(
                invite, self._tell(table, (actor,), InboxKind.INVITE_CREATED, data, now)
            )

        return await self._commit(work), token

    async def read_offer(self, token: str) -> Invite:
        """The invite a capability token names, while it may be answered. Raises
        ``cmc-capability-invalid`` / ``-expired`` / ``-consumed`` / ``-invalidated``. An
        open-link invite stays readable (pending) whoever accepted it."""
        invite = await self._store.consent_invite_by_token(hash_token(token))
        return _open_invite(invite, self._clock())

    async def accept(
        self,
        token: str,
        actor: str,
        *,
        granted: list[dict[str, Any]] | None = None,
        relationship_id: str | None = None,
        capability: str | None = None,
    ) -> Relationship:
        """Accept as ``actor``, granting ``granted`` (a subset of the offer's permissions,
        levels at most the offered ones) or, by default, everything the offer asks. Raises the
        ``read_offer`` errors, ``cmc-own-invite``, ``cmc-capability-already-accepted-by-you``
        (open-link), ``cmc-offer-empty-permissions``, ``cmc-offer-invalid-permissions``,
        ``cmc-granted-permissions-not-subset``.

        ``relationship_id`` (an accept from another server, which chose it): accepting again
        with the same id, by the same actor, for the same invite, returns the relationship
        made the first time (the answer was lost on the way back: the retry must not be
        ``cmc-capability-consumed``).

        ``capability``: the whole capability URL the accepter was given, when it has it; one
        under a federation peer's base URL is accepted on that server (``remote``)."""
        remote = self._remote(capability, token)
        if remote is not None:
            return await remote[0].accept(remote[1], remote[2], actor, granted)
        token_hash = hash_token(token)
        chosen = None if granted is None else parse_permissions(granted)
        now = self._clock()
        if relationship_id is None:
            relationship_id = uuid4().hex
        elif (
            not isinstance(relationship_id, str)
            or _RELATIONSHIP_ID.fullmatch(relationship_id) is None
        ):
            raise Invalid(ErrorId.INVALID_ARGUMENT, "relationshipId must be 32 hex digits")

        def work(table: ConsentTable) -> _Outcome[Relationship]:
            made = table.relationship(relationship_id)
            if made is not None:
                named = table.invite_by_token(token_hash)
                if named is None or made.invite_id != named.id or made.accepter != actor:
                    raise Conflict(ErrorId.INVALID_ARGUMENT, "relationshipId is taken")
                return _Outcome(_seen_relationship(made, now))
            invite = _open_invite(table.invite_by_token(token_hash), now)
            _not_yours(invite, actor)
            permissions = invite.permissions
            if chosen is not None:
                _subset(chosen, invite.permissions)
                permissions = chosen
            if invite.mode is InviteMode.SINGLE_USE and not table.set_invite_status(
                invite.id, InviteStatus.ACCEPTED, now, expected=InviteStatus.PENDING
            ):
                raise Conflict(ErrorId.CAPABILITY_CONSUMED, "This invite was answered already")
            if not table.add_acceptance(invite.id, Acceptance(actor, now, relationship_id)):
                raise Conflict(
                    ErrorId.CAPABILITY_ALREADY_ACCEPTED_BY_YOU, "You accepted this invite already"
                )
            relationship = Relationship(
                id=relationship_id,
                invite_id=invite.id,
                requester=invite.requester,
                accepter=actor,
                permissions=permissions,
                features=dict(invite.features),
                app_code=invite.app_code,
                created_at=now,
                expires_at=invite.grant_expires_at,
            )
            table.put_relationship(relationship)
            sides = (invite.requester, actor)
            created: dict[str, Any] = {
                "relationshipId": relationship_id,
                "inviteId": invite.id,
                "requester": invite.requester,
                "accepter": actor,
                "appCode": invite.app_code,
                "permissions": _permissions_json(permissions),
                "features": {
                    "chat": invite.features.get("chat", True),
                    "systemMessaging": invite.features.get("system_messaging", True),
                },
            }
            if invite.grant_expires_at is not None:
                created["expiresAt"] = int(invite.grant_expires_at)
            accepted = {"inviteId": invite.id, "by": actor, "relationshipId": relationship_id}
            events = self._tell(
                table, (invite.requester,), InboxKind.INVITE_ACCEPTED, accepted, now
            )
            events += self._tell(table, sides, InboxKind.RELATIONSHIP_CREATED, created, now)
            sync = self._sync(
                relationship, {"op": "created", "author": invite.requester, **created}
            )
            return _Outcome(relationship, events, (actor, invite.requester), sync)

        relationship = await self._commit(work)
        if relationship.expires_at is not None:
            self._expiry_wake.set()
        return relationship

    async def refuse(
        self, token: str, actor: str, *, reason: str | None = None, capability: str | None = None
    ) -> str | None:
        """Refuse as ``actor``; the requester's inbox hears of it (D6). A single-use invite is
        spent; an open-link one stays open for others. Raises the ``read_offer`` errors,
        ``cmc-own-invite``, ``cmc-capability-already-accepted-by-you``. Returns the invite's
        id (None when it is another server's: ``capability`` as for ``accept``)."""
        remote = self._remote(capability, token)
        if remote is not None:
            await remote[0].refuse(remote[1], remote[2], actor, reason)
            return None
        token_hash = hash_token(token)
        why = _optional_text(reason, "reason", ErrorId.INVALID_ARGUMENT, high=MAX_REASON)
        now = self._clock()

        def work(table: ConsentTable) -> _Outcome[str]:
            invite = _open_invite(table.invite_by_token(token_hash), now)
            _not_yours(invite, actor)
            if invite.mode is InviteMode.SINGLE_USE and not table.set_invite_status(
                invite.id, InviteStatus.REFUSED, now, expected=InviteStatus.PENDING
            ):
                raise Conflict(ErrorId.CAPABILITY_CONSUMED, "This invite was answered already")
            table.add_refusal(invite.id, Refusal(actor, now, why))
            data = {"inviteId": invite.id, "by": actor, "reason": why}
            events = self._tell(
                table, (invite.requester, actor), InboxKind.INVITE_REFUSED, data, now
            )
            return _Outcome(invite.id, events)

        return await self._commit(work)

    async def invalidate(self, invite_id: str, actor: str, *, reason: str | None = None) -> Invite:
        """Withdraw a pending invite (requester only; either mode). Idempotent: an invite
        that is no longer pending is returned as it is, and nobody is told again. Raises
        ``cmc-not-found``."""
        _known(invite_id, "invite")
        why = _optional_text(reason, "reason", ErrorId.INVALID_ARGUMENT, high=MAX_REASON)
        now = self._clock()

        def work(table: ConsentTable) -> _Outcome[Invite]:
            invite = table.invite(invite_id)
            if invite is None or invite.requester != actor:
                raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such invite")
            if invite.status_at_time(now) is not InviteStatus.PENDING:
                return _Outcome(self._seen(invite, now))
            if not table.set_invite_status(
                invite.id, InviteStatus.INVALIDATED, now, expected=InviteStatus.PENDING
            ):  # answered meanwhile (on another node): as it is now, nobody told
                answered = table.invite(invite_id)
                return _Outcome(self._seen(answered if answered is not None else invite, now))
            data = {"inviteId": invite.id, "reason": why}
            events = self._tell(table, (actor,), InboxKind.INVITE_INVALIDATED, data, now)
            return _Outcome(replace(invite, status=InviteStatus.INVALIDATED, status_at=now), events)

        return await self._commit(work)

    async def invites(self, actor: str) -> list[Invite]:
        """The actor's invites (as requester), oldest first, with their status now."""
        now = self._clock()
        return [self._seen(i, now) for i in await self._store.consent_invites_of(actor)]

    async def invite(self, invite_id: str, actor: str) -> Invite:
        """One of the actor's invites; ``cmc-not-found`` otherwise."""
        invite = await self._store.consent_invite(_known(invite_id, "invite"))
        if invite is None or invite.requester != actor:
            raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such invite")
        return self._seen(invite, self._clock())

    # -- relationships --------------------------------------------------------------------

    async def relationships(self, actor: str) -> list[Relationship]:
        """Relationships the actor is a side of (revoked and expired ones too), oldest first,
        with their state now."""
        now = self._clock()
        found = await self._store.consent_relationships_of(actor)
        return [_seen_relationship(r, now) for r in found]

    async def relationship(self, relationship_id: str, actor: str) -> Relationship:
        found = await self._store.consent_relationship(_known(relationship_id, "relationship"))
        if found is None or not found.party(actor):
            raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such relationship")
        return _seen_relationship(found, self._clock())

    async def revoke(
        self, relationship_id: str, actor: str, *, reason: str | None = None
    ) -> Relationship:
        """End the relationship for both sides (D4), by either side; both inboxes hear of it
        and the grant goes at once. Revoking a revoked or expired relationship returns it
        unchanged. Raises ``cmc-not-found``."""
        _known(relationship_id, "relationship")
        why = _optional_text(reason, "reason", ErrorId.INVALID_ARGUMENT, high=MAX_REASON)
        now = self._clock()

        def work(table: ConsentTable) -> _Outcome[Relationship]:
            relationship = _party_relationship(table, relationship_id, actor)
            if not relationship.active_at(now):
                return _Outcome(_seen_relationship(relationship, now))
            revoked = replace(
                relationship,
                state=RelationshipState.REVOKED,
                revoked_at=now,
                revoked_by=actor,
                revoke_reason=why,
            )
            table.put_relationship(revoked)
            data = {"relationshipId": relationship.id, "by": actor, "reason": why}
            sides = (relationship.requester, relationship.accepter)
            events = self._tell(table, sides, InboxKind.RELATIONSHIP_REVOKED, data, now)
            sync = self._sync(relationship, {"op": "revoke", "author": actor, "reason": why})
            grant = (relationship.accepter, relationship.requester)
            return _Outcome(revoked, events, grant, sync)

        return await self._commit(work)

    # -- expiry ---------------------------------------------------------------------------

    async def expire_due(self) -> float | None:
        """Record every expiry due now: each active relationship at or past its
        ``expires_at`` becomes ``expired`` (its own transaction: the state and a
        ``relationship-expired`` event in both inboxes), then the inbox listeners and the
        grant listeners are told, once. Returns the soonest ``expires_at`` still ahead, or
        None when no active relationship expires."""
        while True:
            now = self._clock()
            upcoming = await self._store.consent_relationships_expiring(EXPIRY_BATCH)
            due = [r for r in upcoming if r.expires_at is not None and r.expires_at <= now]
            for relationship in due:
                await self._expire(relationship.id, now)
            if len(due) < len(upcoming) or len(upcoming) < EXPIRY_BATCH:
                ahead = [r.expires_at for r in upcoming if r.expires_at is not None]
                return min((at for at in ahead if at > now), default=None)

    async def _expire(self, relationship_id: str, now: float) -> None:
        def work(table: ConsentTable) -> _Outcome[None]:
            relationship = table.relationship(relationship_id)
            if relationship is None or relationship.state is not RelationshipState.ACTIVE:
                return _Outcome(None)  # revoked (or expired) meanwhile
            if relationship.expires_at is None or relationship.expires_at > now:
                return _Outcome(None)
            table.put_relationship(replace(relationship, state=RelationshipState.EXPIRED))
            data = {"relationshipId": relationship.id, "expiresAt": int(relationship.expires_at)}
            sides = (relationship.requester, relationship.accepter)
            events = self._tell(table, sides, InboxKind.RELATIONSHIP_EXPIRED, data, now)
            return _Outcome(None, events, (relationship.accepter, relationship.requester))

        await self._commit(work)

    async def expire_forever(self, max_wait: float = MAX_EXPIRY_WAIT_S, retry: float = 1.0) -> None:
        """Record expiries as they fall, until cancelled: first those that fell while the
        server was down, then each at its ``expires_at`` (woken early when an accept makes a
        relationship that expires; never asleep longer than ``max_wait``). A storage error
        waits ``retry`` seconds and tries again.

        Every node of a deployment runs it: each expiry is its own transaction that changes
        only a relationship still active and due, so when two nodes race, one records it
        (and tells: events and grants reach the other nodes through ``core.cluster``) and
        the other changes nothing."""
        while True:
            self._expiry_wake.clear()
            try:
                upcoming = await self.expire_due()
            except TidingsError:
                log.warning("relationship expiry: the store failed, trying again", exc_info=True)
                wait = retry
            else:
                wait = max_wait
                if upcoming is not None:
                    wait = min(max_wait, max(upcoming - self._clock(), 0.0) + EXPIRY_SLACK_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._expiry_wake.wait(), wait)

    # -- scope requests -------------------------------------------------------------------

    async def request_scope(
        self,
        relationship_id: str,
        actor: str,
        permissions: list[dict[str, Any]],
        *,
        message: dict[str, str] | None = None,
    ) -> ScopeRequest:
        """The requester asks for a new permission set (the whole set: accepting replaces the
        relationship's permissions, D8). Raises ``cmc-not-found``,
        ``cmc-insufficient-permissions`` (the accepter asking), ``cmc-relationship-revoked``,
        ``cmc-relationship-expired``, the permission errors."""
        _known(relationship_id, "relationship")
        wanted = parse_permissions(permissions)
        text = None if message is None else parse_language_map(message, "message")
        now = self._clock()
        request_id = uuid4().hex

        def work(table: ConsentTable) -> _Outcome[ScopeRequest]:
            relationship = _active(_party_relationship(table, relationship_id, actor), now)
            if actor != relationship.requester:
                raise Forbidden(
                    ErrorId.INSUFFICIENT_PERMISSIONS, "Only the requester asks for a new scope"
                )
            request = ScopeRequest(request_id, relationship.id, wanted, text, now)
            table.put_scope_request(request)
            data = {
                "scopeRequestId": request_id,
                "relationshipId": relationship.id,
                "permissions": _permissions_json(wanted),
                "message": text,
            }
            sides = (relationship.requester, relationship.accepter)
            events = self._tell(table, sides, InboxKind.SCOPE_REQUESTED, data, now)
            sync = self._sync(relationship, {"op": "scope-request", "author": actor, **data})
            return _Outcome(request, events, None, sync)

        return await self._commit(work)

    async def decide_scope(
        self, scope_request_id: str, actor: str, *, accept: bool
    ) -> ScopeRequest:
        """The accepter accepts (the relationship's permissions become the requested ones,
        at once, D8) or refuses. Raises ``cmc-not-found``, ``cmc-insufficient-permissions``
        (the requester deciding), ``cmc-scope-request-decided``, ``cmc-relationship-revoked``,
        ``cmc-relationship-expired``."""
        _known(scope_request_id, "scope request")
        if not isinstance(accept, bool):
            raise Invalid(ErrorId.INVALID_ARGUMENT, "accept must be true or false")
        now = self._clock()

        def work(table: ConsentTable) -> _Outcome[ScopeRequest]:
            request = table.scope_request(scope_request_id)
            if request is None:
                raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such scope request")
            relationship = table.relationship(request.relationship_id)
            if relationship is None or not relationship.party(actor):
                raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such scope request")
            if actor != relationship.accepter:
                raise Forbidden(
                    ErrorId.INSUFFICIENT_PERMISSIONS, "Only the accepter decides a scope request"
                )
            if request.state is not ScopeState.PENDING:
                raise Conflict(
                    ErrorId.SCOPE_REQUEST_DECIDED,
                    f"This scope request was {request.state} already",
                    {"state": request.state.value, "decidedAt": request.decided_at},
                )
            _active(relationship, now)
            state = ScopeState.ACCEPTED if accept else ScopeState.REFUSED
            decided = replace(request, state=state, decided_at=now)
            table.put_scope_request(decided)
            data: dict[str, Any] = {
                "scopeRequestId": request.id,
                "relationshipId": relationship.id,
                "permissions": _permissions_json(request.permissions),
            }
            grant = None
            if accept:
                table.put_relationship(replace(relationship, permissions=request.permissions))
                grant = (relationship.accepter, relationship.requester)
            kind = InboxKind.SCOPE_ACCEPTED if accept else InboxKind.SCOPE_REFUSED
            sides = (relationship.requester, relationship.accepter)
            op = {"op": "scope-decision", "author": actor, "scopeRequestId": request.id}
            sync = self._sync(relationship, {**op, "accept": accept})
            return _Outcome(decided, self._tell(table, sides, kind, data, now), grant, sync)

        return await self._commit(work)

    # -- chat and alerts ------------------------------------------------------------------

    async def chat(self, relationship_id: str, actor: str, text: str) -> ChatMessage:
        """A chat message from one side to the other (1..10240 characters). Raises
        ``cmc-invalid-event-content``, ``cmc-not-found``, ``cmc-relationship-revoked``,
        ``cmc-relationship-expired``, ``cmc-chat-disabled`` (the offer disabled chat, D15)."""
        _known(relationship_id, "relationship")
        body = _text(text, "text", ErrorId.INVALID_EVENT_CONTENT, low=1, high=MAX_CHAT_CHARS)
        now = self._clock()

        def work(table: ConsentTable) -> _Outcome[ChatMessage]:
            relationship = _active(_party_relationship(table, relationship_id, actor), now)
            if not relationship.features.get("chat", True):
                raise Forbidden(ErrorId.CHAT_DISABLED, "The offer disabled chat")
            message = table.add_chat(relationship.id, actor, body, now)
            data = {
                "relationshipId": relationship.id,
                "seq": message.seq,
                "from": actor,
                "text": body,
            }
            sides = (relationship.requester, relationship.accepter)
            events = self._tell(table, sides, InboxKind.CHAT, data, now)
            sync = self._sync(relationship, {"op": "chat", "author": actor, "text": body})
            return _Outcome(message, events, None, sync)

        return await self._commit(work)

    async def chat_history(
        self, relationship_id: str, actor: str, since: int = 0, limit: int = 100
    ) -> list[ChatMessage]:
        """Chat messages after the cursor ``since`` (a ``seq``), oldest first; readable after
        a revoke too. Raises ``invalid-argument``, ``cmc-not-found``."""
        after, count = _page(since, limit)
        await self.relationship(relationship_id, actor)
        return await self._store.consent_chat(relationship_id, after, count)

    async def alert(
        self,
        relationship_id: str,
        actor: str,
        *,
        level: str,
        title: dict[str, str],
        body: dict[str, str],
        ack_required: bool = False,
        ack_id: str | None = None,
    ) -> Alert:
        """A system alert from one side to the other. ``ack_id`` defaults to the alert's id.
        Raises ``cmc-invalid-event-content``, ``cmc-not-found``, ``cmc-relationship-revoked``,
        ``cmc-relationship-expired``, ``cmc-system-messaging-disabled``."""
        _known(relationship_id, "relationship")
        content = ErrorId.INVALID_EVENT_CONTENT
        if not isinstance(level, str) or level not in AlertLevel.__members__.values():
            raise Invalid(content, "level must be info, warning or critical")
        parsed_title = parse_language_map(title, "title", content)
        parsed_body = parse_language_map(body, "body", content)
        if not isinstance(ack_required, bool):
            raise Invalid(content, "ackRequired must be true or false")
        alert_id = uuid4().hex
        parsed_ack = (
            alert_id if ack_id is None else _text(ack_id, "ackId", content, low=1, high=MAX_ACK_ID)
        )
        now = self._clock()

        def work(table: ConsentTable) -> _Outcome[Alert]:
            relationship = _active(_party_relationship(table, relationship_id, actor), now)
            if not relationship.features.get("system_messaging", True):
                raise Forbidden(
                    ErrorId.SYSTEM_MESSAGING_DISABLED, "The offer disabled system messaging"
                )
            alert = Alert(
                id=alert_id,
                relationship_id=relationship.id,
                sender=actor,
                level=AlertLevel(level),
                title=parsed_title,
                body=parsed_body,
                ack_required=ack_required,
                ack_id=parsed_ack,
                at=now,
            )
            table.put_alert(alert)
            data = {
                "alertId": alert_id,
                "relationshipId": relationship.id,
                "from": actor,
                "level": alert.level.value,
                "title": parsed_title,
                "body": parsed_body,
                "ackRequired": ack_required,
                "ackId": parsed_ack,
            }
            sides = (relationship.requester, relationship.accepter)
            events = self._tell(table, sides, InboxKind.ALERT, data, now)
            sync = self._sync(relationship, {"op": "alert", "author": actor, **data})
            return _Outcome(alert, events, None, sync)

        return await self._commit(work)

    async def ack(self, alert_id: str, actor: str, ack_id: str) -> Alert:
        """The other side acknowledges an alert with its ``ack_id``; acknowledging again
        returns it unchanged. Raises ``cmc-invalid-event-content`` (wrong or missing ack id),
        ``cmc-not-found``, ``cmc-insufficient-permissions`` (the sender acking),
        ``cmc-relationship-revoked``, ``cmc-relationship-expired``,
        ``cmc-system-messaging-disabled``."""
        _known(alert_id, "alert")
        content = ErrorId.INVALID_EVENT_CONTENT
        given = _text(ack_id, "ackId", content, low=1, high=MAX_ACK_ID)
        now = self._clock()

        def work(table: ConsentTable) -> _Outcome[Alert]:
            alert = table.alert(alert_id)
            if alert is None:
                raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such alert")
            relationship = table.relationship(alert.relationship_id)
            if relationship is None or not relationship.party(actor):
                raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such alert")
            if actor == alert.sender:
                raise Forbidden(
                    ErrorId.INSUFFICIENT_PERMISSIONS, "The other side acknowledges an alert"
                )
            _active(relationship, now)
            if not relationship.features.get("system_messaging", True):
                raise Forbidden(
                    ErrorId.SYSTEM_MESSAGING_DISABLED, "The offer disabled system messaging"
                )
            if given != alert.ack_id:
                raise Invalid(content, "ackId does not match the alert's")
            if alert.acked_at is not None:
                return _Outcome(alert)
            acked = replace(alert, acked_at=now, acked_by=actor)
            table.put_alert(acked)
            data = {
                "alertId": alert.id,
                "relationshipId": relationship.id,
                "by": actor,
                "ackId": given,
            }
            sides = (relationship.requester, relationship.accepter)
            events = self._tell(table, sides, InboxKind.ALERT_ACKED, data, now)
            sync = self._sync(relationship, {"op": "ack", "author": actor, **data})
            return _Outcome(acked, events, None, sync)

        return await self._commit(work)

    # -- across servers (core.consent_federation calls these) -----------------------------

    async def begin_remote_accept(self, pending: PendingAccept) -> None:
        """Remember, before the invite's server is asked, what this server's user accepts:
        the relationship that server then confirms (in its answer, or later through the
        outbox when the answer was lost) is kept here only if it is this one (D12: nobody
        consents for bob but bob, authenticated here)."""

        def work(transaction: QueueTransaction) -> _Outcome[None]:
            key = _PENDING + pending.relationship_id
            transaction.state.put(key, json.dumps(pending.to_json()))
            return _Outcome(None)

        await self._commit_in(work)

    async def pending_accept(self, relationship_id: str) -> PendingAccept | None:
        """The accept of another server's invite recorded under ``relationship_id``."""

        def work(transaction: QueueTransaction) -> _Outcome[PendingAccept | None]:
            text = transaction.state.get(_PENDING + relationship_id)
            return _Outcome(None if text is None else PendingAccept.from_json(json.loads(text)))

        return await self._commit_in(work)

    async def abandon_remote_accept(self, relationship_id: str) -> None:
        """The invite's server refused the accept: nothing it says later makes it."""

        def work(transaction: QueueTransaction) -> _Outcome[None]:
            transaction.state.delete(_PENDING + relationship_id)
            return _Outcome(None)

        await self._commit_in(work)

    async def mirror_accepted(
        self, origin: str, relationship_id: str, invite_id: Any, requester: Any, accepter: Any
    ) -> Relationship:
        """Keep this server's side of a relationship ``origin``'s server made when this
        server's user accepted its invite: its permissions, features and expiry are the
        ones this server recorded before asking (``begin_remote_accept``), never the peer's
        say. Idempotent (the answer and the outbox's ``created`` both come). Raises
        ``cmc-not-found`` when no accept of that relationship is pending here."""
        now = self._clock()

        def work(transaction: QueueTransaction) -> _Outcome[Relationship]:
            return self._mirror(
                transaction, origin, relationship_id, invite_id, requester, accepter, now
            )

        relationship = await self._commit_in(work)
        if relationship.expires_at is not None:
            self._expiry_wake.set()
        return relationship

    def _mirror(
        self,
        transaction: QueueTransaction,
        origin: str,
        relationship_id: str,
        invite_id: Any,
        requester: Any,
        accepter: Any,
        now: float,
    ) -> _Outcome[Relationship]:
        table = transaction.consent
        made = table.relationship(relationship_id)
        if made is not None and made.accepter == accepter and made.requester == requester:
            transaction.state.delete(_PENDING + relationship_id)
            return _Outcome(_seen_relationship(made, now))
        text = transaction.state.get(_PENDING + relationship_id)
        pending = None if text is None else PendingAccept.from_json(json.loads(text))
        if (
            made is not None
            or pending is None
            or pending.origin != origin
            or pending.accepter != accepter
            or pending.requester != requester
        ):
            raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No accept of this relationship is pending")
        transaction.state.delete(_PENDING + relationship_id)
        relationship = Relationship(
            id=relationship_id,
            invite_id=_known(invite_id, "invite"),
            requester=pending.requester,
            accepter=pending.accepter,
            permissions=pending.permissions,
            features=dict(pending.features),
            app_code=pending.app_code,
            created_at=now,
            expires_at=pending.expires_at,
        )
        table.put_relationship(relationship)
        created: dict[str, Any] = {
            "relationshipId": relationship.id,
            "inviteId": relationship.invite_id,
            "requester": relationship.requester,
            "accepter": relationship.accepter,
            "appCode": relationship.app_code,
            "permissions": _permissions_json(relationship.permissions),
            "features": {
                "chat": relationship.features.get("chat", True),
                "systemMessaging": relationship.features.get("system_messaging", True),
            },
        }
        if relationship.expires_at is not None:
            created["expiresAt"] = int(relationship.expires_at)
        sides = (relationship.accepter,)
        events = self._tell(table, sides, InboxKind.RELATIONSHIP_CREATED, created, now)
        return _Outcome(relationship, events, (relationship.accepter, relationship.requester))

    async def remote_refused(self, actor: str, invite_id: Any, reason: str | None) -> None:
        """This server's user refused another server's invite (that server took it): the
        refuser's own inbox hears of it, as for a local refusal."""
        now = self._clock()
        data = {"inviteId": _known(invite_id, "invite"), "by": actor, "reason": reason}

        def work(table: ConsentTable) -> _Outcome[None]:
            return _Outcome(None, self._tell(table, (actor,), InboxKind.INVITE_REFUSED, data, now))

        await self._commit(work)

    async def apply_remote(self, origin: str, to: str, seq: int, op: dict[str, Any]) -> bool:
        """Apply an operation ``origin``'s server sent for its side of a relationship with
        ``to`` (this server's user): to this server's copy, telling ``to``. ``seq`` numbers
        the operations of the relationship from that server (the outbox keeps their order):
        one at or below the last applied is a copy and changes nothing. An operation the
        rules refuse (its author is not the other side, or not of ``origin``; the
        relationship is not active here any more; a feature is off) changes nothing: logged,
        and False. Raises only when the store fails (the peer then sends it again)."""
        now = self._clock()
        relationship_id = op.get("relationshipId")

        def work(transaction: QueueTransaction) -> _Outcome[bool]:
            if not isinstance(relationship_id, str) or not self.local(to):
                raise Forbidden(ErrorId.FORBIDDEN, "Not an operation for a user of this server")
            cursor = _SYNC_IN + relationship_id
            done = int(transaction.state.get(cursor) or 0)
            if seq <= done:
                return _Outcome(False)
            outcome = self._remote_op(transaction, origin, to, relationship_id, op, now)
            transaction.state.put(cursor, str(seq))
            return _Outcome(True, outcome.events, outcome.grant)

        try:
            return await self._commit_in(work)
        except (Invalid, NotFound, Forbidden, Conflict) as refused:
            log.warning(
                "consent: %s's %r on %s refused: %s",
                origin,
                op.get("op"),
                relationship_id,
                refused.message,
            )
            return False

    def _remote_op(
        self,
        transaction: QueueTransaction,
        origin: str,
        to: str,
        relationship_id: str,
        op: dict[str, Any],
        now: float,
    ) -> _Outcome[None]:
        """One remote operation's checks, then its writes (a refusal raises before any)."""
        table = transaction.consent
        kind, author = op.get("op"), op.get("author")
        if not isinstance(author, str) or author.rpartition("@")[2].casefold() != origin:
            raise Forbidden(ErrorId.FORBIDDEN, f"{author!r} is not an identity of {origin}")
        if kind == "created":
            if op.get("requester") != author:
                raise Forbidden(ErrorId.FORBIDDEN, "The requester makes the relationship")
            mirrored = self._mirror(
                transaction,
                origin,
                relationship_id,
                op.get("inviteId"),
                op.get("requester"),
                op.get("accepter"),
                now,
            )
            return _Outcome(None, mirrored.events, mirrored.grant)
        relationship = table.relationship(relationship_id)
        if relationship is None or not relationship.party(to) or relationship.other(to) != author:
            raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such relationship between them")
        sides = (to,)
        if kind == "revoke":
            if not relationship.active_at(now):
                return _Outcome(None)
            why = _optional_text(
                op.get("reason"), "reason", ErrorId.INVALID_ARGUMENT, high=MAX_REASON
            )
            revoked = replace(
                relationship,
                state=RelationshipState.REVOKED,
                revoked_at=now,
                revoked_by=author,
                revoke_reason=why,
            )
            table.put_relationship(revoked)
            data = {"relationshipId": relationship.id, "by": author, "reason": why}
            events = self._tell(table, sides, InboxKind.RELATIONSHIP_REVOKED, data, now)
            return _Outcome(None, events, (relationship.accepter, relationship.requester))
        _active(relationship, now)
        if kind == "chat":
            if not relationship.features.get("chat", True):
                raise Forbidden(ErrorId.CHAT_DISABLED, "The offer disabled chat")
            body = _text(
                op.get("text"), "text", ErrorId.INVALID_EVENT_CONTENT, low=1, high=MAX_CHAT_CHARS
            )
            message = table.add_chat(relationship.id, author, body, now)
            chat: dict[str, Any] = {
                "relationshipId": relationship.id,
                "seq": message.seq,
                "from": author,
                "text": body,
            }
            return _Outcome(None, self._tell(table, sides, InboxKind.CHAT, chat, now))
        if kind == "scope-request":
            return self._remote_scope_request(table, relationship, author, op, now)
        if kind == "scope-decision":
            return self._remote_scope_decision(table, relationship, author, op, now)
        if not relationship.features.get("system_messaging", True):
            raise Forbidden(
                ErrorId.SYSTEM_MESSAGING_DISABLED, "The offer disabled system messaging"
            )
        if kind == "alert":
            return self._remote_alert(table, relationship, author, op, now)
        if kind == "ack":
            return self._remote_ack(table, relationship, author, op, now)
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"{kind!r} is no consent operation")

    def _remote_scope_request(
        self,
        table: ConsentTable,
        relationship: Relationship,
        author: str,
        op: dict[str, Any],
        now: float,
    ) -> _Outcome[None]:
        if author != relationship.requester:
            raise Forbidden(ErrorId.INSUFFICIENT_PERMISSIONS, "Only the requester asks for a scope")
        request_id = _known(op.get("scopeRequestId"), "scope request")
        wanted = parse_permissions(op.get("permissions"))
        message = op.get("message")
        text = None if message is None else parse_language_map(message, "message")
        if table.scope_request(request_id) is not None:
            raise Conflict(ErrorId.SCOPE_REQUEST_DECIDED, "This scope request is known already")
        table.put_scope_request(ScopeRequest(request_id, relationship.id, wanted, text, now))
        data = {
            "scopeRequestId": request_id,
            "relationshipId": relationship.id,
            "permissions": _permissions_json(wanted),
            "message": text,
        }
        sides = (relationship.other(author),)
        return _Outcome(None, self._tell(table, sides, InboxKind.SCOPE_REQUESTED, data, now))

    def _remote_scope_decision(
        self,
        table: ConsentTable,
        relationship: Relationship,
        author: str,
        op: dict[str, Any],
        now: float,
    ) -> _Outcome[None]:
        if author != relationship.accepter:
            raise Forbidden(ErrorId.INSUFFICIENT_PERMISSIONS, "Only the accepter decides")
        request = table.scope_request(_known(op.get("scopeRequestId"), "scope request"))
        accept = op.get("accept")
        if request is None or request.relationship_id != relationship.id:
            raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such scope request")
        if not isinstance(accept, bool):
            raise Invalid(ErrorId.INVALID_ARGUMENT, "accept must be true or false")
        if request.state is not ScopeState.PENDING:
            raise Conflict(ErrorId.SCOPE_REQUEST_DECIDED, f"It was {request.state} already")
        state = ScopeState.ACCEPTED if accept else ScopeState.REFUSED
        table.put_scope_request(replace(request, state=state, decided_at=now))
        grant = None
        if accept:
            table.put_relationship(replace(relationship, permissions=request.permissions))
            grant = (relationship.accepter, relationship.requester)
        data = {
            "scopeRequestId": request.id,
            "relationshipId": relationship.id,
            "permissions": _permissions_json(request.permissions),
        }
        kind = InboxKind.SCOPE_ACCEPTED if accept else InboxKind.SCOPE_REFUSED
        sides = (relationship.other(author),)
        return _Outcome(None, self._tell(table, sides, kind, data, now), grant)

    def _remote_alert(
        self,
        table: ConsentTable,
        relationship: Relationship,
        author: str,
        op: dict[str, Any],
        now: float,
    ) -> _Outcome[None]:
        content = ErrorId.INVALID_EVENT_CONTENT
        alert_id = _known(op.get("alertId"), "alert")
        level = op.get("level")
        if not isinstance(level, str) or level not in AlertLevel.__members__.values():
            raise Invalid(content, "level must be info, warning or critical")
        ack_required = op.get("ackRequired")
        if not isinstance(ack_required, bool):
            raise Invalid(content, "ackRequired must be true or false")
        alert = Alert(
            id=alert_id,
            relationship_id=relationship.id,
            sender=author,
            level=AlertLevel(level),
            title=parse_language_map(op.get("title"), "title", content),
            body=parse_language_map(op.get("body"), "body", content),
            ack_required=ack_required,
            ack_id=_text(op.get("ackId"), "ackId", content, low=1, high=MAX_ACK_ID),
            at=now,
        )
        if table.alert(alert_id) is not None:
            raise Conflict(ErrorId.INVALID_ARGUMENT, "This alert is known already")
        table.put_alert(alert)
        data = {
            "alertId": alert.id,
            "relationshipId": relationship.id,
            "from": author,
            "level": alert.level.value,
            "title": alert.title,
            "body": alert.body,
            "ackRequired": alert.ack_required,
            "ackId": alert.ack_id,
        }
        sides = (relationship.other(author),)
        return _Outcome(None, self._tell(table, sides, InboxKind.ALERT, data, now))

    def _remote_ack(
        self,
        table: ConsentTable,
        relationship: Relationship,
        author: str,
        op: dict[str, Any],
        now: float,
    ) -> _Outcome[None]:
        alert = table.alert(_known(op.get("alertId"), "alert"))
        if alert is None or alert.relationship_id != relationship.id or alert.sender == author:
            raise NotFound(ErrorId.CONSENT_NOT_FOUND, "No such alert of the other side")
        if op.get("ackId") != alert.ack_id:
            raise Invalid(ErrorId.INVALID_EVENT_CONTENT, "ackId does not match the alert's")
        if alert.acked_at is not None:
            return _Outcome(None)
        table.put_alert(replace(alert, acked_at=now, acked_by=author))
        data = {
            "alertId": alert.id,
            "relationshipId": relationship.id,
            "by": author,
            "ackId": alert.ack_id,
        }
        sides = (alert.sender,)
        return _Outcome(None, self._tell(table, sides, InboxKind.ALERT_ACKED, data, now))

    # -- inbox ----------------------------------------------------------------------------

    async def inbox(self, actor: str, since: int = 0, limit: int = 100) -> list[InboxEvent]:
        """The actor's events after the cursor ``since`` (a ``seq``), in order."""
        after, count = _page(since, limit)
        return await self._store.consent_inbox(actor, after, count)

    def tell(self, event: InboxEvent) -> None:
        """Hand a committed event to this node's listeners of its identity."""
        for listener in list(self._listeners.get(event.identity, {}).values()):
            try:
                listener(event)
            except Exception:
                log.exception("an inbox listener failed")

    def subscribe(self, actor: str, listener: InboxListener) -> Callable[[], None]:
        """Call ``listener`` with each new event of the actor's inbox, after its commit and in
        order; returns the function that unsubscribes. To miss nothing, subscribe first, then
        read ``inbox`` from the last cursor and drop events at or below what was read."""
        token = self._next_listener
        self._next_listener += 1
        self._listeners.setdefault(actor, {})[token] = listener

        def unsubscribe() -> None:
            listeners = self._listeners.get(actor)
            if listeners is not None:
                listeners.pop(token, None)
                if not listeners:
                    del self._listeners[actor]

        return unsubscribe
