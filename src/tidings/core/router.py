"""The router: where messages go, what is stored, and what the sender is told when.

The delivery contract (DESIGN.md section 3) lives here:
- a message with an id is stored once per (sender, id), in every destination session's queue,
  in one group-committed write, and only then ``accepted`` and written to the live sessions;
- it stays queued until the destination acknowledges it (``received``); a reconnecting session
  gets its backlog in order before anything new;
- a full queue refuses the message as a whole with an explicit failure, never silently;
- every queued entry carries the time it expires (``core.expiry``): an expired entry is never
  written to a recipient; it is removed, its sender told, its session told of the gap.

Envelope bytes come ready-made from the gateway (the sender already stamped); the router never
parses them. It stamps each message's trust scope at delivery with the ``stamp`` it is given
(the scope of that moment: see ``_scope``), and refuses at send time the messages of senders
that the recipient's circle does not accept (``allowUnknownSender``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from time import perf_counter as _perf_counter
from typing import Any, Protocol

from .address import Address, parse_address
from .errors import (
    Conflict,
    ErrorId,
    Forbidden,
    Invalid,
    LimitExceeded,
    NotFound,
    TidingsError,
    Unavailable,
)
from .federation import Federation, outbox_domain
from .histogram import LATENCY_S, Histogram
from .model import (
    UNCLAIMED,
    AppendResult,
    EnvelopeKind,
    ExpiryPass,
    Notice,
    OverflowPolicy,
    PersistStep,
    QueueBound,
    QueuedEnvelope,
    QueueEntry,
    SessionRecord,
    TrimResult,
)
from .ports import MessageStore, NoticeFactory, settling
from .queue_ledger import QueueLedger
from .queue_policy import QueuePolicy
from .session_registry import DeliveryEvent, LiveSession, SessionRegistry
from .trust import Circle, Scope, TrustCircles, scope_of

BACKLOG_PAGE = 1000
COMMAND_TTL_S = 60.0
"""How long a command between clients of two domains may wait for the other server: a request
needs someone to answer soon."""
HELD_ELSEWHERE = 1 << 62
"""The cursor the sweep assumes for a session live on another node: none of its rows."""
EXPIRY_PASS = 500
"""Expired rows one sweep transaction handles (several passes when more are due)."""
log = logging.getLogger("tidings.router")

Stamp = Callable[[bytes, Scope], bytes]
"""Writes a message's trust scope into its encoded envelope (the same bytes when it is there)."""
_Admitted = tuple[str, Circle | None]
"""Who sent a message (its identity), and the recipient's circle it was admitted by (None: to
its own identity, or no scopes). A plain tuple: one is made per message."""


class Peers(Protocol):
    """The other nodes of a deployment, as the router uses them (``core.cluster``). Set on the
    router (``Router.peers``) only once another node is heard: a single node pays one
    attribute test on the paths where a session is not live here."""

    def stored(self, record: SessionRecord, seq: int) -> None:
        """A row was stored in the queue of a session not live on this node: wake its owner
        node, if another node holds it."""

    def forward(
        self, identity: str, instance: str, payload: bytes, *, command: bool, about: str = ""
    ) -> bool:
        """Send an envelope to the session on the node that holds it; False when no node
        does. ``about``: the id of the message a forwarded notification is about."""

    def receipt(self, identity: str, instance: str, message_id: str, event: DeliveryEvent) -> None:
        """Tell a sender live on another node what became of its message."""

    def attaching(self, live: LiveSession) -> None:
        """The session attaches here: announce it, take it over from its previous node."""

    def detached(self, live: LiveSession) -> None: ...

    def waking(self) -> bool:
        """Whether wakes were queued in this loop turn and are not out yet."""

    def once_announced(self, then: Callable[[], None], message_id: str) -> None:
        """Call ``then`` (the ``accepted`` of ``message_id``) once the wakes queued so far
        have reached the broker; receipts of that message from other nodes wait for it."""

    async def announced(self) -> None:
        """Wait until the wakes queued or published so far have reached the broker."""

    def held_back(self, message_id: str, then: Callable[[], None]) -> bool:
        """If the ``accepted`` of ``message_id`` is not out yet, keep ``then`` (a receipt or a
        recipient's notification about it) to run right after it, and say so."""

    def held_elsewhere(self) -> dict[str, dict[str, Any]]:
        """The sessions live on other nodes, by identity and instance."""

    def record_changed(self, identity: str, instance: str) -> None:
        """A session record was saved or deleted here: the other nodes read it again."""

    async def refresh(self) -> None:
        """Read every session record again from the store."""

    async def look_up(self, identity: str, instance: str) -> None:
        """Take the session's stored record, if any (made on another node, not heard yet)."""


@dataclass(frozen=True, slots=True)
class QueueLimits:
    default_limit: int = 10_000
    default_policy: OverflowPolicy = OverflowPolicy.REJECT_NEW
    message_ttl: float = 7 * 24 * 3600.0
    """Seconds a message that gives no ``expireAfter`` may wait for its recipient."""


