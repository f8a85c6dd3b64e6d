"""``FeedmeConversation``: one connection's Feedme state machine, sans I/O.

Input: ``receive_text()`` (one text frame), ``receive_close()``,
``expire(now)``. Output: ``events_received()`` and ``data_to_send()``. The
caller answers events with ``send()``. Rules come from ``_state.py``; this
module applies them and keeps the per-connection bookkeeping (outstanding
CallbackIds, feed states, termination windows).

Timers follow websockets' ``close_expected()``: the conversation names the
deadlines (``pending_timeouts()``, ``next_deadline()``) using the clock the
caller supplied, and the caller calls ``expire(now)`` when one is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn, TypeAlias

from ._codec import (
    DEFAULT_MAX_MESSAGE_SIZE,
    PreparedRevelation,
    decode_client_message,
    decode_server_message,
    encode_message,
    raw_text,
)
from ._errors import InvalidState, LocalProtocolError, RemoteProtocolError, ViolationCase
from ._events import (
    HandshakeRejected,
    HandshakeTimedOut,
    PeerClosed,
    PeerViolated,
    TerminationWindowClosed,
)
from ._messages import (
    Action,
    ActionResponse,
    ActionRevelation,
    ClientMessage,
    FeedCloseResponse,
    FeedKey,
    FeedOpenResponse,
    FeedTermination,
    Handshake,
    HandshakeResponse,
    JsonObject,
    Message,
    ServerMessage,
    ViolationResponse,
)
from ._state import (
    CONVERSATION_TRANSITIONS,
    FEED_TRANSITIONS,
    UNEXPECTED_FEED_MESSAGE,
    UNEXPECTED_MESSAGE,
    ConversationState,
    FeedState,
    Role,
    TransitionKey,
)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_TERMINATION_WINDOW",
    "SUPPORTED_VERSIONS",
    "Event",
    "FeedmeConversation",
    "PendingTimeout",
    "TimeoutKind",
]

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.1",)
DEFAULT_HANDSHAKE_TIMEOUT = 30.0  # seconds, feedme-server-core handshakeMs
DEFAULT_TERMINATION_WINDOW = 30.0  # seconds, feedme-server-core terminationMs

Event: TypeAlias = (
    ClientMessage
    | ServerMessage
    | PeerViolated
    | HandshakeRejected
    | HandshakeTimedOut
    | TerminationWindowClosed
    | PeerClosed
)

_DETAIL: dict[ViolationCase, str] = {
    ViolationCase.UNEXPECTED_HANDSHAKE: "Unexpected Handshake message.",
    ViolationCase.CALLBACK_ID_REUSED: "Action message reused an outstanding CallbackId.",
    ViolationCase.UNEXPECTED_FEED_OPEN: (
        "FeedOpen message referenced a feed that was not closed or terminated."
    ),
    ViolationCase.UNEXPECTED_FEED_CLOSE: (
        "FeedClose message referenced a feed that was not open or terminated."
    ),
}


class TimeoutKind(StrEnum):
    HANDSHAKE = "handshake"
    TERMINATION_WINDOW = "termination_window"


@dataclass(frozen=True, slots=True)
class PendingTimeout:
    """A deadline on the caller's clock; ``feed`` is set for termination windows."""

    kind: TimeoutKind
    deadline: float
    feed: FeedKey | None = None


def _key(message: Message) -> TransitionKey:
    """Conversation-table key: only a HandshakeResponse's outcome matters there."""
    if isinstance(message, HandshakeResponse):
        return (HandshakeResponse, message.success)
    return type(message)


def _feed_key(message: Message) -> TransitionKey:
    """Feed-table key: only a FeedOpenResponse's outcome matters there."""
    if isinstance(message, FeedOpenResponse):
        return (FeedOpenResponse, message.success)
    return type(message)


