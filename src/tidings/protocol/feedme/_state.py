"""Every Feedme sequencing rule, kept as data (the spec's "Message Sequencing").

Rule 1: whatever decides whether a message may be sent or received lives
here; ``_conversation.py`` only looks these tables up. Rule 2: tables are
keyed by our role first, because the spec gives client and server their own
rules. A message class names its sender, so one table per role covers both
what we send and what we receive.

A key is a message class, or ``(class, outcome)`` when the outcome decides
the next state: ``Success`` for ``HandshakeResponse``/``FeedOpenResponse``,
and, for a server receiving ``Handshake``, whether it offered a version we
support. A key missing from a state's row is illegal in that state: a
violation if received, ``LocalProtocolError`` if we try to send it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, TypeAlias

from ._errors import ViolationCase
from ._messages import (
    Action,
    ActionResponse,
    ActionRevelation,
    FeedClose,
    FeedCloseResponse,
    FeedOpen,
    FeedOpenResponse,
    FeedTermination,
    Handshake,
    HandshakeResponse,
    Message,
    ViolationResponse,
)

__all__ = [
    "CONVERSATION_TRANSITIONS",
    "FEED_TRANSITIONS",
    "UNEXPECTED_FEED_MESSAGE",
    "UNEXPECTED_MESSAGE",
    "ConversationState",
    "FeedState",
    "Role",
    "TransitionKey",
]


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"


class ConversationState(StrEnum):
    """Handshake progress of one connection (``CLOSED`` once it ended)."""

    NOT_INITIATED = "not_initiated"
    HANDSHAKING = "handshaking"
    INITIATED = "initiated"
    CLOSED = "closed"


class FeedState(StrEnum):
    """One feed as seen on one connection (Feeds > Server / Client)."""

    CLOSED = "closed"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    TERMINATED = "terminated"


TransitionKey: TypeAlias = type[Message] | tuple[type[Message], bool]

_C = ConversationState
_F = FeedState

# Messages that do not change the conversation state once it is initiated.
_INITIATED_ROW: Final[dict[TransitionKey, ConversationState]] = {
    cls: _C.INITIATED
    for cls in (
        Action,
        FeedOpen,
        FeedClose,
        ActionResponse,
        FeedOpenResponse,
        FeedCloseResponse,
        ActionRevelation,
        FeedTermination,
        ViolationResponse,
    )
}

CONVERSATION_TRANSITIONS: Final[
    dict[Role, dict[ConversationState, dict[TransitionKey, ConversationState]]]
] = {
    Role.SERVER: {
        _C.NOT_INITIATED: {
            (Handshake, True): _C.HANDSHAKING,
            (Handshake, False): _C.NOT_INITIATED,
            (HandshakeResponse, False): _C.NOT_INITIATED,
            ViolationResponse: _C.NOT_INITIATED,
        },
        _C.HANDSHAKING: {
            (HandshakeResponse, True): _C.INITIATED,
            (HandshakeResponse, False): _C.NOT_INITIATED,
            ViolationResponse: _C.HANDSHAKING,
        },
        _C.INITIATED: dict(_INITIATED_ROW),
        _C.CLOSED: {},
    },
    Role.CLIENT: {
        _C.NOT_INITIATED: {
            Handshake: _C.HANDSHAKING,
            ViolationResponse: _C.NOT_INITIATED,
        },
        _C.HANDSHAKING: {
            (HandshakeResponse, True): _C.INITIATED,
            (HandshakeResponse, False): _C.NOT_INITIATED,
            ViolationResponse: _C.HANDSHAKING,
        },
        _C.INITIATED: dict(_INITIATED_ROW),
        _C.CLOSED: {},
    },
}

FEED_TRANSITIONS: Final[dict[Role, dict[FeedState, dict[TransitionKey, FeedState]]]] = {
    Role.SERVER: {
        _F.CLOSED: {FeedOpen: _F.OPENING},
        _F.OPENING: {(FeedOpenResponse, True): _F.OPEN, (FeedOpenResponse, False): _F.CLOSED},
        _F.OPEN: {
            FeedClose: _F.CLOSING,
            ActionRevelation: _F.OPEN,
            FeedTermination: _F.TERMINATED,
        },
        _F.CLOSING: {FeedCloseResponse: _F.CLOSED},
        # Special case (code, not table): a FeedClose in TERMINATED is answered
        # at once with a FeedCloseResponse and no event, as the window exists
        # only to absorb a FeedClose that crossed our FeedTermination.
        _F.TERMINATED: {FeedOpen: _F.OPENING, FeedClose: _F.CLOSING},
    },
    Role.CLIENT: {
        _F.CLOSED: {FeedOpen: _F.OPENING},
        _F.OPENING: {(FeedOpenResponse, True): _F.OPEN, (FeedOpenResponse, False): _F.CLOSED},
        _F.OPEN: {
            FeedClose: _F.CLOSING,
            ActionRevelation: _F.OPEN,
            FeedTermination: _F.CLOSED,
        },
        # A revelation while closing is legal; the real client discards it.
        _F.CLOSING: {
            FeedCloseResponse: _F.CLOSED,
            ActionRevelation: _F.CLOSING,
            FeedTermination: _F.TERMINATED,
        },
        _F.TERMINATED: {FeedCloseResponse: _F.CLOSED},
    },
}

# Server role: which violation an illegal client message is, by scope.
UNEXPECTED_MESSAGE: Final[dict[type[Message], ViolationCase]] = {
    Handshake: ViolationCase.UNEXPECTED_HANDSHAKE,
    Action: ViolationCase.HANDSHAKE_REQUIRED,
    FeedOpen: ViolationCase.HANDSHAKE_REQUIRED,
    FeedClose: ViolationCase.HANDSHAKE_REQUIRED,
}
UNEXPECTED_FEED_MESSAGE: Final[dict[type[Message], ViolationCase]] = {
    FeedOpen: ViolationCase.UNEXPECTED_FEED_OPEN,
    FeedClose: ViolationCase.UNEXPECTED_FEED_CLOSE,
}
