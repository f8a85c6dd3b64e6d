"""The asyncio LIME client: one logical session that survives reconnections.

A ``Client`` keeps one LIME session (one node, ``name@domain/instance``) open over a picows
WebSocket. The server keeps a durable queue per node, so when the connection drops the client
reconnects as the *same* node, with backoff, and the server redelivers whatever this client had
not acknowledged. The client hides the seams:

- outgoing messages stay in an ``Outbox`` until ``accepted`` and are re-sent, same id, after a
  reconnection (the server stores a (sender, id) pair once);
- incoming messages are deduplicated by (sender, id), acknowledged with ``received`` when the
  application takes them, and iterators simply wait across a reconnection;
- commands wait for the connection, but one that is in flight when it drops fails with
  ``ConnectionLost`` instead of being repeated behind the application's back.

Acknowledgement point (``auto_ack=True``, the default): a message counts as taken, and is
acknowledged, at the moment the iterator hands it over. Before ``__anext__`` returns it, the
client records (sender, id) in its dedupe set (appended and fsynced to ``dedupe_path`` when one
is given) and then sends ``{id, to: sender, event: "received"}`` (queued for the next connection
if there is none). With ``auto_ack=False`` both happen in ``client.ack(message)`` instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import uuid
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias

from picows import WSMsgType, WSTransport

from tidings.protocol.lime import (
    UNSET,
    ClientSession,
    Command,
    CommandMethod,
    CommandStatus,
    Envelope,
    Message,
    Node,
    Notification,
    NotificationEvent,
    Raw,
    ReasonCode,
    SessionEnded,
    SessionEstablished,
    SessionState,
    parse_node,
)

from ._backoff import Backoff
from ._dedupe import MessageKey, SeenMessages
from ._exceptions import (
    AuthenticationFailed,
    ClientClosed,
    CommandFailed,
    ConnectError,
    ConnectionLost,
    MessageFailed,
    RequestTimeout,
    SessionFailed,
    TidingsClientError,
    reason_parts,
)
from ._outbox import WAITABLE_EVENTS, Outbox, satisfies
from ._transport import open_connection
from ._types import CommandResult, ReceivedMessage, encode_document

__all__ = ["Client", "Envelopes", "Messages", "WaitFor"]

logger = logging.getLogger("tidings.sdk")

RECEIPT_EVENTS: Final = ("accepted", "dispatched", "received", "consumed")
"""What the SDK asks the server to notify (``failed`` always comes)."""
RECEIPT_TYPE: Final = "application/vnd.lime.receipt+json"
PING_TYPE: Final = "application/vnd.lime.ping+json"

PERMANENT_SESSION_FAILURES: Final = frozenset(
    {
        ReasonCode.SESSION_REGISTRATION_ERROR,
        ReasonCode.SESSION_AUTHENTICATION_FAILED,
        ReasonCode.VALIDATION_INVALID_IDENTITY,
        ReasonCode.AUTHORIZATION_ERROR,
        ReasonCode.AUTHORIZATION_UNAUTHORIZED_SENDER,
        ReasonCode.AUTHORIZATION_PERMISSION_REQUIRED,
    }
)
"""Session failures after which reconnecting cannot help (or would fight a newer connection)."""

WaitFor: TypeAlias = Literal["accepted", "dispatched", "received", "consumed"] | None
Incoming: TypeAlias = ReceivedMessage | Notification | Command

_NOTIFICATION_BACKLOG: Final = 1024


class _Link:
    """One connection and the LIME session on it."""

    def __init__(self, session: ClientSession, loop: asyncio.AbstractEventLoop) -> None:
        self.session = session
        self.transport: WSTransport | None = None
        self.established: asyncio.Future[SessionEstablished] = loop.create_future()
        self.ended: asyncio.Future[SessionEnded] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.commands: dict[str, asyncio.Future[Command]] = {}

    @property
    def usable(self) -> bool:
        return self.session.state is SessionState.ESTABLISHED and not self.lost.done()

    def write(self, frames: list[bytes]) -> None:
        if self.transport is not None and not self.lost.done():
            for frame in frames:
                self.transport.send(WSMsgType.TEXT, frame)

    def send(self, envelope: Envelope) -> None:
        self.write([self.session.send(envelope)])

    def disconnect(self) -> None:
        if self.transport is not None and not self.lost.done():
            self.transport.disconnect()


class Messages:
    """``async for message in client.messages()``: the messages, each exactly once."""

    def __init__(self, client: Client, auto_ack: bool) -> None:
        self._client = client
        self._auto_ack = auto_ack

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> ReceivedMessage:
        item = await self._client._next(False, self._auto_ack)
        assert isinstance(item, ReceivedMessage)
        return item


class Envelopes:
    """``async for item in client.envelopes()``: messages, notifications and server commands."""

    def __init__(self, client: Client, auto_ack: bool) -> None:
        self._client = client
        self._auto_ack = auto_ack

    def __aiter__(self) -> Envelopes:
        return self

    async def __anext__(self) -> Incoming:
        return await self._client._next(True, self._auto_ack)


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
    ) -> None:
        if sum((password is not None, key is not None, guest)) != 1:
            raise ValueError("give exactly one of password=, key= or guest=True")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        node = parse_node(identity)
        if instance is not None:
            node = node.with_instance(instance)
        self.url = url
        self._node: Node = node
        self._scheme, self._authentication = _credentials(password, key, guest)
        self._reconnect = reconnect
        self._backoff = backoff or Backoff()
        self._dedupe_size = dedupe_size
        self._dedupe_path = dedupe_path
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._ping_interval = ping_interval
        self._max_in_flight = max_in_flight

        self._link: _Link | None = None
        self._live = False
        self._started = False
        self._closing = False
        self._closed = False
        self._failure: TidingsClientError | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None

        self._outbox = Outbox()
        self._waiters: dict[str, list[tuple[NotificationEvent, asyncio.Future[None]]]] = {}
        self._pending_acks: list[Notification] = []
        self._seq = 0
        self._messages: deque[tuple[int, ReceivedMessage]] = deque()
        self._others: deque[tuple[int, Notification | Command]] = deque(
            maxlen=_NOTIFICATION_BACKLOG
        )
        self._inbox_keys: set[MessageKey] = set()
        self._unacked: dict[MessageKey, ReceivedMessage] = {}
        self._seen: SeenMessages | None = None
        self._established_once = False
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

        The client re-sends them after every reconnection. Whatever is still here after
        ``close()`` was never stored by the server: send it again, same id, from a new client.
        """
        return [message.id for message in self._outbox if isinstance(message.id, str)]

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
        if self._started:
            raise RuntimeError("a Client connects once; create a new one to start over")
        self._started = True
        self._changed = asyncio.Event()
        self._seen = SeenMessages(self._dedupe_size, self._dedupe_path)
        try:
            link = await self._establish()
        except BaseException:
            self._closed = True
            self._seen.close()
            raise
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(link), name=f"tidings-sdk {self.node}"
        )

    async def close(self, timeout: float = 5.0) -> None:
        """Finish the session cleanly: wait (up to ``timeout``) for unaccepted messages to be
        accepted, send ``finishing``, wait for ``finished``, close the connection.

        Messages received but not yet taken by the application are not acknowledged; the server
        delivers them again to the next session with this node.
        """
        if self._closed or not self._started:
            self._closed = True
            return
        try:
            async with asyncio.timeout(timeout):
                while (len(self._outbox) or self._pending_acks) and self._failure is None:
                    await self._wait_change()
                self._closing = True
                link = self._link
                if link is not None and link.usable:
                    self._live = False
                    acks, self._pending_acks = self._pending_acks, []
                    for ack in acks:
                        link.send(ack)
                    link.session.finish()
                    link.write(link.session.data_to_send())
                    await _first(link.ended, link.lost)
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
            self._closing = True
            await self._shut(ClientClosed("the client was closed"))

    async def _shut(self, error: TidingsClientError) -> None:
        self._closed = True
        self._live = False
        if self._supervisor is not None and self._supervisor is not asyncio.current_task():
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
            except Exception:
                logger.exception("%s: the reconnection task failed", self.node)
        link = self._link
        if link is not None:
            link.disconnect()
            if link.transport is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await link.transport.wait_disconnected()
        self._abort_waiters(error)
        if self._seen is not None:
            self._seen.close()
        self._notify()

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
        queued and is re-sent after a reconnection until the server accepts or fails it. With
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
        try:
            async with asyncio.timeout_at(deadline):
                await self._room_in_outbox()
        except TimeoutError:
            raise RequestTimeout(
                f"message {message_id!r} not sent: {self._max_in_flight} messages still "
                f"unaccepted after {timeout} s (max_in_flight)"
            ) from None
        message = Message(
            id=message_id,
            to=to,
            type=type,
            content=encode_document(content, type),
            metadata=dict(metadata) if metadata is not None else UNSET,
        )
        self._outbox.add(message)
        waiter: asyncio.Future[None] | None = None
        if wanted is not None:
            waiter = loop.create_future()
            self._waiters.setdefault(message_id, []).append((wanted, waiter))
        if self._live and self._link is not None:
            self._link.send(message)
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
            self._forget_waiter(message_id, waiter)
        return message_id

    async def _room_in_outbox(self) -> None:
        """Backpressure: wait while ``max_in_flight`` messages are still unaccepted."""
        while len(self._outbox) >= self._max_in_flight:
            await self._wait_change()
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
                response = await self._request(
                    link,
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

    def ack(self, message: ReceivedMessage) -> None:
        """Acknowledge a message taken from an iterator created with ``auto_ack=False``.

        Records it as seen (durably, with ``dedupe_path``) and sends ``received``, which
        removes it from this session's queue on the server. Acknowledging twice is harmless.
        """
        key = message.key
        if key is None:
            return
        self._unacked.pop(key, None)
        if self._seen is not None:
            self._seen.add(key)
        self._send_ack(message)

    # -- receiving ---------------------------------------------------------------------------

    def messages(self, *, auto_ack: bool = True) -> Messages:
        """Iterate over incoming messages, each exactly once; waits across reconnections.

        Ends when the client is closed; raises the error if the client gives up (for example
        ``SessionFailed`` when another connection took the session over). Several iterators
        share one inbox: each message goes to one of them.
        """
        return Messages(self, auto_ack)

    def envelopes(self, *, auto_ack: bool = True) -> Envelopes:
        """Like ``messages()``, but also yields notifications and the server's commands.

        Notifications are kept in a bounded backlog (the latest 1024) until taken.
        """
        return Envelopes(self, auto_ack)

    async def _next(self, include_others: bool, auto_ack: bool) -> Incoming:
        while True:
            if self._closing or self._closed:
                if self._failure is not None and not isinstance(self._failure, ClientClosed):
                    raise self._failure
                raise StopAsyncIteration
            if self._failure is not None:
                raise self._failure
            item = self._pop(include_others)
            if item is not None:
                if isinstance(item, ReceivedMessage):
                    self._hand_over(item, auto_ack)
                return item
            await self._wait_change()

    def _pop(self, include_others: bool) -> Incoming | None:
        if (
            include_others
            and self._others
            and (not self._messages or self._others[0][0] < self._messages[0][0])
        ):
            return self._others.popleft()[1]
        if self._messages:
            return self._messages.popleft()[1]
        return None

    def _hand_over(self, message: ReceivedMessage, auto_ack: bool) -> None:
        key = message.key
        if key is None:
            return
        self._inbox_keys.discard(key)
        if auto_ack:
            assert self._seen is not None
            self._seen.add(key)
            self._send_ack(message)
        else:
            self._unacked[key] = message

    def _send_ack(self, message: ReceivedMessage) -> None:
        if message.id is None or not message.sender:
            return
        ack = Notification(id=message.id, to=message.sender, event=NotificationEvent.RECEIVED)
        link = self._link
        if link is not None and link.usable:
            logger.debug("%s: acknowledging %s from %s", self.node, message.id, message.sender)
            link.send(ack)
        else:
            logger.debug("%s: acknowledgement of %s queued", self.node, message.id)
            self._pending_acks.append(ack)

    # -- connection management ---------------------------------------------------------------

    async def _establish(self) -> _Link:
        """Connect, establish, set /receipt, re-send what is pending; return the live link."""
        loop = asyncio.get_running_loop()
        session = ClientSession(self._node, self._scheme, self._authentication)
        link = _Link(session, loop)
        try:
            async with asyncio.timeout(self._connect_timeout):
                link.transport = await open_connection(
                    self.url,
                    on_text=lambda data: self._on_text(link, data),
                    on_binary=lambda: self._on_binary(link),
                    on_closed=lambda: self._on_closed(link),
                    ping_interval=self._ping_interval,
                )
                session.start()
                link.write(session.data_to_send())
                await _first(link.established, link.lost)
                if not link.established.done():
                    raise ConnectError("the connection closed during the session establishment")
                established = link.established.result()  # raises SessionFailed
                self._node = established.local
                self._link = link
                response = await self._request(
                    link,
                    Command(
                        id=str(uuid.uuid4()),
                        method=CommandMethod.SET,
                        uri="/receipt",
                        type=RECEIPT_TYPE,
                        resource=encode_document({"events": list(RECEIPT_EVENTS)}, RECEIPT_TYPE),
                    ),
                )
                if response.status is not CommandStatus.SUCCESS:
                    code, description = reason_parts(response.reason)
                    raise CommandFailed(
                        code, f"set /receipt failed: {description}", response.id or ""
                    )
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

    def _go_live(self, link: _Link) -> None:
        if not link.usable:  # lost again, or close() began finishing it meanwhile
            return
        acks, self._pending_acks = self._pending_acks, []
        for ack in acks:
            link.send(ack)
        resent = 0
        for message in self._outbox:
            link.send(message)
            resent += 1
        logger.debug(
            "%s: live; sent %d queued acks, re-sent %d messages", self.node, len(acks), resent
        )
        self._live = True
        self._notify()

    async def _supervise(self, link: _Link) -> None:
        """Wait for the connection to drop, then reconnect with backoff until closed."""
        while True:
            await asyncio.wait({link.lost})
            if self._closing:
                return
            stop = self._stop_reason(link)
            if stop is not None:
                await self._fail(stop)
                return
            logger.info("%s: connection lost, reconnecting", self.node)
            for delay in self._backoff.delays():
                await asyncio.sleep(delay)
                if self._closing:
                    return
                try:
                    link = await self._establish()
                except SessionFailed as exc:
                    if exc.code in PERMANENT_SESSION_FAILURES:
                        await self._fail(exc)
                        return
                    logger.info("%s: reconnection refused: %s", self.node, exc)
                except (ConnectError, CommandFailed) as exc:
                    logger.info("%s: reconnection failed: %s", self.node, exc)
                except Exception:
                    logger.exception("%s: unexpected error while reconnecting", self.node)
                else:
                    break
            else:
                await self._fail(ConnectError(f"gave up reconnecting to {self.url}"))
                return

    def _stop_reason(self, link: _Link) -> TidingsClientError | None:
        if not self._reconnect:
            return ConnectionLost("the connection was lost and reconnect=False")
        if link.ended.done():
            ended = link.ended.result()
            if ended.state is SessionState.FAILED:
                code, description = reason_parts(ended.reason)
                if code in PERMANENT_SESSION_FAILURES:
                    return SessionFailed(code, description)
        return None

    async def _fail(self, error: TidingsClientError) -> None:
        self._failure = error
        await self._shut(error)

    def _check_usable(self) -> None:
        if not self._started:
            raise RuntimeError("call connect() first (or use 'async with')")
        if self._failure is not None:
            raise self._failure
        if self._closing or self._closed:
            raise ClientClosed("the client is closed")

    async def _wait_live(self) -> _Link:
        while True:
            self._check_usable()
            if self._live and self._link is not None:
                return self._link
            await self._wait_change()

    async def _request(self, link: _Link, command: Command) -> Command:
        assert isinstance(command.id, str)
        future: asyncio.Future[Command] = asyncio.get_running_loop().create_future()
        link.commands[command.id] = future
        try:
            link.send(command)
            return await future
        finally:
            link.commands.pop(command.id, None)

    # -- events from the connection (synchronous picows callbacks) ---------------------------

    def _on_text(self, link: _Link, data: bytes) -> None:
        event = link.session.receive_text(data)
        link.write(link.session.data_to_send())
        if event is None:
            return
        if isinstance(event, Message):
            self._on_message(event)
        elif isinstance(event, Notification):
            self._on_notification(event)
        elif isinstance(event, Command):
            self._on_command(link, event)
        elif isinstance(event, SessionEstablished):
            if self._established_once:
                self.reconnections += 1
            self._established_once = True
            self._link = link  # acknowledgements may use it at once; sending waits for _go_live
            if not link.established.done():
                link.established.set_result(event)
        elif isinstance(event, SessionEnded):
            self._on_session_ended(link, event)

    def _on_binary(self, link: _Link) -> None:
        ended = link.session.receive_binary()
        if ended is not None:
            self._on_session_ended(link, ended)

    def _on_session_ended(self, link: _Link, ended: SessionEnded) -> None:
        if not link.ended.done():
            link.ended.set_result(ended)
        if not link.established.done():
            code, description = reason_parts(ended.reason)
            if ended.state is SessionState.FINISHED:
                error: Exception = ConnectError(
                    "the server finished the session during establishment"
                )
            elif code == ReasonCode.SESSION_AUTHENTICATION_FAILED:
                error = AuthenticationFailed(code, description)
            else:
                error = SessionFailed(code, description)
            link.established.set_exception(error)
        elif ended.state is SessionState.FAILED and not self._closing:
            logger.warning("%s: the server failed the session: %s", self.node, ended.reason)
        self._live = False
        link.disconnect()

    def _on_closed(self, link: _Link) -> None:
        if not link.lost.done():
            link.lost.set_result(None)
        for future in link.commands.values():
            if not future.done():
                future.set_exception(ConnectionLost("the connection dropped before the response"))
        link.commands.clear()
        if link is self._link:
            self._live = False
        self._notify()

    def _on_message(self, envelope: Message) -> None:
        message = ReceivedMessage.from_envelope(envelope)
        key = message.key
        if key is not None:
            if key in self._inbox_keys or key in self._unacked:
                return  # a redelivery of a message still waiting for the application
            assert self._seen is not None
            if self._seen.check(key):
                logger.debug(
                    "%s: dropping a redelivered message %s, acknowledging it", self.node, key
                )
                self._send_ack(message)  # our earlier ack may have been lost with a connection
                return
            self._inbox_keys.add(key)
        self._seq += 1
        self._messages.append((self._seq, message))
        self._notify()

    def _on_notification(self, notification: Notification) -> None:
        message_id = notification.id
        if isinstance(message_id, str) and (
            message_id in self._outbox or message_id in self._waiters
        ):
            event = notification.event
            if event is NotificationEvent.FAILED:
                self._outbox.settle(message_id)
                code, description = reason_parts(notification.reason)
                for _, waiter in self._waiters.pop(message_id, []):
                    if not waiter.done():
                        waiter.set_exception(MessageFailed(code, description, message_id))
            else:
                if event is NotificationEvent.ACCEPTED:
                    self._outbox.settle(message_id)
                for wanted, waiter in self._waiters.get(message_id, []):
                    if not waiter.done() and satisfies(event, wanted):
                        waiter.set_result(None)
        self._seq += 1
        self._others.append((self._seq, notification))
        self._notify()

    def _on_command(self, link: _Link, command: Command) -> None:
        if command.is_response:
            future = link.commands.get(command.id) if isinstance(command.id, str) else None
            if future is not None and not future.done():
                future.set_result(command)
            return
        if (
            command.method is CommandMethod.GET
            and command.uri == "/ping"
            and isinstance(command.id, str)
            and link.usable
        ):
            link.send(
                Command(
                    id=command.id,
                    to=command.from_,
                    method=CommandMethod.GET,
                    status=CommandStatus.SUCCESS,
                    type=PING_TYPE,
                    resource=Raw(b"{}"),
                )
            )
            return
        self._seq += 1
        self._others.append((self._seq, command))
        self._notify()

    # -- plumbing ----------------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake everything waiting for a change (inbox, connection state, outbox)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _wait_change(self) -> None:
        assert self._changed is not None
        await self._changed.wait()

    def _forget_waiter(self, message_id: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(message_id)
        if waiters is None:
            return
        waiters[:] = [entry for entry in waiters if entry[1] is not waiter]
        if not waiters:
            del self._waiters[message_id]

    def _abort_waiters(self, error: TidingsClientError) -> None:
        for waiters in self._waiters.values():
            for _, waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
        self._waiters.clear()
        link = self._link
        if link is not None:
            for future in link.commands.values():
                if not future.done():
                    future.set_exception(error)


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


async def _first(*futures: asyncio.Future[Any]) -> None:
    """Wait until one of ``futures`` is done, without cancelling or consuming any of them."""
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
