"""The one place where domain error ids become LIME reason codes."""

from __future__ import annotations

from typing import Final

from ..core.errors import ErrorId, TidingsError
from ..protocol.lime import Reason, ReasonCode

LIME_REASON: Final[dict[ErrorId, ReasonCode]] = {
    ErrorId.INVALID_ARGUMENT: ReasonCode.COMMAND_INVALID_ARGUMENT,
    ErrorId.INVALID_ADDRESS: ReasonCode.VALIDATION_INVALID_RECIPIENTS,
    ErrorId.ACCOUNT_NOT_FOUND: ReasonCode.ROUTING_DESTINATION_NOT_FOUND,
    ErrorId.DESTINATION_NOT_FOUND: ReasonCode.ROUTING_DESTINATION_NOT_FOUND,
    ErrorId.DESTINATION_OFFLINE: ReasonCode.ROUTING_DESTINATION_NOT_FOUND,
    ErrorId.RESOURCE_NOT_FOUND: ReasonCode.COMMAND_RESOURCE_NOT_FOUND,
    ErrorId.ACCOUNT_EXISTS: ReasonCode.COMMAND_INVALID_ARGUMENT,
    ErrorId.BAD_CREDENTIALS: ReasonCode.SESSION_AUTHENTICATION_FAILED,
    ErrorId.GUESTS_DISABLED: ReasonCode.SESSION_AUTHENTICATION_FAILED,
    ErrorId.LOGIN_THROTTLED: ReasonCode.AUTHORIZATION_QUOTA_THRESHOLD_EXCEEDED,
    ErrorId.NOT_DELEGATED: ReasonCode.AUTHORIZATION_UNAUTHORIZED_SENDER,
    ErrorId.NOT_SHARED: ReasonCode.AUTHORIZATION_PERMISSION_REQUIRED,
    ErrorId.FORBIDDEN: ReasonCode.AUTHORIZATION_PERMISSION_REQUIRED,
    ErrorId.QUEUE_FULL: ReasonCode.QUEUE_LIMIT_EXCEEDED,
    ErrorId.SESSION_LIMIT: ReasonCode.AUTHORIZATION_QUOTA_THRESHOLD_EXCEEDED,
    ErrorId.STORAGE_UNAVAILABLE: ReasonCode.DISPATCH_ERROR,
    ErrorId.SHUTTING_DOWN: ReasonCode.SESSION_ERROR,
    ErrorId.SESSION_TAKEN_OVER: ReasonCode.SESSION_REGISTRATION_ERROR,
    ErrorId.QUEUE_DROPPED: ReasonCode.QUEUE_OVERFLOW_DROPPED,
    ErrorId.SESSION_EXPIRED: ReasonCode.SESSION_EXPIRED,
    ErrorId.MESSAGE_EXPIRED: ReasonCode.MESSAGE_EXPIRED,
    ErrorId.SESSION_NOT_FOUND: ReasonCode.COMMAND_RESOURCE_NOT_FOUND,
    ErrorId.SESSION_CONNECTED: ReasonCode.COMMAND_NOT_ALLOWED,
    ErrorId.STALE_NONCE: ReasonCode.SESSION_NONCE_STALE,
    ErrorId.APP_REFUSED: ReasonCode.APPLICATION_ERROR,
    ErrorId.INVALID_DELTA: ReasonCode.COMMAND_INVALID_ARGUMENT,
    ErrorId.KEY_MALFORMED: ReasonCode.COMMAND_INVALID_ARGUMENT,
    ErrorId.KEY_BAD_SIGNATURE: ReasonCode.KEY_SIGNATURE_INVALID,
    ErrorId.KEY_NODE_MISMATCH: ReasonCode.KEY_NODE_MISMATCH,
    ErrorId.KEY_OWNED_ELSEWHERE: ReasonCode.KEY_OWNED_BY_ANOTHER_NODE,
    ErrorId.KEY_STALE: ReasonCode.KEY_PUBLICATION_STALE,
    ErrorId.KEY_REVOKED: ReasonCode.KEY_REVOKED,
    ErrorId.KEY_EXPIRY_OUT_OF_RANGE: ReasonCode.KEY_EXPIRY_OUT_OF_RANGE,
    ErrorId.UNKNOWN_SENDER: ReasonCode.AUTHORIZATION_UNAUTHORIZED_SENDER,
}


CONSENT_PREFIX: Final = "cmc-"


def lime_reason(error: TidingsError) -> Reason:
    """The reason for ``error``; a consent error's description starts with its id
    (``"cmc-capability-consumed: ..."``), so that LIME clients can tell the causes apart
    where several ids share one code (docs/consent-lime.md)."""
    error_id = error.error_id
    if error_id.value.startswith(CONSENT_PREFIX):
        return Reason(code=LIME_REASON[error_id], description=f"{error_id.value}: {error.message}")
    return Reason(code=LIME_REASON[error_id], description=error.message)
