"""The LIME session state machine, sans I/O.

The server controls every state change; the client can only ask for one. ``ServerSession`` takes
the frames a client sends and returns the envelopes the application must act on, answering on
its own whatever the protocol alone decides (negotiation, ids, malformed envelopes, finishing).
It makes no policy decisions: an ``AuthenticationRequested`` event goes to the caller, which
calls ``establish()`` or ``fail()``. ``ClientSession`` is the mirror image used by the SDK.

Outgoing frames collect in ``data_to_send()``; the caller writes them in order.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .._errors import InvalidState
from ._codec import EnvelopeError, decode_envelope, encode_envelope
from ._envelopes import (
    UNSET,
    Command,
    CommandMethod,
    CommandStatus,
    Envelope,
    Message,
    Notification,
    NotificationEvent,
    Session,
    SessionState,
)
from ._node import InvalidNode, Node, parse_node
from ._reasons import VALIDATION_INVALID_URI, Reason, ReasonCode

__all__ = [
    "AuthenticationRequested",
    "ClientSession",
    "ServerSession",
    "SessionEnded",
    "SessionEstablished",
]

MAX_ID_LENGTH: Final = 256
_MEDIA_TYPE: Final = re.compile(r"[-\w]+/[-\w.]+(\+[-\w]+)?(\s*;.*)?", re.ASCII)
FINAL_STATES: Final = frozenset({SessionState.FINISHED, SessionState.FAILED})


@dataclass(frozen=True, slots=True)
class AuthenticationRequested:
    """The client asks to authenticate as ``node`` (its instance may be missing)."""

    node: Node
    scheme: str
    authentication: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    """The server accepted the session; ``local`` is our node as the server assigned it."""

    local: Node
    remote: Node


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session reached ``finished`` or ``failed``; the caller closes the transport."""

    state: SessionState
    reason: Reason | None


Event = (
    Message | Notification | Command | AuthenticationRequested | SessionEstablished | SessionEnded
)


def _reason(code: ReasonCode, description: str) -> Reason:
    return Reason(code=code, description=description)


class _Machine:
    """What both roles share: the state, the outbox and the envelope checks."""

    def __init__(self, max_envelope_size: int) -> None:
        self.state = SessionState.NEW
        self.session_id: str | None = None
        self.failure: Reason | None = None
        self.max_envelope_size = max_envelope_size
        self._outbox: list[bytes] = []

    def data_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    @property
    def is_closed(self) -> bool:
        return self.state in FINAL_STATES

    def send(self, envelope: Envelope) -> bytes:
        """Encode an envelope of the established session (messages, notifications, commands)."""
        if self.state is not SessionState.ESTABLISHED:
            raise InvalidState(f"cannot send a {type(envelope).__name__} in the {self.state} state")
        return encode_envelope(envelope)

    def _decode(self, data: bytes) -> Envelope | None:
        if len(data) > self.max_envelope_size:
            self._fail_self(
                _reason(
                    ReasonCode.VALIDATION_ERROR,
                    f"The envelope has {len(data)} bytes, more than the limit of "
                    f"{self.max_envelope_size}",
                )
            )
            return None
        try:
            return decode_envelope(data)
        except EnvelopeError as exc:
            self._reject(exc)
            return None

    def _reject(self, exc: EnvelopeError) -> None:
        self._fail_self(exc.reason)

    def _fail_self(self, reason: Reason) -> None:
        raise NotImplementedError

    def receive_binary(self) -> SessionEnded | None:
        """A binary frame: LIME over WebSocket is text only."""
        self._fail_self(_reason(ReasonCode.VALIDATION_ERROR, "LIME frames must be text frames"))
        return self._ended()

    def _ended(self) -> SessionEnded | None:
        if self.is_closed:
            return SessionEnded(self.state, self.failure)
        return None


