"""The key directory over HTTP: what ``get lime://ID/keys`` and ``get lime://ID/keys/{signId}``
answer over LIME, with the same rules (``core.federation_keys.KeyLookups``).

A lookup is made as an account (its API key): the listing is for those the owner accepts
messages from, one named key for any account. The api_token is refused: the server is nobody's
contact, so the rule has no answer for it; the admin_token is refused as everywhere but
``/admin``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.address import parse_identity
from ..core.authz import Authorizer, Method, Resource
from ..core.errors import ErrorId, NotFound
from ..core.federation_keys import KeyLookups
from .guard import Caller, Identify, caller_guard
from .problems import PROBLEM_RESPONSES
from .text import Text


class NodeInfo(BaseModel):
    """A node's signed info as published (docs/e2e.md); ``revoked`` once revoked."""

    model_config = ConfigDict(extra="allow")

    identity: str
    instance: str
    signId: str
    boxId: str
    published: int
    expires: int
    signature: str
    revoked: int | None = Field(default=None, description="When it was revoked (ms)")


def router(lookups: KeyLookups, authz: Authorizer, identify: Identify) -> APIRouter:
    routes = APIRouter(prefix="/keys", tags=["keys"], responses=PROBLEM_RESPONSES)
    caller = caller_guard(authz, identify)

    async def account(who: Caller) -> str:
        """The looking account (``core.authz`` refuses the api_token: the server is nobody's
        contact)."""
        await authz.check(who.identity, Resource.KEYS, Method.READ, server=who.server)
        assert who.identity is not None  # an account's key
        return who.identity

    # ``Depends(caller)`` as a default: see ``feeds._owner_routes``
    @routes.get(
        "/{identity}",
        response_model=list[NodeInfo],
        response_model_exclude_none=True,
        summary="The identity's current node infos (if it accepts the caller's messages)",
    )
    async def listing(
        identity: str,
        who: Caller = Depends(caller),  # noqa: B008
    ) -> list[NodeInfo]:
        viewer = await account(who)
        documents = await lookups.listing(viewer, parse_identity(identity).identity)
        return [info for info in map(_node_info, documents) if info is not None]

    @routes.get(
        "/{identity}/{sign_id:path}",
        response_model=NodeInfo,
        response_model_exclude_none=True,
        summary="The latest publication of one of the identity's keys, revoked or expired too",
    )
    async def key(
        identity: str,
        sign_id: Text,
        who: Caller = Depends(caller),  # noqa: B008
    ) -> NodeInfo:
        viewer = await account(who)
        owner = parse_identity(identity).identity
        info = _node_info(await lookups.key(viewer, owner, sign_id))
        if info is None:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"{owner} published no key {sign_id}")
        return info

    return routes


def _node_info(document: dict[str, Any]) -> NodeInfo | None:
    """The document as answered; None for what is no node info (another domain's server
    answered it: clients verify what they get, this only keeps the answer to its schema)."""
    try:
        return NodeInfo.model_validate(document)
    except ValidationError:
        return None
