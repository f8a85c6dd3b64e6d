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
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Generic, TypeVar
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
from .errors import Conflict, ErrorId, Forbidden, Invalid, NotFound, TidingsError
from .grants import FEED_PREFIX, Grants
from .ports import ConsentStore, ConsentTable, QueueTransaction, settling

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_CHAT_CHARS",
    "MAX_GRANT_TTL_S",
    "MAX_PERMISSIONS",
    "MAX_TTL_S",
    "MIN_TTL_S",
    "ConsentService",
    "InboxListener",
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
_FEATURES: Final = frozenset({"chat", "system_messaging"})
_FEATURE_ALIASES: Final = {"systemMessaging": "system_messaging"}

InboxListener = Callable[[InboxEvent], None]


# -- validation (bounded inputs; only TidingsError ever escapes) ----------------------------


def _text(value: Any, what: str, error_id: ErrorId, *, low: int, high: int) -> str:
    """A string of ``low``..``high`` characters that UTF-8 can encode (no lone surrogates)."""
    if not isinstance(value, str):
        raise Invalid(error_id, f"{what} must be a string")
    if not low <= len(value) <= high:
        raise Invalid(error_id, f"{what} must be {low} to {high} characters")
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
    (and never reaches the store, which could not encode it)."""
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isascii():
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


def _tell(
    table: ConsentTable,
    identities: tuple[str, ...],
    kind: InboxKind,
    data: dict[str, Any],
    now: float,
) -> list[InboxEvent]:
    """The same event in the inbox of each identity concerned (once each)."""
    return [table.add_event(identity, kind, data, now) for identity in dict.fromkeys(identities)]


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
    ) -> None:
        """``events`` (optional) is called with every inbox event after its commit, beside
        the per-identity ``subscribe`` listeners; ``grants`` is told of grant changes."""
        self._store = store
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

    async def _commit(self, work: Callable[[ConsentTable], _Outcome[T]]) -> T:
        future: asyncio.Future[_Outcome[T]] = asyncio.get_running_loop().create_future()

        def run(transaction: QueueTransaction) -> _Outcome[T]:
            return work(transaction.consent)

        self._store.transact(run, settling(future))
        outcome = await future
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
            return _Outcome(invite, _tell(table, (actor,), InboxKind.INVITE_CREATED, data, now))

        return await self._commit(work), token

    async def read_offer(self, token: str) -> Invite:
        """The invite a capability token names, while it may be answered. Raises
        ``cmc-capability-invalid`` / ``-expired`` / ``-consumed`` / ``-invalidated``. An
        open-link invite stays readable (pending) whoever accepted it."""
        invite = await self._store.consent_invite_by_token(hash_token(token))
        return _open_invite(invite, self._clock())

    async def accept(
        self, token: str, actor: str, *, granted: list[dict[str, Any]] | None = None
    ) -> Relationship:
        """Accept as ``actor``, granting ``granted`` (a subset of the offer's permissions,
        levels at most the offered ones) or, by default, everything the offer asks. Raises the
        ``read_offer`` errors, ``cmc-own-invite``, ``cmc-capability-already-accepted-by-you``
        (open-link), ``cmc-offer-empty-permissions``, ``cmc-offer-invalid-permissions``,
        ``cmc-granted-permissions-not-subset``."""
        token_hash = hash_token(token)
        chosen = None if granted is None else parse_permissions(granted)
        now = self._clock()
        relationship_id = uuid4().hex

        def work(table: ConsentTable) -> _Outcome[Relationship]:
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
            events = _tell(table, (invite.requester,), InboxKind.INVITE_ACCEPTED, accepted, now)
            events += _tell(table, sides, InboxKind.RELATIONSHIP_CREATED, created, now)
            return _Outcome(relationship, events, (actor, invite.requester))

        relationship = await self._commit(work)
        if relationship.expires_at is not None:
            self._expiry_wake.set()
        return relationship

    async def refuse(self, token: str, actor: str, *, reason: str | None = None) -> None:
        """Refuse as ``actor``; the requester's inbox hears of it (D6). A single-use invite is
        spent; an open-link one stays open for others. Raises the ``read_offer`` errors,
        ``cmc-own-invite``, ``cmc-capability-already-accepted-by-you``."""
        token_hash = hash_token(token)
        why = _optional_text(reason, "reason", ErrorId.INVALID_ARGUMENT, high=MAX_REASON)
        now = self._clock()

        def work(table: ConsentTable) -> _Outcome[None]:
            invite = _open_invite(table.invite_by_token(token_hash), now)
            _not_yours(invite, actor)
            if invite.mode is InviteMode.SINGLE_USE and not table.set_invite_status(
                invite.id, InviteStatus.REFUSED, now, expected=InviteStatus.PENDING
            ):
                raise Conflict(ErrorId.CAPABILITY_CONSUMED, "This invite was answered already")
            table.add_refusal(invite.id, Refusal(actor, now, why))
            data = {"inviteId": invite.id, "by": actor, "reason": why}
            events = _tell(table, (invite.requester, actor), InboxKind.INVITE_REFUSED, data, now)
            return _Outcome(None, events)

        await self._commit(work)

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
            events = _tell(table, (actor,), InboxKind.INVITE_INVALIDATED, data, now)
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
            events = _tell(table, sides, InboxKind.RELATIONSHIP_REVOKED, data, now)
            return _Outcome(revoked, events, (relationship.accepter, relationship.requester))

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
            events = _tell(table, sides, InboxKind.RELATIONSHIP_EXPIRED, data, now)
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
            return _Outcome(request, _tell(table, sides, InboxKind.SCOPE_REQUESTED, data, now))

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
            return _Outcome(decided, _tell(table, sides, kind, data, now), grant)

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
            return _Outcome(message, _tell(table, sides, InboxKind.CHAT, data, now))

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
            return _Outcome(alert, _tell(table, sides, InboxKind.ALERT, data, now))

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
            return _Outcome(acked, _tell(table, sides, InboxKind.ALERT_ACKED, data, now))

        return await self._commit(work)

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
