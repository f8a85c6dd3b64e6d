"""``POST /messages``: an account sends a message over HTTP, as its node ``name@domain/http``
(``core.account_messages``).

Only an account's API key sends: the api_token is the server's, whose messages are
``POST /identities/{identity}/notifications`` (it may not speak as an account), and the
admin_token is refused as on every route that is not ``/admin``.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from ..core.account_messages import AccountMessages
from ..core.address import parse_address
from ..core.authz import Authorizer, Method, Resource
from ..core.expiry import MAX_EXPIRE_AFTER_MS
from .guard import Caller, Identify, caller_guard
from .problems import PROBLEM_RESPONSES
from .text import MEDIA_TYPE, Text


class OutgoingMessage(BaseModel):
    """What a LIME client puts in a message envelope; ``from`` is the caller's HTTP node."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(
        min_length=1,
        max_length=1024,
        description="An identity (every session that takes its messages) or a node "
        "(identity/instance); without '@domain', this server's",
    )
    type: str = Field(default="application/json", max_length=256, pattern=MEDIA_TYPE)
    content: Any = Field(description="JSON value (a string for non-JSON types)")
    id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Message id; a retry with the same id is stored once (default: a new uuid)",
    )
    expireAfter: int | None = Field(
        default=None,
        ge=1,
        le=MAX_EXPIRE_AFTER_MS,
        description="Milliseconds it may wait for its recipient (LIME tidings.expireAfter; "
        "default: the server's message_ttl_s)",
    )
    realtime: bool = Field(
        default=False,
        description="Refused with message-expired unless a session of the recipient is online",
    )


class Accepted(BaseModel):
    id: str
    from_: str = Field(alias="from", description="The sender node: name@domain/http")
    to: str
    dispatched: bool = Field(description="Written at once to a session connected to this node")


def router(messages: AccountMessages, authz: Authorizer, identify: Identify) -> APIRouter:
    routes = APIRouter(tags=["messages"], responses=PROBLEM_RESPONSES)
    caller = caller_guard(authz, identify)

    @routes.post(
        "/messages",
        response_model=Accepted,
        response_model_by_alias=True,
        status_code=202,
        summary="Send a message as the account of the API key; answered once it is stored",
    )
    async def send(
        message: OutgoingMessage,
        who: Caller = Depends(caller),  # noqa: B008
    ) -> Accepted:
        await authz.check(who.identity, Resource.MESSAGES, Method.SEND, server=who.server)
        assert who.identity is not None  # an account's key (the api_token was refused)
        to = parse_address(message.to, messages.domain)
        sent = await messages.send(
            who.identity,
            to,
            message.id or str(uuid.uuid4()),
            message.type,
            message.content,
            expire_after=None if message.expireAfter is None else message.expireAfter / 1000,
            realtime=message.realtime,
        )
        return Accepted.model_validate(
            {
                "id": sent.message_id,
                "from": sent.sender,
                "to": to.text,
                "dispatched": sent.dispatched,
            }
        )

    return routes
