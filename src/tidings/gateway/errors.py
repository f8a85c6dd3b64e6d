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
    ErrorId.NOT_DELEGATED: ReasonCode.AUTHORIZATION_UNAUTHORIZED_SENDER,
    ErrorId.NOT_SHARED: ReasonCode.AUTHORIZATION_PERMISSION_REQUIRED,
    ErrorId.FORBIDDEN: ReasonCode.AUTHORIZATION_PERMISSION_REQUIRED,
    ErrorId.QUEUE_FULL: ReasonCode.QUEUE_LIMIT_EXCEEDED,
    ErrorId.RATE_LIMITED: ReasonCode.AUTHORIZATION_QUOTA_THRESHOLD_EXCEEDED,
    ErrorId.STORAGE_UNAVAILABLE: ReasonCode.DISPATCH_ERROR,
    ErrorId.SHUTTING_DOWN: ReasonCode.SESSION_ERROR,
    ErrorId.SESSION_TAKEN_OVER: ReasonCode.SESSION_REGISTRATION_ERROR,
    ErrorId.INVALID_DELTA: ReasonCode.COMMAND_INVALID_ARGUMENT,
}


def lime_reason(error: TidingsError) -> Reason:
    return Reason(code=LIME_REASON[error.error_id], description=error.message)
