"""Domain errors, with stable ids that the edges translate into wire codes.

TidingsError
 +-- Invalid        the request is malformed or breaks a rule on its values
 +-- NotFound       the thing asked for does not exist
 +-- Forbidden      the caller may not do this
 +-- Conflict       the request clashes with the current state
 +-- LimitExceeded  a configured bound (queue, rate, size) was reached
 +-- Unavailable    the server cannot do it right now (storage failure, shutting down)

The core never speaks LIME reason codes or HTTP statuses: ``gateway/errors.py`` and
``api/problems.py`` map each ``ErrorId`` to those, and a test checks that every id is mapped.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorId(StrEnum):
    INVALID_ARGUMENT = "invalid-argument"
    INVALID_ADDRESS = "invalid-address"
    ACCOUNT_NOT_FOUND = "account-not-found"
    DESTINATION_NOT_FOUND = "destination-not-found"
    DESTINATION_OFFLINE = "destination-offline"
    RESOURCE_NOT_FOUND = "resource-not-found"
    ACCOUNT_EXISTS = "account-exists"
    BAD_CREDENTIALS = "bad-credentials"
    GUESTS_DISABLED = "guests-disabled"
    LOGIN_THROTTLED = "login-throttled"
    NOT_DELEGATED = "not-delegated"
    NOT_SHARED = "not-shared"
    FORBIDDEN = "forbidden"
    QUEUE_FULL = "queue-full"
    SESSION_LIMIT = "session-limit"
    STORAGE_UNAVAILABLE = "storage-unavailable"
    SHUTTING_DOWN = "shutting-down"
    SESSION_TAKEN_OVER = "session-taken-over"
    SESSION_DISCONNECTED = "session-disconnected"
    QUEUE_DROPPED = "queue-dropped"
    SESSION_EXPIRED = "session-expired"
    MESSAGE_EXPIRED = "message-expired"
    SESSION_NOT_FOUND = "session-not-found"
    SESSION_CONNECTED = "session-connected"
    STALE_NONCE = "stale-nonce"
    APP_REFUSED = "app-refused"
    INVALID_DELTA = "invalid-delta"
    KEY_MALFORMED = "key-malformed"
    KEY_BAD_SIGNATURE = "key-bad-signature"
    KEY_NODE_MISMATCH = "key-node-mismatch"
    KEY_OWNED_ELSEWHERE = "key-owned-elsewhere"
    KEY_STALE = "key-stale"
    KEY_REVOKED = "key-revoked"
    KEY_EXPIRY_OUT_OF_RANGE = "key-expiry-out-of-range"
    KEY_LIMIT_REACHED = "key-limit-reached"
    UNKNOWN_SENDER = "unknown-sender"
    NOT_GRANTED = "not-granted"
    # consent (issue 10): the Pryv CMC ids where one applies, Tidings' own otherwise
    CAPABILITY_INVALID = "cmc-capability-invalid"
    CAPABILITY_EXPIRED = "cmc-capability-expired"
    CAPABILITY_CONSUMED = "cmc-capability-consumed"
    CAPABILITY_INVALIDATED = "cmc-capability-invalidated"
    CAPABILITY_ALREADY_ACCEPTED_BY_YOU = "cmc-capability-already-accepted-by-you"
    CAPABILITY_TTL_OUT_OF_RANGE = "cmc-capability-ttl-out-of-range"
    OFFER_EMPTY_PERMISSIONS = "cmc-offer-empty-permissions"
    OFFER_INVALID_PERMISSIONS = "cmc-offer-invalid-permissions"
    GRANTED_PERMISSIONS_NOT_SUBSET = "cmc-granted-permissions-not-subset"
    CHAT_DISABLED = "cmc-chat-disabled"
    SYSTEM_MESSAGING_DISABLED = "cmc-system-messaging-disabled"
    INSUFFICIENT_PERMISSIONS = "cmc-insufficient-permissions"
    REVOKE_FORBIDDEN = "cmc-revoke-forbidden"
    INVALID_EVENT_CONTENT = "cmc-invalid-event-content"
    RELATIONSHIP_REVOKED = "cmc-relationship-revoked"
    CONSENT_NOT_FOUND = "cmc-not-found"
    SCOPE_REQUEST_DECIDED = "cmc-scope-request-decided"
    OWN_INVITE = "cmc-own-invite"
    GRANT_EXPIRY_OUT_OF_RANGE = "cmc-grant-expiry-out-of-range"
    RELATIONSHIP_EXPIRED = "cmc-relationship-expired"
    # federation (issue 13)
    PEER_REFUSED = "federation-peer-refused"
    """Another domain's server refused what this one relayed for good (its reason attached)."""


class TidingsError(Exception):
    error_id: ErrorId

    def __init__(self, error_id: ErrorId, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.error_id = error_id
        self.message = message
        self.details = details or {}


class Invalid(TidingsError):
    pass


class NotFound(TidingsError):
    pass


class Forbidden(TidingsError):
    pass


class Conflict(TidingsError):
    pass


class LimitExceeded(TidingsError):
    pass


class Unavailable(TidingsError):
    pass
