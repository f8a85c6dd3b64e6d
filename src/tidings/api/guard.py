"""Who an HTTP request is: the server (its api_token), an account (its API key) or an
administrator (the admin_token); the three never stand for each other.

Authentication only: what the caller may do is core's (``Authorizer``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header, Request

from ..core.authz import Authorizer
from ..core.errors import ErrorId, Forbidden
from ..core.login_throttle import source_key

Identify = Callable[[str, str | None], str | None]
"""An API key (and the address it came from, for throttling) to its identity, or None
(``AccountService.identity_for_key``)."""


def bearer_guard(authz: Authorizer) -> Callable[..., None]:
    """A FastAPI dependency that lets a request through only with the API token."""

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        authz.bearer(authorization)

    return authorized


@dataclass(frozen=True, slots=True)
class Caller:
    """``server``: the request carried the api_token; else ``identity`` is the key's owner."""

    identity: str | None
    server: bool = False


def caller_guard(authz: Authorizer, identify: Identify) -> Callable[..., Caller]:
    """A FastAPI dependency: ``Authorization: Bearer <api_token | an account's API key>``.

    A missing or unknown key is 401 ``bad-credentials``; unknown keys count against the
    client's address like failed logins (429 ``login-throttled`` once throttled)."""

    def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
        if authz.is_server(authorization):
            return Caller(None, server=True)
        if authz.is_admin(authorization):
            raise Forbidden(
                ErrorId.FORBIDDEN, "The admin token acts as admin only: this route takes an API key"
            )
        scheme, _, key = (authorization or "").partition(" ")
        if scheme != "Bearer" or not key:
            raise Forbidden(
                ErrorId.BAD_CREDENTIALS, "This route needs 'Authorization: Bearer <API key>'"
            )
        peer = (request.client.host, request.client.port) if request.client else None
        identity = identify(key, source_key(peer))
        if identity is None:
            raise Forbidden(ErrorId.BAD_CREDENTIALS, "The bearer token is not a valid API key")
        return Caller(identity)

    return caller


def admin_guard(authz: Authorizer, identify: Identify) -> Callable[..., None]:
    """A FastAPI dependency: ``Authorization: Bearer <admin_token>``.

    No bearer token, or one that is nothing known, is 401 ``bad-credentials`` (counted against
    the address like an unknown API key); the api_token or an account's API key is 403
    ``forbidden``, as is any token while ``admin_token`` is unset."""

    def admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
        if authz.is_admin(authorization):
            return
        if not authz.admin_enabled:
            raise Forbidden(ErrorId.FORBIDDEN, "Set admin_token to enable the admin routes")
        if authz.is_server(authorization):
            raise Forbidden(
                ErrorId.FORBIDDEN,
                "The api_token is the server's: admin routes take the admin_token",
            )
        scheme, _, key = (authorization or "").partition(" ")
        if scheme != "Bearer" or not key:
            raise Forbidden(
                ErrorId.BAD_CREDENTIALS, "This route needs 'Authorization: Bearer <admin token>'"
            )
        peer = (request.client.host, request.client.port) if request.client else None
        if identify(key, source_key(peer)) is not None:
            raise Forbidden(
                ErrorId.FORBIDDEN,
                "An API key is its account's: admin routes take the admin_token",
            )
        raise Forbidden(ErrorId.BAD_CREDENTIALS, "The bearer token is not the admin token")

    return admin