class Router:
    def __init__(
        self,
        domain: str,
        store: MessageStore,
        registry: SessionRegistry,
        identity_exists: Callable[[Address], Awaitable[bool]],
        limits: QueueLimits = QueueLimits(),
        notices: NoticeFactory | None = None,
        server_node: str = "",
        trust: TrustCircles | None = None,
        stamp: Stamp | None = None,
    ) -> None:
        self.domain = domain
        self._store = store
        self.notices = notices
        """Encodes gap markers and kept failures; without one, drop-oldest acts as reject-new."""
        self.server_node = server_node
        self.policy = QueuePolicy(notices, server_node) if notices is not None else None
        self._registry = registry
        self.ledger = QueueLedger(registry)
        """The only writer of session depths: reserved before each write, settled from its
        result."""
        self._identity_exists = identity_exists
        self.limits = limits
        self.delivered = 0
        self._trust = trust
        """Without one (unit tests of other rules), messages go unstamped and unrefused."""
        self._stamp: Stamp = stamp if stamp is not None else _unstamped
        self._tasks: set[asyncio.Task[None]] = set()
        self.peers: Peers | None = None
        """The other nodes, once there are any (``core.cluster``)."""
        self.federation: Federation | None = None
        """Other domains' servers (``core.federation``); without it they are not found."""
        self.accept_seconds = Histogram(LATENCY_S)
        """From a message's routing to its commit (what its sender waits for ``accepted``)."""
        self.expired = 0
        """Queued envelopes removed past their expiry (their senders told)."""
        self.refused_full = 0
        """Messages refused because a destination queue was full (121): counted where the
        refusal is final (a re-send of a message stored before is answered ``accepted``)."""
        self.fanout_deliveries = 0
        """Live writes, at routing, of messages that had several destination sessions (an
        identity's sessions, a notify to a pattern): one per session written."""

    # -- messages ---------------------------------------------------------------------------

    def send_message(
        self,
        sender: LiveSession,
        message_id: str | None,
        to: Address,
        payload: bytes,
        persist: PersistStep | None = None,
        *,
        on_behalf_of: Address | None = None,
        expire_after: float | None = None,
        realtime: bool = False,
    ) -> Awaitable[None] | None:
        """Route a message; raises ``TidingsError`` when it cannot be taken at all.

        ``on_behalf_of`` is the delegating owner when the session sends for someone else (it
        is then the message's sender); by default the sender is the session's own node.

        ``expire_after`` (seconds; default ``limits.message_ttl``) bounds how long it may wait
        in queues. ``realtime``: when no destination session is online it is refused at once
        with ``MESSAGE_EXPIRED`` (dropped, if it has no id) instead of being queued.

        ``payload`` is a message envelope encoded with ``tidings.scope`` = ``public`` first in
        its metadata (``protocol.lime.scoped_metadata``): the router stamps the scope when it
        differs. A ``public`` sender that the recipient does not accept is refused
        (``UNKNOWN_SENDER``).

        ``persist`` makes it a persistent-session request: the nonce is checked and the memento
        committed in the same transaction as the message (stale nonce: ``failed``).

        When routing needs a store read first (a destination identity with no session yet; a
        full queue, where a re-send must be told apart), it returns an awaitable that finishes
        the job (and raises the ``TidingsError``); the caller awaits it before its next message,
        so that a sender's messages keep their order. The common case returns None at once.
        """
        if on_behalf_of is None:
            sender_address, creator = sender.node, sender.identity
        else:
            sender_address, creator = on_behalf_of.text, on_behalf_of.identity
        expires_at = self.expiry_of(expire_after)
        if to.domain != self.domain:
            if persist is not None:
                raise Invalid(
                    ErrorId.INVALID_ARGUMENT,
                    "Persistent-session requests go to this server's identities, not another "
                    "domain's",
                )
            self._federation(to).send(sender, sender_address, message_id, to, payload, expires_at)
            return None
        known = self._registry.knows(to.identity)
        if known and to.instance is not None and self.peers is not None:
            # a session of that name made on another node whose Attached has not come yet:
            # unknown here, its messages would go where the identity's go (``_resolve``)
            known = to.instance in self._registry.records_of(to.identity)
        trust = self._trust
        circle = None
        if trust is not None and creator != to.identity:
            circle = trust.cached(to.identity)
            if circle is None:
                known = False  # the circle that decides whether the sender may write: loaded
        if not known:
            return self._send_checked(
                sender,
                sender_address,
                creator,
                message_id,
                to,
                payload,
                persist,
                expires_at,
                realtime,
            )
        return self._send(
            sender,
            sender_address,
            creator,
            message_id,
            to,
            payload,
            persist,
            expires_at,
            realtime,
            circle,
        )

    async def _send_checked(
        self,
        sender: LiveSession,
        sender_address: str,
        creator: str,
        message_id: str | None,
        to: Address,
        payload: bytes,
        persist: PersistStep | None,
        expires_at: float,
        realtime: bool,
    ) -> None:
        registry = self._registry
        if not registry.knows(to.identity):
            await self.check_identity(to)
        peers, instance = self.peers, to.instance
        if (
            peers is not None
            and instance is not None
            and instance not in registry.records_of(to.identity)
        ):
            await peers.look_up(to.identity, instance)  # made on another node: not heard yet
        trust = self._trust
        circle = None
        if trust is not None and creator != to.identity:
            circle = await trust.circle(to.identity)
        pending = self._send(
            sender,
            sender_address,
            creator,
            message_id,
            to,
            payload,
            persist,
            expires_at,
            realtime,
            circle,
        )
        if pending is not None:
            await pending

    def _send(
        self,
        sender: LiveSession,
        sender_address: str,
        creator: str,
        message_id: str | None,
        to: Address,
        payload: bytes,
        persist: PersistStep | None,
        expires_at: float,
        realtime: bool,
        circle: Circle | None = None,
    ) -> Awaitable[None] | None:
        """``circle`` is the recipient's, loaded (None: the sender is the recipient)."""
        if self._trust is not None:
            payload = self._admit(creator, to.identity, circle, payload)
        admitted: _Admitted = (creator, circle)
        targets = self._resolve(to.identity, to.instance, creator)
        if realtime and not self._any_online(targets):
            if message_id is None:
                return None  # nobody to tell: "now or never" is never
            raise TidingsError(
                ErrorId.MESSAGE_EXPIRED,
                f"No session of {to.text} is online to take a realtime message now",
            )
        try:
            bounds = self.bounds_for(targets)
        except LimitExceeded as refusal:
            if message_id is None:
                self.refused_full += 1
                raise
            return self._resend_or_refuse(sender, sender_address, message_id, targets, refusal)
        if message_id is None:
            if persist is not None:
                raise TidingsError(
                    ErrorId.INVALID_ARGUMENT, "A persistent-session message needs an id"
                )
            self._send_unacknowledged(sender_address, targets, payload, bounds, expires_at)
            return None
        if bounds or persist is not None:
            self._send_bounded(
                sender,
                sender_address,
                admitted,
                message_id,
                targets,
                payload,
                bounds,
                persist,
                expires_at,
            )
            return None
        entries = _queued(targets, sender_address, message_id, payload, expires_at)
        self.ledger.reserve(targets)
        started = _perf_counter()

        def appended(result: AppendResult | BaseException) -> None:
            self.accept_seconds.observe(_perf_counter() - started)
            self.ledger.settle_append(targets, result)
            self._appended(
                sender, sender_address, admitted, message_id, targets, payload, result, expires_at
            )

        self._store.append(entries, (sender_address, message_id), appended)
        return None

    def _admit(self, creator: str, recipient: str, circle: Circle | None, payload: bytes) -> bytes:
        """Refuse a ``public`` sender that the recipient does not accept; stamp the scope of
        now, so that a live delivery that follows finds it right (``payload`` comes encoded
        with ``public``, the commonest: those are not touched at all). ``circle`` is None for a
        message to the sender's own identity."""
        if circle is None:
            return self._stamp(payload, Scope.SELF)
        if creator in circle.friends:  # scope_of, inlined: the sender is not the recipient
            return self._stamp(payload, Scope.FRIENDS)
        if not circle.accepts(creator):
            raise Forbidden(
                ErrorId.UNKNOWN_SENDER,
                f"{recipient} accepts messages only from its contacts (and those it granted "
                "'messages' through consent)",
            )
        return payload

    def _scope(self, sender_address: str, recipient: str) -> Scope | None:
        """The scope of a message from the node ``sender_address`` to identity ``recipient``
        now; None when the recipient's circle is not loaded."""
        trust = self._trust
        if trust is None:
            return Scope.PUBLIC  # stamped by _unstamped: nothing happens
        return trust.scope(sender_address.partition("/")[0], recipient)

    def _await_circle(self, live: LiveSession) -> None:
        """``live``'s identity has no circle loaded (a contact or account change forgot it, or
        the cache let it go) and a message for it came: rather than block, or guess a scope,
        deliveries to it wait in its queue, as while it is behind reading, and a replay loads the
        circle and writes them in order (what was not stored yet, the caller keeps)."""
        live.replaying = True
        if live.replay_running:
            return  # the replay under way reads the circle before its next page
        live.replay_running = True
        self._spawn(self.replay(live))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        # Unavailable: the store closed, the server is stopping
        if error is not None and not isinstance(error, Unavailable):
            log.error("a router task failed", exc_info=error)

    async def _resend_or_refuse(
        self,
        sender: LiveSession,
        sender_address: str,
        message_id: str,
        targets: list[SessionRecord],
        refusal: LimitExceeded,
    ) -> None:
        """A full queue: a re-send of a message stored before (its accepted was lost) is queued
        already, so it gets the answer it got then, not "queue full"."""
        if not await self._store.was_stored(sender_address, message_id):
            self.refused_full += 1
            raise refusal
        if self.peers is None:
            _tell_sender(sender, message_id, False)
        else:
            await self._stored_before(sender, sender_address, message_id, targets)

    async def _stored_before(
        self,
        sender: LiveSession,
        sender_address: str,
        message_id: str,
        targets: list[SessionRecord],
    ) -> None:
        """A re-send of a message stored before, with other nodes: "accepted" once its rows
        still queued are announced again (``wake_again``)."""
        await self.wake_again(sender_address, message_id, targets)
        self._tell_once_announced(sender, message_id, False)

    async def wake_again(
        self, sender_address: str, message_id: str, targets: Sequence[SessionRecord]
    ) -> None:
        """With other nodes, announce again the rows still queued of a message found stored
        (a re-send, deduplicated), as if just stored. The node that stored them may have died
        after the commit, before its wakes went out and before it answered: its sender re-sent
        the message here, and without a wake its rows would wait unwritten while their sessions
        stay connected (the rows after them written live, these left behind as holes)."""
        peers = self.peers
        if peers is None:
            return
        try:
            found = await self._store.queued_at(
                sender_address, message_id, [(r.identity, r.instance) for r in targets]
            )
        except Unavailable:
            return  # stored all the same; the session's next connection reads the rows
        for record in targets:
            seq = found.get((record.identity, record.instance))
            if seq is None:
                continue  # written and acknowledged already
            live = self._registry.live(record.identity, record.instance)
            if live is None:
                peers.stored(record, seq)  # wakes the node that holds it
            else:
                await self.woken(live, [seq])  # written here unless written already

    async def announced(self) -> None:
        """With other nodes, wait until the wakes queued so far have reached the broker: an
        answer that says "stored" must not outrun them (see ``_appended``)."""
        peers = self.peers
        if peers is not None:
            await peers.announced()  # the wakes may have gone out already, not reached it

    def _appended(
        self,
        sender: LiveSession,
        sender_address: str,
        admitted: _Admitted,
        message_id: str,
        targets: list[SessionRecord],
        payload: bytes,
        result: AppendResult | BaseException,
        expires_at: float,
    ) -> None:
        """Tell the sender and write to live sessions (the ledger has settled the depths)."""
        if isinstance(result, BaseException):
            sender.outlet.notify(
                message_id,
                DeliveryEvent.FAILED,
                Unavailable(ErrorId.STORAGE_UNAVAILABLE, f"The message was not stored: {result}"),
            )
            return
        if result.duplicate:
            if self.peers is None:
                _tell_sender(sender, message_id, False)
            else:
                self._spawn(self._stored_before(sender, sender_address, message_id, targets))
            return
        if expires_at <= time.time():
            if sender.wants(DeliveryEvent.ACCEPTED):
                sender.outlet.notify(message_id, DeliveryEvent.ACCEPTED)
            self._expire_in(targets)  # expired while it was being stored: never written
            return
        stamped: bytes | None = payload
        creator, circle = admitted
        trust = self._trust
        if circle is not None and trust is not None:
            # the payload says the scope of admission; the circle may have changed since
            recipient = targets[0].identity
            now = trust.cached(recipient)
            if now is None:
                stamped = None
            elif now is not circle:
                stamped = self._stamp(payload, scope_of(creator, recipient, now))
        written = 0
        for record, seq in zip(targets, result.seqs, strict=True):
            live = self._writable(record, seq)
            if live is None:
                continue
            if stamped is None:
                self._await_circle(live)  # stored: the replay writes it
            elif live.outlet.deliver(stamped):
                _advance(live, seq)
                written += 1
        dispatched = written > 0
        if dispatched:
            self.delivered += 1
            if len(targets) > 1:
                self.fanout_deliveries += written
        self._tell_once_announced(sender, message_id, dispatched)

    def _tell_once_announced(self, sender: LiveSession, message_id: str, dispatched: bool) -> None:
        """Tell the sender once the wakes queued so far are out: a node that dies right after
        answering must not take them along (a later message, from the sender's next node,
        would be written first and this one left in its queue)."""
        peers = self.peers
        if peers is not None and peers.waking():
            peers.once_announced(lambda: _tell_sender(sender, message_id, dispatched), message_id)
        else:
            _tell_sender(sender, message_id, dispatched)

    def _send_unacknowledged(
        self,
        sender_address: str,
        targets: list[SessionRecord],
        payload: bytes,
        bounds: list[QueueBound] | None,
        expires_at: float,
    ) -> None:
        """Fire-and-forget: write to live sessions now (``payload`` carries the scope admitted
        just now), keep a copy for the others."""
        offline = []
        registry = self._registry
        for record in targets:
            live = registry.live(record.identity, record.instance)
            if live is None or live.replaying or not live.available:
                offline.append(record)
            elif not live.outlet.deliver(payload):
                offline.append(record)  # closing, or behind reading: kept for it
        self.delivered += 1
        if len(targets) > 1:
            self.fanout_deliveries += len(targets) - len(offline)
        if offline:
            self._keep(offline, sender_address, payload, expires_at, bounds)

    def _keep(
        self,
        targets: list[SessionRecord],
        sender_address: str,
        payload: bytes,
        expires_at: float,
        bounds: list[QueueBound] | None = None,
    ) -> None:
        entries = [
            QueueEntry(r.identity, r.instance, sender_address, None, False, payload, expires_at)
            for r in targets
        ]
        self.ledger.reserve(targets)
        policy = self.policy
        if bounds and policy is not None:

            def kept_bounded(result: TrimResult | BaseException) -> None:
                self.ledger.settle_append(targets, result)
                if isinstance(result, BaseException):
                    return
                self.deliver_notices(result)
                for record, seq in zip(targets, result.seqs, strict=True):
                    self._deliver_if_live(record, seq, payload, expires_at, sender_address)

            self._store.transact(policy.bounded_append(entries, None, bounds, None), kept_bounded)
            return

        def kept(result: AppendResult | BaseException) -> None:
            self.ledger.settle_append(targets, result)
            if isinstance(result, BaseException):
                return
            for record, seq in zip(targets, result.seqs, strict=True):
                self._deliver_if_live(record, seq, payload, expires_at, sender_address)

        self._store.append(entries, None, kept)

    def _deliver_if_live(
        self,
        record: SessionRecord,
        seq: int,
        payload: bytes,
        expires_at: float,
        sender_address: str,
    ) -> None:
        """A kept entry, just written: a message (from ``sender_address``) or, without a
        sender, a forwarded notification (not stamped)."""
        live = self._writable(record, seq)
        if live is None:
            return
        if expires_at <= time.time():
            self._expire_in([record])
            return
        kind = EnvelopeKind.NOTIFICATION
        if sender_address:
            kind = EnvelopeKind.MESSAGE
            scope = self._scope(sender_address, record.identity)
            if scope is None:
                self._await_circle(live)
                return
            payload = self._stamp(payload, scope)
        if live.outlet.deliver(payload, kind):  # kept (unacknowledged) entries go once written
            _advance(live, seq)
            self.ledger.settle_removal(record, 1)
            self._store.discard([seq])

    def _writable(self, record: SessionRecord, seq: int) -> LiveSession | None:
        """The live session to write the just-stored row ``seq`` to now, or None: live on
        another node (woken there), live nowhere, replaying (the replay writes it), or written
        already."""
        live = self._registry.live(record.identity, record.instance)
        if live is None:
            peers = self.peers
            if peers is not None:
                peers.stored(record, seq)
            return None
        if live.replaying or not live.available or (seq <= live.cursor and _written(live, seq)):
            _replaying(live, seq)
            return None
        return live

    def acknowledge(
        self,
        destination: LiveSession,
        sender_address: str,
        message_id: str,
        then: Callable[[], None] | None = None,
    ) -> None:
        """The destination received a message: drop it from that session's queue.

        ``then`` runs once the removal is committed, so that a ``received`` forwarded to the
        sender means the message will not come back.
        """
        record = destination.record

        def removed(count: int | BaseException) -> None:
            self.ledger.settle_removal(record, count)
            if then is not None:
                then()

        self._store.acknowledge(
            destination.identity, destination.instance, sender_address, message_id, removed
        )

    # -- notifications and commands between clients ------------------------------------------

    def keep_notification(self, record: SessionRecord, payload: bytes) -> None:
        """Keep a forwarded notification for a session that could not take it now (another
        node forwarded it to a connection that went meanwhile)."""
        self._keep([record], "", payload, self.expiry_of())

    def forward_notification(self, to: Address, payload: bytes, about: str = "") -> None:
        """Forward a client's notification; kept for the originator if it is offline.
        ``about``: the id of the message it is about; with other nodes, a notification that
        overtook that message's ``accepted`` (still on its way out) waits for it."""
        if to.domain != self.domain:
            federation = self.federation
            if federation is not None:
                federation.relay(to, payload)
            return
        if not self._registry.knows(to.identity):
            return
        peers = self.peers
        if peers is not None and about:
            again = partial(self.forward_notification, to, payload)
            if peers.held_back(about, again):
                return
        offline = []
        for record in self._registry.targets(to.identity, to.instance, create=False):
            live = self._registry.live(record.identity, record.instance)
            if live is None:
                if peers is None or not peers.forward(
                    record.identity, record.instance, payload, command=False, about=about
                ):
                    offline.append(record)
            elif live.replaying or not live.outlet.deliver(payload, EnvelopeKind.NOTIFICATION):
                offline.append(record)  # kept, and delivered when the session is next written to
        if offline:
            self._keep(offline, "", payload, self.expiry_of())

    def forward_command(self, to: Address, payload: bytes) -> Awaitable[None] | None:
        """Forward a command to live sessions only: a request needs someone to answer now.

        Raises ``TidingsError`` when no session takes it; for an identity with no session the
        store is asked whether it exists, in the awaitable returned (which raises)."""
        if to.domain != self.domain:
            self._federation(to).relay(to, payload, self.expiry_of(COMMAND_TTL_S))
            return None
        if not self._registry.knows(to.identity):
            return self._command_to_nobody(to)
        delivered = False
        peers = self.peers
        for record in self._registry.targets(to.identity, to.instance, create=False):
            live = self._registry.live(record.identity, record.instance)
            if live is not None:
                if live.available and live.outlet.deliver(payload, EnvelopeKind.COMMAND):
                    delivered = True
            elif peers is not None and peers.forward(
                record.identity, record.instance, payload, command=True
            ):
                delivered = True  # the owner node writes it (when still connected)
        if not delivered:
            raise _offline(to)
        return None

    async def _command_to_nobody(self, to: Address) -> None:
        await self.check_identity(to)
        raise _offline(to)

    # -- sessions coming and going ------------------------------------------------------------

    async def attach(self, live: LiveSession) -> None:
        """Register a connected session and write its backlog, in order."""
        if not live.guest:
            self._end_guests_of(live.identity)
        peers = self.peers
        if peers is not None:
            peers.attaching(live)
        displaced = self._registry.attach(live)
        if displaced is not None:
            displaced.outlet.end(
                Conflict(
                    ErrorId.SESSION_TAKEN_OVER, "The session was taken over by a new connection"
                )
            )
        # A resume of the connection meanwhile must not replay before the inbox is claimed:
        # this is the replay (``catch_up`` leaves it alone while one runs).
        live.replay_running = True
        try:
            # Acknowledgements sent by the previous connection of this node may still be in the
            # writer's queue: let them commit so the backlog does not bring those messages back.
            await self._store.barrier()
            unclaimed = self._registry.records_of(live.identity).get(UNCLAIMED)
            if peers is not None:
                # another node may have filled the inbox: the store says, not this depth
                moved = await self._store.claim_unclaimed(live.identity, live.instance)
                if moved:
                    source = self._registry.record(live.identity, UNCLAIMED)
                    self.ledger.settle_claim(source, live.record, moved)
            elif unclaimed is not None and unclaimed.depth:
                moved = await self._store.claim_unclaimed(live.identity, live.instance)
                self.ledger.settle_claim(unclaimed, live.record, moved)
        except BaseException:
            live.replay_running = False
            raise
        await self.replay(live)

    def _end_guests_of(self, identity: str) -> None:
        """A guest that took a name before an account of that name existed goes when the
        account signs in, so that it cannot read the account's messages from then on."""
        for other in list(self._registry.live_of(identity).values()):
            if other.guest:
                other.outlet.end(
                    Forbidden(ErrorId.BAD_CREDENTIALS, f"{identity} is now an account's name")
                )

    async def replay(self, live: LiveSession) -> None:
        """Write every queued envelope past the session's cursor, then go live.

        It stops early, staying out of live delivery, when the connection takes no more (its
        client is behind reading, or it is closing); ``catch_up`` goes on from there."""
        live.replaying = True
        live.replay_running = True
        try:
            trust = self._trust
            live.again = False
            while live.available and self._registry.live(live.identity, live.instance) is live:
                page = await self._store.backlog(
                    live.identity, live.instance, live.cursor, BACKLOG_PAGE
                )
                circle = None
                if trust is not None:
                    # the scopes of the moment the page is written (nothing awaits in between)
                    circle = trust.cached(live.identity) or await trust.circle(live.identity)
                    if self._registry.live(live.identity, live.instance) is not live:
                        break
                written = self._write_page(live, page, circle)
                if written is _Page.STOPPED:
                    return
                if written is _Page.EXPIRED:
                    # expired before the sweep came to it: expire it (and what follows it,
                    # expired too) now, then read on from the cursor (its gap marker first)
                    await self._expire_after_cursor(live)
                    continue
                if len(page) < BACKLOG_PAGE:
                    if live.missed:
                        await self._write_missed(live)
                    if not live.again:
                        break
                    live.again = False  # more was stored meanwhile: read once more
            live.replaying = live.behind  # it fell behind on the last page: catch_up follows
        finally:
            live.replay_running = False

    def _write_page(
        self, live: LiveSession, page: list[QueuedEnvelope], circle: Circle | None
    ) -> _Page:
        """Write a backlog page up to its first expired entry (EXPIRED: expire it, then read
        on); STOPPED when the connection stopped taking it part way.

        Messages from clients are stamped with their scope by ``circle`` (the recipient's, or
        None for no stamping); the server's own entries (gap markers, notices: sender
        ``server_node``) and kept notifications (no sender) go as they are."""
        discard = []
        complete = _Page.COMPLETE
        now = time.time()
        stamp = self._stamp
        identity = live.identity
        server = self.server_node
        last_sender = ""
        scope = Scope.PUBLIC
        for entry in page:
            if entry.expires_at is not None and entry.expires_at <= now:
                if self.policy is None:
                    continue  # nobody to tell (no notices): left unwritten for the sweep
                complete = _Page.EXPIRED
                break
            payload = entry.payload
            sender = entry.sender
            if circle is not None and sender and sender != server:
                if sender != last_sender:
                    last_sender = sender
                    scope = scope_of(sender.partition("/")[0], identity, circle)
                payload = stamp(payload, scope)
            if not live.outlet.deliver(payload, _queued_kind(sender, server, entry.needs_ack)):
                complete = _Page.STOPPED  # the rest stays queued, for this connection or the next
                break
            if live.holes is not None:
                # rows between two of a page may commit later (another node's writer): a wake
                # for one of them writes it then
                live.holes.jump(live.cursor, entry.seq)
            live.cursor = entry.seq
            if not entry.needs_ack:
                discard.append(entry.seq)
            elif entry.message_id is not None:
                self._tell_sender_dispatched(entry.sender, entry.message_id)
        if discard:
            self.ledger.settle_removal(live.record, len(discard))
            self._store.discard(discard)
        return complete

    # -- expiry --------------------------------------------------------------------------------

    async def _expire_after_cursor(self, live: LiveSession) -> None:
        """Expire what is due in the live session's queue past its cursor, and wait for it."""
        policy = self.policy
        assert policy is not None  # _write_page stops at expired entries only with a policy
        future: asyncio.Future[TrimResult] = asyncio.get_running_loop().create_future()
        self._store.transact(
            policy.session_expiry(
                live.identity, live.instance, time.time(), live.cursor, EXPIRY_PASS
            ),
            settling(future),
        )
        self._expired(await future)

    def _expire_in(self, records: list[SessionRecord]) -> None:
        """Expire what is due in these sessions' queues past their live cursors (a write
        found an entry expired): submitted, applied when it commits."""
        policy = self.policy
        if policy is None:
            return  # no notices to tell anyone with: the entry waits in the queue, unwritten
        now = time.time()

        def expired(result: TrimResult | BaseException) -> None:
            if not isinstance(result, BaseException):
                self._expired(result)

        for record in records:
            live = self._registry.live(record.identity, record.instance)
            after = live.cursor if live is not None else 0
            self._store.transact(
                policy.session_expiry(record.identity, record.instance, now, after, EXPIRY_PASS),
                expired,
            )

    def _expired(self, result: TrimResult) -> None:
        self.ledger.settle(result)
        self.deliver_notices(result)

    async def sweep(self, now: float | None = None) -> int:
        """Remove every queued envelope expired at ``now`` (default: the wall clock), except
        those in the hands of a live connection; their senders are told (``MESSAGE_EXPIRED``)
        and their sessions get a gap marker. Returns how many were removed.

        Safe on several nodes at once: each pass is one store transaction that removes only
        rows still there (a row another node's sweep removed is not counted or told twice),
        and a node leaves alone the queues of sessions live on other nodes (their owner
        sweeps those, knowing its connections' cursors)."""
        policy = self.policy
        if policy is None:
            return 0
        now = time.time() if now is None else now
        after = (-1.0, 0)
        total = 0
        while True:
            delivered = {
                (live.identity, live.instance): live.cursor
                for live in self._registry.all_live()
                if live.cursor
            }
            federation = self.federation
            if federation is not None:
                delivered.update(federation.in_flight())  # batches a peer may be taking now
            peers = self.peers
            if peers is not None:
                # sessions live on other nodes: their rows are theirs to expire (only they
                # know what their connections were written)
                for identity, instances in peers.held_elsewhere().items():
                    for instance in instances:
                        delivered[(identity, instance)] = HELD_ELSEWHERE
            future: asyncio.Future[ExpiryPass] = asyncio.get_running_loop().create_future()
            self._store.transact(
                policy.expiry(now, after, EXPIRY_PASS, delivered), settling(future)
            )
            done = await future
            self._expired(done.result)
            total += done.expired
            self.expired += done.expired
            if done.scanned < EXPIRY_PASS:
                return total
            after = done.last

    async def sweep_forever(self, interval: float) -> None:
        """Run ``sweep`` now and then every ``interval`` seconds until cancelled (a storage
        error waits for the next round). Every node runs it: see ``sweep``."""
        while True:
            with contextlib.suppress(TidingsError):
                await self.sweep()
            await asyncio.sleep(interval)

    def stall(self, live: LiveSession) -> None:
        """The client is behind reading (its outlet took nothing): what comes for it waits in
        its queue from now on, until ``resume``."""
        live.behind = True
        live.replaying = True

    def resume(self, live: LiveSession) -> Coroutine[Any, Any, None]:
        """The client has read what it was behind: from now on it may go live again, once
        ``catch_up`` (returned, to be run as a task) has written what waited. Called at once,
        so that a stall before the task runs is not forgotten."""
        live.behind = False
        return self.catch_up(live)

    async def catch_up(self, live: LiveSession) -> None:
        """A replay still running (awaiting the store) goes on by itself."""
        if not live.replay_running:
            await self.replay(live)

    async def woken(self, live: LiveSession, seqs: list[int]) -> None:
        """Another node stored the rows ``seqs`` in the live session's queue (``Wake``).

        Those past the cursor come with a replay (one running reads once more). Those at or
        below it were either written by a replay already or jumped over by a live write of
        a newer row (``LiveSession.holes``): only the latter are read and written now, so a
        row is not written twice to one connection."""
        if self._registry.live(live.identity, live.instance) is not live:
            return
        cursor = live.cursor
        holes = live.holes
        late = holes.take([s for s in seqs if s <= cursor]) if holes is not None else []
        if late:
            await self._write_late(live, late)
        if any(s > cursor for s in seqs) or not seqs:
            if live.replay_running:
                live.again = True
                if holes is not None:
                    # the running replay may have read its page before these rows committed
                    # and write that page past them: its re-read (from the cursor) would then
                    # miss them, so they are written late as holes (``_write_missed``)
                    if live.missed is None:
                        live.missed = []
                    live.missed.extend(s for s in seqs if s > cursor)
            elif live.available and not live.behind:
                await self.replay(live)

    async def _write_missed(self, live: LiveSession) -> None:
        """Rows stored here while the replay ran and committed after it read past them (their
        seq below the cursor, a page of another node's newer rows written first): now."""
        missed, live.missed = live.missed or [], None
        holes = live.holes
        if holes is not None:
            late = holes.take([s for s in missed if s <= live.cursor])
            if late:
                await self._write_late(live, late)

    async def _write_late(self, live: LiveSession, seqs: list[int]) -> None:
        """Write the rows ``seqs`` (below the cursor, never written to this connection) that
        are still queued, oldest first; the cursor stays where it is."""
        wanted = set(seqs)
        after = seqs[0] - 1
        page: list[QueuedEnvelope] = []
        while True:
            found = await self._store.backlog(live.identity, live.instance, after, BACKLOG_PAGE)
            page.extend(e for e in found if e.seq in wanted)
            if len(found) < BACKLOG_PAGE or found[-1].seq >= seqs[-1]:
                break
            after = found[-1].seq
        trust = self._trust
        circle = None
        if trust is not None:
            circle = trust.cached(live.identity) or await trust.circle(live.identity)
        if self._registry.live(live.identity, live.instance) is not live:
            return
        now = time.time()
        cursor = live.cursor
        self._write_page(
            live, [e for e in page if e.expires_at is None or e.expires_at > now], circle
        )
        live.cursor = max(cursor, live.cursor)

    def _tell_sender_dispatched(self, sender_address: str, message_id: str) -> None:
        try:
            address = parse_address(sender_address)  # a node the router stored: cached
        except Invalid:
            return
        if address.domain != self.domain:
            federation = self.federation
            if federation is not None:
                federation.receipt(address, message_id, DeliveryEvent.DISPATCHED)
            return
        instance = address.instance or UNCLAIMED
        sender = self._registry.live(address.identity, instance)
        if sender is None:
            peers = self.peers
            if peers is not None:
                peers.receipt(address.identity, instance, message_id, DeliveryEvent.DISPATCHED)
        elif sender.wants(DeliveryEvent.DISPATCHED):
            sender.outlet.notify(message_id, DeliveryEvent.DISPATCHED)

    def tell_live_sender(
        self, sender: Address, message_id: str, event: DeliveryEvent, payload: bytes
    ) -> None:
        """A receipt another domain's server sent for a sender here (``payload``, ready to
        write): written if the sender is connected and asked for such receipts, never kept,
        as a ``dispatched`` of this server is not."""
        instance = sender.instance or UNCLAIMED
        live = self._registry.live(sender.identity, instance)
        if live is None:
            peers = self.peers
            if peers is not None:
                peers.receipt(sender.identity, instance, message_id, event)
        elif live.wants(event):
            live.outlet.deliver(payload, EnvelopeKind.NOTIFICATION)

    def detach(self, live: LiveSession) -> bool:
        """Forget a closed connection's session; its disconnect time outlives a restart."""
        if not self._registry.detach(live):
            return False
        self.note_seen(live.record)
        peers = self.peers
        if peers is not None:
            peers.detached(live)
        return True

    def note_seen(self, record: SessionRecord) -> None:
        """Store the record's last-seen time (idle collection counts from it, after restarts
        too)."""
        # A disconnect after shutdown closed the store keeps the last-seen it had.
        with contextlib.suppress(Unavailable):
            self._store.touch_session(record.identity, record.instance, record.last_seen)

    async def save(self, live: LiveSession) -> None:
        """Persist the session's record (rule, limits, last seen) so it outlives the process."""
        await self._store.save_session(live.record)

    async def establishing(self, live: LiveSession) -> None:
        """Just before the client hears "established". With other nodes the record is stored
        now: whoever the client tells may send to this (guest) identity at once through a node
        that has not heard of the session yet and looks for it in the store
        (``check_identity``)."""
        if self.peers is not None:
            await self.save(live)

    # -- bounded queues and persistent sessions (issue 4) -------------------------------------

    def bound_of(self, record: SessionRecord, limit: int) -> QueueBound:
        live = self._registry.live(record.identity, record.instance)
        upto = live.cursor if live is not None else 0
        return QueueBound(record.identity, record.instance, limit, upto)

    def bounds_for(self, targets: list[SessionRecord]) -> list[QueueBound]:
        """Raise for a full reject-new queue (the caller counts it in ``refused_full`` if that
        is its answer); list the full drop-oldest ones to trim."""
        bounds = []
        for record in targets:
            limit = self._limit_of(record)
            if record.depth < limit:
                continue
            if self.policy_of(record) is OverflowPolicy.DROP_OLDEST and self.notices is not None:
                bounds.append(self.bound_of(record, limit))
                continue
            raise LimitExceeded(
                ErrorId.QUEUE_FULL,
                f"The queue of {record.identity}/{record.instance or '*'} is full "
                f"({record.depth} envelopes)",
            )
        return bounds

    def policy_of(self, record: SessionRecord) -> OverflowPolicy:
        return record.policy if record.policy is not None else self.limits.default_policy

    def limit_of(self, record: SessionRecord) -> int:
        return self._limit_of(record)

    def _send_bounded(
        self,
        sender: LiveSession,
        sender_address: str,
        admitted: _Admitted,
        message_id: str,
        targets: list[SessionRecord],
        payload: bytes,
        bounds: list[QueueBound],
        persist: PersistStep | None,
        expires_at: float,
    ) -> None:
        policy = self.policy
        assert policy is not None
        entries = _queued(targets, sender_address, message_id, payload, expires_at)
        self.ledger.reserve(targets)

        def appended(result: TrimResult | BaseException) -> None:
            self.ledger.settle_append(targets, result)
            if isinstance(result, TrimResult) and result.refused:
                sender.outlet.notify(
                    message_id,
                    DeliveryEvent.FAILED,
                    Conflict(
                        ErrorId.STALE_NONCE,
                        "The nonce is not the current one of this persistent session "
                        "(another instance began it, or it ended): begin again",
                    ),
                )
                return
            if isinstance(result, TrimResult):
                self.deliver_notices(result)
                plain: AppendResult | BaseException = AppendResult(result.duplicate, result.seqs)
            else:
                plain = result
            self._appended(
                sender, sender_address, admitted, message_id, targets, payload, plain, expires_at
            )

        self._store.transact(
            policy.bounded_append(entries, (sender_address, message_id), bounds, persist),
            appended,
        )

    async def check_identity(self, address: Address) -> None:
        """Raise unless ``address``'s identity is served here and has an account or a session.

        Another domain is refused (``DESTINATION_NOT_FOUND``) until federation relays it."""
        self._check_domain(address)
        identity = address.identity
        if self._registry.knows(identity) or await self._identity_exists(address):
            return
        peers = self.peers
        if peers is not None:
            # A guest that just made its first session on another node has no account and
            # is not known here until that node's Attached comes; its record is in the store.
            await peers.refresh()
            if self._registry.knows(identity):
                return
        raise NotFound(ErrorId.ACCOUNT_NOT_FOUND, f"There is no account {identity!r}")

    def _federation(self, to: Address) -> Federation:
        """The way to ``to``'s server; ``DESTINATION_NOT_FOUND`` without one."""
        federation = self.federation
        if federation is None:
            self._check_domain(to)
        assert federation is not None
        federation.check(to.domain)
        return federation

    def _check_domain(self, address: Address) -> None:
        domain = address.domain
        if domain != self.domain:
            raise NotFound(
                ErrorId.DESTINATION_NOT_FOUND,
                f"The domain {domain!r} is not served here (this server is {self.domain!r})",
            )

    def deliver_stored(
        self,
        record: SessionRecord,
        seq: int,
        payload: bytes,
        expires_at: float | None = None,
        *,
        fanout: bool = False,
    ) -> None:
        """Write a just-stored message that needs an acknowledgement to its live session;
        ``fanout``: one of several sessions it went to (counted as such)."""
        live = self._writable(record, seq)
        if live is None:
            return
        if expires_at is not None and expires_at <= time.time():
            self._expire_in([record])
            return
        if live.outlet.deliver(payload):
            _advance(live, seq)
            self.delivered += 1
            if fanout:
                self.fanout_deliveries += 1

    def deliver_notices(self, result: TrimResult) -> None:
        """Write the notices a policy transaction queued to their live sessions (the ledger
        has counted them)."""
        for notice in result.notices:
            self._deliver_notice(notice)

    def _deliver_notice(self, notice: Notice) -> None:
        live = self._registry.live(notice.identity, notice.instance)
        if live is None:
            domain = outbox_domain(notice.identity)
            if domain is not None and self.federation is not None:
                self.federation.wake(domain)  # a failed for a sender of another domain
                return
            peers = self.peers
            if peers is not None:
                peers.stored(self._registry.record(notice.identity, notice.instance), notice.seq)
            return
        if live.replaying or not live.available:
            return
        kind = _queued_kind(self.server_node, self.server_node, notice.needs_ack)
        if not live.outlet.deliver(notice.payload, kind):
            return  # the connection is closing: the notice stays queued for the next one
        if live.holes is not None:
            live.holes.jump(live.cursor, notice.seq)
        live.cursor = max(live.cursor, notice.seq)
        if not notice.needs_ack:
            self.ledger.settle_removal(self._registry.record(notice.identity, notice.instance), 1)
            self._store.discard([notice.seq])

    # -- helpers -----------------------------------------------------------------------------

    def _resolve(self, identity: str, instance: str | None, creator: str) -> list[SessionRecord]:
        """The sessions a message goes to. Only the identity itself creates a named session by
        addressing it; anyone else's message to a node that does not exist goes where a message
        to the identity goes, or they could fill its owner's session quota (and storage) with
        queues of their naming. The caller has checked the identity.
        """
        if (
            instance is not None
            and creator != identity
            and instance not in self._registry.records_of(identity)
        ):
            instance = None
        return self._registry.targets(identity, instance)

    def _limit_of(self, record: SessionRecord) -> int:
        return record.queue_limit if record.queue_limit is not None else self.limits.default_limit

    def _any_online(self, targets: list[SessionRecord]) -> bool:
        """Whether a target session is connected and available (a realtime message's test)."""
        registry = self._registry
        for record in targets:
            live = registry.live(record.identity, record.instance)
            if live is not None and live.available:
                return True
        return False

    def expiry_of(self, expire_after: float | None = None) -> float:
        """When an entry queued now expires: after ``expire_after`` seconds, by default the
        server's ``message_ttl``."""
        return time.time() + (expire_after if expire_after is not None else self.limits.message_ttl)


