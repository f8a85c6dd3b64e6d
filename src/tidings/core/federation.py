"""Federation: what leaves for other domains' servers, and how it gets there (issue 13).

Each peer domain has a durable outbox: a queue in the ordinary queue table under the
pseudo-session ``~federation@DOMAIN/outbox`` (``outbox_of``). So an envelope bound for another
server is stored the way any queued envelope is: group-committed, once per (sender, id), in
sequence order, and expired by the ordinary sweep, whose ``failed`` (123) reaches its sender
when the peer stays away past the envelope's life (or ``retry_bound``). The sender hears
``accepted`` once the outbox row is committed.

A relay task per peer reads the outbox in order and hands batches to a ``PeerChannel`` (signed
HTTP, ``net.federation_client``); a batch the peer took is discarded, one it could not take now
is retried with exponential backoff, one it refused for good is removed and each of its
messages' senders told ``failed`` with the peer's reason. The receiving side drops duplicates
by the batch's (run, sequence) while it runs, and by (sender, id) within its duplicate window
(``message_id_retention_s``): a batch sent again past both (its answer lost, the peer restarted,
the retry later than the window) may be stored twice (docs/federation.md, "Limits of this version").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

from .address import Address
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
from .model import (
    OUTBOX_INSTANCE,
    OUTBOX_PREFIX,
    QueuedEnvelope,
    QueueEntry,
    QueueRow,
    SessionRecord,
    TrimResult,
)
from .ports import MessageStore, NoticeFactory, settling
from .queue_ledger import QueueLedger
from .queue_policy import QueuePolicy
from .session_registry import DeliveryEvent, LiveSession, SessionRegistry

FIRST_RETRY_S: Final = 0.2
MAX_PEERS: Final = 1000
"""Peer domains one server relays to (each has a relay task and an outbox)."""
MAX_BATCH_BYTES: Final = 512 * 1024
"""Envelope bytes in one request, at most (one larger envelope goes alone)."""
log = logging.getLogger("tidings.federation")


def outbox_of(domain: str) -> str:
    """The pseudo-identity whose queue is the outbox of ``domain`` ('~' is in no LIME name)."""
    return OUTBOX_PREFIX + domain


def outbox_domain(identity: str) -> str | None:
    """The peer domain of an outbox pseudo-identity; None for any other identity."""
    return identity[len(OUTBOX_PREFIX) :] if identity.startswith(OUTBOX_PREFIX) else None


class PeerUnreachable(Exception):
    """The peer could not be asked now (network, timeout, 5xx, 429): try again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PeerRefusal(Exception):
    """The peer refused the request for good (4xx other than 401/408/429); ``problem`` is its
    problem JSON."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title') or problem.get('type') or ''}".strip())
        self.status = status
        self.problem = problem

    @property
    def detail(self) -> str:
        detail = self.problem.get("detail")
        return detail if isinstance(detail, str) else str(self)


def peer_error(domain: str, refusal: PeerRefusal) -> TidingsError:
    """A peer's refusal as the error it would have been here: the same id when it is one of
    Tidings' (so that LIME clients get the same reason code), ``PEER_REFUSED`` otherwise."""
    error_id = refusal.problem.get("error_id")
    known = ErrorId._value2member_map_.get(error_id) if isinstance(error_id, str) else None
    if not isinstance(known, ErrorId):
        known = ErrorId.PEER_REFUSED
    cls = _ERROR_CLASSES.get(refusal.status, TidingsError)
    return cls(known, f"{domain} refused it: {refusal.detail}"[:1024])


class PeerChannel(Protocol):
    """Signed requests to other servers (``net.federation_client``)."""

    async def post(self, domain: str, route: str, body: bytes) -> Any:
        """POST ``body`` (JSON) to the peer's ``/federation/v1/{route}``; its JSON answer.
        Raises ``PeerUnreachable`` or ``PeerRefusal``."""


_ERROR_CLASSES: Final[dict[int, type[TidingsError]]] = {
    400: Invalid,
    401: Forbidden,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: NotFound,
    422: Invalid,
    429: LimitExceeded,
}


class Batch(msgspec.Struct, frozen=True):
    """The body of ``POST /federation/v1/envelopes``."""

    envelopes: list[BatchItem]
    run: str = ""
    """The sending relay's run (random, per process): within one run its items' ``s`` only
    grow, so the receiver skips those it took already (a batch sent again because its answer
    was lost), envelopes without ids included."""


