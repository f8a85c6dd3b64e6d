"""Every LIME session rule for received envelopes, kept as data.

Rule 1 (after h11): what a received envelope does to the session is decided here;
``_session.py`` looks it up and carries it out. Rule 2 (after Feedme): the tables are keyed by
our role first, because the spec gives the two sides different rules: only the server changes
the session state, and the client asks for changes and then follows what the server says.

A key is an envelope class (``Message``, ``Notification``, ``Command``) or, for a session
envelope, ``(Session, the state it carries)``. A value is a ``Step``, what the machine does with
the envelope (the step may still refuse it for its content: an option that was not offered, an
invalid ``from``), or a ``Refusal``: the session fails with that reason. The row of every live
state names every key; the rows of the final states are empty, because nothing is read once the
session has ended.

Not in the tables, because they are not about the order of envelopes: a frame that does not
decode fails the session, except that an established server answers an invalid message or
command request on its own id when it can (``ServerSession._reject``); the establishment
deadline, which is a matter of time (``ServerSession.next_deadline``/``expire``); and what our
own calls may do (``establish``, ``finish``, ``send`` raise ``InvalidState`` out of turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, TypeAlias

from ._envelopes import Command, Envelope, Message, Notification, Session, SessionState
from ._reasons import Reason, ReasonCode

__all__ = [
    "AWAITING_DECISION",
    "SESSION_ID_RULES",
    "SESSION_TRANSITIONS",
    "IdRule",
    "Refusal",
    "Role",
    "Step",
    "TransitionKey",
]


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"


class Step(StrEnum):
    """What the machine does with an envelope its table lets in; the role picks the handler."""

    START = "start"
    """Server: a new session; offer the negotiation options or the authentication schemes."""
    NEGOTIATE = "negotiate"
    """Server: check the client's choice, confirm it, offer the schemes. Client: choose the
    first option of each list (nothing to do for the server's confirmation)."""
    AUTHENTICATE = "authenticate"
    """Server: hand the credentials to the application (``AuthenticationRequested``) and wait
    for ``establish()`` or ``fail()``. Client: send our credentials."""
    ESTABLISH = "establish"
    """Client: take the node the server registered us as (``SessionEstablished``)."""
    FINISH = "finish"
    """Server: answer ``finishing`` with ``finished``; the session has ended."""
    END = "end"
    """Client: the server finished or failed the session."""
    ACCEPT = "accept"
    """An envelope of the established session, for the application. The server checks it first
    and answers an invalid one on its own id, or fails the session when it has none."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """The session fails with ``code``.

    ``description`` is a template: ``{state}`` is our state, ``{got}`` the state a session
    envelope carried, ``{kind}`` the envelope's class name.
    """

    code: ReasonCode
    description: str

    def reason(self, state: SessionState, envelope: Envelope) -> Reason:
        return Reason(
            code=self.code,
            description=self.description.format(
                state=state,
                got=envelope.state if isinstance(envelope, Session) else None,
                kind=type(envelope).__name__,
            ),
        )


class IdRule(StrEnum):
    """What happens to a session envelope's ``id`` before its table entry applies."""

    IGNORE = "ignore"
    """Not looked at here (``START`` itself refuses a new session that carries an id)."""
    MATCH = "match"
    """It must be the session id, else the session fails with 11 "Invalid session id" (as the
    lime-csharp server does), whatever state the envelope asked for."""
    ADOPT = "adopt"
    """It becomes our session id: the client echoes whatever id the server last sent, as
    lime-js and lime-csharp do."""


TransitionKey: TypeAlias = (
    type[Message] | type[Notification] | type[Command] | tuple[type[Session], SessionState]
)
Entry: TypeAlias = Step | Refusal
Row: TypeAlias = dict[TransitionKey, Entry]

_S = SessionState
_ENVELOPE_CLASSES: Final = (Message, Notification, Command)


def _row(sessions: dict[SessionState, Entry], other_sessions: Entry, envelopes: Entry) -> Row:
    """A full row: ``sessions`` by the state they carry, ``other_sessions`` for the other
    states, ``envelopes`` for messages, notifications and commands alike."""
    row: Row = {(Session, state): sessions.get(state, other_sessions) for state in SessionState}
    row.update(dict.fromkeys(_ENVELOPE_CLASSES, envelopes))
    return row


_ONLY_SESSIONS: Final = Refusal(
    ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
    "Only session envelopes are allowed in the {state} state",
)

# Client: the server's word is law (spec: only the server changes the session state), so the
# client follows it from wherever it stands, as lime-js does. It refuses only what a server
# never sends (new, finishing), a second authentication round trip (which lime-js does not
# support either), and messages, notifications and commands before the session is established.
_UNEXPECTED_SESSION: Final = Refusal(
    ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
    "Unexpected session state {got!r} from the server in the {state} state",
)
_TOO_EARLY: Final = Refusal(
    ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
    "The server sent a {kind} in the {state} state",
)
_FOLLOW_THE_SERVER: Final[dict[SessionState, Entry]] = {
    _S.NEGOTIATING: Step.NEGOTIATE,
    _S.AUTHENTICATING: Step.AUTHENTICATE,
    _S.ESTABLISHED: Step.ESTABLISH,
    _S.FINISHED: Step.END,
    _S.FAILED: Step.END,
}

SESSION_TRANSITIONS: Final[dict[Role, dict[SessionState, Row]]] = {
    # The server never is in FINISHING: it answers a finishing request with finished at once.
    Role.SERVER: {
        _S.NEW: _row(
            {_S.NEW: Step.START},
            Refusal(
                ReasonCode.SESSION_ERROR,
                "The session establishment failed: expected 'new', got '{got}'",
            ),
            _ONLY_SESSIONS,
        ),
        _S.NEGOTIATING: _row(
            {_S.NEGOTIATING: Step.NEGOTIATE},
            Refusal(
                ReasonCode.SESSION_NEGOTIATION_INVALID_OPTIONS,
                "An invalid negotiation option was selected",
            ),
            _ONLY_SESSIONS,
        ),
        _S.AUTHENTICATING: _row(
            {_S.AUTHENTICATING: Step.AUTHENTICATE},
            Refusal(
                ReasonCode.SESSION_ERROR,
                "The session establishment failed: expected 'authenticating', got '{got}'",
            ),
            _ONLY_SESSIONS,
        ),
        _S.ESTABLISHED: _row(
            {_S.FINISHING: Step.FINISH},
            Refusal(
                ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
                "A session in the established state can only be finished, not '{got}'",
            ),
            Step.ACCEPT,
        ),
        _S.FINISHED: {},
        _S.FAILED: {},
    },
    Role.CLIENT: {
        _S.NEW: _row(_FOLLOW_THE_SERVER, _UNEXPECTED_SESSION, _TOO_EARLY),
        _S.NEGOTIATING: _row(_FOLLOW_THE_SERVER, _UNEXPECTED_SESSION, _TOO_EARLY),
        _S.AUTHENTICATING: _row(
            {**_FOLLOW_THE_SERVER, _S.AUTHENTICATING: _UNEXPECTED_SESSION},
            _UNEXPECTED_SESSION,
            _TOO_EARLY,
        ),
        _S.ESTABLISHED: _row(_FOLLOW_THE_SERVER, _UNEXPECTED_SESSION, Step.ACCEPT),
        _S.FINISHING: _row(_FOLLOW_THE_SERVER, _UNEXPECTED_SESSION, Step.ACCEPT),
        _S.FINISHED: {},
        _S.FAILED: {},
    },
}

AWAITING_DECISION: Final[Row] = _row(
    {},
    Refusal(
        ReasonCode.SESSION_INVALID_ACTION_FOR_STATE, "The authentication is still being checked"
    ),
    _ONLY_SESSIONS,
)
"""Server, AUTHENTICATING, while the application checks the credentials (between
``AuthenticationRequested`` and ``establish()``/``fail()``): the client must wait for the
answer, so anything it sends fails the session. Its id rule is ``IGNORE``."""

SESSION_ID_RULES: Final[dict[Role, dict[SessionState, IdRule]]] = {
    Role.SERVER: {
        _S.NEW: IdRule.IGNORE,
        _S.NEGOTIATING: IdRule.MATCH,
        _S.AUTHENTICATING: IdRule.MATCH,
        _S.ESTABLISHED: IdRule.MATCH,
        _S.FINISHED: IdRule.IGNORE,
        _S.FAILED: IdRule.IGNORE,
    },
    Role.CLIENT: dict.fromkeys(SessionState, IdRule.ADOPT),
}
