"""LIME reason codes (lime-csharp ``ReasonCodes.cs``) plus the Tidings-specific ones.

Two predefined names share a number in every LIME implementation: ``VALIDATION_INVALID_METHOD``
and ``VALIDATION_INVALID_URI`` are both 27, and ``COMMAND_PROCESSING_ERROR`` and
``MESSAGE_PROCESSING_ERROR`` are both 61. An ``IntEnum`` would silently turn the second name of
each pair into an alias, so the enum keeps one member per number and the other name is a plain
module constant with the same value.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec


class ReasonCode(IntEnum):
    GENERAL_ERROR = 1
    SESSION_ERROR = 11
    SESSION_REGISTRATION_ERROR = 12
    SESSION_AUTHENTICATION_FAILED = 13
    SESSION_UNREGISTER_FAILED = 14
    SESSION_INVALID_ACTION_FOR_STATE = 15
    SESSION_NEGOTIATION_TIMEOUT = 16
    SESSION_NEGOTIATION_INVALID_OPTIONS = 17
    SESSION_INVALID_SESSION_MODE_REQUESTED = 18
    VALIDATION_ERROR = 21
    VALIDATION_EMPTY_DOCUMENT = 22
    VALIDATION_INVALID_RESOURCE = 23
    VALIDATION_INVALID_STATUS = 24
    VALIDATION_INVALID_IDENTITY = 25
    VALIDATION_INVALID_RECIPIENTS = 26
    VALIDATION_INVALID_METHOD = 27
    AUTHORIZATION_ERROR = 31
    AUTHORIZATION_UNAUTHORIZED_SENDER = 32
    AUTHORIZATION_DESTINATION_ACCOUNT_NOT_FOUND = 33
    AUTHORIZATION_QUOTA_THRESHOLD_EXCEEDED = 34
    AUTHORIZATION_PERMISSION_REQUIRED = 35
    ROUTING_ERROR = 41
    ROUTING_DESTINATION_NOT_FOUND = 42
    ROUTING_GATEWAY_NOT_FOUND = 43
    ROUTING_ROUTE_NOT_FOUND = 44
    DISPATCH_ERROR = 51
    COMMAND_PROCESSING_ERROR = 61
    COMMAND_RESOURCE_NOT_SUPPORTED = 62
    COMMAND_METHOD_NOT_SUPPORTED = 63
    COMMAND_INVALID_ARGUMENT = 64
    COMMAND_INVALID_SESSION_MODE = 65
    COMMAND_NOT_ALLOWED = 66
    COMMAND_RESOURCE_NOT_FOUND = 67
    MESSAGE_UNSUPPORTED_CONTENT_TYPE = 71
    GATEWAY_ERROR = 81
    APPLICATION_ERROR = 101
    # Tidings-specific codes (the spec allows implementation codes).
    QUEUE_LIMIT_EXCEEDED = 121
    """The destination session's queue is full and its policy rejects new messages."""
    QUEUE_OVERFLOW_DROPPED = 122
    """The message was dropped from a full queue whose policy drops the oldest messages."""
    MESSAGE_EXPIRED = 123
    """The message expired before the destination received it."""
    SESSION_EXPIRED = 124
    """The destination session was garbage-collected while the message was still queued."""
    SESSION_NONCE_STALE = 125
    """A persistent-session request carried a nonce that is not the session's current one."""
    # The key directory (``set``/``delete`` on ``/keys``), from 130.
    KEY_SIGNATURE_INVALID = 130
    """A published node info whose signature does not verify with its ``signId``."""
    KEY_NODE_MISMATCH = 131
    """A node info naming another node than the session that publishes it."""
    KEY_OWNED_BY_ANOTHER_NODE = 132
    """A ``signId`` that another node published first (a key belongs to one node)."""
    KEY_PUBLICATION_STALE = 133
    """A node info not newer than the latest one accepted for its key (a replay)."""
    KEY_REVOKED = 134
    """A revoked key: it is never published again."""
    KEY_EXPIRY_OUT_OF_RANGE = 135
    """A node info already expired, expiring too far ahead, or published in the future."""
    KEY_LIMIT_REACHED = 136
    """A new key while the identity has as many current keys as one sealed message names."""
    # Consent (``/consent/...``, issue 10), from 140.
    CONSENT_CAPABILITY_INVALID = 140
    """``cmc-capability-invalid``."""
    CONSENT_CAPABILITY_EXPIRED = 141
    """``cmc-capability-expired``."""
    CONSENT_CAPABILITY_CONSUMED = 142
    """``cmc-capability-consumed``."""
    CONSENT_CAPABILITY_INVALIDATED = 143
    """``cmc-capability-invalidated``."""
    CONSENT_ALREADY_ACCEPTED_BY_YOU = 144
    """``cmc-capability-already-accepted-by-you``."""
    CONSENT_TTL_OUT_OF_RANGE = 145
    """``cmc-capability-ttl-out-of-range``."""
    CONSENT_EMPTY_PERMISSIONS = 146
    """``cmc-offer-empty-permissions``."""
    CONSENT_INVALID_PERMISSIONS = 147
    """``cmc-offer-invalid-permissions``."""
    CONSENT_GRANT_NOT_SUBSET = 148
    """``cmc-granted-permissions-not-subset``."""
    CONSENT_CHAT_DISABLED = 149
    """``cmc-chat-disabled``."""
    CONSENT_SYSTEM_MESSAGING_DISABLED = 150
    """``cmc-system-messaging-disabled``."""
    CONSENT_INSUFFICIENT_PERMISSIONS = 151
    """``cmc-insufficient-permissions``."""
    CONSENT_REVOKE_FORBIDDEN = 152
    """``cmc-revoke-forbidden``."""
    CONSENT_INVALID_CONTENT = 153
    """``cmc-invalid-event-content``."""
    CONSENT_RELATIONSHIP_REVOKED = 154
    """``cmc-relationship-revoked``."""
    CONSENT_SCOPE_REQUEST_DECIDED = 155
    """``cmc-scope-request-decided``."""
    CONSENT_OWN_INVITE = 156
    """``cmc-own-invite``."""
    CONSENT_GRANT_EXPIRY_OUT_OF_RANGE = 157
    """``cmc-grant-expiry-out-of-range``."""
    CONSENT_RELATIONSHIP_EXPIRED = 158
    """``cmc-relationship-expired``."""


VALIDATION_INVALID_URI = ReasonCode.VALIDATION_INVALID_METHOD
"""Same number (27) as ``VALIDATION_INVALID_METHOD`` in lime-csharp and lime-js."""
MESSAGE_PROCESSING_ERROR = ReasonCode.COMMAND_PROCESSING_ERROR
"""Same number (61) as ``COMMAND_PROCESSING_ERROR`` in lime-csharp and lime-js."""


class Reason(msgspec.Struct, frozen=True, omit_defaults=True):
    """The ``reason`` object of failed sessions, notifications and commands."""

    code: int
    description: str | msgspec.UnsetType = msgspec.UNSET