class BatchItem(msgspec.Struct, frozen=True):
    e: msgspec.Raw
    """A LIME envelope, as JSON."""
    x: float | None = None
    """When it expires (Unix seconds; the receiving server keeps that bound)."""
    s: int = 0
    """Its place in the sender's outbox (0: none given)."""


_BATCH_ENCODER: Final = msgspec.json.Encoder()


@dataclass(slots=True)
class PeerState:
    """What an operator sees of one peer (``tidings federation status``, ``/metrics``)."""

    domain: str
    sent: int = 0
    batches: int = 0
    failures: int = 0
    """Attempts that failed: those retried, and batches the peer refused for good."""
    retries: int = 0
    """Times the relay backed off to try again (the peer unreachable, busy, or a bug)."""
    refused: int = 0
    dropped: int = 0
    """Envelopes that need no acknowledgement (notifications, commands, receipts) dropped
    because the outbox was full."""
    last_error: str = ""
    last_error_at: float = 0.0
    last_success_at: float = 0.0
    next_attempt_at: float = 0.0
    received: int = 0
    batch_bytes: int = MAX_BATCH_BYTES
    """Envelope bytes per request (halved while the peer answers 413)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when there is something to send (rows queued, the peer back)."""
    hello: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the peer said it is up: it cuts a backoff short."""
    in_flight: int = 0
    """The last outbox row of the batch being sent now (0: none): the expiry sweep leaves rows
    up to it alone, as a live connection's."""
    task: asyncio.Task[None] | None = None


