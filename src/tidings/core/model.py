"""Plain records that cross the core's ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RoutingRule(StrEnum):
    """Which envelopes a session receives (LIME presence ``routingRule``)."""

    INSTANCE = "instance"
    IDENTITY = "identity"
    PROMISCUOUS = "promiscuous"


class OverflowPolicy(StrEnum):
    REJECT_NEW = "reject-new"
    DROP_OLDEST = "drop-oldest"


UNCLAIMED: str = ""
"""Instance name of an identity's inbox for messages sent before it had any session."""


@dataclass(slots=True)
class Account:
    name: str
    password_hash: str | None
    profile: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One envelope bound for one session's queue."""

    identity: str
    instance: str
    sender: str
    message_id: str | None
    needs_ack: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class QueuedEnvelope:
    seq: int
    sender: str
    message_id: str | None
    needs_ack: bool
    payload: bytes
    enqueued_at: float


@dataclass(slots=True)
class SessionRecord:
    identity: str
    instance: str
    routing_rule: RoutingRule
    queue_limit: int | None
    policy: OverflowPolicy | None
    last_seen: float
    depth: int = 0


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What a durable append did: ``duplicate`` when (sender, id) was stored before."""

    duplicate: bool
    seqs: list[int] = field(default_factory=list)
