"""One Feedme client connection: a ``FeedmeConversation`` bound to picows, the app and the hub.

The conversation enforces the protocol (violations are answered there); this adapter turns its
events into app handler calls and hub bookkeeping, and owns the one timer the conversation asks
for (handshake deadline, termination windows).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from ..core.apps import ActionRequest, App, FeedCloseRequest, FeedOpenRequest, HandshakeRequest
from ..core.authz import Authorizer, Method, Resource
from ..core.errors import Forbidden, Invalid, TidingsError
from ..core.feeds import INTERNAL_ERROR, FeedHub, call_handler
from ..core.owner_feeds import OwnerFeeds, is_owner_feed
from ..protocol.feedme import (
    Action,
    ActionResponse,
    ConversationState,
    FeedClose,
    FeedCloseResponse,
    FeedKey,
    FeedmeConversation,
    FeedOpen,
    FeedOpenResponse,
    Handshake,
    HandshakeTimedOut,
    LocalProtocolError,
    PeerClosed,
    PeerViolated,
    PreparedRevelation,
)
from ..protocol.feedme import InvalidState as FeedmeInvalidState
from .deadline import DeadlineTimer
from .flow import ReadThrottle
from .frames import FrameError, answer_control, check_reserved_bits, check_text
from .framing import CorkedWriter
from .listener import release_handshake

log = logging.getLogger("tidings.feedme")
UNAUTHORIZED = "UNAUTHORIZED"
INVALID_FEED = "INVALID_FEED"
_client_ids = itertools.count(1)


@dataclass(slots=True)
class FeedmeContext:
    app: App
    authz: Authorizer
    hub: FeedHub
    max_message_size: int
    owner_feeds: OwnerFeeds | None = None
    handshake_timeout: float = 30.0
    termination_window: float = 30.0
    rate_limit: float = 5_000.0
    rate_burst: int = 10_000
    max_output_buffer: int = 1024 * 1024
    throttled: int = 0
    slow_consumers: int = 0
    """Connections dropped because they read less than they were sent, by ``max_output_buffer``
    (nothing of Feedme's is queued: the client reconnects and reopens its feeds)."""
    protocol_errors: int = 0
    connections: set[FeedmeConnection] = field(default_factory=set)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def _answer(handler: Any, request: Any, responder: _Responder, what: str) -> None:
    """Run an app handler; a handler that raises or returns without answering leaves the
    client with ``INTERNAL_ERROR`` (as feedme-server-core does), never without an answer."""
    try:
        await call_handler(handler, request, responder)
    except Exception as exc:
        log.exception("the handler of %s failed", what)
        responder.failure(INTERNAL_ERROR, {"message": f"{type(exc).__name__}: {exc}"})
        return
    if not responder.done:
        responder.failure(INTERNAL_ERROR, {"message": f"The handler of {what} did not respond"})


class _Responder:
    """What a handler calls once: ``success(data)`` or ``failure(code, data)``."""

    __slots__ = ("_done", "_fail", "_ok")

    def __init__(self, ok: Any, fail: Any) -> None:
        self._ok = ok
        self._fail = fail
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def success(self, data: dict[str, Any]) -> None:
        if not self._done:
            self._done = True
            self._ok(data)

    def failure(self, error_code: str, error_data: dict[str, Any] | None = None) -> None:
        if not self._done:
            self._done = True
            self._fail(error_code, error_data or {})


class FeedmeConnection(WSListener):
    def __init__(self, context: FeedmeContext, identity: str | None) -> None:
        super().__init__()
        self.ctx = context
        self.identity = identity
        self.client_id = f"c{next(_client_ids)}"
        self.connected_at = time.time()
        """When the connection was accepted (Unix seconds), for the admin API."""
        self.conversation = FeedmeConversation(
            max_message_size=context.max_message_size,
            handshake_timeout=context.handshake_timeout,
            termination_window=context.termination_window,
        )
        self.transport: WSTransport | None = None
        self._timer = DeadlineTimer(self.conversation.next_deadline, self._expire)
        self._closed = False
        self._writer: CorkedWriter | None = None
        self._throttle: ReadThrottle | None = None

    # -- picows callbacks ---------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        release_handshake(transport)
        bound = self.ctx.max_output_buffer
        transport.underlying_transport.set_write_buffer_limits(high=bound, low=bound // 4)
        self._writer = CorkedWriter(transport.underlying_transport, flush_at=bound, ws=transport)
        self._throttle = ReadThrottle(self.ctx.rate_limit, self.ctx.rate_burst, transport)
        self.ctx.connections.add(self)
        self.ctx.hub.connected(self)
        self.ctx.spawn(self.ctx.app.emit("connect", self.client_id))
        self._arm_timer()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = True
        self.ctx.connections.discard(self)
        self._timer.cancel()
        self.conversation.receive_close()
        self.conversation.events_received()
        self.ctx.hub.disconnected(self.client_id)
        self.ctx.spawn(self.ctx.app.emit("disconnect", self.client_id))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self._closed:
            return
        kind = frame.msg_type
        try:
            check_reserved_bits(frame)
            if kind is WSMsgType.TEXT and frame.fin:
                data = frame.get_payload_as_bytes()
                if len(data) <= self.ctx.max_message_size:
                    check_text(data)  # a longer one is the conversation's violation
            elif kind is WSMsgType.PING or kind is WSMsgType.CLOSE:
                if answer_control(transport, frame, self._writer):
                    self._closed = True  # nothing may follow our close frame
                return
            elif kind is WSMsgType.CONTINUATION:
                raise FrameError(
                    WSCloseCode.PROTOCOL_ERROR, "A continuation frame with no message started"
                )
            elif kind is WSMsgType.BINARY or not frame.fin:
                raise FrameError(
                    WSCloseCode.UNSUPPORTED_DATA, "Feedme frames are single text frames"
                )
            else:
                return
        except FrameError as error:
            self._close_for(error)
            return
        if self._throttle is not None and self._throttle.spend():
            self.ctx.throttled += 1
        self.conversation.receive_text(data)
        self._after_input()

    def _close_for(self, error: FrameError) -> None:
        self.ctx.protocol_errors += 1
        self.ctx.spawn(self.ctx.app.emit("transportError", self.client_id, error.reason))
        if self.transport is not None:
            if self._writer is not None:
                self._writer.flush()
            self._closed = True
            self.transport.send_close(error.code, error.reason.encode())
            self.transport.disconnect()

    def pause_writing(self) -> None:
        """The client has ``max_output_buffer`` bytes unread: drop it rather than buffer
        revelations without end (it reconnects and reopens its feeds from fresh data)."""
        if self._closed or self.transport is None:
            return
        self.ctx.slow_consumers += 1
        self._closed = True
        log.warning("dropped Feedme client %s: too far behind reading", self.client_id)
        self.ctx.spawn(self.ctx.app.emit("transportError", self.client_id, "slow consumer"))
        self.transport.disconnect(graceful=False)

    # -- the FeedClient port --------------------------------------------------------------------

    def reveal(self, revelation: PreparedRevelation) -> bool:
        if self._closed or not self.conversation.send_prepared(revelation):
            return False
        self._flush()
        return True

    def terminate(self, feed: FeedKey, error_code: str, error_data: dict[str, Any]) -> None:
        if not self._closed:
            self.conversation.terminate_feed(feed, error_code, error_data)
            self._flush()
            self._arm_timer()

    def terminate_all(self, error_code: str, error_data: dict[str, Any]) -> None:
        if not self._closed:
            self.conversation.terminate_all_feeds(error_code, error_data)
            self._flush()
            self._arm_timer()

    def disconnect(self) -> None:
        if self.transport is not None and not self._closed:
            if self._writer is not None:
                self._writer.flush()
            self._closed = True
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()

    # -- events ---------------------------------------------------------------------------------

    def _after_input(self) -> None:
        for event in self.conversation.events_received():
            self._dispatch(event)
        self._flush()
        self._arm_timer()

    def _dispatch(self, event: Any) -> None:
        app = self.ctx.app
        if isinstance(event, Handshake):
            if app.listeners.get("handshake"):
                self.ctx.spawn(self._run_handshake())
            else:
                self.conversation.send(self.conversation.accept_handshake())
        elif isinstance(event, Action):
            self.ctx.spawn(self._run_action(event))
        elif isinstance(event, FeedOpen):
            self.ctx.spawn(self._run_feed_open(event))
        elif isinstance(event, FeedClose):
            self.ctx.hub.feed_closed(self.client_id, event.feed)
            if app.listeners.get("feedClose"):
                self.ctx.spawn(self._run_feed_close(event))
            else:
                self.conversation.send(FeedCloseResponse.of(event.feed))
        elif isinstance(event, PeerViolated):
            self.ctx.spawn(app.emit("badClientMessage", self.client_id, str(event.error)))
        elif isinstance(event, PeerClosed):
            self.ctx.hub.disconnected(self.client_id)

    async def _run_handshake(self) -> None:
        """As in the seed, listeners hold the handshake response until they return: a listener
        can do async work first, or refuse the client with ``app.disconnect(client_id)``.

        A listener that raises, or that takes longer than ``handshake_timeout``, refuses the
        client too: a guard that cannot decide must not let everyone in."""
        request = HandshakeRequest(self.client_id, self.identity)
        try:
            async with asyncio.timeout(self.ctx.handshake_timeout or None):
                await self.ctx.app.gate("handshake", request)
        except Exception:
            log.exception("handshake listener failed: client %s refused", self.client_id)
            self.disconnect()
            return
        if not self._closed and self.conversation.state is ConversationState.HANDSHAKING:
            self._send(self.conversation.accept_handshake())

    async def _run_feed_close(self, message: FeedClose) -> None:
        """Revelations stopped when the FeedClose came; the response waits for the listeners.

        If the feed was terminated and reopened meanwhile, this close was already answered
        (by the termination) and the response is not sent."""
        feed = message.feed
        serial = self.conversation.feed_serial(feed)
        request = FeedCloseRequest(self.client_id, self.identity, feed.name, feed.args_dict())
        await self.ctx.app.emit("feedClose", request)
        if self.conversation.feed_serial(feed) == serial:
            self._send(FeedCloseResponse.of(feed))

    async def _answer_once_revealed(self, response: ActionResponse) -> None:
        """With other nodes: the action's revelations reach the broker before its answer."""
        await self.ctx.hub.revealed()
        self._send(response)

    async def _run_action(self, action: Action) -> None:
        callback_id = action.callback_id
        request = ActionRequest(
            self.client_id, self.identity, action.action_name, dict(action.action_args)
        )
        await self.ctx.app.emit("action", request)

        def ok(data: dict[str, Any]) -> None:
            if self.ctx.hub.shared:
                self.ctx.spawn(self._answer_once_revealed(ActionResponse.ok(callback_id, data)))
            else:
                self._send(ActionResponse.ok(callback_id, data))

        def fail(code: str, data: dict[str, Any]) -> None:
            self._send(ActionResponse.error(callback_id, code, data))

        responder = _Responder(ok, fail)
        handler = self.ctx.app.actions.get(action.action_name)
        if handler is None:
            responder.failure(INTERNAL_ERROR, {"message": "No such action"})
            return
        await _answer(handler, request, responder, f"action {action.action_name!r}")

    async def _run_feed_open(self, message: FeedOpen) -> None:
        feed = message.feed
        serial = self.conversation.feed_serial(feed)
        request = FeedOpenRequest(self.client_id, self.identity, feed.name, feed.args_dict())
        await self.ctx.app.emit("feedOpen", request)

        def still_opening() -> bool:
            return not self._closed and self.conversation.feed_serial(feed) == serial

        def ok(data: dict[str, Any]) -> None:
            if still_opening() and self._send(FeedOpenResponse.ok(feed, data)):
                self.ctx.hub.feed_opened(self.client_id, feed)

        def fail(code: str, data: dict[str, Any]) -> None:
            if still_opening():
                self._send(FeedOpenResponse.error(feed, code, data))

        owner_feeds = self.ctx.owner_feeds
        if owner_feeds is not None and is_owner_feed(feed.name):
            await self._open_owner_feed(owner_feeds, feed, still_opening)
            return
        responder = _Responder(ok, fail)
        spec = self.ctx.app.feeds.get(feed.name)
        try:
            if spec is None:
                document = await self.ctx.hub.document(feed)
                if document is None:
                    responder.failure(INTERNAL_ERROR, {"message": "No such feed"})
                else:
                    responder.success(document)
                return
            await self.ctx.authz.check(
                self.identity, Resource.FEEDS, Method.READ, public=spec.public
            )
        except Forbidden as refusal:
            responder.failure(UNAUTHORIZED, {"message": refusal.message})
            return
        except TidingsError as error:  # the store is unavailable: say so, never fall silent
            responder.failure(
                INTERNAL_ERROR, {"message": error.message, "errorId": error.error_id.value}
            )
            return
        await _answer(spec.handler, request, responder, f"feed {feed.name!r}")

    async def _open_owner_feed(
        self, owner_feeds: OwnerFeeds, feed: FeedKey, still_opening: Any
    ) -> None:
        """``~name/FEED``: core decides (owner or grantee); refusals are ``UNAUTHORIZED``, a
        malformed name ``INVALID_FEED``, each with ``message`` and ``errorId``."""
        try:
            opening = await owner_feeds.open(self.identity, feed)
        except TidingsError as refusal:
            if isinstance(refusal, Forbidden):
                code = UNAUTHORIZED
            elif isinstance(refusal, Invalid):
                code = INVALID_FEED
            else:
                code = INTERNAL_ERROR
            data = {"message": refusal.message, "errorId": refusal.error_id.value}
            if still_opening():
                self._send(FeedOpenResponse.error(feed, code, data))
            return
        if still_opening() and self._send(FeedOpenResponse.ok(feed, opening.document)):
            self.ctx.hub.feed_opened(self.client_id, feed)
            owner_feeds.opened(opening, self.identity)

    # -- output and timers ----------------------------------------------------------------------

    def _send(self, message: Any) -> bool:
        if self._closed:
            return False
        try:
            self.conversation.send(message)
        except (LocalProtocolError, FeedmeInvalidState):
            return False  # the feed was terminated or closed meanwhile: nothing to answer
        self._flush()
        self._arm_timer()
        return True

    def _flush(self) -> None:
        if self._writer is None or self._closed:
            return
        for payload in self.conversation.data_to_send():
            self._writer.write_text(payload)

    def _arm_timer(self) -> None:
        if self._closed:
            self._timer.cancel()
        else:
            self._timer.arm()

    def _expire(self, now: float) -> None:
        self.conversation.expire(now)
        events = self.conversation.events_received()
        self._flush()
        if any(isinstance(event, HandshakeTimedOut) for event in events):
            self.disconnect()
            return
        self._arm_timer()
