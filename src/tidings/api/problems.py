"""Problem JSON (RFC 9457) for every HTTP error, with the domain error id."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..core.errors import ErrorId, TidingsError
from .text import pattern_message

HTTP_STATUS: Final[dict[ErrorId, int]] = {
    ErrorId.INVALID_ARGUMENT: 422,
    ErrorId.INVALID_ADDRESS: 422,
    ErrorId.ACCOUNT_NOT_FOUND: 404,
    ErrorId.DESTINATION_NOT_FOUND: 404,
    ErrorId.DESTINATION_OFFLINE: 404,
    ErrorId.RESOURCE_NOT_FOUND: 404,
    ErrorId.ACCOUNT_EXISTS: 409,
    ErrorId.BAD_CREDENTIALS: 401,
    ErrorId.GUESTS_DISABLED: 403,
    ErrorId.LOGIN_THROTTLED: 429,
    ErrorId.NOT_DELEGATED: 403,
    ErrorId.NOT_SHARED: 403,
    ErrorId.FORBIDDEN: 403,
    ErrorId.UNKNOWN_SENDER: 403,
    ErrorId.QUEUE_FULL: 429,
    ErrorId.SESSION_LIMIT: 409,
    ErrorId.STORAGE_UNAVAILABLE: 503,
    ErrorId.SHUTTING_DOWN: 503,
    ErrorId.SESSION_TAKEN_OVER: 409,
    ErrorId.SESSION_DISCONNECTED: 409,
    ErrorId.INVALID_DELTA: 409,
    ErrorId.QUEUE_DROPPED: 409,
    ErrorId.SESSION_EXPIRED: 410,
    ErrorId.MESSAGE_EXPIRED: 410,
    ErrorId.SESSION_NOT_FOUND: 404,
    ErrorId.SESSION_CONNECTED: 409,
    ErrorId.STALE_NONCE: 409,
    ErrorId.APP_REFUSED: 422,
    ErrorId.KEY_MALFORMED: 422,
    ErrorId.KEY_BAD_SIGNATURE: 422,
    ErrorId.KEY_NODE_MISMATCH: 403,
    ErrorId.KEY_OWNED_ELSEWHERE: 409,
    ErrorId.KEY_STALE: 409,
    ErrorId.KEY_REVOKED: 410,
    ErrorId.KEY_EXPIRY_OUT_OF_RANGE: 422,
    ErrorId.KEY_LIMIT_REACHED: 409,
    ErrorId.NOT_GRANTED: 403,
    ErrorId.CAPABILITY_INVALID: 401,
    ErrorId.CAPABILITY_EXPIRED: 410,
    ErrorId.CAPABILITY_CONSUMED: 409,
    ErrorId.CAPABILITY_INVALIDATED: 410,
    ErrorId.CAPABILITY_ALREADY_ACCEPTED_BY_YOU: 409,
    ErrorId.CAPABILITY_TTL_OUT_OF_RANGE: 422,
    ErrorId.OFFER_EMPTY_PERMISSIONS: 422,
    ErrorId.OFFER_INVALID_PERMISSIONS: 422,
    ErrorId.GRANTED_PERMISSIONS_NOT_SUBSET: 422,
    ErrorId.CHAT_DISABLED: 403,
    ErrorId.SYSTEM_MESSAGING_DISABLED: 403,
    ErrorId.INSUFFICIENT_PERMISSIONS: 403,
    ErrorId.REVOKE_FORBIDDEN: 403,
    ErrorId.INVALID_EVENT_CONTENT: 422,
    ErrorId.RELATIONSHIP_REVOKED: 410,
    ErrorId.CONSENT_NOT_FOUND: 404,
    ErrorId.SCOPE_REQUEST_DECIDED: 409,
    ErrorId.OWN_INVITE: 409,
    ErrorId.GRANT_EXPIRY_OUT_OF_RANGE: 422,
    ErrorId.RELATIONSHIP_EXPIRED: 410,
    ErrorId.PEER_REFUSED: 502,
}

HTTP_ERROR_IDS: Final[dict[int, str]] = {
    400: "bad-request",
    404: "route-not-found",
    405: "method-not-allowed",
}
"""Errors raised by the HTTP layer itself (routing), not by Tidings."""


PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail", "error_id"],
    "properties": {
        "type": {"type": "string", "examples": ["urn:tidings:error:cmc-capability-consumed"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "error_id": {"type": "string", "examples": ["cmc-capability-consumed"]},
    },
}
"""What every error answer is (``problem`` below)."""

PROBLEM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    code: {
        "description": "A problem (RFC 9457) whose error_id says what went wrong",
        "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
    }
    for code in ("4XX", "5XX")
}
"""For a router's ``responses``: documents the error answers as they are (and replaces
FastAPI's default 422 ``HTTPValidationError``, which Tidings never sends)."""


def problem(
    status: int, error_id: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {
            "type": f"urn:tidings:error:{error_id}",
            "title": error_id,
            "status": status,
            "detail": detail,
            "error_id": error_id,
        },
        status_code=status,
        headers=headers,
        media_type="application/problem+json",
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(TidingsError)
    async def tidings_error(request: Request, error: TidingsError) -> JSONResponse:
        status = HTTP_STATUS[error.error_id]
        retry_after = error.details.get("retry_after_s")
        headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after else {}
        if status == 401:  # RFC 9110: a 401 names the scheme that would do
            headers["WWW-Authenticate"] = 'Bearer realm="tidings"'
        return problem(status, error.error_id.value, error.message, headers or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        error_id = HTTP_ERROR_IDS.get(error.status_code, "http-error")
        return problem(error.status_code, error_id, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {pattern_message(e) or e['msg']}"
            for e in error.errors()
        )
        return problem(422, ErrorId.INVALID_ARGUMENT.value, details)
