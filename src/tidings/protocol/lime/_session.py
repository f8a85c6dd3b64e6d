"""The LIME session state machine, sans I/O, for either role.

The server controls every state change; the client can only ask for one. ``ServerSession`` takes
the frames a client sends and returns the envelopes the application must act on, answering on
its own whatever the protocol alone decides (negotiation, ids, malformed envelopes, finishing,
the establishment deadline). It makes no policy decisions: an ``AuthenticationRequested`` event
goes to the caller, which calls ``establish()`` or ``fail()``. ``ClientSession`` is the mirror
image used by the SDK.

Deadlines follow the Feedme conversation: the machine names them on the caller's clock
(``next_deadline()``) and the caller calls ``expire(now)`` when its timer fires, so the rule
lives here and the clock stays with the I/O layer.

Both look every received envelope up in the tables of ``_state.py``, compiled once at import
into one handler per (role, state, key): the per-message cost is one dict lookup and one call.
Outgoing frames collect in ``data_to_send()``; the caller writes them in order.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

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
    UnsetType,
)
from ._node import InvalidNode, Node, parse_node, parse_node_once
from ._reasons import VALIDATION_INVALID_URI, Reason, ReasonCode
from ._state import (
    AWAITING_DECISION,
    SESSION_ID_RULES,
    SESSION_TRANSITIONS,
    IdRule,
    Refusal,
    Role,
    Row,
    Step,
    TransitionKey,
)

__all__ = [
    "AuthenticationRequested",
    "ClientSession",
    "ServerSession",
    "SessionEnded",
    "SessionEstablished",
]

MAX_ID_LENGTH: Final = 256
MEDIA_TYPE_PATTERN: Final = r"[-A-Za-z0-9_]+/[-A-Za-z0-9_.]+(\+[-A-Za-z0-9_]+)?(\s*;.*)?"
"""A message's ``type``: a MIME type, parameters allowed (refused with 23 otherwise). The same
pattern checks the HTTP API's message types."""
_MEDIA_TYPE: Final = re.compile(MEDIA_TYPE_PATTERN, re.ASCII)
_MEDIA_TYPES_SEEN: Final[set[str]] = set()
"""Types that matched: an application uses a handful, and a set lookup is a tenth of the
regular expression's cost on the per-message path. Bounded by ``_MEDIA_TYPES_KEPT``."""
_MEDIA_TYPES_KEPT: Final = 256
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
Handler: TypeAlias = Callable[[Any, Any], Event | None]
"""``(machine, envelope) -> event``: a compiled table entry."""
CompiledRow: TypeAlias = dict[type[Envelope] | tuple[type[Session], SessionState], Handler]


def _reason(code: ReasonCode, description: str) -> Reason:
    return Reason(code=code, description=description)


