"""One LIME client connection: binds a ``ServerSession`` to a picows transport and the core.

Envelopes from one connection are handled in arrival order. Most are handled synchronously;
when one needs to wait (authentication, a stored resource, a delegation check), later envelopes
queue behind it so that, say, a ``set /receipt`` is in force for the message that follows it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from ..core.authz import Method, Resource
from ..core.errors import ErrorId, Forbidden, Invalid, TidingsError
from ..core.expiry import expire_after_s, is_realtime
from ..core.login_throttle import source_key
from ..core.model import EnvelopeKind
from ..core.session_registry import DeliveryEvent, LiveSession
from ..protocol.lime import (
    UNSET,
    AuthenticationRequested,
    Command,
    CommandMethod,
    InvalidNode,
    Message,
    Node,
    Notification,
    NotificationEvent,
    Reason,
    ReasonCode,
    ServerSession,
    SessionEnded,
    encode_envelope,
    parse_node,
    scoped_metadata,
)
from .context import LimeContext, Stats
from .deadline import DeadlineTimer
from .errors import lime_reason
from .flow import ReadThrottle
from .frames import (
    FrameError,
    Reassembler,
    answer_control,
    check_reserved_bits,
    check_text,
)
from .framing import CorkedWriter
from .lime_apps import APPS_PREFIX
from .lime_commands import execute_command, ping_response, receipt_command
from .lime_consent import forget_consent
from .lime_sessions import NONCE_KEY, persist_step, without_persistence
from .listener import release_handshake

log = logging.getLogger("tidings.lime")
DEFAULT_INSTANCE = "default"
ACKNOWLEDGING_EVENTS = frozenset(
    {NotificationEvent.RECEIVED, NotificationEvent.CONSUMED, NotificationEvent.FAILED}
)
_replace = msgspec.structs.replace
_MESSAGE = EnvelopeKind.MESSAGE
_NOTIFICATION = EnvelopeKind.NOTIFICATION
_PUBLIC_ONLY = scoped_metadata(None)
"""The metadata of a message that has none (shared, never changed)."""


class LimeConnection(WSListener):
    def __init__(self, context: LimeContext) -> None:
        super().__init__()
        self.ctx = context
        self.session = ServerSession(
            context.server_node,
            context.scheme_options,
            max_envelope_size=context.max_envelope_size,
            establish_timeout=context.establish_timeout,
            now=time.monotonic(),
        )
        self.transport: WSTransport | None = None
        self.connected_at = time.time()
        """When the connection was accepted (Unix seconds), for the admin API."""
        self.live: LiveSession | None = None
        self._server = context.server_node.text
        self._throttle: ReadThrottle | None = None
        self._waiting: deque[Any] | None = None
        self._timer = DeadlineTimer(self.session.next_deadline, self._expire)
        self._closed = False
        self._breached = False
        """The client broke RFC 6455: nothing after that frame is read."""
        self._close_code = WSCloseCode.OK
        self._max_size = context.max_envelope_size
        self._fragments = Reassembler(context.max_envelope_size)
        self._writer: CorkedWriter | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stalled = False
        """The client is behind reading (output over ``max_output_buffer``): messages for it
        stay in its queue and it is not read until it catches up."""

    # -- picows callbacks ---------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        release_handshake(transport)
        bound = self.ctx.max_output_buffer
        transport.underlying_transport.set_write_buffer_limits(high=bound, low=bound // 4)
        self._writer = CorkedWriter(transport.underlying_transport, flush_at=bound, ws=transport)
        self._throttle = ReadThrottle(self.ctx.rate_limit, self.ctx.rate_burst, transport)
        self.ctx.connections.add(self)
        self.ctx.stats.connections += 1
        self._timer.arm()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = True
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        self.ctx.connections.discard(self)
        self._timer.cancel()
        live = self.live
        if live is not None:
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "session of %s ended", live.node, extra={"session": self.session.session_id}
                )
            self.ctx.keys.forget(live)
            forget_consent(self.ctx, live)
            if self.ctx.router.detach(live):
                self.ctx.presence.forget(live)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self._closed or self._breached:
            return  # failed or closing: frames read in the same chunk are not processed
        try:
            kind = frame.msg_type
            if frame.rsv1 or frame.rsv2 or frame.rsv3:
                check_reserved_bits(frame)  # raises: inline above, the common case costs less
            if kind is WSMsgType.TEXT and frame.fin and not self._fragments.active:
                data: bytes | None = frame.get_payload_as_bytes()
            elif kind is WSMsgType.TEXT or kind is WSMsgType.CONTINUATION:
                message = self._fragments.add(frame)
                if message is None:
                    return
                kind, data = message
            elif kind is WSMsgType.PING or kind is WSMsgType.CLOSE:
                if answer_control(transport, frame, self._writer):
                    self._closed = True  # nothing may follow our close frame
                return
            elif kind is WSMsgType.BINARY:
                self._fragments.add(frame)  # refused below; added to keep the fragment order
                data = None
            else:
                return
            if kind is WSMsgType.BINARY:
                data = None
            elif data is not None and not data.isascii() and len(data) <= self._max_size:
                check_text(data)  # a longer one is refused by its size
        except FrameError as error:
            self._breached = True
            if self._waiting is not None:
                self._waiting.append(error)  # what came before it is answered first
            else:
                self._refuse_frame(error)
            return
        except Exception:
            self._fail_unexpectedly()
            return
        if self._throttle is not None and self._throttle.spend():
            self.ctx.stats.throttled += 1
        if self._waiting is not None:
            self._waiting.append(data)  # in order, behind the envelope being handled
            return
        work = self._receive(data)
        if work is not None:
            self._waiting = deque()
            self.ctx.spawn(self._finish_then_drain(work))

    def _receive(self, data: bytes | FrameError | None) -> Awaitable[None] | None:
        """Feed one frame (None: a binary one) to the session and act on what comes out."""
        try:
            if isinstance(data, FrameError):
                self._refuse_frame(data)
                return None
            if data is None:
                event: Any = self.session.receive_binary()
            else:
                self.ctx.stats.envelopes_in += 1
                event = self.session.receive_text(data)
            self._flush()
            if event is None:
                return None
            return self._handle(event)
        except Exception:
            self._fail_unexpectedly()
            return None

    def _refuse_frame(self, error: FrameError) -> None:
        """A breach of RFC 6455: the session fails with the reason, the close carries the
        RFC's code (1002 or 1007)."""
        self.ctx.stats.protocol_errors += 1
        self._close_code = error.code
        self.session.fail(Reason(code=ReasonCode.VALIDATION_ERROR, description=error.reason))
        self._flush()

    async def _finish_then_drain(self, work: Awaitable[None]) -> None:
        try:
            await self._guarded(work)
            while self._waiting and not self._closed:
                more = self._receive(self._waiting.popleft())
                if more is not None:
                    await self._guarded(more)
        finally:
            self._waiting = None

    async def _guarded(self, work: Awaitable[None]) -> None:
        """A bug must not leave the session hanging: fail it with 11, as lime-csharp does."""
        try:
            await work
        except Exception:
            self._fail_unexpectedly()

    def _fail_unexpectedly(self) -> None:
        """Called from an ``except`` block: log the bug and fail the session with 11, so that
        nothing after it is silently skipped (the client knows to reconnect and re-send)."""
        log.exception(
            "unexpected error on the session of %s",
            self.live and self.live.node,
            extra={"session": self.session.session_id},
        )
        self._close_code = WSCloseCode.INTERNAL_ERROR
        self.session.fail(
            Reason(code=ReasonCode.SESSION_ERROR, description="An unexpected server error occurred")
        )
        self._flush()

    # -- the Outlet port ----------------------------------------------------------------------

    def deliver(self, payload: bytes, kind: EnvelopeKind = EnvelopeKind.MESSAGE) -> bool:
        """An envelope from someone else; not written (False) when the connection is closing
        or its client is behind reading: it stays in the session's queue, and the router
        writes it when the client has caught up."""
        if self._closed or self._writer is None:
            return False
        if self._stalled:
            if self.live is not None:
                self.ctx.router.stall(self.live)  # its next writes wait for the replay too
            return False
        self._writer.write_text(payload)
        stats = self.ctx.stats
        if kind is _MESSAGE:
            stats.messages_out += 1
        elif kind is _NOTIFICATION:
            stats.notifications_out += 1
        else:
            stats.commands_out += 1
        return True

    def _write(self, payload: bytes) -> bool:
        """An answer to this client (a notification about its message, a command response,
        its session state): written even while it is behind, since nothing it sends is read
        then; past four times the bound it is dropped as a slow consumer. Whether it was
        written (the caller counts it by type)."""
        writer = self._writer
        if self._closed or writer is None:
            return False
        writer.write_text(payload)
        if self._stalled and writer.buffered > 4 * self.ctx.max_output_buffer:
            self._drop_slow_consumer()
        return True

    def notify(
        self, message_id: str, event: DeliveryEvent, error: TidingsError | None = None
    ) -> None:
        notification = Notification(
            id=message_id,
            from_=self._server,
            to=self.live.node if self.live is not None else UNSET,
            event=NotificationEvent(event.value),
            reason=lime_reason(error) if error is not None else UNSET,
        )
        if self._write(encode_envelope(notification)):
            self.ctx.stats.notifications_out += 1

    def observe(self, identity: str, presence: dict[str, Any]) -> None:
        self.observe_resource(
            identity, f"lime://{identity}/presence", "application/vnd.lime.presence+json", presence
        )

    def observe_resource(self, owner: str, uri: str, type_: str, resource: Any) -> None:
        command = Command(
            from_=owner,
            to=self.live.node if self.live is not None else UNSET,
            method=CommandMethod.OBSERVE,
            uri=uri,
            type=type_,
            resource=msgspec.Raw(msgspec.json.encode(resource)),
        )
        self._respond(command)

    def end(self, error: TidingsError) -> None:
        self.session.fail(lime_reason(error))
        self._flush()

    # -- output backpressure (picows forwards the transport's callbacks) ----------------------

    def pause_writing(self) -> None:
        """The client has ``max_output_buffer`` unread bytes: stop writing to it live, and stop
        reading it, until it has read most of them."""
        if self._closed or self._stalled:
            return
        self._stalled = True
        self.ctx.stats.output_stalls += 1
        self._stall_timer = asyncio.get_running_loop().call_later(
            self.ctx.stall_timeout, self._drop_slow_consumer
        )
        if self._throttle is not None:
            self._throttle.hold()
        if self.live is not None:
            self.ctx.router.stall(self.live)

    def resume_writing(self) -> None:
        if not self._stalled:
            return
        self._stalled = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._throttle is not None:
            self._throttle.release()
        if self.live is not None and not self._closed:
            self.ctx.spawn(self.ctx.router.resume(self.live))

    def _drop_slow_consumer(self) -> None:
        """Abort at once: a graceful close would wait for the client to read it all."""
        if self._closed:
            return
        self.ctx.stats.slow_consumers += 1
        self._closed = True
        self.ctx.stats.sessions_failed += 1
        log.warning(
            "dropped %s as a slow consumer: over max_output_buffer (%d bytes) for %g s or by 4x",
            self.live.node if self.live is not None else "a connection",
            self.ctx.max_output_buffer,
            self.ctx.stall_timeout,
            extra={"session": self.session.session_id},
        )
        if self.transport is not None:
            self.transport.disconnect(graceful=False)

    # -- dispatch -------------------------------------------------------------------------------

    def _handle(self, event: Any) -> Awaitable[None] | None:
        kind = type(event)
        if kind is Message:
            self.ctx.stats.messages_in += 1
            return self._on_message(event)
        if kind is Notification:
            stats = self.ctx.stats
            stats.notifications_in += 1
            events = stats.notification_events
            events[event.event] = events.get(event.event, 0) + 1
            self._on_notification(event)
            return None
        if kind is Command:
            self.ctx.stats.commands_in += 1
            return self._on_command(event)
        if kind is AuthenticationRequested:
            return self._authenticate(event)
        if kind is SessionEnded:
            self._flush()
        return None

    def _flush(self) -> None:
        session = self.session
        for data in session.data_to_send():
            if self._write(data):
                _count_answer(self.ctx.stats, data)
        if session.is_closed and not self._closed and self.transport is not None:
            if self._writer is not None:
                self._writer.flush()
            self._closed = True
            if session.failure is not None:
                self.ctx.stats.sessions_failed += 1
            self.transport.send_close(self._close_code)
            # a client not reading would hold a graceful close (and its file) open for good
            self.transport.disconnect(graceful=not self._stalled)

    def _expire(self, now: float) -> None:
        if self.session.expire(now) is not None:
            self._flush()
        if not self._closed:
            self._timer.arm()  # a timer may fire early by the loop's clock resolution

    # -- session establishment ------------------------------------------------------------------

    async def _authenticate(self, request: AuthenticationRequested) -> None:
        ctx = self.ctx
        node = request.node
        instance = node.instance
        if instance is None or instance == "undefined":
            instance = DEFAULT_INSTANCE
        transport = self.transport
        peer = transport.underlying_transport.get_extra_info("peername") if transport else None
        try:
            secret = _secret(request.scheme, request.authentication)
            principal = await ctx.accounts.authenticate(
                node, request.scheme, secret, source=source_key(peer)
            )
        except TidingsError as error:
            if error.error_id is ErrorId.LOGIN_THROTTLED:
                self.session.fail(lime_reason(error))  # 34: retry later, not bad credentials
            else:
                self.session.fail(
                    Reason(code=ReasonCode.SESSION_AUTHENTICATION_FAILED, description=error.message)
                )
            self._flush()
            return
        if self._closed:
            return
        self._timer.cancel()
        try:
            record = ctx.registry.open(principal.identity, instance)
        except TidingsError as error:
            self.session.fail(lime_reason(error))
            self._flush()
            return
        live = LiveSession(principal.identity, instance, self, record, guest=principal.guest)
        await ctx.router.establishing(live)
        if self._closed:
            return
        self.live = live
        self.session.establish(Node(node.name, node.domain, instance))
        self._flush()
        ctx.stats.sessions_established += 1
        if log.isEnabledFor(logging.INFO):
            log.info(
                "session established for %s (%s)",
                live.node,
                request.scheme,
                extra={"session": self.session.session_id},
            )
        await ctx.router.attach(live)
        await ctx.router.save(live)
        ctx.presence.changed(live.identity)

    # -- messages -------------------------------------------------------------------------------

    def _on_message(self, message: Message) -> Awaitable[None] | None:
        live = self.live
        assert live is not None
        message_id = message.id if message.id is not UNSET else None
        if message.to is UNSET:
            self._refuse_message(
                message_id,
                Invalid(ErrorId.INVALID_ADDRESS, "A message needs 'to': the server takes none"),
            )
            return None
        try:
            to = parse_node(message.to, self.ctx.domain)
        except InvalidNode as exc:
            self._refuse_message(message_id, Invalid(ErrorId.INVALID_ADDRESS, str(exc)))
            return None
        metadata = message.metadata
        expire_after: float | None = None
        realtime = False
        if metadata is not UNSET:
            try:
                expire_after = expire_after_s(metadata)
            except TidingsError as error:
                self._refuse_message(message_id, error)
                return None
            realtime = is_realtime(metadata)
        if (message.from_ is not UNSET and message.from_ != live.node) or message.pp is not UNSET:
            return self._send_on_behalf(live, message, to, message_id, expire_after, realtime)
        try:
            persist = persist_step(live, metadata)
            if persist is not None:
                metadata = without_persistence(metadata)
            # the scope first, where the router stamps it at delivery (protocol.lime._scope)
            scoped = _PUBLIC_ONLY if metadata is UNSET else scoped_metadata(metadata)
            payload = encode_envelope(
                _replace(message, from_=live.node, to=to.text, metadata=scoped)
            )
            pending = self.ctx.router.send_message(
                live,
                message_id,
                to,
                payload,
                persist,
                expire_after=expire_after,
                realtime=realtime,
            )
        except TidingsError as error:
            self._refuse_message(message_id, error)
            return None
        return None if pending is None else self._refused_later(message_id, pending)

    async def _refused_later(self, message_id: str | None, pending: Awaitable[None]) -> None:
        """Routing that had to ask the store first: its refusal comes from the awaitable."""
        try:
            await pending
        except TidingsError as error:
            self._refuse_message(message_id, error)

    async def _send_on_behalf(
        self,
        live: LiveSession,
        message: Message,
        to: Node,
        message_id: str | None,
        expire_after: float | None,
        realtime: bool,
    ) -> None:
        try:
            owner = await self._owner(live, message.from_, "message")
            on_behalf_of = owner if owner.identity != live.identity else None
            sender = owner.text if on_behalf_of is not None else live.node
            pp = live.node if on_behalf_of is not None else UNSET
            payload = encode_envelope(
                _replace(
                    message,
                    from_=sender,
                    to=to.text,
                    pp=pp,
                    metadata=scoped_metadata(message.metadata),
                )
            )
            pending = self.ctx.router.send_message(
                live,
                message_id,
                to,
                payload,
                on_behalf_of=on_behalf_of,
                expire_after=expire_after,
                realtime=realtime,
            )
            if pending is not None:
                await pending
        except TidingsError as error:
            self._refuse_message(message_id, error)

    async def _owner(self, live: LiveSession, claimed: Any, envelope_type: str) -> Node:
        """Whose behalf an envelope is sent on: the session itself, or a delegating identity."""
        if claimed is UNSET:
            own = self.session.remote
            if own is not None and own.text == live.node:
                return own  # what parse_node(live.node) gives, without a cache entry per session
            return parse_node(live.node)
        try:
            owner = parse_node(claimed, self.ctx.domain)
        except InvalidNode as exc:
            raise Invalid(ErrorId.INVALID_ADDRESS, f"Invalid 'from': {exc}") from None
        resource = Resource.MESSAGES if envelope_type == "message" else Resource.COMMANDS
        await self.ctx.authz.check(live.identity, resource, Method.SEND, owner.identity)
        return owner

    def _refuse_message(self, message_id: str | None, error: TidingsError) -> None:
        self.ctx.stats.envelopes_rejected += 1
        if message_id is not None:
            self.notify(message_id, DeliveryEvent.FAILED, error)
        else:
            self.session.fail(lime_reason(error))
            self._flush()

    # -- notifications --------------------------------------------------------------------------

    def _on_notification(self, notification: Notification) -> None:
        live = self.live
        assert live is not None and notification.id is not UNSET
        if notification.to is UNSET:
            return  # addressed to the server itself: nothing to act on
        try:
            to = parse_node(notification.to, self.ctx.domain)
        except InvalidNode:
            return  # a notification cannot be answered; an unparseable one addresses nobody
        if to.text == self._server:
            if notification.event in ACKNOWLEDGING_EVENTS:
                # a server message (gap marker, server-side notify) taken by the session
                self.ctx.router.acknowledge(live, self._server, notification.id)
            return
        payload = encode_envelope(_replace(notification, from_=live.node, to=to.text))
        router = self.ctx.router
        about = notification.id

        def forward() -> None:
            router.forward_notification(to, payload, about)

        if notification.event in ACKNOWLEDGING_EVENTS:
            router.acknowledge(live, to.text, about, forward)
        else:
            forward()

    # -- commands -------------------------------------------------------------------------------

    def _on_command(self, command: Command) -> Awaitable[None] | None:
        live = self.live
        assert live is not None
        to: Node | None = None
        if command.to is not UNSET:
            try:
                to = parse_node(command.to, self.ctx.domain)
            except InvalidNode as exc:
                self._fail_command(command, Invalid(ErrorId.INVALID_ADDRESS, str(exc)))
                return None
        if to is not None and to.text != self._server and to.identity != self._server_identity:
            if live.guest and to.domain != self.ctx.domain:
                self._fail_command(
                    command,
                    Forbidden(
                        ErrorId.FORBIDDEN,
                        "Guests send only to this server's identities, not other domains'",
                    ),
                )
                return None
            payload = encode_envelope(_replace(command, from_=live.node, to=to.text))
            try:
                pending = self.ctx.router.forward_command(to, payload)
            except TidingsError as error:
                self._fail_command(command, error)
                return None
            return None if pending is None else self._command_failed_later(command, pending)
        if command.status is not UNSET:
            return None  # a response to one of our requests (a ping): nothing to answer
        if command.uri == "/ping" and command.method is CommandMethod.GET:
            self._respond(ping_response(command, self._server, live.node))
            return None
        if command.uri == "/receipt":
            self._respond(receipt_command(command, live, self._server))
            return None
        if (
            isinstance(command.metadata, dict)
            and NONCE_KEY in command.metadata
            and not (
                command.method is CommandMethod.DELETE and str(command.uri).endswith("/persistence")
            )
            and not str(command.uri).startswith(APPS_PREFIX)
        ):
            self._fail_command(
                command,
                Invalid(
                    ErrorId.INVALID_ARGUMENT,
                    "Persistent-session commands go to app requests (/apps/NAME); other "
                    f"commands to the server take no '{NONCE_KEY}'",
                ),
            )
            return None
        return self._run_command(live, command)

    @property
    def _server_identity(self) -> str:
        return self.ctx.server_node.identity

    async def _run_command(self, live: LiveSession, command: Command) -> None:
        try:
            owner = await self._owner(live, command.from_, "command")
        except TidingsError as error:
            self._fail_command(command, error)
            return
        response = await execute_command(self.ctx, live, owner.identity, command, self._server)
        if response is not None:
            self._respond(response)

    async def _command_failed_later(self, command: Command, pending: Awaitable[None]) -> None:
        try:
            await pending
        except TidingsError as error:
            self._fail_command(command, error)

    def _fail_command(self, command: Command, error: TidingsError) -> None:
        if command.id is not UNSET and command.status is UNSET:
            self._respond(
                self.session.failure_response(command.id, command.method, lime_reason(error))
            )

    def _respond(self, response: Command) -> None:
        if self._write(encode_envelope(response)):
            self.ctx.stats.commands_out += 1

    # -- shutdown -------------------------------------------------------------------------------

    def shut_down(self) -> None:
        self.end(TidingsError(ErrorId.SHUTTING_DOWN, "The server is being shut down"))


