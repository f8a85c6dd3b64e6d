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
from ._session import (
    AuthenticationRequested,
    ClientSession,
    ServerSession,
    SessionEnded,
    SessionEstablished,
)

__all__ = [
    "MESSAGE_PROCESSING_ERROR",
    "UNSET",
    "VALIDATION_INVALID_URI",
    "AuthenticationRequested",
    "ClientSession",
    "Command",
    "CommandMethod",
    "CommandStatus",
    "Envelope",
    "EnvelopeError",
    "InvalidNode",
    "Message",
    "Node",
    "Notification",
    "NotificationEvent",
    "Raw",
    "Reason",
    "ReasonCode",
    "ServerSession",
    "Session",
    "SessionEnded",
    "SessionEstablished",
    "SessionState",
    "UnsetType",
    "decode_envelope",
    "encode_envelope",
    "parse_node",
]
