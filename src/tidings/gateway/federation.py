"""Envelopes another domain's server relayed here (``POST /federation/v1/envelopes``).

The request's signature proved which server sent it (``api.federation``); this module holds
it to what that server may say: every envelope's ``from`` is of its own domain (a server cannot
speak for a third one: the whole batch is refused, nothing of it kept), and every ``to`` is
ours. Messages then route as if their sender were connected here, except that what the router
tells a sender goes back through the outbox to its server: ``dispatched`` and ``failed`` (the
sender's own server said ``accepted`` when its outbox took the message). Duplicates (a batch
sent again because its answer was lost) are dropped by (sender, id) like any re-send.

The answer is given once every envelope of the batch is stored, or its failure queued back:
the peer then discards the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from ..core.accounts import SERVER_NAME
from ..core.consent_federation import SYNC_TYPE
from ..core.errors import ErrorId, Invalid, NotFound, TidingsError
from ..core.expiry import is_realtime
from ..core.federation import Batch, Federation
from ..core.model import EnvelopeKind, RoutingRule, SessionRecord
from ..core.ports import MessageStore, NoticeFactory
from ..core.router import Router
from ..core.session_registry import DeliveryEvent, LiveSession, SessionRegistry
from ..protocol.federation import FederationErrorId, FederationRefused
from ..protocol.lime import (
    UNSET,
    Command,
    CommandMethod,
    CommandStatus,
    EnvelopeError,
    InvalidNode,
    Message,
    Node,
    Notification,
    NotificationEvent,
    decode_envelope,
    encode_envelope,
    parse_node,
    scoped_metadata,
)
from .errors import lime_reason
from .lime_sessions import without_persistence

_replace = msgspec.structs.replace
_BATCH_DECODER: Final = msgspec.json.Decoder(Batch)
_EVERY_EVENT: Final = frozenset(DeliveryEvent)
MAX_ENVELOPES: Final = 10_000
MAX_RUNS: Final = 10_000
"""Sender runs remembered (``Batch.run``); a forgotten one is deduplicated by message id only."""

ObserveHook = Callable[[Node, Node, Command], None]
"""A server's ``observe`` push (a presence or keys change) for a subscriber here:
(subscriber, the pushing server's node, the command)."""
ConsentHook = Callable[[str, str, Any], Awaitable[None]]
"""A server's consent operation for one of our users' relationships: (origin domain, our
user's identity, the operation as JSON); returns once it is applied (committed)."""
log = logging.getLogger("tidings.federation")


_Parsed = tuple[Node, Node, Message | Notification | Command]


class _Header(msgspec.Struct):
    """What an envelope this server cannot take still tells: who waits for an answer."""

    id: str | None = None
    from_: str | None = msgspec.field(name="from", default=None)
    content: Any = None


_HEADER_DECODER: Final = msgspec.json.Decoder(_Header)


@dataclass(frozen=True, slots=True)
class _Unreadable:
    sender: Node
    message_id: str
    error: TidingsError


class _Outcomes:
    """The outlet of every sender of one batch: what the router tells them goes back."""

    def __init__(self, federation: Federation, notices: NoticeFactory) -> None:
        self._federation = federation
        self._notices = notices
        self._waiting: dict[tuple[str, str], asyncio.Future[None]] = {}
        self.failed = 0

    def expect(self, sender: Node, message_id: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        previous = self._waiting.get((sender.text, message_id))
        self._waiting[(sender.text, message_id)] = future
        if previous is not None and not previous.done():
            previous.set_result(None)  # the same id twice in one batch: one answer each
        return future

    def told(
        self,
        sender: Node,
        message_id: str,
        event: DeliveryEvent,
        error: TidingsError | None = None,
    ) -> None:
        if event is DeliveryEvent.DISPATCHED:
            self._federation.relay(sender, self._notices.dispatched(sender.text, message_id))
            return
        if event is DeliveryEvent.FAILED:
            self.failed += 1
            assert error is not None
            failed = self._notices.failed(sender.text, message_id, error)
            self._federation.relay(sender, failed, essential=True)
        if event in (DeliveryEvent.ACCEPTED, DeliveryEvent.FAILED):
            future = self._waiting.pop((sender.text, message_id), None)
            if future is not None and not future.done():
                future.set_result(None)


class _SenderOutlet:
    """``Outlet`` of a sender connected to another server: only ``notify`` is ever used."""

    __slots__ = ("_node", "_outcomes")

    def __init__(self, node: Node, outcomes: _Outcomes) -> None:
        self._node = node
        self._outcomes = outcomes

    def deliver(self, payload: bytes, kind: EnvelopeKind = EnvelopeKind.MESSAGE) -> bool:
        return False

    def notify(
        self, message_id: str, event: DeliveryEvent, error: TidingsError | None = None
    ) -> None:
        self._outcomes.told(self._node, message_id, event, error)

    def observe(self, identity: str, presence: dict[str, Any]) -> None:
        pass

    def observe_resource(self, owner: str, uri: str, type_: str, resource: Any) -> None:
        pass

    def end(self, error: TidingsError) -> None:
        pass


class PeerEnvelopes:
    def __init__(
        self,
        domain: str,
        router: Router,
        registry: SessionRegistry,
        store: MessageStore,
        federation: Federation,
        notices: NoticeFactory,
        server_node: str,
        *,
        max_envelope_size: int,
        observe: ObserveHook | None = None,
        consent: ConsentHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._domain = domain
        self._router = router
        self._registry = registry
        self._store = store
        self._federation = federation
        self._notices = notices
        self._server_node = server_node
        self._max_envelope_size = max_envelope_size
        self.observe = observe
        self._locks: dict[str, asyncio.Lock] = {}
        self._taken: dict[tuple[str, str], int] = {}
        """Per (origin, sender run): the highest outbox place taken (``Batch.run``)."""
        self.consent = consent
        self._clock = clock

    async def receive(self, origin: str, body: bytes) -> dict[str, int]:
        """Take a batch from ``origin``'s server. The whole batch is refused, nothing of it
        kept, for a malformed body (``TidingsError``) or a sender of another domain
        (``FederationRefused``)."""
        try:
            batch = _BATCH_DECODER.decode(body)
        except msgspec.DecodeError as exc:
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"Not an envelope batch: {exc}") from None
        if len(batch.envelopes) > MAX_ENVELOPES:
            raise Invalid(
                ErrorId.INVALID_ARGUMENT, f"A batch holds at most {MAX_ENVELOPES} envelopes"
            )
        parsed = [self._parse(origin, item.e) for item in batch.envelopes]
        lock = self._locks.get(origin)
        if lock is None:
            lock = self._locks[origin] = asyncio.Lock()
        async with lock:  # one batch of a peer at a time: its order is the outbox's
            run = (origin, batch.run)
            taken = self._taken.get(run, 0) if batch.run else 0
            if taken:
                parsed = [
                    None if item.s and item.s <= taken else envelope
                    for item, envelope in zip(batch.envelopes, parsed, strict=True)
                ]
            answer = await self._take(origin, batch, parsed)
            if batch.run:
                self._note_taken(run, max((item.s for item in batch.envelopes), default=0))
            return answer

    def _note_taken(self, run: tuple[str, str], seq: int) -> None:
        """Remember how far a sender's run was taken (bounded: the oldest runs go first)."""
        taken = self._taken
        if run not in taken and len(taken) >= MAX_RUNS:
            del taken[next(iter(taken))]
        taken[run] = max(taken.get(run, 0), seq)

    async def _take(
        self, origin: str, batch: Batch, parsed: list[_Parsed | _Unreadable | None]
    ) -> dict[str, int]:
        outcomes = _Outcomes(self._federation, self._notices)
        senders: dict[str, LiveSession] = {}  # one per sender of the batch, not per message
        waiting: list[asyncio.Future[None]] = []
        for item, envelope in zip(batch.envelopes, parsed, strict=True):
            if envelope is None:
                continue
            if isinstance(envelope, _Unreadable):
                # its sender waits for an answer: tell it why it will never come
                outcomes.told(
                    envelope.sender, envelope.message_id, DeliveryEvent.FAILED, envelope.error
                )
                continue
            sender, to, decoded = envelope
            if to.domain != self._domain:
                if isinstance(decoded, Message) and decoded.id is not UNSET:
                    not_here = NotFound(
                        ErrorId.DESTINATION_NOT_FOUND,
                        f"{self._domain} does not serve {to.domain}: relay it to its own server",
                    )
                    outcomes.told(sender, decoded.id, DeliveryEvent.FAILED, not_here)
                continue
            if isinstance(decoded, Message) and self._consent_op(sender, decoded):
                await self._consent(origin, to, decoded)
            elif isinstance(decoded, Message):
                live = senders.get(sender.text)
                if live is None:
                    live = senders[sender.text] = self._sender(sender, outcomes)
                future = await self._message(outcomes, live, sender, to, decoded, item.x)
                if future is not None:
                    waiting.append(future)
            elif isinstance(decoded, Notification):
                self._notification(origin, to, decoded)
            elif isinstance(decoded, Command):
                await self._command(origin, sender, to, decoded)
        if waiting:
            await asyncio.gather(*waiting)
        await self._store.barrier()  # notifications kept and failures queued back: committed
        self._federation.peer(origin).received += len(parsed)
        return {"taken": len(parsed), "failed": outcomes.failed}

    def _parse(self, origin: str, raw: msgspec.Raw) -> _Parsed | _Unreadable | None:
        """The envelope, its sender and recipient; ``_Unreadable`` for a message this server
        cannot take (too large, invalid) whose sender can be told; None for one to skip
        (nobody to tell)."""
        data = bytes(raw)
        if len(data) > self._max_envelope_size:
            return self._unreadable(
                origin,
                data,
                f"The envelope is larger than {self._domain} takes "
                f"({len(data)} > {self._max_envelope_size} bytes)",
            )
        try:
            envelope = decode_envelope(data)
        except EnvelopeError as exc:
            return self._unreadable(origin, data, f"{self._domain} cannot read it: {exc}")
        if not isinstance(envelope, (Message, Notification, Command)):
            return None
        if envelope.from_ is UNSET or envelope.to is UNSET:
            return None
        try:
            sender = parse_node(envelope.from_)
            to = parse_node(envelope.to)
        except InvalidNode:
            return None
        if sender.name.startswith("~") or to.name.startswith("~"):
            return None  # the names of outboxes (core.model.OUTBOX_PREFIX): nobody's
        if sender.domain != origin:
            raise FederationRefused(
                FederationErrorId.FOREIGN_SENDER,
                f"{origin} relayed an envelope from {sender.text}: a server speaks only for "
                "its own domain",
            )
        return sender, to, envelope

    def _unreadable(self, origin: str, data: bytes, why: str) -> _Unreadable | None:
        """A message its sender waits on (an id, a sender of the origin's domain), or None."""
        try:
            header = _HEADER_DECODER.decode(data)
            sender = parse_node(header.from_) if header.from_ else None
        except (msgspec.DecodeError, InvalidNode):
            return None
        if sender is None or sender.domain != origin or not header.id or header.content is None:
            return None
        return _Unreadable(sender, header.id, Invalid(ErrorId.INVALID_ARGUMENT, why[:1024]))

    async def _message(
        self,
        outcomes: _Outcomes,
        live: LiveSession,
        sender: Node,
        to: Node,
        message: Message,
        expires_at: float | None,
    ) -> asyncio.Future[None] | None:
        message_id = message.id if message.id is not UNSET else None
        future = outcomes.expect(sender, message_id) if message_id is not None else None
        now = self._clock()
        metadata = without_persistence(message.metadata)
        try:
            if expires_at is not None and expires_at <= now:
                raise TidingsError(
                    ErrorId.MESSAGE_EXPIRED, "The message expired on its way between servers"
                )
            payload = encode_envelope(
                _replace(message, metadata=scoped_metadata(None if metadata is UNSET else metadata))
            )
            pending = self._router.send_message(
                live,
                message_id,
                to,
                payload,
                on_behalf_of=sender,
                expire_after=None if expires_at is None else expires_at - now,
                realtime=metadata is not UNSET and is_realtime(metadata),
            )
            if pending is not None:
                await pending
        except TidingsError as error:
            if message_id is not None:
                outcomes.told(sender, message_id, DeliveryEvent.FAILED, error)
        return future

    def _consent_op(self, sender: Node, message: Message) -> bool:
        """A consent operation from the origin's server (never routed to the user: the
        hook applies it and tells the user through the consent inbox)."""
        return message.type == SYNC_TYPE and sender.name == SERVER_NAME

    async def _consent(self, origin: str, to: Node, message: Message) -> None:
        if self.consent is None:
            log.warning("a consent operation from %s dropped: consent is not federated", origin)
            return
        try:
            content = msgspec.json.decode(message.content)
        except msgspec.DecodeError:
            log.warning("a consent operation from %s dropped: not JSON", origin)
            return
        await self.consent(origin, to.identity, content)

    def _sender(self, node: Node, outcomes: _Outcomes) -> LiveSession:
        instance = node.instance or ""
        record = SessionRecord(node.identity, instance, RoutingRule.IDENTITY, None, None, 0.0)
        live = LiveSession(
            node.identity, instance, _SenderOutlet(node, outcomes), record, guest=False
        )
        live.receipt = _EVERY_EVENT
        return live

    def _notification(self, origin: str, to: Node, notification: Notification) -> None:
        """A receipt from the peer server for a sender here, or a client's notification."""
        payload = encode_envelope(notification)
        server = f"{SERVER_NAME}@{origin}"
        from_server = notification.from_ == server or str(notification.from_).startswith(
            server + "/"
        )
        if from_server and notification.event is NotificationEvent.DISPATCHED:
            if not isinstance(notification.id, str):
                return  # a receipt about nothing
            self._router.tell_live_sender(to, notification.id, DeliveryEvent.DISPATCHED, payload)
            return
        self._router.forward_notification(to, payload)

    async def _command(self, origin: str, sender: Node, to: Node, command: Command) -> None:
        if (
            command.method is CommandMethod.OBSERVE
            and sender.name == SERVER_NAME
            and self.observe is not None
        ):
            self.observe(to, sender, command)
            return
        payload = encode_envelope(command)
        try:
            pending = self._router.forward_command(to, payload)
            if pending is not None:
                await pending
        except TidingsError as error:
            if command.status is UNSET and command.id is not UNSET:
                self._federation.relay(sender, self._failure(command, sender, error))

    def _failure(self, command: Command, sender: Node, error: TidingsError) -> bytes:
        return encode_envelope(
            Command(
                id=command.id,
                from_=self._server_node,
                to=sender.text,
                method=command.method,
                status=CommandStatus.FAILURE,
                reason=lime_reason(error),
            )
        )


PRESENCE_TYPE: Final = "application/vnd.lime.presence+json"


def presence_observe(server_node: str) -> Callable[[str, str, dict[str, Any]], bytes]:
    """The ``observe`` a presence change of ``owner`` is pushed to a subscriber of another
    domain as (``PresenceExports``): from this server's node, the shape of a local push."""

    def encode(owner: str, subscriber: str, presence: dict[str, Any]) -> bytes:
        return encode_envelope(
            Command(
                from_=server_node,
                to=subscriber,
                method=CommandMethod.OBSERVE,
                uri=f"lime://{owner}/presence",
                type=PRESENCE_TYPE,
                resource=msgspec.Raw(msgspec.json.encode(presence)),
            )
        )

    return encode


def presence_pushes(observed: Callable[[str, str, dict[str, Any]], None]) -> ObserveHook:
    """``PeerEnvelopes.observe`` for presence: a push of ``lime://owner/presence`` from the
    owner's own server (no server speaks for a third domain's identities) goes to
    ``observed(subscriber, owner, presence)`` (``PresenceService.observed``); anything else
    is dropped."""

    def hook(subscriber: Node, server: Node, command: Command) -> None:
        uri = command.uri if isinstance(command.uri, str) else ""
        authority, _, path = uri.removeprefix("lime://").partition("/")
        if not uri.startswith("lime://") or path != "presence" or command.type != PRESENCE_TYPE:
            return
        try:
            owner = parse_node(authority)
            presence = msgspec.json.decode(
                command.resource if isinstance(command.resource, msgspec.Raw) else b""
            )
        except (InvalidNode, msgspec.DecodeError):
            return
        if owner.domain != server.domain or owner.instance is not None:
            return
        if isinstance(presence, dict):
            observed(subscriber.identity, owner.identity, presence)

    return hook