class _Page(enum.Enum):
    """How far a backlog page was written."""

    COMPLETE = 1
    STOPPED = 2
    """The connection took no more (closing, or its client is behind reading)."""
    EXPIRED = 3
    """It stopped before an entry past its expiry."""


def _written(live: LiveSession, seq: int) -> bool:
    """Whether the row ``seq`` went to the connection already: at or below its cursor,
    unless (several nodes) it is a hole the cursor jumped over, committed late by this
    node's writer or another's; a hole counts as written from here on."""
    if seq > live.cursor:
        return False
    holes = live.holes
    return holes is None or not holes.take([seq])


def _tell_sender(sender: LiveSession, message_id: str, dispatched: bool) -> None:
    """Its message is stored (and, when ``dispatched``, written to a live session here)."""
    if sender.wants(DeliveryEvent.ACCEPTED):
        sender.outlet.notify(message_id, DeliveryEvent.ACCEPTED)
    if dispatched and sender.wants(DeliveryEvent.DISPATCHED):
        sender.outlet.notify(message_id, DeliveryEvent.DISPATCHED)


def _replaying(live: LiveSession, seq: int) -> None:
    """A just-stored row not written live. With other nodes writing the queue, a replay that
    runs may have read past it before it committed: that replay reads once more and writes
    it at its end (``Router._write_missed``)."""
    if live.replay_running and live.holes is not None:
        if live.missed is None:
            live.missed = []
        live.missed.append(seq)
        live.again = True