class _SessionMachine:
    """What both roles share: the state, the compiled table, the outbox and the decoding."""

    def __init__(self, role: Role, rows: Mapping[SessionState, CompiledRow], size: int) -> None:
        self.role = role
        self.session_id: str | None = None
        self.failure: Reason | None = None
        self.remote: Node | None = None
        self.max_envelope_size = size
        self._rows = rows
        self._state = SessionState.NEW
        self._row = rows[SessionState.NEW]
        self._from: str | UnsetType = UNSET
        self._deadline: float | None = None
        self._outbox: list[bytes] = []

    @property
    def state(self) -> SessionState:
        """Read only: it moves only with the table, so that the current row follows it."""
        return self._state

    @property
    def is_closed(self) -> bool:
        return self._state in FINAL_STATES

    def data_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def send(self, envelope: Envelope) -> bytes:
        """Encode an envelope of the established session (messages, notifications, commands).

        Raises ``InvalidState`` in any other state.
        """
        if self._state is not SessionState.ESTABLISHED:
            raise InvalidState(
                f"cannot send a {type(envelope).__name__} in the {self._state} state"
            )
        return encode_envelope(envelope)

    def receive_text(self, data: bytes) -> Event | None:
        """Take one text frame; return what the application must act on, if anything.

        Never raises: a frame the protocol refuses fails the session (a ``SessionEnded`` comes
        back and, from a server, a failed session envelope is in ``data_to_send()``) or, on an
        established server, is answered on its own id. Nothing is read once the session ended.
        """
        row = self._row
        if not row:
            return None
        if len(data) > self.max_envelope_size:
            return self._fail_with(
                ReasonCode.VALIDATION_ERROR,
                f"The envelope has {len(data)} bytes, more than the limit of "
                f"{self.max_envelope_size}",
            )
        try:
            envelope = decode_envelope(data)
        except EnvelopeError as exc:
            return self._reject(exc)
        if type(envelope) is Session:
            return row[(Session, envelope.state)](self, envelope)
        return row[type(envelope)](self, envelope)

    def receive_binary(self) -> SessionEnded | None:
        """A binary frame: LIME over WebSocket is text only."""
        if self.is_closed:
            return None
        return self._fail_with(ReasonCode.VALIDATION_ERROR, "LIME frames must be text frames")

    # -- what the steps share ----------------------------------------------------------------

    def _enter(self, state: SessionState) -> None:
        self._state = state
        self._row = self._rows[state]
        if state is SessionState.ESTABLISHED or state in FINAL_STATES:
            self._deadline = None

    def _ended(self) -> SessionEnded | None:
        if self._state in FINAL_STATES:
            return SessionEnded(self._state, self.failure)
        return None

    def _fail_self(self, reason: Reason) -> None:
        """Fail the session from our side. Only the server changes the session state, so only
        a server tells the peer (a failed session envelope); a client records why, and its
        caller closes the transport."""
        self.failure = reason
        self._enter(SessionState.FAILED)
        if self.role is Role.SERVER:
            self._emit_session(SessionState.FAILED, to=self._remote_text(), reason=reason)

    def _fail_with(self, code: ReasonCode, description: str) -> SessionEnded | None:
        self._fail_self(_reason(code, description))
        return self._ended()

    def _reject(self, exc: EnvelopeError) -> Event | None:
        """A frame that is not a valid envelope fails the session."""
        self._fail_self(exc.reason)
        return self._ended()

    def _remote_text(self) -> Any:
        return self.remote.text if self.remote is not None else UNSET

    def _emit_session(self, state: SessionState, **fields: Any) -> None:
        """Queue a session envelope; ``from`` is the server's node, and a client's only when it
        authenticates."""
        fields.setdefault("from_", self._from)
        self._outbox.append(
            encode_envelope(Session(id=self.session_id or UNSET, state=state, **fields))
        )


# -- compiling the tables ----------------------------------------------------------------------


def _refusing(refusal: Refusal) -> Handler:
    def refuse(machine: _SessionMachine, envelope: Envelope) -> Event | None:
        machine._fail_self(refusal.reason(machine.state, envelope))
        return machine._ended()

    return refuse


def _matching_id(handler: Handler) -> Handler:
    def match_id(machine: _SessionMachine, envelope: Session) -> Event | None:
        if envelope.id != machine.session_id:
            return machine._fail_with(ReasonCode.SESSION_ERROR, "Invalid session id")
        return handler(machine, envelope)

    return match_id


def _adopting_id(handler: Handler) -> Handler:
    def adopt_id(machine: _SessionMachine, envelope: Session) -> Event | None:
        if envelope.id is not UNSET:
            machine.session_id = envelope.id
        return handler(machine, envelope)

    return adopt_id


_ID_WRAPPERS: Final[dict[IdRule, Callable[[Handler], Handler]]] = {
    IdRule.MATCH: _matching_id,
    IdRule.ADOPT: _adopting_id,
}


def _compile(
    row: Row, id_rule: IdRule, steps: Mapping[Step | tuple[Step, TransitionKey], Handler]
) -> CompiledRow:
    """One handler per key: a step's handler (one per envelope class if the role has them),
    or a refusal, behind the row's id rule for session envelopes."""
    compiled: CompiledRow = {}
    for key, entry in row.items():
        if isinstance(entry, Refusal):
            handler = _refusing(entry)
        else:
            handler = steps.get((entry, key)) or steps[entry]
        wrap = _ID_WRAPPERS.get(id_rule)
        if isinstance(key, tuple) and wrap is not None:
            handler = wrap(handler)
        compiled[key] = handler
    return compiled


def _compile_role(
    role: Role, steps: Mapping[Step | tuple[Step, TransitionKey], Handler]
) -> dict[SessionState, CompiledRow]:
    return {
        state: _compile(row, SESSION_ID_RULES[role][state], steps)
        for state, row in SESSION_TRANSITIONS[role].items()
    }


# -- the server ----------------------------------------------------------------------------------