class Federation:
    """The router's way out to other domains (``Router.federation``) and the relays."""

    def __init__(
        self,
        domain: str,
        store: MessageStore,
        registry: SessionRegistry,
        ledger: QueueLedger,
        notices: NoticeFactory,
        server_node: str,
        channel: PeerChannel,
        *,
        reachable: Callable[[str], bool],
        outbox_limit: int = 100_000,
        retry_bound_s: float = 0.0,
        retry_max_s: float = 60.0,
        max_batch: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``reachable(domain)``: whether messages to ``domain`` may be queued at all (a
        configured or discoverable peer, not denied)."""
        self.domain = domain
        self._store = store
        self._registry = registry
        self._ledger = ledger
        self._notices = notices
        self.server_node = server_node
        self._policy = QueuePolicy(notices, server_node)
        self._channel = channel
        self._reachable = reachable
        self.outbox_limit = outbox_limit
        self.retry_bound_s = retry_bound_s
        self.retry_max_s = retry_max_s
        self.max_batch = max_batch
        self._clock = clock
        self.peers: dict[str, PeerState] = {}
        self.run = secrets.token_urlsafe(12)
        """This process's relays' run id (``Batch.run``)."""
        self._running = False
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        """Stopped before the relays (what else uses the channel: presence pushes, asks)."""
        self.on_notices: Callable[[TrimResult], None] | None = None
        """Delivers the ``failed`` notices a refusal queued (``Router.deliver_notices``)."""
        self.on_hello: Callable[[str], None] | None = None
        """Told when a peer says hello (it may have restarted: presence subscribes again)."""

    # -- the router's side ------------------------------------------------------------------

    def check(self, domain: str) -> None:
        """Raise ``DESTINATION_NOT_FOUND`` unless ``domain`` is a peer's; ``LimitExceeded``
        for a new one beyond ``MAX_PEERS`` (SRV makes any domain a candidate: each costs a
        relay and lookups)."""
        if domain not in self.peers and len(self.peers) >= MAX_PEERS:
            raise LimitExceeded(
                ErrorId.QUEUE_FULL,
                f"This server relays to {MAX_PEERS} other domains already: not to {domain!r}",
            )
        if not self._reachable(domain):
            raise NotFound(
                ErrorId.DESTINATION_NOT_FOUND,
                f"The domain {domain!r} is not served here (this server is {self.domain!r}) "
                "and is no federation peer",
            )

    def send(
        self,
        sender: LiveSession,
        sender_address: str,
        message_id: str | None,
        to: Address,
        payload: bytes,
        expires_at: float,
    ) -> None:
        """Queue a message for ``to``'s server; ``accepted`` once the row is committed.
        Guests reach only this server: another server would take their name for an account's
        (``core.trust``)."""
        domain = to.domain
        self.check(domain)
        if to.name.startswith("~"):
            raise NotFound(ErrorId.ACCOUNT_NOT_FOUND, f"There is no account {to.identity!r}")
        if sender.guest:
            raise Forbidden(
                ErrorId.FORBIDDEN,
                "Guests send only to this server's identities, not other domains'",
            )
        record = self._bounded(domain)
        entry = QueueEntry(
            record.identity,
            record.instance,
            sender_address,
            message_id,
            message_id is not None,
            payload,
            self._bound(expires_at),
        )
        self._ledger.reserve([record])

        def appended(result: Any) -> None:
            self._ledger.settle_append([record], result)
            if isinstance(result, BaseException):
                if message_id is not None:
                    sender.outlet.notify(
                        message_id,
                        DeliveryEvent.FAILED,
                        Unavailable(
                            ErrorId.STORAGE_UNAVAILABLE, f"The message was not stored: {result}"
                        ),
                    )
                return
            if message_id is not None and sender.wants(DeliveryEvent.ACCEPTED):
                sender.outlet.notify(message_id, DeliveryEvent.ACCEPTED)
            self.wake(domain)

        dedupe = (sender_address, message_id) if message_id is not None else None
        self._store.append([entry], dedupe, appended)

    def relay(
        self,
        to: Address,
        payload: bytes,
        expires_at: float | None = None,
        *,
        essential: bool = False,
    ) -> None:
        """Queue an envelope that needs no acknowledgement to its sender (a notification, a
        command between clients, a receipt) for ``to``'s server. ``essential`` (a ``failed``
        owed to a sender) is queued even into a full outbox: it is the only word the sender
        gets."""
        domain = to.domain
        try:
            self.check(domain)
        except TidingsError as refusal:
            log.info("dropped an envelope for %s: %s", to.text, refusal.message)
            return
        record = self._registry.record(outbox_of(domain), OUTBOX_INSTANCE)
        if record.depth >= self.outbox_limit and not essential:
            self._state(domain).dropped += 1
            log.warning("the outbox of %s is full: an envelope for %s dropped", domain, to.text)
            return
        expiry = self._bound(expires_at if expires_at is not None else self._far())
        entry = QueueEntry(record.identity, record.instance, "", None, False, payload, expiry)
        self._ledger.reserve([record])

        def appended(result: Any) -> None:
            self._ledger.settle_append([record], result)
            if isinstance(result, BaseException):
                log.error("an envelope for %s was not stored: %s", to.text, result)
            else:
                self.wake(domain)

        self._store.append([entry], None, appended)

    def queued(self, domain: str, count: int) -> None:
        """``count`` rows another transaction inserted into ``domain``'s outbox committed (a
        consent operation with its copy for that server): counted, and its relay looks."""
        record = self._registry.record(outbox_of(domain), OUTBOX_INSTANCE)
        self._ledger.settle_inserted(record, count)
        self.wake(domain)

    def receipt(self, to: Address, message_id: str, event: DeliveryEvent) -> None:
        """Tell a sender of another domain what became of its message here."""
        if event is DeliveryEvent.DISPATCHED:
            self.relay(to, self._notices.dispatched(to.text, message_id))

    def _bounded(self, domain: str) -> SessionRecord:
        record = self._registry.record(outbox_of(domain), OUTBOX_INSTANCE)
        if record.depth >= self.outbox_limit:
            raise LimitExceeded(
                ErrorId.QUEUE_FULL,
                f"The outbox for {domain} is full ({record.depth} envelopes waiting for it)",
            )
        return record

    def _bound(self, expires_at: float) -> float:
        if self.retry_bound_s:
            return min(expires_at, self._clock() + self.retry_bound_s)
        return expires_at

    def _far(self) -> float:
        return self._clock() + 7 * 24 * 3600.0

    async def ask(self, domain: str, kind: str, actor: str, **fields: Any) -> Any:
        """A question to ``domain``'s server on behalf of ``actor`` (an identity of this
        domain): its answer. Raises the peer's refusal as a ``TidingsError`` with the peer's
        error id when it is one of ours (``PEER_REFUSED`` otherwise), and ``Unavailable``
        when the peer cannot be asked now."""
        self.check(domain)
        body = _BATCH_ENCODER.encode({"kind": kind, "actor": actor, **fields})
        try:
            answer = await self._channel.post(domain, "query", body)
        except PeerUnreachable as failure:
            raise Unavailable(
                ErrorId.STORAGE_UNAVAILABLE, f"The server of {domain} cannot be reached: {failure}"
            ) from None
        except PeerRefusal as refusal:
            raise peer_error(domain, refusal) from None
        return answer.get("answer") if isinstance(answer, dict) else None

    # -- relays -----------------------------------------------------------------------------

    def start(self, domains: Sequence[str] = ()) -> None:
        """Start relaying: to ``domains`` (the configured peers) and to every domain whose
        outbox holds something (the store says which, from the session records)."""
        self._running = True
        waiting = [
            d
            for d in (outbox_domain(r.identity) for r in self._registry.all_records())
            if d is not None
        ]
        for domain in [*domains, *waiting]:
            self._state(domain).wake.set()

    def wake(self, domain: str) -> None:
        """Something was queued for ``domain`` (or it came back): its relay looks now."""
        state = self._state(domain)
        state.wake.set()

    def hello(self, domain: str) -> None:
        """The peer said it is back: retry at once rather than at the end of the backoff."""
        state = self._state(domain)
        state.hello.set()
        state.wake.set()
        if self.on_hello is not None:
            self.on_hello(domain)

    def peer(self, domain: str) -> PeerState:
        """What is known of ``domain``'s server (its relay started, if it was not)."""
        return self._state(domain)

    def _state(self, domain: str) -> PeerState:
        state = self.peers.get(domain)
        if state is None:
            state = self.peers[domain] = PeerState(domain)
        if state.task is None and self._running:
            state.task = asyncio.get_running_loop().create_task(self._relay(state))
        return state

    async def stop(self) -> None:
        self._running = False
        for stop in self.on_stop:
            await stop()
        tasks = [s.task for s in self.peers.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _relay(self, state: PeerState) -> None:
        """Send the outbox in order, for as long as the server runs. Nothing but cancellation
        ends it: an unexpected error is logged and retried like an unreachable peer, or the
        outbox to this peer would freeze until a restart."""
        delay = 0.0
        while True:
            await state.wake.wait()
            state.wake.clear()
            try:
                # what the last round discarded is committed: reading from the start again
                # finds rows another node's writer committed below an earlier cursor
                await self._store.barrier()
                await self._drain(state)
                delay = 0.0
            except asyncio.CancelledError:
                raise
            except PeerUnreachable as failure:
                delay = self._next_delay(delay)
                if failure.retry_after is not None:
                    delay = max(delay, min(failure.retry_after, self.retry_max_s))
                self._failed(state, str(failure))
                state.retries += 1
                await self._pause(state, delay)
            except Exception as error:  # a store failure, a bug: not the end of the relay
                delay = self._next_delay(delay)
                log.exception("relaying to %s failed", state.domain)
                self._failed(state, f"{type(error).__name__}: {error}")
                state.retries += 1
                await self._pause(state, delay)

    async def _drain(self, state: PeerState) -> None:
        """Send batches until the outbox has nothing past what was sent."""
        record = self._registry.record(outbox_of(state.domain), OUTBOX_INSTANCE)
        after = 0
        while True:
            rows = await self._store.backlog(
                record.identity, record.instance, after, self.max_batch
            )
            if not rows:
                return
            after = await self._deliver(state, rows)

    async def _pause(self, state: PeerState, delay: float) -> None:
        """Wait ``delay`` (jittered), or less when the peer says hello; new rows do not cut
        it short (a peer that is down or asked to wait would be asked at the rate messages
        come). Work is pending after it, whatever came meanwhile."""
        state.next_attempt_at = self._clock() + delay
        state.hello.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.hello.wait(), delay * random.uniform(0.8, 1.0))
        if state.hello.is_set():
            log.info("%s said hello: retrying now", state.domain)
        state.next_attempt_at = 0.0
        state.wake.set()

    def _next_delay(self, delay: float) -> float:
        return min(self.retry_max_s, FIRST_RETRY_S if delay == 0.0 else delay * 2)

    def _failed(self, state: PeerState, error: str) -> None:
        state.failures += 1
        state.last_error = error
        state.last_error_at = self._clock()
        log.warning("federation to %s: %s", state.domain, error)

    async def _deliver(self, state: PeerState, rows: list[QueuedEnvelope]) -> int:
        """Send one batch; the sequence number it ends at (the rows are then gone)."""
        now = self._clock()
        send: list[QueuedEnvelope] = []
        size = 0
        last = 0
        for row in rows:
            if send and size + len(row.payload) > state.batch_bytes:
                break  # the peer's request body limit (1 MiB by default) stays far
            last = row.seq
            if row.expires_at is not None and row.expires_at <= now:
                continue  # the sweep removes it and tells its sender
            else:
                send.append(row)
                size += len(row.payload) + 32
        if not send:
            return last
        body = _BATCH_ENCODER.encode(
            Batch(
                [BatchItem(msgspec.Raw(r.payload), r.expires_at, r.seq) for r in send],
                self.run,
            )
        )
        state.in_flight = send[-1].seq  # the sweep does not expire what the peer may be taking
        try:
            await self._channel.post(state.domain, "envelopes", body)
        except PeerRefusal as refusal:
            if refusal.status == 413 and len(send) > 1:
                state.batch_bytes = max(1, size // 2)  # the peer takes smaller bodies
                raise PeerUnreachable(f"{refusal}: sending smaller batches") from None
            self._failed(state, str(refusal))
            state.refused += 1
            await self._refused(state.domain, send, refusal)
            return last
        finally:
            state.in_flight = 0
        state.sent += len(send)
        state.batches += 1
        state.last_success_at = self._clock()
        state.batch_bytes = min(MAX_BATCH_BYTES, state.batch_bytes * 2)
        self._discard(state.domain, [r.seq for r in send])
        return last

    def _discard(self, domain: str, seqs: list[int]) -> None:
        if not seqs:
            return
        self._store.discard(seqs)
        record = self._registry.record(outbox_of(domain), OUTBOX_INSTANCE)
        self._ledger.settle_removal(record, len(seqs))

    async def _refused(self, domain: str, rows: list[QueuedEnvelope], refusal: PeerRefusal) -> None:
        """The peer will never take these: remove them, each sender owed one told why."""
        error = peer_error(domain, refusal)  # the peer's own id when it is one of ours
        queue_rows = [QueueRow(r.seq, r.sender, r.message_id, r.needs_ack) for r in rows]
        work = self._policy.remove_rows(outbox_of(domain), OUTBOX_INSTANCE, queue_rows, error)
        future: asyncio.Future[TrimResult] = asyncio.get_running_loop().create_future()
        self._store.transact(work, settling(future))
        result = await future
        self._ledger.settle(result)
        if self.on_notices is not None:
            self.on_notices(result)

    # -- what an operator sees --------------------------------------------------------------

    def in_flight(self) -> dict[tuple[str, str], int]:
        """The outboxes whose rows up to a sequence number are being sent now (for the expiry
        sweep, which leaves them alone: the peer may be taking them)."""
        return {
            (outbox_of(domain), OUTBOX_INSTANCE): state.in_flight
            for domain, state in self.peers.items()
            if state.in_flight
        }

    def depth(self, domain: str) -> int:
        """Rows in ``domain``'s outbox (what waits for it)."""
        return self._registry.record(outbox_of(domain), OUTBOX_INSTANCE).depth

    async def status(self) -> list[dict[str, Any]]:
        """Each peer: outbox depth, oldest waiting envelope's age, last error, counters."""
        now = self._clock()
        found = []
        for domain in sorted(set(self.peers) | set(self._known_outboxes())):
            state = self.peers.get(domain) or PeerState(domain)
            record = self._registry.record(outbox_of(domain), OUTBOX_INSTANCE)
            oldest = await self._store.backlog(record.identity, record.instance, 0, 1)
            found.append(
                {
                    "domain": domain,
                    "outbox": self.depth(domain),
                    "oldestWaitingS": round(now - oldest[0].enqueued_at, 3) if oldest else None,
                    "sent": state.sent,
                    "batches": state.batches,
                    "received": state.received,
                    "failures": state.failures,
                    "refusedBatches": state.refused,
                    "dropped": state.dropped,
                    "lastError": state.last_error or None,
                    "lastErrorAt": state.last_error_at or None,
                    "lastSuccessAt": state.last_success_at or None,
                    "nextAttemptInS": (
                        round(max(0.0, state.next_attempt_at - now), 3)
                        if state.next_attempt_at
                        else None
                    ),
                }
            )
        return found

    def _known_outboxes(self) -> list[str]:
        return [
            d
            for d in (outbox_domain(r.identity) for r in self._registry.all_records())
            if d is not None
        ]