def _queued_kind(sender: str, server: str, needs_ack: bool) -> EnvelopeKind:
    """What a queue row is on the wire (for ``envelopes_out_by_type``): a kept notification has
    no sender; the server's own rows are messages when they are to be acknowledged (gap
    markers), notifications otherwise (a kept ``failed``); a client's are messages."""
    if not sender or (sender == server and not needs_ack):
        return EnvelopeKind.NOTIFICATION
    return EnvelopeKind.MESSAGE


def _advance(live: LiveSession, seq: int) -> None:
    """The row ``seq`` was just written live: the cursor moves to it (never back, for a
    hole), remembering the rows it jumped over."""
    cursor = live.cursor
    if seq > cursor:
        if live.holes is not None:
            live.holes.jump(cursor, seq)
        live.cursor = seq


def _unstamped(payload: bytes, scope: Scope) -> bytes:
    return payload


def _offline(to: Address) -> NotFound:
    return NotFound(
        ErrorId.DESTINATION_OFFLINE,
        f"No session of {to.text} is connected to take the command",
    )


def _queued(
    targets: list[SessionRecord], sender: str, message_id: str, payload: bytes, expires_at: float
) -> list[QueueEntry]:
    """One acknowledged entry per target session."""
    return [
        QueueEntry(r.identity, r.instance, sender, message_id, True, payload, expires_at)
        for r in targets
    ]