class ServerSession(_SessionMachine):
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
        establish_timeout: float | None = None,
        now: float | None = None,
    ) -> None:
        """``establish_timeout`` (seconds) starts at ``now``, a reading of the caller's clock:
        a session not established by then fails with 16 on ``expire()``. None: no deadline.
        Raises ``ValueError`` for empty option lists or a timeout without ``now``."""
        super().__init__(Role.SERVER, _SERVER_ROWS, max_envelope_size)
        if not scheme_options or not compression_options or not encryption_options:
            raise ValueError("scheme, compression and encryption options must not be empty")
        if establish_timeout is not None:
            if now is None or not establish_timeout > 0:
                raise ValueError("establish_timeout must be positive and come with now")
            self._deadline = now + establish_timeout
        self.server_node = server_node
        self._server = self._from = server_node.text
        # tuples: a tuple of a tuple is that tuple, so sessions share their server's options
        # instead of three lists each (issue 15: memory per connection)
        self.scheme_options = tuple(scheme_options)
        self.compression_options = tuple(compression_options)
        self.encryption_options = tuple(encryption_options)
        self.establish_timeout = establish_timeout
        self._new_session_id = new_session_id

    @property
    def _deciding(self) -> bool:
        """The application is checking the credentials (``AWAITING_DECISION`` is in force)."""
        return self._row is _SERVER_AWAITING

    # -- deadline ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the session must be established by, on the caller's clock; None once it is
        established or has ended (or without ``establish_timeout``). The caller arms one timer
        for it and calls ``expire()`` when it fires."""
        return self._deadline

    def expire(self, now: float) -> SessionEnded | None:
        """Fail the session with 16 if ``now`` is at or past the deadline; else do nothing.

        Returns the ``SessionEnded`` it caused (the failed envelope is in ``data_to_send()``).
        A timer that fires early changes nothing: arm it again from ``next_deadline()``.
        """
        deadline = self._deadline
        if deadline is None or now < deadline:
            return None
        return self._fail_with(
            ReasonCode.SESSION_NEGOTIATION_TIMEOUT,
            f"The session was not established within {self.establish_timeout:g} s",
        )

    # -- steps (see _state.Step) ---------------------------------------------------------------

    def _start(self, envelope: Session) -> Event | None:
        if envelope.id is not UNSET:
            return self._fail_with(ReasonCode.SESSION_ERROR, "A new session must not carry an id")
        self.session_id = self._new_session_id()
        if len(self.compression_options) > 1 or len(self.encryption_options) > 1:
            self._enter(SessionState.NEGOTIATING)
            self._emit_session(
                SessionState.NEGOTIATING,
                compressionOptions=self.compression_options,
                encryptionOptions=self.encryption_options,
            )
        else:
            self._start_authenticating()
        return None

    def _negotiate(self, envelope: Session) -> Event | None:
        if (
            envelope.compression not in self.compression_options
            or envelope.encryption not in self.encryption_options
        ):
            return self._fail_with(
                ReasonCode.SESSION_NEGOTIATION_INVALID_OPTIONS,
                "An invalid negotiation option was selected",
            )
        self._emit_session(
            SessionState.NEGOTIATING,
            compression=envelope.compression,
            encryption=envelope.encryption,
        )
        self._start_authenticating()
        return None

    def _start_authenticating(self) -> None:
        self._enter(SessionState.AUTHENTICATING)
        self._emit_session(SessionState.AUTHENTICATING, schemeOptions=self.scheme_options)

    def _authenticate(self, envelope: Session) -> Event | None:
        if envelope.from_ is UNSET:
            return self._fail_with(ReasonCode.SESSION_ERROR, "'from' is required to authenticate")
        try:
            node = parse_node_once(envelope.from_, self.server_node.domain)
        except InvalidNode as exc:
            return self._fail_with(ReasonCode.SESSION_ERROR, f"Invalid 'from': {exc}")
        scheme = envelope.scheme
        if scheme is UNSET and envelope.authentication is not UNSET:
            scheme = str(envelope.authentication.get("scheme", ""))
        if scheme not in self.scheme_options:
            return self._fail_with(
                ReasonCode.SESSION_AUTHENTICATION_FAILED,
                f"The authentication scheme {scheme!r} is not offered; "
                f"use one of {list(self.scheme_options)}",
            )
        self._row = _SERVER_AWAITING
        authentication = envelope.authentication if envelope.authentication is not UNSET else {}
        return AuthenticationRequested(node=node, scheme=str(scheme), authentication=authentication)

    def _finish(self, envelope: Session) -> Event | None:
        self._enter(SessionState.FINISHED)
        self._emit_session(SessionState.FINISHED, to=self._remote_text())
        return self._ended()

    # The per-message path: one function per envelope class, no second dispatch.

    def _accept_message(self, envelope: Message) -> Event | None:
        envelope_id = envelope.id
        if envelope_id is not UNSET and _bad_id_text(envelope_id):
            return self._refuse(envelope, _bad_id())
        if envelope.type not in _MEDIA_TYPES_SEEN and not _media_type(envelope.type):
            return self._refuse(
                envelope,
                _reason(
                    ReasonCode.VALIDATION_INVALID_RESOURCE,
                    f"Invalid message type {envelope.type!r}: expected a MIME type",
                ),
            )
        if len(envelope.content) == 4 and bytes(envelope.content) == b"null":
            return self._refuse(
                envelope,
                _reason(ReasonCode.VALIDATION_EMPTY_DOCUMENT, "The message content is null"),
            )
        return envelope

    def _accept_notification(self, envelope: Notification) -> Event | None:
        envelope_id = envelope.id
        if envelope_id is UNSET:
            return self._refuse(
                envelope, _reason(ReasonCode.VALIDATION_ERROR, "A notification needs an id")
            )
        if _bad_id_text(envelope_id):
            return self._refuse(envelope, _bad_id())
        return envelope

    def _accept_command(self, envelope: Command) -> Event | None:
        envelope_id = envelope.id
        if envelope_id is not UNSET and _bad_id_text(envelope_id):
            return self._refuse(envelope, _bad_id())
        if envelope.status is UNSET:
            if envelope_id is UNSET and envelope.method is not CommandMethod.OBSERVE:
                return self._refuse(
                    envelope,
                    _reason(ReasonCode.VALIDATION_ERROR, "A command request needs an id"),
                )
            if envelope.uri is UNSET or not envelope.uri:
                return self._refuse(
                    envelope, _reason(VALIDATION_INVALID_URI, "A command request needs a 'uri'")
                )
            if _nul_in_uri(envelope.uri):
                return self._refuse(
                    envelope,
                    _reason(VALIDATION_INVALID_URI, "A command 'uri' may not hold NUL (or %00)"),
                )
        return envelope

    # -- outbound ------------------------------------------------------------------------------

    def establish(self, node: Node) -> None:
        """Accept the authentication; ``node`` is the full node the client is registered as.

        Raises ``InvalidState`` unless an ``AuthenticationRequested`` awaits the answer.
        """
        if not self._deciding:
            raise InvalidState(f"cannot establish a session in the {self._state} state")
        self.remote = node
        self._enter(SessionState.ESTABLISHED)
        self._emit_session(SessionState.ESTABLISHED, to=node.text)

    def fail(self, reason: Reason) -> None:
        """End the session with ``failed``; a no-op once it has ended."""
        if not self.is_closed:
            self._fail_self(reason)

    def _reject(self, exc: EnvelopeError) -> Event | None:
        """An established session answers an invalid message or command request on its id."""
        if self._state is SessionState.ESTABLISHED and exc.envelope_id is not None:
            if exc.kind is Message:
                self._outbox.append(
                    encode_envelope(self.failed_notification(exc.envelope_id, exc.reason))
                )
                return None
            if exc.kind is Command:
                self._outbox.append(
                    encode_envelope(self.failure_response(exc.envelope_id, None, exc.reason))
                )
                return None
        return super()._reject(exc)

    def _refuse(self, envelope: Message | Notification | Command, reason: Reason) -> Event | None:
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
        return self._ended()

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


def _bad_id_text(envelope_id: str) -> bool:
    """Ids are stored and compared as text: NUL is refused here, because PostgreSQL's text
    cannot hold it (and no client needs it)."""
    return not 0 < len(envelope_id) <= MAX_ID_LENGTH or "\x00" in envelope_id


def _media_type(text: str) -> bool:
    """Whether ``text`` is a MIME type; a valid one is remembered (up to a bound)."""
    if _MEDIA_TYPE.fullmatch(text) is None:
        return False
    if len(_MEDIA_TYPES_SEEN) < _MEDIA_TYPES_KEPT:
        _MEDIA_TYPES_SEEN.add(text)
    return True


def _nul_in_uri(uri: str) -> bool:
    """Its path segments and query values name stored things (session names, key ids,
    consent ids): NUL, as is or percent-encoded, is refused with the URI."""
    return "\x00" in uri or "%00" in uri


def _bad_id() -> Reason:
    return _reason(
        ReasonCode.VALIDATION_ERROR, f"An id must have 1 to {MAX_ID_LENGTH} chars, none of them NUL"
    )


_SERVER_STEPS: Final[Mapping[Step | tuple[Step, TransitionKey], Handler]] = {
    Step.START: ServerSession._start,
    Step.NEGOTIATE: ServerSession._negotiate,
    Step.AUTHENTICATE: ServerSession._authenticate,
    Step.FINISH: ServerSession._finish,
    (Step.ACCEPT, Message): ServerSession._accept_message,
    (Step.ACCEPT, Notification): ServerSession._accept_notification,
    (Step.ACCEPT, Command): ServerSession._accept_command,
}
_SERVER_ROWS: Final = _compile_role(Role.SERVER, _SERVER_STEPS)
_SERVER_AWAITING: Final = _compile(AWAITING_DECISION, IdRule.IGNORE, _SERVER_STEPS)


# -- the client ----------------------------------------------------------------------------------


class ClientSession(_SessionMachine):
    """The client side: establishes a session with fixed credentials, then carries envelopes."""

    def __init__(
        self,
        node: Node,
        scheme: str,
        authentication: dict[str, Any],
        *,
        max_envelope_size: int = 8 * 1024 * 1024,
    ) -> None:
        super().__init__(Role.CLIENT, _CLIENT_ROWS, max_envelope_size)
        self.node = node
        self.scheme = scheme
        self.authentication = authentication
        self.local: Node | None = None
        self._started = False

    def start(self) -> None:
        """Ask for a new session. Raises ``InvalidState`` the second time."""
        if self._started:
            raise InvalidState("the session was already started")
        self._started = True
        self._emit_session(SessionState.NEW)

    def finish(self) -> None:
        """Ask the server to finish the session. Raises ``InvalidState`` unless established."""
        if self._state is not SessionState.ESTABLISHED:
            raise InvalidState(f"cannot finish a session in the {self._state} state")
        self._enter(SessionState.FINISHING)
        self._emit_session(SessionState.FINISHING)

    # -- steps (see _state.Step) ---------------------------------------------------------------

    def _negotiate(self, envelope: Session) -> Event | None:
        compression, encryption = envelope.compressionOptions, envelope.encryptionOptions
        if compression is not UNSET and encryption is not UNSET:
            self._enter(SessionState.NEGOTIATING)
            self._emit_session(
                SessionState.NEGOTIATING, compression=compression[0], encryption=encryption[0]
            )
        return None  # without both lists it is the server's confirmation: nothing to answer

    def _authenticate(self, envelope: Session) -> Event | None:
        self._enter(SessionState.AUTHENTICATING)
        self._emit_session(
            SessionState.AUTHENTICATING,
            from_=self.node.text,
            scheme=self.scheme,
            authentication=self.authentication,
        )
        return None

    def _establish(self, envelope: Session) -> Event | None:
        if envelope.to is UNSET:
            return self._fail_with(
                ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
                f"Unexpected session state {envelope.state!r} from the server in the "
                f"{self._state} state",
            )
        try:
            local = parse_node(envelope.to)
            remote = parse_node(envelope.from_) if envelope.from_ is not UNSET else None
        except InvalidNode as exc:  # a peer's error must not escape as an exception
            return self._fail_with(ReasonCode.SESSION_ERROR, f"Invalid node: {exc}")
        self.local, self.remote = local, remote
        self._enter(SessionState.ESTABLISHED)
        return SessionEstablished(local=local, remote=remote or local)

    def _end(self, envelope: Session) -> Event | None:
        self.failure = envelope.reason if envelope.reason is not UNSET else None
        self._enter(envelope.state)
        return self._ended()

    def _accept(self, envelope: Message | Notification | Command) -> Event | None:
        return envelope


_CLIENT_STEPS: Final[Mapping[Step | tuple[Step, TransitionKey], Handler]] = {
    Step.NEGOTIATE: ClientSession._negotiate,
    Step.AUTHENTICATE: ClientSession._authenticate,
    Step.ESTABLISH: ClientSession._establish,
    Step.END: ClientSession._end,
    Step.ACCEPT: ClientSession._accept,
}
_CLIENT_ROWS: Final = _compile_role(Role.CLIENT, _CLIENT_STEPS)
