"""The bearer-token guard of the HTTP routes that act as the server: the rule is core's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Header

from ..core.authz import Authorizer


def bearer_guard(authz: Authorizer) -> Callable[..., None]:
    """A FastAPI dependency that lets a request through only with the API token."""

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        authz.bearer(authorization)

    return authorized
