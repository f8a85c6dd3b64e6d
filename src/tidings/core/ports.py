"""Every interface the core needs from the outside: storage, connections, wire encoding.

Stores (``MessageStore``, ``AccountStore``, ``RosterStore``, ``FeedStore``, ``RequestStore``,
``KeyDirectoryStore``, ``ConsentStore``) are implemented by ``store/`` adapters (memory, SQLite;
PostgreSQL next) and pass one contract suite (tests/contract). Adapters supply transactions
and I/O, never policy: rules that need several reads and writes to be atomic (bounded queues,
gap markers, who is told, persistent sessions, app requests, consent) are core functions that
a store runs inside one transaction through the narrow ``QueueTransaction`` below. ``Outlet``,
``FeedClient`` and ``NoticeFactory`` are implemented by the gateway.

Hot-path calls (``append``, ``acknowledge``, ``discard``, ``transact``) take a completion
callback rather than returning an awaitable: the router submits thousands of them a second and a
task per message would cost more than the message. Every read is a coroutine, so that a network
database can serve it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .consent_model import (
    Acceptance,
    Alert,
    ChatMessage,
    InboxEvent,
    InboxKind,
    Invite,
    InviteStatus,
    Refusal,
    Relationship,
    ScopeRequest,
)
from .errors import TidingsError
from .histogram import Histogram
from .model import (
    Account,
    AppendResult,
    DeliveryEvent,
    EnvelopeKind,
    ExpiredRow,
    GapState,
    KeyPublication,
    PersistenceState,
    PersistStep,
    QueuedEnvelope,
    QueueEntry,
    QueueRow,
    QueueSnapshotEntry,
    SessionRecord,
    WriteCounts,
)

if TYPE_CHECKING:
    from ..protocol.feedme import FeedKey, PreparedRevelation

T = TypeVar("T")

Done = Callable[[Any], None]
"""Called on the event loop with the result, or with the exception when the write failed."""


def settling(future: asyncio.Future[Any]) -> Done:
    """A completion that settles ``future`` with the result or the exception (once)."""

    def done(result: Any) -> None:
        if future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    return done


# -- what the gateway implements ----------------------------------------------------------


class Outlet(Protocol):
    """How the core reaches one connected client; the gateway implements it."""

    def deliver(self, payload: bytes, kind: EnvelopeKind = EnvelopeKind.MESSAGE) -> bool:
        """Write an envelope (already encoded for this protocol) to the client; False when the
        connection is already closing and nothing was written. ``kind`` says what it is (the
        commonest, a message, by default: the hot path passes nothing)."""

    def notify(
        self, message_id: str, event: DeliveryEvent, error: TidingsError | None = None
    ) -> None:
        """Tell the client what became of a message it sent."""

    def observe(self, identity: str, presence: dict[str, Any]) -> None:
        """Push a presence change of a contact the client subscribed to."""

    def observe_resource(self, owner: str, uri: str, type_: str, resource: Any) -> None:
        """Push a change of another resource the client subscribed to (``owner``'s)."""

    def end(self, error: TidingsError) -> None:
        """End the client's session (taken over, shutting down)."""


class NoticeFactory(Protocol):
    """Encodes the envelopes the server itself puts in queues (one protocol's wire format).

    The core holds it and calls it from queue policy, possibly inside a store transaction (on
    the writer's thread): implementations must be pure functions of their arguments."""

    def gap(self, node: str, gap_id: str, dropped: int, lost: list[dict[str, str]]) -> bytes:
        """The gap marker message for ``node``."""

    def dispatched(self, node: str, message_id: str) -> bytes:
        """The ``dispatched`` receipt for a sender of another domain (relayed to its server)."""

    def failed(self, node: str, message_id: str, error: TidingsError) -> bytes:
        """A ``failed`` notification about ``message_id``, addressed to its sender ``node``."""

    def message(
        self, node: str, message_id: str, type_: str, content: Any, *, sender: str | None = None
    ) -> bytes:
        """A message from the server to ``node`` (server-side notify); ``sender`` puts another
        ``from`` than the server's node (a message the server delivers for an identity)."""

    def notification(
        self, node: str, to: str, message_id: str, event: str, reason: tuple[int, str] | None
    ) -> bytes:
        """A session's notification (``received``, ``consumed``, ``failed`` with ``reason``:
        code, description) about ``message_id``, from ``node`` to the message's sender ``to``:
        what a client would send about a message it took (an account over HTTP)."""


class FeedClient(Protocol):
    """One connected Feedme client, as the feed hub sees it."""

    client_id: str
    identity: str | None

    def reveal(self, revelation: PreparedRevelation) -> bool:
        """Queue the revelation if the feed is open for this client; True if it was."""

    def terminate(self, feed: FeedKey, error_code: str, error_data: dict[str, Any]) -> None: ...

    def terminate_all(self, error_code: str, error_data: dict[str, Any]) -> None: ...

    def disconnect(self) -> None: ...


# -- one transaction, as core rules see it ------------------------------------------------


class StateTable(Protocol):
    """The key-value rows of app state (inside one transaction)."""

    def get(self, key: str) -> str | None: ...
    def put(self, key: str, value: str) -> None: ...
    def delete(self, key: str) -> bool: ...
    def keys(self, prefix: str) -> list[str]: ...


class ConsentTable(Protocol):
    """The consent rows (``core.consent_model``), inside one transaction: what ``core.consent``
    reads and writes to make one change atomic (the accept of a single-use invite, say)."""

    def invite(self, invite_id: str) -> Invite | None:
        """The invite as stored (``accepted_by``/``refused_by`` filled in), or None."""

    def invite_by_token(self, token_hash: bytes) -> Invite | None: ...

    def add_invite(self, invite: Invite) -> None:
        """Keep a new invite (its ``accepted_by``/``refused_by`` are ignored)."""

    def set_invite_status(
        self, invite_id: str, status: InviteStatus, at: float, *, expected: InviteStatus
    ) -> bool:
        """Change the status only if it is ``expected`` now (a conditional update); whether it
        changed."""

    def add_acceptance(self, invite_id: str, acceptance: Acceptance) -> bool:
        """Record an acceptance unless the same identity (case-insensitive) accepted already;
        whether it was recorded."""

    def add_refusal(self, invite_id: str, refusal: Refusal) -> None: ...

    def relationship(self, relationship_id: str) -> Relationship | None: ...

    def put_relationship(self, relationship: Relationship) -> None:
        """Insert or replace (by id)."""

    def scope_request(self, scope_request_id: str) -> ScopeRequest | None: ...

    def put_scope_request(self, request: ScopeRequest) -> None:
        """Insert or replace (by id)."""

    def add_chat(self, relationship_id: str, sender: str, text: str, at: float) -> ChatMessage:
        """Append a chat message with the relationship's next sequence number (from 1)."""

    def alert(self, alert_id: str) -> Alert | None: ...

    def put_alert(self, alert: Alert) -> None:
        """Insert or replace (by id)."""

    def add_event(
        self, identity: str, kind: InboxKind, data: dict[str, Any], at: float
    ) -> InboxEvent:
        """Append an event to ``identity``'s inbox with its next sequence number (from 1)."""


class QueueTransaction(Protocol):
    """What core policy may do inside one store transaction: small, row-level operations.

    Counts and rows concern envelopes (``QueueKind.ENVELOPE``) unless said otherwise. If the
    function given to ``transact`` raises, nothing it did is kept."""

    @property
    def now(self) -> float:
        """The transaction's timestamp (``enqueued_at`` of what it queues)."""

    @property
    def state(self) -> StateTable:
        """App state rows, in this transaction."""

    @property
    def consent(self) -> ConsentTable:
        """Consent rows, in this transaction."""

    def insert(
        self, entries: Sequence[QueueEntry], dedupe: tuple[str, str] | None
    ) -> list[int] | None:
        """Queue entries (in order, rising sequence numbers) unless ``dedupe`` (sender, id) was
        stored before: their sequence numbers, or None for a duplicate (nothing written)."""

    def count(self, identity: str, instance: str) -> int:
        """Envelopes queued for the session."""

    def envelopes(
        self, identity: str, instance: str, *, after: int, before: int, limit: int
    ) -> list[QueueRow]:
        """The session's oldest envelopes with ``after < seq < before``, in order."""

    def delete(self, seqs: Sequence[int]) -> None:
        """Remove queue rows (of any kind)."""

    def expired(self, now: float, after: tuple[float, int], limit: int) -> list[ExpiredRow]:
        """Envelopes of every session whose expiry is at or before ``now``, in (expires_at,
        seq) order, starting after ``after``; at most ``limit``."""

    def expired_in(
        self, identity: str, instance: str, now: float, *, after: int, limit: int
    ) -> list[ExpiredRow]:
        """The session's envelopes past ``after`` (a sequence number) whose expiry is at or
        before ``now``, in sequence order; at most ``limit``."""

    def gap(self, identity: str, instance: str) -> GapState | None:
        """The session's gap marker, if it has one."""

    def put_gap(
        self, identity: str, instance: str, gap: GapState, sender: str, gap_id: str, payload: bytes
    ) -> None:
        """Write the session's gap marker at ``gap.seq`` (a free sequence number: the old
        marker's, or a removed envelope's), replacing the previous marker's bookkeeping."""

    def put_notice(self, identity: str, instance: str, sender: str, payload: bytes) -> int:
        """Queue a server notice (delivered once, never acknowledged); its sequence number."""

    def remove_session(self, identity: str, instance: str) -> int:
        """Remove the session's record, queue (every kind), gap and persistence state; the
        number of queue rows removed."""

    def nonce_is_current(self, persist: PersistStep) -> bool:
        """Whether ``persist.nonce`` is the session's current persistence nonce."""

    def store_memento(self, persist: PersistStep) -> None:
        """Commit ``persist.memento`` as the session's memento."""


class Transactional(Protocol):
    def transact(
        self, work: Callable[[QueueTransaction], T], done: Callable[[T | BaseException], None]
    ) -> None:
        """Run ``work`` inside one transaction (possibly on another thread, beside other
        work in the same commit); ``done`` gets its result or exception on the event loop.
        ``work`` must not touch event-loop state."""


# -- stores ---------------------------------------------------------------------------------


class MessageStore(Transactional, Protocol):
    """Per-session queues, session records, persistent-session state, message-id dedupe."""

    def append(
        self,
        entries: Sequence[QueueEntry],
        dedupe: tuple[str, str] | None,
        done: Callable[[AppendResult | BaseException], None],
    ) -> None:
        """Store entries atomically, once per ``dedupe`` key (sender, message id)."""

    def acknowledge(
        self,
        identity: str,
        instance: str,
        sender: str,
        message_id: str,
        done: Callable[[int | BaseException], None],
    ) -> None:
        """Remove an acknowledged message from a session's queue; reports rows removed."""

    def discard(self, seqs: Sequence[int]) -> None:
        """Remove delivered entries that need no acknowledgement."""

    def touch_session(self, identity: str, instance: str, last_seen: float) -> None:
        """Record when a session was last connected (idle collection counts from there)."""

    async def was_stored(self, sender: str, message_id: str) -> bool:
        """Whether (sender, id) was stored and committed."""

    async def queued_at(
        self, sender: str, message_id: str, sessions: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """Where (sender, id) still waits among these (identity, instance) sessions' queues:
        its row's seq in each that holds it (a re-send found stored: its rows may need a wake
        that the node that stored them did not live to send)."""

    async def barrier(self) -> None:
        """Wait until every write submitted before this call is committed and its completion
        has run."""

    async def drain(self) -> None:
        """Wait until every write submitted so far, and every one their completions submit in
        turn, is committed and its completion has run (before closing: an acknowledgement's
        completion keeps ``received`` for a sender gone offline)."""

    async def backlog(
        self, identity: str, instance: str, after_seq: int, limit: int
    ) -> list[QueuedEnvelope]:
        """Queued rows (every kind but none removed) past ``after_seq``, in order."""

    async def claim_unclaimed(self, identity: str, instance: str) -> int:
        """Move the identity's unclaimed inbox into the session's queue; rows moved."""

    async def load_sessions(self) -> list[SessionRecord]:
        """Every stored session record, with its queue depth; queues without a record come
        as identity-routed records."""

    async def load_session(self, identity: str, instance: str) -> SessionRecord | None:
        """One session's record as ``load_sessions`` gives it; None when it has neither a
        record nor a queue."""

    async def save_session(self, record: SessionRecord) -> None: ...
    async def forget_message_ids(self, older_than: float, limit: int) -> int:
        """Forget at most ``limit`` of the oldest dedupe keys stored before ``older_than``;
        how many (fewer than ``limit``: none older is left). A key is kept at least until
        ``older_than`` passes its storing time, never forgotten early."""

    def write_counts(self) -> WriteCounts:
        """Commits, operations and the writer's CPU so far, for ``/metrics``."""

    def commit_histograms(self) -> tuple[Histogram, Histogram] | None:
        """Operations per commit and seconds per commit, for ``/metrics`` (None: a store that
        commits nothing)."""

    async def queue_snapshot(
        self, identity: str, instance: str, limit: int
    ) -> list[QueueSnapshotEntry]:
        """The session's first rows, envelopes and gap marker (not notices)."""

    async def begin_persistence(self, identity: str, instance: str) -> PersistenceState:
        """A new nonce; ``crashed`` with the last memento when the previous one never ended."""

    async def end_persistence(self, identity: str, instance: str, nonce: str) -> bool:
        """Clear nonce and memento with the current nonce; true also when already ended."""

    async def persistence_of(self, identity: str) -> dict[str, PersistenceState]: ...
    async def idle_sessions(self, seen_before: float) -> list[tuple[str, str]]: ...


class RequestStore(Transactional, Protocol):
    """App state for app request handlers: read (committed rows) with the coroutines below,
    outside any transaction; written through ``transact`` (``core.app_requests.app_commit``
    checks that what was read is unchanged)."""

    async def app_state_get(self, key: str) -> str | None:
        """The committed value of ``key``."""

    async def app_state_keys(self, prefix: str) -> list[str]:
        """The committed keys starting with ``prefix``, in order."""


class AccountStore(Protocol):
    async def create_account(self, name: str, password_hash: str | None) -> None:
        """Raises ``Conflict`` (``ACCOUNT_EXISTS``) when the name is taken."""

    async def get_account(self, name: str) -> Account | None: ...
    async def has_account(self, name: str) -> bool: ...

    async def list_accounts(self) -> list[Account]: ...
    async def delete_account(self, name: str) -> bool: ...
    async def update_account(
        self, name: str, *, password_hash: str | None = None, profile: dict[str, Any] | None = None
    ) -> None: ...
    async def add_key(self, name: str, key_hash: bytes, label: str) -> None: ...
    async def account_for_key(self, key_hash: bytes) -> str | None: ...
    def key_owner(self, key_hash: bytes) -> str | None:
        """A fast indexed read, usable where no await is possible (WebSocket upgrade)."""


class RosterStore(Protocol):
    async def contacts(self, owner: str) -> list[dict[str, Any]]: ...
    async def put_contact(self, owner: str, contact: dict[str, Any]) -> None: ...
    async def delete_contact(self, owner: str, identity: str) -> bool: ...
    async def delegations(self, owner: str) -> list[dict[str, Any]]: ...
    async def put_delegation(self, owner: str, delegation: dict[str, Any]) -> None: ...
    async def delete_delegation(self, owner: str, target: str) -> bool: ...


class FeedStore(Protocol):
    async def feed_document(self, name: str, args: Mapping[str, str]) -> dict[str, Any] | None: ...
    async def save_feed_document(
        self, name: str, args: Mapping[str, str], document: dict[str, Any]
    ) -> None: ...


class KeyDirectoryStore(Protocol):
    """The key directory: every accepted node info publication, and revocations, kept for good.

    The store keeps what it is given; ``core.key_directory`` decides what may be published,
    except staleness, which the store checks again inside the write (several nodes)."""

    async def add_key_publication(self, publication: KeyPublication) -> None:
        """Keep a publication (its ``revoked`` is ignored), and of its ``sign_id`` only the
        latest ``KEPT_PUBLICATIONS``: every session of an SDK node publishes again, and a
        node reconnecting in a loop must not grow the directory without end. ``Conflict``
        (``KEY_STALE``) when one of the same ``sign_id`` as recent (``published``) is kept
        already: checked in the write, so that two nodes publishing at once cannot both pass
        the service's own check."""

    async def key_publication(self, sign_id: str) -> KeyPublication | None:
        """The latest publication of ``sign_id`` (highest ``published``), with ``revoked`` set
        when the key is revoked; None when it was never published."""

    async def key_publications_of(self, identity: str) -> list[KeyPublication]:
        """The latest publication of every key ``identity`` published, revoked and expired ones
        included (with ``revoked`` set), ordered by ``sign_id``."""

    async def key_history(self, sign_id: str) -> list[KeyPublication]:
        """The kept publications of ``sign_id`` (the latest ``KEPT_PUBLICATIONS``), oldest
        first (``revoked`` set on each when revoked)."""

    async def revoke_key(self, sign_id: str, revoked: int, by: str) -> int:
        """Record that node ``by`` revoked ``sign_id`` at ``revoked`` (ms). A key is revoked
        once: a second call keeps the first record. Returns the revocation time in force."""


class ConsentStore(Transactional, Protocol):
    """Invites, relationships, scope requests, chat, alerts and per-identity inboxes.

    Written only through ``transact`` (``QueueTransaction.consent``), so that every write of
    one consent operation commits together; read here (committed rows), outside any
    transaction. The store keeps what it is given; ``core.consent`` decides."""

    async def consent_invite(self, invite_id: str) -> Invite | None: ...
    async def consent_invite_by_token(self, token_hash: bytes) -> Invite | None: ...

    async def consent_invites_of(self, requester: str) -> list[Invite]:
        """The requester's invites, oldest first."""

    async def consent_relationship(self, relationship_id: str) -> Relationship | None: ...

    async def consent_relationships_of(self, identity: str) -> list[Relationship]:
        """Relationships where ``identity`` is either side (revoked ones too), oldest first."""

    async def consent_relationships_between(
        self, requester: str, accepter: str
    ) -> list[Relationship]:
        """The relationships of ``requester`` with ``accepter`` whose stored state is active
        (an expiry past but not yet swept included: the caller checks ``expires_at``), oldest
        first."""

    async def consent_relationships_expiring(self, limit: int) -> list[Relationship]:
        """Active relationships that have an ``expires_at``, soonest first, at most ``limit``
        (what the expiry sweep works through)."""

    async def consent_scope_request(self, scope_request_id: str) -> ScopeRequest | None: ...

    async def consent_scope_requests(self, relationship_id: str) -> list[ScopeRequest]:
        """The relationship's scope requests, oldest first."""

    async def consent_chat(self, relationship_id: str, since: int, limit: int) -> list[ChatMessage]:
        """Chat messages with ``seq > since``, in order, at most ``limit``."""

    async def consent_alert(self, alert_id: str) -> Alert | None: ...

    async def consent_inbox(self, identity: str, since: int, limit: int) -> list[InboxEvent]:
        """Inbox events with ``seq > since``, in order, at most ``limit``."""


__all__ = [
    "AccountStore",
    "Broker",
    "ConsentStore",
    "ConsentTable",
    "Done",
    "FeedClient",
    "FeedStore",
    "KeyDirectoryStore",
    "MessageStore",
    "NoticeFactory",
    "Outlet",
    "QueueTransaction",
    "RequestStore",
    "RosterStore",
    "StateTable",
    "Store",
    "Transactional",
    "settling",
]


class Store(
    MessageStore,
    RequestStore,
    AccountStore,
    RosterStore,
    FeedStore,
    KeyDirectoryStore,
    ConsentStore,
    Protocol,
):
    """A whole storage backend, as the server opens and closes it (SQLite, memory, ...)."""

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start (the SQLite writer thread, say) on the server's loop."""

    def close(self) -> None:
        """Commit what is queued, then stop (safe to call twice)."""


class Broker(Protocol):
    """Live messages between the nodes of one deployment, as bytes: what a node publishes on a
    channel, every node subscribed to it hears, the publisher included (Redis does that); the
    messages say their origin so that a node skips its own where it acted already.

    Nothing sent through it is the only copy: durable state is stored first, so a lost broker
    message delays a live delivery but loses nothing (after a reconnect, ``on_reconnect``
    callbacks re-read the store). Channels are named in ``core.cluster`` (``tidings:...``).
    """

    node_id: str
    """This node's name in the deployment (unique among the nodes sharing the broker)."""
    distributed: bool
    """It reaches other processes (Redis): another node may be there before it is heard, so
    the node routes through the broker from its start."""

    def publish(self, channel: str, message: bytes) -> None:
        """Send ``message`` to the channel's subscribers on every node; ordered per channel
        per publishing node. Dropped (and counted) while disconnected."""

    def subscribe(self, channel: str, receiver: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``receiver`` with each message published on ``channel``; returns the function
        that unsubscribes it."""

    def listening(self, channel: str) -> bool:
        """Whether anyone may hear ``channel`` (in-process: someone subscribed; Redis: always
        True): lets a publisher skip encoding an unheard message."""

    @property
    def connected(self) -> bool:
        """Whether a publication now reaches the other nodes (and comes back to this one)."""

    async def flushed(self) -> None:
        """Return once everything published so far has reached the broker (or was lost with
        the link): what is published after it is ordered after those on every node."""

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each reconnect, once every channel is subscribed again
        (what was published meanwhile is lost: the callback re-reads the store)."""

    async def start(self) -> None:
        """Connect (a no-op in process)."""

    async def close(self) -> None:
        """Disconnect; publishing afterwards drops the message."""