class FeedmeConversation:
    """One Feedme connection, as the server (default) or as a client.

    A malformed or out-of-sequence peer message never raises: it is recorded
    in ``violation`` and reported as a ``PeerViolated`` event, and a server
    queues the ``ViolationResponse`` itself. The state is then unchanged.
    Our own mistakes raise ``LocalProtocolError`` (or ``InvalidState``) and
    also leave the state unchanged.
    """

    def __init__(
        self,
        our_role: Role = Role.SERVER,
        *,
        versions: Sequence[str] = SUPPORTED_VERSIONS,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        termination_window: float = DEFAULT_TERMINATION_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``handshake_timeout``/``termination_window`` are seconds; 0 means
        no handshake deadline / a window that lasts the whole connection."""
        if not versions or not all(isinstance(v, str) and v for v in versions):
            raise ValueError("versions must be non-empty strings")
        self.role = our_role
        self.versions = tuple(versions)
        self.max_message_size = max_message_size
        self.termination_window = termination_window
        self.state = ConversationState.NOT_INITIATED
        self.version: str | None = None
        self.violation: RemoteProtocolError | None = None
        self.violation_count = 0
        self.revelations_sent = 0
        self._clock = clock
        self._transitions = CONVERSATION_TRANSITIONS[our_role]
        self._feed_transitions = FEED_TRANSITIONS[our_role]
        self._pending: set[str] = set()
        self._feeds: dict[FeedKey, FeedState] = {}
        self._serials: dict[FeedKey, int] = {}
        self._serial = 0
        self._windows: dict[FeedKey, float] = {}
        self._offered: tuple[str, ...] = ()
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._handshake_deadline: float | None = None
        if our_role is Role.SERVER and handshake_timeout > 0:
            self._handshake_deadline = clock() + handshake_timeout

    # --- queries ------------------------------------------------------------

    @property
    def pending_callbacks(self) -> Set[str]:
        """CallbackIds of Actions still awaiting their ActionResponse."""
        return self._pending

    def feed_state(self, feed: FeedKey) -> FeedState:
        return self._feeds.get(feed, FeedState.CLOSED)

    def is_open(self, feed: FeedKey) -> bool:
        """Whether revelations on ``feed`` may go to this peer (the fan-out check)."""
        return self._feeds.get(feed) is FeedState.OPEN

    def feeds(self) -> dict[FeedKey, FeedState]:
        """A snapshot of every feed that is not closed."""
        return dict(self._feeds)

    def feed_serial(self, feed: FeedKey) -> int | None:
        """Changes on every accepted FeedOpen for ``feed``.

        Capture it with the FeedOpen event and compare before answering late:
        a termination and a new FeedOpen may have happened meanwhile.
        """
        return self._serials.get(feed)

    # --- input --------------------------------------------------------------

    def receive_text(self, frame: str | bytes) -> None:
        """Process one WebSocket text frame (``bytes`` = its UTF-8 payload).

        Raises ``InvalidState`` only if the conversation already ended.
        """
        self._require_open()
        try:
            if self.role is Role.SERVER:
                self._receive(decode_client_message(frame, max_size=self.max_message_size), frame)
            else:
                self._receive(decode_server_message(frame, max_size=self.max_message_size), frame)
        except RemoteProtocolError as exc:
            self._violated(exc)

    def receive_close(self) -> None:
        """The transport closed: no more input or output; emits ``PeerClosed``."""
        if self.state is ConversationState.CLOSED:
            return
        self._end()
        self._events.append(PeerClosed())

    def expire(self, now: float) -> None:
        """Fire every deadline at or before ``now`` (a value of the caller's clock)."""
        if self.state is ConversationState.CLOSED:
            return
        if self._handshake_deadline is not None and self._handshake_deadline <= now:
            self._end()
            self._events.append(HandshakeTimedOut())
            return
        for feed, deadline in list(self._windows.items()):
            if deadline <= now:
                del self._windows[feed]
                del self._feeds[feed]
                self._events.append(TerminationWindowClosed(feed))

    # --- output -------------------------------------------------------------

    def events_received(self) -> list[Event]:
        """Drain events: received messages and the non-wire facts of ``_events``."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Drain outgoing frames: each item is the UTF-8 payload of one **text** frame."""
        data, self._outgoing = self._outgoing, []
        return data

    def send(self, message: Message) -> None:
        """Queue ``message`` after checking it against the sequencing rules.

        Raises ``LocalProtocolError`` if the message is out of sequence or
        cannot be encoded, ``InvalidState`` once the conversation ended; in
        both cases nothing changes.
        """
        self._require_open()
        commit = self._check_send(message)
        payload = encode_message(message)
        commit()
        self._outgoing.append(payload)

    def send_prepared(self, revelation: PreparedRevelation) -> bool:
        """Queue a pre-encoded revelation if its feed is open here.

        Returns False (and queues nothing) when the feed is not open, e.g.
        the client sent FeedClose a moment ago: the fan-out skips it.
        """
        if self.role is not Role.SERVER or self.state is not ConversationState.INITIATED:
            return False
        if self._feeds.get(revelation.feed) is not FeedState.OPEN:
            return False
        self._outgoing.append(revelation.payload)
        self.revelations_sent += 1
        return True

    def accept_handshake(self) -> HandshakeResponse:
        """Server: build the success reply for the negotiated version (caller ``send()``s)."""
        if self.role is not Role.SERVER or self.state is not ConversationState.HANDSHAKING:
            raise InvalidState("no compatible Handshake awaits a response")
        assert self.version is not None
        return HandshakeResponse.accepted(self.version)

    def terminate_feed(
        self, feed: FeedKey, error_code: str, error_data: JsonObject | None = None
    ) -> ServerMessage | None:
        """Server: end ``feed`` for this client whatever its state; returns what was queued.

        opening -> FeedOpenResponse failure; open -> FeedTermination and a
        termination window; closing -> FeedCloseResponse; closed or already
        terminated -> nothing. (Terminating one feed for every client is
        this call on each conversation where the feed is not closed.)
        """
        if self.role is not Role.SERVER:
            raise InvalidState("only a server terminates feeds")
        message: ServerMessage
        state = self.feed_state(feed)
        if state is FeedState.OPENING:
            message = FeedOpenResponse.error(feed, error_code, error_data)
        elif state is FeedState.OPEN:
            message = FeedTermination.of(feed, error_code, error_data)
        elif state is FeedState.CLOSING:
            message = FeedCloseResponse.of(feed)
        else:
            return None
        self.send(message)
        return message

    def terminate_all_feeds(
        self, error_code: str, error_data: JsonObject | None = None
    ) -> list[ServerMessage]:
        """Server: ``terminate_feed`` for every feed of this client."""
        sent = []
        for feed in list(self._feeds):
            message = self.terminate_feed(feed, error_code, error_data)
            if message is not None:
                sent.append(message)
        return sent

    def forget_terminated(self, feed: FeedKey) -> None:
        """End a termination window early (TERMINATED -> CLOSED)."""
        if self._feeds.get(feed) is FeedState.TERMINATED:
            del self._feeds[feed]
            self._windows.pop(feed, None)

    def pending_timeouts(self) -> list[PendingTimeout]:
        """Every running deadline; the caller arms timers and calls ``expire``."""
        timeouts = [
            PendingTimeout(TimeoutKind.TERMINATION_WINDOW, deadline, feed)
            for feed, deadline in self._windows.items()
        ]
        if self._handshake_deadline is not None and self.state is not ConversationState.CLOSED:
            timeouts.insert(0, PendingTimeout(TimeoutKind.HANDSHAKE, self._handshake_deadline))
        return timeouts

    def next_deadline(self) -> float | None:
        """The earliest deadline, so a gateway needs one timer per connection."""
        deadlines = [t.deadline for t in self.pending_timeouts()]
        return min(deadlines) if deadlines else None

    # --- internals ----------------------------------------------------------

    def _require_open(self) -> None:
        if self.state is ConversationState.CLOSED:
            raise InvalidState("the conversation has ended")

    def _end(self) -> None:
        self.state = ConversationState.CLOSED
        self._handshake_deadline = None
        self._windows.clear()

    def _violated(self, error: RemoteProtocolError) -> None:
        self.violation = error
        self.violation_count += 1
        if self.role is Role.SERVER:
            self._outgoing.append(encode_message(ViolationResponse(error.diagnostics)))
        self._events.append(PeerViolated(error))

    def _unexpected(self, message: Message, frame: str | bytes, case: ViolationCase) -> NoReturn:
        name = type(message).__name__
        if case is ViolationCase.HANDSHAKE_REQUIRED:
            detail = f"{name} message received before successful Handshake."
        else:
            detail = _DETAIL.get(case, f"Unexpected {name}.")
        raise RemoteProtocolError(case, detail, raw_text(frame))

    def _receive(self, message: Message, frame: str | bytes) -> None:
        server = self.role is Role.SERVER
        key = _key(message)
        chosen: str | None = None
        if isinstance(message, Handshake) and server:
            chosen = next((v for v in self.versions if v in message.versions), None)
            key = (Handshake, chosen is not None)
        next_state = self._transitions[self.state].get(key)
        if next_state is None:
            case = UNEXPECTED_MESSAGE.get(type(message)) if server else None
            self._unexpected(message, frame, case or ViolationCase.UNEXPECTED_SERVER_MESSAGE)

        # Checks that go beyond the tables: callbacks, versions, feeds.
        if isinstance(message, Action) and message.callback_id in self._pending:
            self._unexpected(message, frame, ViolationCase.CALLBACK_ID_REUSED)
        if isinstance(message, ActionResponse) and message.callback_id not in self._pending:
            self._unexpected(message, frame, ViolationCase.UNEXPECTED_SERVER_MESSAGE)
        if (
            isinstance(message, HandshakeResponse)
            and message.success
            and message.version not in self._offered
        ):
            self._unexpected(message, frame, ViolationCase.UNEXPECTED_SERVER_MESSAGE)
        feed: FeedKey | None = getattr(message, "feed", None)
        feed_state = feed_next = None
        if feed is not None:
            feed_state = self.feed_state(feed)
            feed_next = self._feed_transitions[feed_state].get(_feed_key(message))
            if feed_next is None:
                case = UNEXPECTED_FEED_MESSAGE.get(type(message)) if server else None
                self._unexpected(message, frame, case or ViolationCase.UNEXPECTED_SERVER_MESSAGE)

        # Commit.
        self.state = next_state
        if isinstance(message, Handshake) and server:
            if chosen is None:
                self._outgoing.append(encode_message(HandshakeResponse.rejected()))
                self._events.append(HandshakeRejected(tuple(message.versions)))
                return
            self.version = chosen
            self._handshake_deadline = None
        elif isinstance(message, HandshakeResponse):
            self.version = message.version if isinstance(message.version, str) else None
        elif isinstance(message, Action):
            self._pending.add(message.callback_id)
        elif isinstance(message, ActionResponse):
            self._pending.discard(message.callback_id)
        if feed is not None and feed_next is not None:
            self._set_feed(feed, feed_next)
            if server and feed_state is FeedState.TERMINATED and feed_next is FeedState.CLOSING:
                # The FeedClose crossed our FeedTermination: answer, no event.
                self.send(FeedCloseResponse.of(feed))
                return
            if server and feed_next is FeedState.OPENING:
                self._serial += 1
                self._serials[feed] = self._serial
        self._events.append(message)

    def _set_feed(self, feed: FeedKey, state: FeedState) -> None:
        self._windows.pop(feed, None)
        if state is FeedState.CLOSED:
            self._feeds.pop(feed, None)
            self._serials.pop(feed, None)
        else:
            self._feeds[feed] = state

    def _check_send(self, message: Message) -> Callable[[], None]:
        """Validate sending ``message``; return the state change to commit after encoding."""
        key = _key(message)
        next_state = self._transitions[self.state].get(key)
        name = type(message).__name__
        if next_state is None:
            raise LocalProtocolError(f"cannot send {name} in conversation state {self.state}")
        server = self.role is Role.SERVER
        if (
            isinstance(message, HandshakeResponse)
            and message.success
            and message.version != self.version
        ):
            raise LocalProtocolError(f"negotiated version is {self.version!r}")
        if isinstance(message, ActionResponse) and message.callback_id not in self._pending:
            raise LocalProtocolError(f"no outstanding Action with CallbackId {message.callback_id}")
        if isinstance(message, Action) and message.callback_id in self._pending:
            raise LocalProtocolError(f"CallbackId {message.callback_id} is still outstanding")
        if (
            isinstance(message, Handshake)
            and not server
            and not set(message.versions) & set(self.versions)
        ):
            raise LocalProtocolError("Handshake offers no version we support")
        feed: FeedKey | None = getattr(message, "feed", None)
        feed_next: FeedState | None = None
        if feed is not None:
            feed_state = self.feed_state(feed)
            feed_next = self._feed_transitions[feed_state].get(_feed_key(message))
            if feed_next is None:
                raise LocalProtocolError(f"cannot send {name} for a feed in state {feed_state}")

        def commit() -> None:
            self.state = next_state
            if isinstance(message, HandshakeResponse):
                if not message.success:
                    self.version = None
            elif isinstance(message, Handshake):
                self._offered = tuple(message.versions)
            elif isinstance(message, ActionResponse):
                self._pending.discard(message.callback_id)
            elif isinstance(message, Action):
                self._pending.add(message.callback_id)
            elif isinstance(message, ActionRevelation):
                self.revelations_sent += 1
            if feed is not None and feed_next is not None:
                self._set_feed(feed, feed_next)
                if isinstance(message, FeedTermination) and self.termination_window > 0:
                    self._windows[feed] = self._clock() + self.termination_window

        return commit