class _Shape(msgspec.Struct):
    """The keys that tell a LIME envelope's type (the rest is skipped)."""

    state: Any = None
    event: Any = None
    method: Any = None


_shape = msgspec.json.Decoder(_Shape).decode


def _count_answer(stats: Stats, data: bytes) -> None:
    """Count an envelope the protocol layer wrote by its type: session envelopes, and its
    answers to invalid envelopes (a ``failed`` notification, a failed command). Rare frames
    (establishment, refusals): worth a decode, unlike the router's deliveries."""
    shape = _shape(data)
    if shape.state is not None:
        stats.sessions_out += 1
    elif shape.event is not None:
        stats.notifications_out += 1
    elif shape.method is not None:
        stats.commands_out += 1
    else:
        stats.messages_out += 1


def _secret(scheme: str, authentication: dict[str, Any]) -> str | None:
    """Decode the base64 secret of the ``plain`` and ``key`` schemes."""
    field = {"plain": "password", "key": "key"}.get(scheme)
    if field is None:
        return None
    value = authentication.get(field)
    if not isinstance(value, str):
        raise Invalid(ErrorId.BAD_CREDENTIALS, f"The {scheme} scheme needs '{field}'")
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Invalid(
            ErrorId.BAD_CREDENTIALS, f"'{field}' must be standard base64 of UTF-8 text"
        ) from None


__all__ = ["LimeConnection"]