class ServerSession(_Machine):
    """One client's session, seen from the server."""

    def __init__(
        self,
        server_node: Node,
        scheme_options: Sequence[str],
        *,
        compression_options: Sequence[str] = ("none",),
        encryption_options: Sequence[str] = ("none",),
        max_envelope_size: int = 64 * 1024,
        new_session_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        super().__init__(max_envelope_size)
        if not scheme_options or not compression_options or not encryption_options:
            raise ValueError("scheme, compression and encryption options must not be empty")
        self.server_node = server_node
        self._server = server_node.text
        self.scheme_options = list(scheme_options)
        self.compression_options = list(compression_options)
        self.encryption_options = list(encryption_options)
        self._new_session_id = new_session_id
        self.remote: Node | None = None
        self._deciding = False

    # -- inbound -----------------------------------------------------------------------------

    def receive_text(self, data: bytes) -> Event | None:
        """Take one text frame; return what the application must act on, if anything."""
        if self.is_closed:
            return None
        envelope = self._decode(data)
        if envelope is None:
            return self._ended()
        if self.state is SessionState.ESTABLISHED:
            if type(envelope) is Session:
                return self._receive_session_while_established(envelope)
            checked = self._check_established(envelope)
            return checked if checked is not None else self._ended()
        if type(envelope) is not Session:
            self._fail_self(
                _reason(
                    ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
                    f"Only session envelopes are allowed in the {self.state} state",
                )
            )
            return self._ended()
        if self._deciding:
            self._fail_self(
                _reason(
                    ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
                    "The authentication is still being checked",
                )
            )
            return self._ended()
        if self.state is SessionState.NEW:
            self._receive_new(envelope)
        elif self.state is SessionState.NEGOTIATING:
            self._receive_negotiating(envelope)
        else:
            return self._receive_authenticating(envelope) or self._ended()
        return self._ended()

    def _receive_new(self, envelope: Session) -> None:
        if envelope.state is not SessionState.NEW:
            self._fail_self(
                _reason(
                    ReasonCode.SESSION_ERROR,
                    f"The session establishment failed: expected 'new', got '{envelope.state}'",
                )
            )
            return
        if envelope.id is not UNSET:
            self._fail_self(_reason(ReasonCode.SESSION_ERROR, "A new session must not carry an id"))
            return
        self.session_id = self._new_session_id()
        if len(self.compression_options) > 1 or len(self.encryption_options) > 1:
            self.state = SessionState.NEGOTIATING
            self._emit_session(
                SessionState.NEGOTIATING,
                compressionOptions=self.compression_options,
                encryptionOptions=self.encryption_options,
            )
        else:
            self._start_authenticating()

    def _receive_negotiating(self, envelope: Session) -> None:
        if not self._check_id(envelope):
            return
        if (
            envelope.state is not SessionState.NEGOTIATING
            or envelope.compression not in self.compression_options
            or envelope.encryption not in self.encryption_options
        ):
            self._fail_self(
                _reason(
                    ReasonCode.SESSION_NEGOTIATION_INVALID_OPTIONS,
                    "An invalid negotiation option was selected",
                )
            )
            return
        self._emit_session(
            SessionState.NEGOTIATING,
            compression=envelope.compression,
            encryption=envelope.encryption,
        )
        self._start_authenticating()

    def _start_authenticating(self) -> None:
        self.state = SessionState.AUTHENTICATING
        self._emit_session(SessionState.AUTHENTICATING, schemeOptions=self.scheme_options)

    def _receive_authenticating(self, envelope: Session) -> AuthenticationRequested | None:
        if not self._check_id(envelope):
            return None
        if envelope.state is not SessionState.AUTHENTICATING:
            self._fail_self(
                _reason(
                    ReasonCode.SESSION_ERROR,
                    f"The session establishment failed: expected 'authenticating', "
                    f"got '{envelope.state}'",
                )
            )
            return None
        if envelope.from_ is UNSET:
            self._fail_self(_reason(ReasonCode.SESSION_ERROR, "'from' is required to authenticate"))
            return None
        try:
            node = parse_node(envelope.from_, self.server_node.domain)
        except InvalidNode as exc:
            self._fail_self(_reason(ReasonCode.SESSION_ERROR, f"Invalid 'from': {exc}"))
            return None
        scheme = envelope.scheme
        if scheme is UNSET and envelope.authentication is not UNSET:
            scheme = str(envelope.authentication.get("scheme", ""))
        if scheme not in self.scheme_options:
            self._fail_self(
                _reason(
                    ReasonCode.SESSION_AUTHENTICATION_FAILED,
                    f"The authentication scheme {scheme!r} is not offered; "
                    f"use one of {self.scheme_options}",
                )
            )
            return None
        self._deciding = True
        authentication = envelope.authentication if envelope.authentication is not UNSET else {}
        return AuthenticationRequested(node=node, scheme=str(scheme), authentication=authentication)

    def _receive_session_while_established(self, envelope: Session) -> SessionEnded | None:
        if not self._check_id(envelope):
            return self._ended()
        if envelope.state is SessionState.FINISHING:
            self.state = SessionState.FINISHED
            self._emit_session(SessionState.FINISHED, to=self._remote_text())
        else:
            self._fail_self(
                _reason(
                    ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
                    f"A session in the established state can only be finished, not "
                    f"'{envelope.state}'",
                )
            )
        return self._ended()

    def _check_id(self, envelope: Session) -> bool:
        if envelope.id != self.session_id:
            self._fail_self(_reason(ReasonCode.SESSION_ERROR, "Invalid session id"))
            return False
        return True

    def _check_established(self, envelope: Envelope) -> Message | Notification | Command | None:
        """Protocol-level checks on envelopes of an established session."""
        assert not isinstance(envelope, Session)
        problem = _problem_of(envelope)
        if problem is None:
            return envelope
        self._refuse(envelope, problem)
        return None

    # -- outbound ----------------------------------------------------------------------------

    def establish(self, node: Node) -> None:
        """Accept the authentication; ``node`` is the full node the client is registered as."""
        if self.state is not SessionState.AUTHENTICATING or not self._deciding:
            raise InvalidState(f"cannot establish a session in the {self.state} state")
        self._deciding = False
        self.remote = node
        self.state = SessionState.ESTABLISHED
        self._emit_session(SessionState.ESTABLISHED, to=node.text)

    def fail(self, reason: Reason) -> None:
        """End the session with ``failed``; a no-op once it has ended."""
        if not self.is_closed:
            self._fail_self(reason)

    def _fail_self(self, reason: Reason) -> None:
        self.failure = reason
        self.state = SessionState.FAILED
        self._deciding = False
        self._emit_session(SessionState.FAILED, to=self._remote_text(), reason=reason)

    def _reject(self, exc: EnvelopeError) -> None:
        if self.state is SessionState.ESTABLISHED and exc.envelope_id is not None:
            if exc.kind is Message:
                self._outbox.append(
                    encode_envelope(self.failed_notification(exc.envelope_id, exc.reason))
                )
                return
            if exc.kind is Command:
                self._outbox.append(
                    encode_envelope(self.failure_response(exc.envelope_id, None, exc.reason))
                )
                return
        self._fail_self(exc.reason)

    def _refuse(self, envelope: Envelope, reason: Reason) -> None:
        """Answer an invalid envelope on its own id, or fail the session if it has none."""
        envelope_id = envelope.id
        if envelope_id is UNSET or len(envelope_id) > MAX_ID_LENGTH:
            self._fail_self(reason)
        elif type(envelope) is Command:
            assert isinstance(envelope, Command)
            if envelope.status is not UNSET:
                self._fail_self(reason)
            else:
                self._outbox.append(
                    encode_envelope(self.failure_response(envelope_id, envelope.method, reason))
                )
        elif type(envelope) is Message:
            self._outbox.append(encode_envelope(self.failed_notification(envelope_id, reason)))
        else:
            self._fail_self(reason)

    def failed_notification(self, message_id: str, reason: Reason) -> Notification:
        return Notification(
            id=message_id,
            from_=self._server,
            to=self._remote_text(),
            event=NotificationEvent.FAILED,
            reason=reason,
        )

    def failure_response(
        self, command_id: str, method: CommandMethod | None, reason: Reason
    ) -> Command:
        return Command(
            id=command_id,
            from_=self._server,
            to=self._remote_text(),
            method=method or CommandMethod.GET,
            status=CommandStatus.FAILURE,
            reason=reason,
        )

    def _remote_text(self) -> Any:
        return self.remote.text if self.remote is not None else UNSET

    def _emit_session(self, state: SessionState, **fields: Any) -> None:
        self._outbox.append(
            encode_envelope(
                Session(id=self.session_id or UNSET, from_=self._server, state=state, **fields)
            )
        )


class ClientSession(_Machine):
    """The client side: establishes a session with fixed credentials, then carries envelopes."""

    def __init__(
        self,
        node: Node,
        scheme: str,
        authentication: dict[str, Any],
        *,
        max_envelope_size: int = 8 * 1024 * 1024,
    ) -> None:
        super().__init__(max_envelope_size)
        self.node = node
        self.scheme = scheme
        self.authentication = authentication
        self.local: Node | None = None
        self.remote: Node | None = None
        self._started = False

    def start(self) -> None:
        if self._started:
            raise InvalidState("the session was already started")
        self._started = True
        self._outbox.append(encode_envelope(Session(state=SessionState.NEW)))

    def finish(self) -> None:
        """Ask the server to finish the session."""
        if self.state is not SessionState.ESTABLISHED:
            raise InvalidState(f"cannot finish a session in the {self.state} state")
        self.state = SessionState.FINISHING
        self._outbox.append(
            encode_envelope(Session(id=self.session_id or UNSET, state=SessionState.FINISHING))
        )

    def receive_text(self, data: bytes) -> Event | None:
        if self.is_closed:
            return None
        envelope = self._decode(data)
        if envelope is None:
            return self._ended()
        if not isinstance(envelope, Session):
            if self.state in (SessionState.ESTABLISHED, SessionState.FINISHING):
                return envelope
            self._fail_self(
                _reason(
                    ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
                    f"The server sent a {type(envelope).__name__} in the {self.state} state",
                )
            )
            return self._ended()
        return self._receive_session(envelope)

    def _receive_session(self, envelope: Session) -> Event | None:
        if envelope.id is not UNSET:
            self.session_id = envelope.id
        state = envelope.state
        if state in FINAL_STATES:
            self.state = state
            self.failure = envelope.reason if envelope.reason is not UNSET else None
            return self._ended()
        if state is SessionState.NEGOTIATING:
            if envelope.compressionOptions is not UNSET and envelope.encryptionOptions is not UNSET:
                self.state = SessionState.NEGOTIATING
                self._outbox.append(
                    encode_envelope(
                        Session(
                            id=self.session_id or UNSET,
                            state=SessionState.NEGOTIATING,
                            compression=envelope.compressionOptions[0],
                            encryption=envelope.encryptionOptions[0],
                        )
                    )
                )
            return None
        if state is SessionState.AUTHENTICATING and self.state is not SessionState.AUTHENTICATING:
            self.state = SessionState.AUTHENTICATING
            self._outbox.append(
                encode_envelope(
                    Session(
                        id=self.session_id or UNSET,
                        from_=self.node.text,
                        state=SessionState.AUTHENTICATING,
                        scheme=self.scheme,
                        authentication=self.authentication,
                    )
                )
            )
            return None
        if state is SessionState.ESTABLISHED and envelope.to is not UNSET:
            self.state = SessionState.ESTABLISHED
            self.local = parse_node(envelope.to)
            self.remote = parse_node(envelope.from_) if envelope.from_ is not UNSET else None
            return SessionEstablished(local=self.local, remote=self.remote or self.local)
        self._fail_self(
            _reason(
                ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
                f"Unexpected session state {state!r} from the server in the {self.state} state",
            )
        )
        return self._ended()

    def _fail_self(self, reason: Reason) -> None:
        """A client cannot fail a session; it records why and asks to finish."""
        self.failure = reason
        self.state = SessionState.FAILED


def _problem_of(envelope: Message | Notification | Command) -> Reason | None:
    """What makes an envelope of an established session invalid, if anything."""
    envelope_id = envelope.id
    if envelope_id is not UNSET and not 0 < len(envelope_id) <= MAX_ID_LENGTH:
        return _reason(ReasonCode.VALIDATION_ERROR, f"An id must have 1 to {MAX_ID_LENGTH} chars")
    if isinstance(envelope, Message):
        if not _MEDIA_TYPE.fullmatch(envelope.type):
            return _reason(
                ReasonCode.VALIDATION_INVALID_RESOURCE,
                f"Invalid message type {envelope.type!r}: expected a MIME type",
            )
        if len(envelope.content) == 4 and bytes(envelope.content) == b"null":
            return _reason(ReasonCode.VALIDATION_EMPTY_DOCUMENT, "The message content is null")
    elif isinstance(envelope, Notification):
        if envelope_id is UNSET:
            return _reason(ReasonCode.VALIDATION_ERROR, "A notification needs an id")
    elif envelope.status is UNSET:
        if envelope_id is UNSET and envelope.method is not CommandMethod.OBSERVE:
            return _reason(ReasonCode.VALIDATION_ERROR, "A command request needs an id")
        if envelope.uri is UNSET or not envelope.uri:
            return _reason(VALIDATION_INVALID_URI, "A command request needs a 'uri'")
    return None
