"""The consent model: invites, relationships, scope requests, chat, alerts, inbox events.

Frozen values, as the store keeps them and the service hands them out; the rules that make and
change them are in ``core.consent``. Identities are full ``name@domain`` strings on both sides
(the counterparty may later live on another server). Times are float Unix seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "LEVEL_ORDER",
    "Acceptance",
    "Alert",
    "AlertLevel",
    "ChatMessage",
    "InboxEvent",
    "InboxKind",
    "Invite",
    "InviteMode",
    "InviteStatus",
    "Level",
    "Permission",
    "Refusal",
    "Relationship",
    "RelationshipState",
    "ScopeRequest",
    "ScopeState",
]


class Level(StrEnum):
    """What a permission allows, ordered: ``read`` < ``contribute`` < ``manage``."""

    READ = "read"
    CONTRIBUTE = "contribute"
    MANAGE = "manage"

    @property
    def rank(self) -> int:
        return LEVEL_ORDER[self]


LEVEL_ORDER: Final[dict[Level, int]] = {Level.READ: 0, Level.CONTRIBUTE: 1, Level.MANAGE: 2}


@dataclass(frozen=True, slots=True)
class Permission:
    """A resource of the accepter's: ``feed:<pattern>``, ``presence``, ``account``,
    ``messages``; and the level granted on it."""

    resource: str
    level: Level

    def to_json(self) -> dict[str, str]:
        return {"resource": self.resource, "level": self.level.value}


class InviteMode(StrEnum):
    SINGLE_USE = "single-use"
    OPEN_LINK = "open-link"


class InviteStatus(StrEnum):
    PENDING = "pending"
    """Open: may be accepted (single-use: once; open-link: by each identity once)."""
    ACCEPTED = "accepted"
    """Single-use, accepted by one identity (``accepted_by[0]``)."""
    REFUSED = "refused"
    """Single-use, refused (the capability is spent)."""
    INVALIDATED = "invalidated"
    """Withdrawn by the requester."""
    EXPIRED = "expired"
    """Derived, never stored: still pending after ``expires_at``."""


@dataclass(frozen=True, slots=True)
class Acceptance:
    identity: str
    at: float
    relationship_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    identity: str
    at: float
    reason: str | None


@dataclass(frozen=True, slots=True)
class Invite:
    id: str
    requester: str
    app_code: str
    display_name: str
    consent: dict[str, str]
    permissions: tuple[Permission, ...]
    mode: InviteMode
    features: dict[str, bool]
    created_at: float
    expires_at: float
    status: InviteStatus
    token_hash: bytes
    accepted_by: tuple[Acceptance, ...] = ()
    refused_by: tuple[Refusal, ...] = ()
    status_at: float | None = None
    """When ``status`` last changed (accepted, refused, invalidated); None while pending."""
    grant_expires_at: float | None = None
    """When the relationships made by accepting end (Unix seconds); None: until revoked."""

    def status_at_time(self, now: float) -> InviteStatus:
        """The status as seen at ``now``: a pending invite past ``expires_at`` is expired, and
        so is one past ``grant_expires_at`` (accepting it would grant nothing)."""
        if self.status is InviteStatus.PENDING and (
            now > self.expires_at
            or (self.grant_expires_at is not None and now >= self.grant_expires_at)
        ):
            return InviteStatus.EXPIRED
        return self.status


class RelationshipState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    """Ended by either side."""
    EXPIRED = "expired"
    """Ended by the clock at ``expires_at``: kept once the expiry sweep has run, and derived
    from the clock before (``Relationship.state_at``)."""


@dataclass(frozen=True, slots=True)
class Relationship:
    id: str
    invite_id: str
    requester: str
    accepter: str
    permissions: tuple[Permission, ...]
    """What the accepter grants the requester now (changed by an accepted scope request)."""
    features: dict[str, bool]
    """From the offer (D15), never from the accepter's request."""
    app_code: str
    created_at: float
    state: RelationshipState = RelationshipState.ACTIVE
    revoked_at: float | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    expires_at: float | None = None
    """When the relationship ends by itself (the invite's ``grantExpiresAt``); None: never."""

    def state_at(self, now: float) -> RelationshipState:
        """The state as seen at ``now``: an active relationship at or past ``expires_at`` is
        expired, whether or not the sweep has recorded it yet."""
        if (
            self.state is RelationshipState.ACTIVE
            and self.expires_at is not None
            and now >= self.expires_at
        ):
            return RelationshipState.EXPIRED
        return self.state

    def active_at(self, now: float) -> bool:
        """Whether the relationship grants anything at ``now``."""
        return self.state_at(now) is RelationshipState.ACTIVE

    def party(self, identity: str) -> bool:
        return identity in (self.requester, self.accepter)

    def other(self, identity: str) -> str:
        return self.accepter if identity == self.requester else self.requester


class ScopeState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class ScopeRequest:
    id: str
    relationship_id: str
    permissions: tuple[Permission, ...]
    """The whole permission set asked for: accepting it replaces the relationship's (D8)."""
    message: dict[str, str] | None
    created_at: float
    state: ScopeState = ScopeState.PENDING
    decided_at: float | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    seq: int
    """Per relationship, rising from 1: the cursor of ``chat_history``."""
    relationship_id: str
    sender: str
    text: str
    at: float


class AlertLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    relationship_id: str
    sender: str
    level: AlertLevel
    title: dict[str, str]
    body: dict[str, str]
    ack_required: bool
    ack_id: str | None
    at: float
    acked_at: float | None = None
    acked_by: str | None = None


class InboxKind(StrEnum):
    INVITE_CREATED = "invite-created"
    INVITE_ACCEPTED = "invite-accepted"
    INVITE_REFUSED = "invite-refused"
    INVITE_INVALIDATED = "invite-invalidated"
    RELATIONSHIP_CREATED = "relationship-created"
    RELATIONSHIP_REVOKED = "relationship-revoked"
    RELATIONSHIP_EXPIRED = "relationship-expired"
    SCOPE_REQUESTED = "scope-requested"
    SCOPE_ACCEPTED = "scope-accepted"
    SCOPE_REFUSED = "scope-refused"
    CHAT = "chat"
    ALERT = "alert"
    ALERT_ACKED = "alert-acked"


@dataclass(frozen=True, slots=True)
class InboxEvent:
    seq: int
    """Per identity, rising from 1: the cursor of ``inbox``."""
    identity: str
    kind: InboxKind
    data: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0
