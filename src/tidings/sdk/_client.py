"""The asyncio LIME client: one logical session that survives reconnections.

A ``Client`` keeps one LIME session (one node, ``name@domain/instance``) open through a
``Transport`` (WebSocket by default). The server keeps a durable queue per node, so when the
connection drops the client reconnects as the *same* node and the server redelivers whatever
this client had not acknowledged. The client composes small pieces, each hiding one seam:

- ``Link`` (``_link``): one connection and its session; pings and command correlation;
- ``Reconnector`` (``_reconnect``): a new link, with backoff, when one drops;
- ``Outbox`` (``_outbox``): messages until ``accepted``, re-sent (same id) on every new link,
  and acknowledgements waiting for one; ``max_in_flight`` paces senders;
- ``Receipts`` (``_receipts``): ``send_message(wait=...)`` waits for delivery events;
- ``Receiver`` and ``Inbox`` (``_receiver``, ``_inbox``): deduplication by (sender, id) and
  acknowledgement when the application takes a message; iterators wait across reconnections;
- ``Pipeline`` (``_pipeline``): message layers every message passes, out and in;
- ``EndToEnd`` (``_sealing``, with ``e2e=True``): node keys, their publication on every new
  session, sealing (``send_sealed``) and opening of end-to-end sealed messages.

Acknowledgement point (``auto_ack=True``, the default): a message counts as taken, and is
acknowledged, at the moment the iterator hands it over. Before ``__anext__`` returns it, the
client records (sender, id) in its dedupe set (appended and fsynced to ``dedupe_path`` when one
is given) and then sends ``{id, to: sender, event: "received"}`` (queued for the next connection
if there is none). With ``auto_ack=False`` both happen in ``client.ack(message)`` instead.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import logging
import os
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import quote

from tidings.protocol.e2e import COPY_SUFFIX, SEALED_TYPE
from tidings.protocol.lime import (
    UNSET,
    ClientSession,
    Command,
    CommandMethod,
    CommandStatus,
    Message,
    Node,
    Notification,
    NotificationEvent,
    SessionEnded,
    SessionEstablished,
    SessionState,
    parse_node,
)

from ._backoff import Backoff
from ._consent import Consent
from ._dedupe import SeenMessages
from ._directory import Directory, KeyOwner
from ._exceptions import (
    ClientClosed,
    CommandFailed,
    ConnectError,
    ConnectionLost,
    MessageInDoubt,
    RequestTimeout,
    TidingsClientError,
    reason_parts,
)
from ._iterators import Envelopes, Messages
from ._keystore import KeyStore
from ._link import Link, LinkHandlers, first
from ._outbox import Outbox
from ._pipeline import MessageLayer, Pipeline
from ._receipts import WAITABLE_EVENTS, Receipts
from ._receiver import Receiver
from ._reconnect import Reconnector
from ._sealing import EndToEnd, Rejection, SealingFailed
from ._signal import Signal
from ._transport import Transport, WebSocketTransport
from ._types import CommandResult, ReceivedMessage, encode_document

__all__ = ["Client", "WaitFor"]

logger = logging.getLogger("tidings.sdk")

RECEIPT_EVENTS: Final = ("accepted", "dispatched", "received", "consumed")
"""What the SDK asks the server to notify (``failed`` always comes)."""
RECEIPT_TYPE: Final = "application/vnd.lime.receipt+json"
IN_DOUBT_KEPT: Final = 1024
"""How many ids of messages given up as in doubt ``Client.in_doubt`` keeps."""

WaitFor: TypeAlias = Literal["accepted", "dispatched", "received", "consumed"] | None


class _Phase(enum.Enum):
    NEW = "new"
    OPEN = "open"  # connected once; links come and go
    CLOSING = "closing"  # close() began finishing: no new work, iterators end
    CLOSED = "closed"


class Client:
    """An asyncio LIME client for Tidings.

    Give exactly one credential: ``password`` (plain scheme), ``key`` (key scheme) or
    ``guest=True``. ``identity`` is ``name@domain``; ``instance`` names this session (the
    server assigns ``default`` when it is omitted). The server keeps one message queue per
    instance, so use a stable instance for an application that must resume where it stopped,
    and pass ``dedupe_path`` so that it remembers, across restarts, what it already took.

    ``max_in_flight`` bounds the messages sent but not yet ``accepted`` (1000): beyond it,
    ``send_message`` waits for room, so a fast producer is paced by what the server stores (and
    by its flow control) instead of growing the outbox without bound.

    ``resend_horizon`` (120 s) bounds how long after its first transmission an unaccepted
    message is re-sent on a new connection. The server drops a re-sent copy only while it
    remembers the id (its duplicate window, ``message_id_retention_s``: 300 s by default, never
    below 150 s), so the horizon must stay below the window; past it the message is not re-sent
    and fails with ``MessageInDoubt`` (its id is kept in ``in_doubt``). ``None`` re-sends for
    ever: at least once, with a possible duplicate after the window.

    ``transport`` opens the connections (default: ``WebSocketTransport(ping_interval=...)``;
    ``ping_interval`` applies only to that default). ``layers`` are ``MessageLayer``s every
    message passes on its way out and in.

    ``e2e=True`` (implied by ``key_dir``) gives the node end-to-end keys, kept in ``key_dir``
    (default: the XDG data folder, ``tidings/keys``) and created on first use; every new
    session publishes the node's signed node info, ``send_sealed`` seals, and sealed messages
    arrive opened (``ReceivedMessage.verified_sender``). One that does not verify is never
    delivered: it is acknowledged, logged, kept in ``rejections`` and passed to
    ``on_rejected``. Directory answers are cached ``directory_ttl`` seconds.
    ``connection_info`` goes into the published node info: where the node takes direct
    connections (the peer platform, ``Platform(listen=...)``).

    Use it as an async context manager (``async with Client(...) as client``), or call
    ``await client.connect()`` and ``await client.close()``.
    """

    def __init__(
        self,
        url: str,
        identity: str,
        *,
        instance: str | None = None,
        password: str | None = None,
        key: str | bytes | None = None,
        guest: bool = False,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        dedupe_size: int = 10_000,
        dedupe_path: str | os.PathLike[str] | None = None,
        connect_timeout: float = 10.0,
        command_timeout: float = 30.0,
        ping_interval: float | None = 20.0,
        max_in_flight: int = 1000,
        resend_horizon: float | None = 120.0,
        transport: Transport | None = None,
        layers: Sequence[MessageLayer] = (),
        e2e: bool = False,
        key_dir: str | os.PathLike[str] | None = None,
        on_rejected: Callable[[Rejection], None] | None = None,
        directory_ttl: float = 30.0,
        connection_info: list[Any] | None = None,
    ) -> None:
        if sum((password is not None, key is not None, guest)) != 1:
            raise ValueError("give exactly one of password=, key= or guest=True")
        if resend_horizon is not None and not resend_horizon > 0:
            raise ValueError("resend_horizon must be positive (or None: re-send for ever)")
        node = parse_node(identity)
        if instance is not None:
            node = node.with_instance(instance)
        self.url = url
        self._node: Node = node
        self._credentials = _credentials(password, key, guest)
        self._transport: Transport = (
            transport if transport is not None else WebSocketTransport(ping_interval=ping_interval)
        )
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._dedupe = (dedupe_size, dedupe_path)
        self._e2e: EndToEnd | None = None
        if e2e or key_dir is not None:
            self._e2e = EndToEnd(
                KeyStore(key_dir),
                Directory(self._directory_request, ttl=directory_ttl),
                on_rejected=on_rejected,
                connection_info=connection_info,
            )
            layers = (*layers, self._e2e)
        self._pipeline = Pipeline(layers)
        self._outbox = Outbox(max_in_flight)
        self._resend_horizon = resend_horizon
        self._in_doubt: deque[str] = deque(maxlen=IN_DOUBT_KEPT)
        self._receipts = Receipts()
        self._receiver = Receiver(self._send_ack, self._pipeline)
        self._reconnector = Reconnector(
            url=url,
            backoff=backoff or Backoff(),
            reconnect=reconnect,
            establish=self._establish,
            give_up=self._fail,
            stopping=lambda: self._phase is not _Phase.OPEN,
            label=lambda: self.node,
        )
        self._handlers = LinkHandlers(
            established=self._on_established,
            message=self._receiver.put_message,
            notification=self._on_notification,
            command=self._on_command,
            ended=self._on_session_ended,
            lost=self._on_lost,
        )
        self._changes = Signal()  # the outbox, the connection or the phase changed
        self._command_watchers: list[Callable[[Command], bool]] = []
        self.consent = Consent(self)
        """Consent: invites, capability links, relationships, chat, alerts, the live inbox."""
        self._phase = _Phase.NEW
        self._failure: TidingsClientError | None = None
        self._link: Link | None = None  # the latest established link
        self._live = False  # ... and it carries new messages (the outbox was re-sent on it)
        self.reconnections = 0
        """How many times the client has re-established its session after losing it."""

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def node(self) -> str:
        """This client's node, ``name@domain/instance`` (the instance the server assigned)."""
        return self._node.text

    @property
    def connected(self) -> bool:
        """Whether the session is established and the client is sending right now."""
        return self._live

    @property
    def unaccepted(self) -> list[str]:
        """Ids of messages sent but not yet ``accepted`` nor ``failed``, oldest first.

        The client re-sends them after every reconnection, within ``resend_horizon`` of their
        first transmission. Whatever is still here after ``close()`` may or may not have been
        stored (an ``accepted`` can be lost with its connection): sending it again with the
        same id, from a new client, is stored once if done within the server's duplicate window.
        """
        return [message.id for message in self._outbox if isinstance(message.id, str)]

    @property
    def in_doubt(self) -> list[str]:
        """Ids of messages given up as ``MessageInDoubt`` (the latest ``IN_DOUBT_KEPT``),
        oldest first: each was sent, never accepted, and not re-sent past the resend horizon.
        The server may or may not have stored it."""
        return list(self._in_doubt)

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection and establish the session; raise on failure, never retry.

        Raises ``AuthenticationFailed``, ``SessionFailed`` or ``ConnectError``.
        """
        if self._phase is not _Phase.NEW:
            raise RuntimeError("a Client connects once; create a new one to start over")
        self._phase = _Phase.OPEN
        self._receiver.open(SeenMessages(*self._dedupe))
        try:
            link = await self._establish()
        except BaseException:
            self._phase = _Phase.CLOSED
            self._receiver.end()
            self._receiver.close()
            raise
        self._reconnector.start(link)

    async def close(self, timeout: float = 5.0) -> None:
        """Finish the session cleanly: wait (up to ``timeout``) for unaccepted messages to be
        accepted, send ``finishing``, wait for ``finished``, close the connection.

        Messages received but not yet taken by the application are not acknowledged; the server
        delivers them again to the next session with this node.
        """
        if self._phase in (_Phase.NEW, _Phase.CLOSED):
            self._phase = _Phase.CLOSED
            return
        try:
            async with asyncio.timeout(timeout):
                while (len(self._outbox) or self._outbox.acks_waiting) and self._failure is None:
                    await self._changes.wait()
                self._begin_closing()
                link = self._link
                if link is not None and link.usable:
                    self._live = False
                    for ack in self._outbox.take_acks():
                        link.send(ack)
                    link.finish()
                    await first(link.ended, link.lost)
        except TimeoutError:
            logger.warning("%s: closing without a clean finish (timed out)", self.node)
        finally:
            if len(self._outbox):
                logger.warning(
                    "%s: closing with %d message(s) never accepted: %s",
                    self.node,
                    len(self._outbox),
                    self.unaccepted,
                )
            self._begin_closing()
            await self._shut(ClientClosed("the client was closed"))

    def _begin_closing(self) -> None:
        if self._phase is _Phase.OPEN:
            self._phase = _Phase.CLOSING
        self._receiver.end()

    async def _fail(self, error: TidingsClientError) -> None:
        """Give up: every waiting call and iterator raises ``error``."""
        self._failure = error
        self._receiver.end(error)
        await self._shut(error)

    async def _shut(self, error: TidingsClientError) -> None:
        self._phase = _Phase.CLOSED
        self._live = False
        self._receiver.end()
        await self._reconnector.stop()
        link = self._link
        if link is not None:
            link.disconnect()
            await link.wait_disconnected(1.0)
            link.commands.fail_all(error)
        self._receipts.abort(error)
        self._receiver.close()
        self._changes.notify()

    def _check_usable(self) -> None:
        if self._phase is _Phase.NEW:
            raise RuntimeError("call connect() first (or use 'async with')")
        if self._failure is not None:
            raise self._failure
        if self._phase is not _Phase.OPEN:
            raise ClientClosed("the client is closed")

    # -- sending -----------------------------------------------------------------------------

    async def send_message(
        self,
        to: str,
        content: Any,
        type: str = "text/plain",
        *,
        id: str | None = None,
        wait: WaitFor = "accepted",
        timeout: float | None = 30.0,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Send a message and return its id (a new uuid4 unless ``id`` is given).

        ``wait`` names the delivery event to wait for: ``"accepted"`` (the server stored it
        durably), ``"dispatched"``, ``"received"`` or ``"consumed"`` (a later event also ends
        the wait, except for ``accepted``), or ``None`` to return at once. Raises
        ``MessageFailed`` (with the reason code) if a ``failed`` notification comes first and
        ``RequestTimeout`` when ``timeout`` passes; either way an unaccepted message stays
        queued and is re-sent after a reconnection until the server accepts or fails it, or
        until it has been out ``resend_horizon`` seconds (then ``MessageInDoubt``). With
        ``max_in_flight`` messages unaccepted, it first waits for one of them to settle (even
        with ``wait=None``); ``timeout`` bounds that wait and the notification wait together,
        and a message that found no room in time is not sent at all (``RequestTimeout``).
        """
        self._check_usable()
        wanted = NotificationEvent(wait) if wait is not None else None
        if wanted is not None and wanted not in WAITABLE_EVENTS:
            raise ValueError(f"cannot wait for {wait!r}")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        message_id = id if id is not None else str(uuid.uuid4())
        message = Message(
            id=message_id,
            to=to,
            type=type,
            content=encode_document(content, type),
            metadata=dict(metadata) if metadata is not None else UNSET,
        )
        if self._pipeline:
            message = await self._pipeline.outgoing(message)
            self._check_usable()
        try:
            async with asyncio.timeout_at(deadline):
                await self._room_in_outbox()
        except TimeoutError:
            raise RequestTimeout(
                f"message {message_id!r} not sent: {self._outbox.max_in_flight} messages still "
                f"unaccepted after {timeout} s (max_in_flight)"
            ) from None
        self._outbox.add(message)
        waiter = self._receipts.watch(message_id, wanted) if wanted is not None else None
        if self._live and self._link is not None:
            self._link.send(message)
            self._outbox.transmitted(message_id, loop.time())
        if waiter is None:
            return message_id
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except TimeoutError:
            raise RequestTimeout(
                f"no {wait!r} notification for message {message_id!r} within {timeout} s"
            ) from None
        finally:
            self._receipts.forget(message_id, waiter)
        return message_id

    async def send_sealed(
        self,
        to: str,
        content: Any,
        type: str = "text/plain",
        *,
        id: str | None = None,
        wait: WaitFor = "accepted",
        timeout: float | None = 30.0,
        metadata: Mapping[str, str] | None = None,
        for_keys: Sequence[str] | None = None,
    ) -> str:
        """Send a message sealed end to end: readable by every current device of ``to``'s
        identity and by this identity's other devices (they get a copy, id ``<id>:copy``),
        signed by this node. The server sees only ciphertext (and the metadata, which is not
        sealed). Raises ``SealingFailed`` when ``to`` has published no keys; otherwise as
        ``send_message``. ``for_keys`` (``boxId``s) seals it for those devices only, without
        a copy (``to`` then names the node that holds them).
        """
        e2e = self._sealing()
        await self._wait_live()
        message_id = id if id is not None else str(uuid.uuid4())
        sealed, copy = await e2e.seal(message_id, to, type, content, for_keys)
        if copy:
            own = self._node.identity
            await self.send_message(
                own, sealed, SEALED_TYPE, id=message_id + COPY_SUFFIX, wait=None, timeout=timeout
            )
        return await self.send_message(
            to, sealed, SEALED_TYPE, id=message_id, wait=wait, timeout=timeout, metadata=metadata
        )

    def _sealing(self) -> EndToEnd:
        if self._e2e is None:
            raise SealingFailed("this client has no keys: create it with e2e=True or key_dir=")
        return self._e2e

    # -- the key directory -------------------------------------------------------------------

    @property
    def sign_id(self) -> str:
        """This node's signing key id (``SealingFailed`` before the session is established)."""
        return self._sealing().keys.sign_id

    @property
    def box_id(self) -> str:
        return self._sealing().keys.box_id

    @property
    def rejections(self) -> list[Rejection]:
        """Sealed messages refused lately (latest 256), oldest first."""
        return list(self._e2e.rejections) if self._e2e is not None else []

    async def devices(self, identity: str) -> list[dict[str, Any]]:
        """The current node info of ``identity``'s devices, each verified."""
        devices = await self._sealing().directory.devices(parse_node(identity).identity)
        return [info.document() for info in devices]

    async def key_owner(self, sign_id: str) -> KeyOwner | None:
        """Who published ``sign_id`` (verified) and whether it is revoked; None if nobody."""
        return await self._sealing().directory.owner(sign_id)

    async def revoke_key(self, sign_id: str) -> None:
        """Revoke one of this identity's keys for good (a lost device, a retired key)."""
        e2e = self._sealing()
        await self.command(CommandMethod.DELETE, f"/keys/{quote(sign_id, safe='')}")
        e2e.directory.forget()

    async def rotate_keys(self, *, revoke_old: bool = False) -> str:
        """Give this node a new key and publish it; the old one stays in the key folder, so
        messages sealed to it can still be opened. Returns the new ``sign_id``."""
        e2e = self._sealing()
        link = await self._wait_live()
        old = e2e.keys.sign_id
        e2e.rotate()
        await self._publish_keys(link)
        if revoke_old:
            await self.revoke_key(old)
        return e2e.keys.sign_id

    async def publish_keys(self) -> None:
        """Publish this node's signed node info again now (every new session does it): after
        its ``connection_info`` changed, or to renew it."""
        await self._publish_keys(await self._wait_live())

    async def _directory_request(
        self, method: str, uri: str, resource: Any, type: str | None
    ) -> CommandResult:
        return await self.command(method, uri, resource, type=type)

    async def _publish_keys(self, link: Link) -> None:
        e2e = self._sealing()
        e2e.use_node(self._node.text)
        type_, document = e2e.node_info()
        response = await link.request(
            Command(
                id=str(uuid.uuid4()),
                method=CommandMethod.SET,
                uri="/keys",
                type=type_,
                resource=encode_document(document, type_),
            )
        )
        if response.status is not CommandStatus.SUCCESS:
            code, description = reason_parts(response.reason)
            raise CommandFailed(code, f"set /keys failed: {description}", response.id or "")
        e2e.directory.forget(self._node.identity)

    async def _room_in_outbox(self) -> None:
        """Backpressure: wait while ``max_in_flight`` messages are still unaccepted."""
        while not self._outbox.has_room:
            await self._changes.wait()
            self._check_usable()

    async def command(
        self,
        method: CommandMethod | str,
        uri: str,
        resource: Any = None,
        *,
        type: str | None = None,
        to: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Send a command and return the response's decoded resource and type.

        A ``resource`` without ``type`` is sent as ``application/json``. Waits for the
        connection if it is down. Raises ``CommandFailed`` (with the reason code) on a
        ``failure`` response, ``ConnectionLost`` if the connection dropped after the command was
        sent (it is not re-sent) and ``RequestTimeout`` after ``timeout`` (default
        ``command_timeout``).
        """
        method = CommandMethod(method)
        if resource is not None and type is None:
            type = "application/json"
        limit = self._command_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                link = await self._wait_live()
                response = await link.request(
                    Command(
                        id=str(uuid.uuid4()),
                        to=to if to is not None else UNSET,
                        method=method,
                        uri=uri,
                        type=type if type is not None else UNSET,
                        resource=encode_document(resource, type)
                        if resource is not None and type is not None
                        else UNSET,
                    ),
                )
        except TimeoutError:
            raise RequestTimeout(f"no response to {method} {uri} within {limit} s") from None
        if response.status is not CommandStatus.SUCCESS:
            code, description = reason_parts(response.reason)
            raise CommandFailed(code, description, response.id or "")
        return CommandResult.from_envelope(response)

    async def _wait_live(self) -> Link:
        while True:
            self._check_usable()
            if self._live and self._link is not None:
                return self._link
            await self._changes.wait()

    def ack(self, message: ReceivedMessage) -> None:
        """Acknowledge a message taken from an iterator created with ``auto_ack=False``.

        Records it as seen (durably, with ``dedupe_path``) and sends ``received``, which
        removes it from this session's queue on the server. Acknowledging twice is harmless.
        """
        self._receiver.ack(message)

    def _send_ack(self, ack: Notification) -> None:
        link = self._link
        if link is not None and link.usable:
            logger.debug("%s: acknowledging %s from %s", self.node, ack.id, ack.to)
            link.send(ack)
        else:
            logger.debug("%s: acknowledgement of %s queued", self.node, ack.id)
            self._outbox.queue_ack(ack)

    # -- receiving ---------------------------------------------------------------------------

    def messages(self, *, auto_ack: bool = True) -> Messages:
        """Iterate over incoming messages, each exactly once; waits across reconnections.

        Ends when the client is closed; raises the error if the client gives up (for example
        ``SessionFailed`` when another connection took the session over). Several iterators
        share one inbox: each message goes to one of them.
        """
        return Messages(self._receiver, auto_ack)

    def envelopes(self, *, auto_ack: bool = True) -> Envelopes:
        """Like ``messages()``, but also yields notifications and the server's commands.

        Notifications are kept in a bounded backlog (the latest 1024) until taken.
        """
        return Envelopes(self._receiver, auto_ack)

    # -- connection management ---------------------------------------------------------------

    async def _establish(self) -> Link:
        """Connect, establish, set /receipt, re-send what is pending; return the live link."""
        link = Link(ClientSession(self._node, *self._credentials), self._handlers)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await link.open(self._transport, self.url)
                await self._set_receipt(link)
                if self._e2e is not None:
                    await self._publish_keys(link)
        except TimeoutError:
            link.disconnect()
            raise ConnectError(
                f"no established session from {self.url} within {self._connect_timeout} s"
            ) from None
        except ConnectionLost as exc:
            link.disconnect()
            raise ConnectError(str(exc)) from exc
        except BaseException:
            link.disconnect()
            raise
        self._go_live(link)
        return link

    async def _set_receipt(self, link: Link) -> None:
        response = await link.request(
            Command(
                id=str(uuid.uuid4()),
                method=CommandMethod.SET,
                uri="/receipt",
                type=RECEIPT_TYPE,
                resource=encode_document({"events": list(RECEIPT_EVENTS)}, RECEIPT_TYPE),
            )
        )
        if response.status is not CommandStatus.SUCCESS:
            code, description = reason_parts(response.reason)
            raise CommandFailed(code, f"set /receipt failed: {description}", response.id or "")

    def _go_live(self, link: Link) -> None:
        if not link.usable:  # lost again, or close() began finishing it meanwhile
            return
        acks = self._outbox.take_acks()
        for ack in acks:
            link.send(ack)
        self._give_up_overdue()
        resent = 0
        now = asyncio.get_running_loop().time()
        for message in self._outbox:
            link.send(message)
            if isinstance(message.id, str):
                self._outbox.transmitted(message.id, now)
            resent += 1
        logger.debug(
            "%s: live; sent %d queued acks, re-sent %d messages", self.node, len(acks), resent
        )
        self._live = True
        self._changes.notify()

    def _give_up_overdue(self) -> None:
        """Before re-sending: settle every message out longer than the resend horizon as
        ``MessageInDoubt`` instead (the server may have forgotten its id, and would store a
        copy as a new message)."""
        horizon = self._resend_horizon
        if horizon is None:
            return
        now = asyncio.get_running_loop().time()
        for message in self._outbox.overdue(now, horizon):
            message_id = message.id
            assert isinstance(message_id, str)  # the outbox tracks only messages with an id
            age = now - self._outbox.first_sent(message_id)
            self._outbox.settle(message_id)
            self._in_doubt.append(message_id)
            logger.warning(
                "%s: message %s not re-sent: out %.0f s, past the resend horizon (%g s)",
                self.node,
                message_id,
                age,
                horizon,
            )
            self._receipts.fail(message_id, MessageInDoubt(message_id, age, horizon))

    # -- events from the link (synchronous, from the event loop) -----------------------------

    def _on_established(self, link: Link, established: SessionEstablished) -> None:
        if self._link is not None:
            self.reconnections += 1
        self._link = link  # acknowledgements may use it at once; sending waits for _go_live
        self._node = established.local

    def _on_notification(self, notification: Notification) -> None:
        message_id = notification.id
        if isinstance(message_id, str) and (
            message_id in self._outbox or message_id in self._receipts
        ):
            if notification.event in (NotificationEvent.ACCEPTED, NotificationEvent.FAILED):
                self._outbox.settle(message_id)
            self._receipts.notify(notification)
        self._receiver.put_other(notification)
        self._changes.notify()

    def _on_command(self, command: Command) -> None:
        """A command request from the server: to the watchers that take it (``observe`` of a
        resource a helper subscribed to), else to ``envelopes()``."""
        taken = False
        for watcher in list(self._command_watchers):
            taken = watcher(command) or taken
        if not taken:
            self._receiver.put_other(command)

    def _watch_commands(self, watcher: Callable[[Command], bool]) -> Callable[[], None]:
        """Show ``watcher`` every command request from the server; it returns whether it
        took the command (then ``envelopes()`` does not get it). Returns the way to stop."""
        self._command_watchers.append(watcher)

        def stop() -> None:
            if watcher in self._command_watchers:
                self._command_watchers.remove(watcher)

        return stop

    def _watch_commands_count(self) -> int:
        return len(self._command_watchers)

    def _on_session_ended(self, link: Link, ended: SessionEnded) -> None:
        if (
            link.established.done()
            and ended.state is SessionState.FAILED
            and self._phase is _Phase.OPEN
        ):
            logger.warning("%s: the server failed the session: %s", self.node, ended.reason)
        self._live = False

    def _on_lost(self, link: Link) -> None:
        if link is self._link:
            self._live = False
        self._changes.notify()


def _credentials(
    password: str | None, key: str | bytes | None, guest: bool
) -> tuple[str, dict[str, Any]]:
    if password is not None:
        return "plain", {"password": base64.b64encode(password.encode("utf-8")).decode("ascii")}
    if key is not None:
        raw = key.encode("utf-8") if isinstance(key, str) else key
        return "key", {"key": base64.b64encode(raw).decode("ascii")}
    assert guest
    return "guest", {}
