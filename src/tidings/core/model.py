"""Plain records that cross the core's ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final


class RoutingRule(StrEnum):
    """Which envelopes a session receives (LIME presence ``routingRule``)."""

    INSTANCE = "instance"
    IDENTITY = "identity"
    PROMISCUOUS = "promiscuous"


class DeliveryEvent(StrEnum):
    """What the server tells a sender about a message it sent (LIME notification events)."""

    ACCEPTED = "accepted"
    DISPATCHED = "dispatched"
    FAILED = "failed"


class EnvelopeKind(StrEnum):
    """What an envelope the core hands a connection is, so the gateway counts what it writes
    by kind without parsing the bytes (``Outlet.deliver``)."""

    MESSAGE = "message"
    NOTIFICATION = "notification"
    COMMAND = "command"


class OverflowPolicy(StrEnum):
    REJECT_NEW = "reject-new"
    DROP_OLDEST = "drop-oldest"


UNCLAIMED: str = ""
"""Instance name of an identity's inbox for messages sent before it had any session."""


OUTBOX_PREFIX: Final = "~federation@"
"""Pseudo-identities ``~federation@DOMAIN`` (instance ``outbox``) hold what waits for another
domain's server (``core.federation``); '~' is in no LIME name."""
OUTBOX_INSTANCE: Final = "outbox"


@dataclass(slots=True)
class Account:
    name: str
    password_hash: str | None
    profile: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class WriteCounts:
    """What a store's writer has done so far, for ``/metrics``."""

    commits: int = 0
    operations: int = 0
    cpu_seconds: float = 0.0
    """CPU time of the writer thread: with the loop's, what a durable message costs (the
    server's other threads are idle under load)."""
    runs_failed: int = 0
    """Runs of operations made in one statement that failed (their batch then ran one
    operation at a time)."""


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One envelope bound for one session's queue."""

    identity: str
    instance: str
    sender: str
    message_id: str | None
    needs_ack: bool
    payload: bytes
    expires_at: float | None = None
    """Wall-clock time (seconds since the epoch) after which the envelope is not delivered but
    expired (its sender told); None: it never expires (server bookkeeping)."""


@dataclass(frozen=True, slots=True)
class QueuedEnvelope:
    seq: int
    sender: str
    message_id: str | None
    needs_ack: bool
    payload: bytes
    enqueued_at: float
    expires_at: float | None = None


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


# -- named sessions: bounded queues, gaps, persistence (issue 4) -------------------------------


class QueueKind:
    """What a queue row is: an envelope someone sent, or a notice the server made."""

    ENVELOPE = 0
    GAP = 1
    """The head-of-queue marker telling a session that drop-oldest removed envelopes."""
    NOTICE = 2
    """A ``failed`` notification kept for an offline sender (delivered once, not acknowledged)."""


@dataclass(frozen=True, slots=True)
class QueueBound:
    """Trim a drop-oldest session's queue to ``limit`` envelopes inside the same write."""

    identity: str
    instance: str
    limit: int
    delivered_upto: int = 0
    """The live connection's cursor: entries up to it are in the client's hands (awaiting its
    ``received``) and are not dropped, nor reported lost; 0 when offline."""


@dataclass(frozen=True, slots=True)
class QueueRow:
    """An envelope row as queue policy sees it inside a transaction (no payload)."""

    seq: int
    sender: str
    message_id: str | None
    needs_ack: bool


@dataclass(frozen=True, slots=True)
class ExpiredRow:
    """An envelope row past its expiry, with the session whose queue holds it."""

    identity: str
    instance: str
    expires_at: float
    row: QueueRow


@dataclass(frozen=True, slots=True)
class GapState:
    """A session's current gap marker: its queue row and what it counts so far."""

    seq: int
    dropped: int
    lost: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class PersistStep:
    """A request made inside a persistent session: checked and committed with its effect."""

    identity: str
    instance: str
    nonce: str
    memento: str | None
    """The new memento; ``None`` keeps the committed one."""


@dataclass(frozen=True, slots=True)
class Notice:
    """A queue row the server wrote (gap marker, kept failure) to deliver if its session is live."""

    identity: str
    instance: str
    seq: int
    payload: bytes
    needs_ack: bool


@dataclass(frozen=True, slots=True)
class TrimResult:
    """What bounding or deleting queues did, beside the append itself."""

    refused: bool = False
    """The persistent-session nonce was stale: nothing was written."""
    duplicate: bool = False
    seqs: list[int] = field(default_factory=list)
    removed: dict[tuple[str, str], int] = field(default_factory=dict)
    """Rows removed per session (dropped envelopes, replaced gap markers)."""
    notices: list[Notice] = field(default_factory=list)
    dropped: int = 0
    """Envelopes drop-oldest trims removed to make room (of ``removed``; a metric)."""


@dataclass(frozen=True, slots=True)
class ExpiryPass:
    """One transaction of the expiry sweep: what it did, and where the next one goes on."""

    result: TrimResult
    scanned: int
    """Expired rows read (some may have been left: in the hands of a live connection)."""
    expired: int
    """Rows removed as expired."""
    last: tuple[float, int]
    """(expires_at, seq) of the last row read: the next pass reads after it."""


@dataclass(frozen=True, slots=True)
class PersistenceState:
    nonce: str | None
    memento: str | None
    crashed: bool = False


@dataclass(frozen=True, slots=True)
class QueueSnapshotEntry:
    seq: int
    kind: int
    sender: str
    message_id: str | None
    payload: bytes
    enqueued_at: float


KEPT_PUBLICATIONS: Final = 4
"""Publications of one key the directory keeps (the latest): enough to answer for a replay,
few enough that republishing in a loop costs no storage."""


@dataclass(frozen=True, slots=True)
class KeyPublication:
    """One accepted node info publication: the key directory keeps every one, never edits one.

    ``document`` is the node info JSON as published (signature included), handed out again
    as is; ``revoked`` (ms) is filled in by reads when the key has been revoked."""

    sign_id: str
    identity: str
    instance: str
    published: int
    """Milliseconds since the epoch, as signed."""
    expires: int
    document: str
    revoked: int | None = None
