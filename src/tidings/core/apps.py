"""The Python app API for Feedme: actions and feeds declared with decorators.

    app = App()

    @app.action("increment")
    async def increment(request: ActionRequest, response: ActionResponse) -> None:
        response.success({"value": ...})

    @app.feed("counter")
    def counter(request: FeedOpenRequest, response: FeedOpenResponse) -> None:
        response.success({"value": 0})

Handlers may be sync or async. Without a handler the client gets ``INTERNAL_ERROR``, as in
feedme-server-core. The app reaches connected clients through ``reveal``, ``terminate`` and
``disconnect`` once the server has started it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..protocol.feedme import Delta, FeedKey
from .address import parse_identity
from .app_requests import RequestHandler
from .errors import ErrorId, Unavailable
from .feeds import FeedHub, Handler, ServerState, call_handler
from .session_service import NotifyOutcome, SessionService

log = logging.getLogger("tidings.app")

EVENTS = frozenset(
    {
        "starting",
        "start",
        "stopping",
        "stop",
        "connect",
        "handshake",
        "action",
        "feedOpen",
        "feedClose",
        "disconnect",
        "badClientMessage",
        "transportError",
    }
)


class Responder(Protocol):
    def success(self, data: dict[str, Any]) -> None: ...
    def failure(self, error_code: str, error_data: dict[str, Any] | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    client_id: str
    identity: str | None
    """The Tidings identity the connection's token maps to, or None for anonymous clients."""


@dataclass(frozen=True, slots=True)
class ActionRequest:
    client_id: str
    identity: str | None
    """The Tidings identity the connection's token maps to, or None for anonymous clients."""
    action_name: str
    action_args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FeedOpenRequest:
    client_id: str
    identity: str | None
    feed_name: str
    feed_args: dict[str, str]


@dataclass(frozen=True, slots=True)
class FeedCloseRequest:
    client_id: str
    identity: str | None
    feed_name: str
    feed_args: dict[str, str]


@dataclass(slots=True)
class FeedSpec:
    handler: Handler
    public: bool


@dataclass
class App:
    """Actions, feeds and event listeners of one Tidings app."""

    actions: dict[str, Handler] = field(default_factory=dict)
    feeds: dict[str, FeedSpec] = field(default_factory=dict)
    listeners: dict[str, list[Callable[..., Any]]] = field(default_factory=dict)
    state: ServerState = ServerState.STOPPED
    hub: FeedHub | None = None
    sessions: SessionService | None = None
    requests: dict[str, RequestHandler] = field(default_factory=dict)

    # -- declaring ----------------------------------------------------------------------------

    def action(self, name: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.actions[_name(name)] = handler
            return handler

        return register

    def feed(self, name: str, *, public: bool = True) -> Callable[[Handler], Handler]:
        """A feed; ``public=False`` refuses clients without an identity (``UNAUTHORIZED``).
        Names starting with ``~`` are accounts' own feeds (``~name/FEED``), not the app's."""
        if isinstance(name, str) and name.startswith("~"):
            raise ValueError(f"feed names starting with '~' are accounts' own feeds: {name!r}")

        def register(handler: Handler) -> Handler:
            self.feeds[_name(name)] = FeedSpec(handler, public)
            return handler

        return register

    def request(self, name: str) -> Callable[[RequestHandler], RequestHandler]:
        """A request LIME clients make with ``set /apps/{name}``. The handler is a plain
        function ``(AppRequest, AppState) -> dict | None`` run in a worker thread: its writes
        (and a persistent session's memento) commit together if what it read is unchanged,
        else it runs again, so it must not act outside ``AppState``."""

        def register(handler: RequestHandler) -> RequestHandler:
            self.requests[_name(name)] = handler
            return handler

        return register

    def on(self, event: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; one of {sorted(EVENTS)}")

        def register(listener: Callable[..., Any]) -> Callable[..., Any]:
            self.listeners.setdefault(event, []).append(listener)
            return listener

        return register

    async def emit(self, event: str, *args: Any) -> None:
        """Run the listeners of ``event``; a failing listener is logged, never fatal."""
        for listener in self.listeners.get(event, ()):
            try:
                await call_handler(listener, *args)
            except Exception:
                log.exception("listener of %r failed", event)

    async def gate(self, event: str, *args: Any) -> None:
        """Run the listeners of ``event`` in turn; the first failure propagates, so that a
        listener standing guard (``handshake``) fails closed."""
        for listener in self.listeners.get(event, ()):
            await call_handler(listener, *args)

    def bind(self, hub: FeedHub, sessions: SessionService) -> None:
        """The server running this app gives it its hub and sessions, once, at start."""
        self.hub = hub
        self.sessions = sessions

    def set_state(self, state: ServerState) -> None:
        self.state = state

    # -- acting -------------------------------------------------------------------------------

    def reveal(
        self,
        feed_name: str,
        feed_args: Mapping[str, str] | None,
        action_name: str,
        action_data: dict[str, Any],
        deltas: Sequence[Delta | dict[str, Any]] = (),
        feed_md5: str | None = None,
    ) -> int:
        """Reveal an action on a feed to every client that has it open; returns how many."""
        typed = [d if isinstance(d, Delta) else _delta(d) for d in deltas]
        return self._hub().reveal(
            FeedKey.of(feed_name, feed_args), action_name, action_data, typed, feed_md5
        )

    def terminate(
        self,
        *,
        feed_name: str | None = None,
        feed_args: Mapping[str, str] | None = None,
        client_id: str | None = None,
        error_code: str,
        error_data: dict[str, Any] | None = None,
    ) -> None:
        """End one client's feed, a feed for everyone, or every feed of one client."""
        feed = FeedKey.of(feed_name, feed_args) if feed_name is not None else None
        self._hub().terminate(
            feed=feed, client_id=client_id, error_code=error_code, error_data=error_data
        )

    def disconnect(self, client_id: str) -> None:
        self._hub().disconnect(client_id)

    async def notify(
        self,
        identity: str,
        content: Any,
        *,
        message_id: str,
        type: str = "application/json",
        session: str | None = None,
        pattern: str | None = None,
    ) -> NotifyOutcome:
        """Queue a server message for LIME sessions of ``identity``: one ``session`` (a name,
        created if new), the existing sessions matching ``pattern`` (a glob), or all of them.
        Stored once per ``message_id``, so a handler that retries does not notify twice."""
        if self.sessions is None or self.state is not ServerState.STARTED:
            raise Unavailable(ErrorId.SHUTTING_DOWN, "the app's server is not started")
        return await self.sessions.notify(
            parse_identity(identity),
            message_id=message_id,
            type_=type,
            content=content,
            session=session,
            pattern=pattern,
        )

    def _hub(self) -> FeedHub:
        if self.hub is None or self.state is not ServerState.STARTED:
            raise Unavailable(ErrorId.SHUTTING_DOWN, "the app's server is not started")
        return self.hub


def _name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError("names must be non-empty strings")
    return name


def _delta(document: dict[str, Any]) -> Delta:
    import msgspec

    return msgspec.convert(document, Delta)
