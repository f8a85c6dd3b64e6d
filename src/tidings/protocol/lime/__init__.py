"""LIME (limeprotocol.org) over WebSocket, sans I/O: envelopes, nodes, reason codes, sessions."""

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
    Raw,
    Session,
    SessionState,
    UnsetType,
)
from ._node import InvalidNode, Node, parse_node
from ._reasons import MESSAGE_PROCESSING_ERROR, VALIDATION_INVALID_URI, Reason, ReasonCode
from ._scope import SCOPE_KEY, scoped_metadata, stamp_scope
from ._session import (
    MEDIA_TYPE_PATTERN,
    AuthenticationRequested,
    ClientSession,
    ServerSession,
    SessionEnded,
    SessionEstablished,
)
from ._state import (
    AWAITING_DECISION,
    SESSION_ID_RULES,
    SESSION_TRANSITIONS,
    IdRule,
    Refusal,
    Role,
    Step,
)

__all__ = [
    "AWAITING_DECISION",
    "MEDIA_TYPE_PATTERN",
    "MESSAGE_PROCESSING_ERROR",
    "SCOPE_KEY",
    "SESSION_ID_RULES",
    "SESSION_TRANSITIONS",
    "UNSET",
    "VALIDATION_INVALID_URI",
    "AuthenticationRequested",
    "ClientSession",
    "Command",
    "CommandMethod",
    "CommandStatus",
    "Envelope",
    "EnvelopeError",
    "IdRule",
    "InvalidNode",
    "Message",
    "Node",
    "Notification",
    "NotificationEvent",
    "Raw",
    "Reason",
    "ReasonCode",
    "Refusal",
    "Role",
    "ServerSession",
    "Session",
    "SessionEnded",
    "SessionEstablished",
    "SessionState",
    "Step",
    "UnsetType",
    "decode_envelope",
    "encode_envelope",
    "parse_node",
    "scoped_metadata",
    "stamp_scope",
]
