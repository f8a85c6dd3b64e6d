"""HTTP routes of named sessions: notify them (the server), list, read and delete them (the
server, or the account itself).

Notifying takes ``Authorization: Bearer <api_token>`` (a message from the server). The other
routes take the api_token or the API key of the identity's own account: queues are private to
their identity (``Resource.SESSIONS`` in ``core.authz``; another account's key is 403
``forbidden``).
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from ..core.address import parse_address, parse_identity
from ..core.authz import Authorizer, Method, Resource
from ..core.session_service import SessionService
from .guard import Caller, Identify, bearer_guard, caller_guard
from .problems import PROBLEM_RESPONSES
from .text import MEDIA_TYPE, Text


class Notification(BaseModel):
    """A message from the server to one session, every session of the identity, or every
    existing session whose name matches ``pattern`` (shell-style glob: ``*``, ``?``, ``[...]``)."""

    type: str = Field(default="application/json", max_length=256, pattern=MEDIA_TYPE)
    content: Any = Field(description="JSON value (a string for non-JSON types)")
    id: Text | None = Field(
        default=None,
        max_length=256,
        description="Message id; a retry with the same id is stored once (default: a new uuid)",
    )
    session: Text | None = Field(default=None, description="One session name (created if new)")
    pattern: Text | None = Field(default=None, description="Glob over existing session names")


class Refusal(BaseModel):
    session: str
    error_id: str
    detail: str


class Notified(BaseModel):
    id: str
    sessions: list[str] = Field(description="Sessions whose queue now holds the message")
    refused: list[Refusal] = Field(description="Sessions whose full reject-new queue refused it")


class SessionInfo(BaseModel):
    name: str
    node: str
    online: bool
    depth: int
    limit: int
    policy: str
    ownLimit: bool
    lastSeen: float
    persistent: bool
    queue: list[dict[str, Any]] | None = None


class Reason(BaseModel):
    code: int = Field(ge=1, le=9999, description="A LIME reason code")
    description: str = Field(default="", max_length=1024)


class SessionNotification(BaseModel):
    """A notification the session sends about a message in its queue, as a LIME client does."""

    model_config = ConfigDict(extra="forbid")

    id: Text = Field(min_length=1, max_length=256, description="The message's id")
    from_: str = Field(
        alias="from",
        min_length=1,
        max_length=1024,
        description="The message's sender, as its queue entry's 'from' says",
    )
    event: Literal["received", "consumed", "failed"]
    reason: Reason | None = Field(default=None, description="Why it failed (event 'failed')")


class Acknowledged(BaseModel):
    id: str
    removed: bool = Field(description="Whether the message was in the queue and left it")


class Deleted(BaseModel):
    identity: str
    name: str
    removed: int = Field(description="Queued rows removed (their senders were told)")


def router(sessions: SessionService, authz: Authorizer, identify: Identify) -> APIRouter:
    routes = APIRouter(
        prefix="/identities/{identity}", tags=["sessions"], responses=PROBLEM_RESPONSES
    )
    guarded = [Depends(bearer_guard(authz))]
    caller = caller_guard(authz, identify)

    async def owned(identity: str, who: Caller, method: Method) -> str:
        """The identity, if the caller may ``method`` its sessions (``core.authz``)."""
        owner = parse_identity(identity).identity
        await authz.check(who.identity, Resource.SESSIONS, method, owner, server=who.server)
        return owner

    @routes.post(
        "/notifications",
        response_model=Notified,
        status_code=202,
        dependencies=guarded,
        summary="Queue a message for one, all, or the matching sessions of an identity",
    )
    async def notify(identity: str, notification: Notification) -> Notified:
        outcome = await sessions.notify(
            parse_identity(identity),
            message_id=notification.id or str(uuid.uuid4()),
            type_=notification.type,
            content=notification.content,
            session=notification.session,
            pattern=notification.pattern,
        )
        return Notified(
            id=outcome.message_id,
            sessions=outcome.sessions,
            refused=[Refusal(**r) for r in outcome.refused],
        )

    # ``Depends(caller)`` as a default: see ``feeds._owner_routes``
    @routes.get(
        "/sessions",
        response_model=list[SessionInfo],
        summary="The identity's sessions with depth, limit, policy and last-seen time "
        "(the api_token or the account's API key)",
    )
    async def list_sessions(
        identity: str,
        who: Caller = Depends(caller),  # noqa: B008
    ) -> list[SessionInfo]:
        owner = await owned(identity, who, Method.READ)
        return [SessionInfo(**s) for s in await sessions.sessions_of(owner)]

    @routes.get(
        "/sessions/{name}",
        response_model=SessionInfo,
        summary="One session and a snapshot of its queue, envelopes as sent (the api_token "
        "or the account's API key)",
    )
    async def session_info(
        identity: str,
        name: Text,
        limit: Annotated[int, Query(ge=0, le=1000)] = 100,
        who: Caller = Depends(caller),  # noqa: B008
    ) -> SessionInfo:
        owner = await owned(identity, who, Method.READ)
        info = await sessions.info(owner, name, limit)
        for entry in info["queue"]:
            entry["envelope"] = json.loads(entry["envelope"])
        return SessionInfo(**info)

    @routes.delete(
        "/sessions/{name}",
        response_model=Deleted,
        summary="Delete an offline session and its queue; the senders of queued messages get "
        "failed (session-expired). A connected session is refused (session-connected)",
    )
    async def delete_session(
        identity: str,
        name: Text,
        who: Caller = Depends(caller),  # noqa: B008
    ) -> Deleted:
        owner = await owned(identity, who, Method.DELETE)
        removed = await sessions.delete(owner, name)
        return Deleted(identity=owner, name=name, removed=removed)

    @routes.post(
        "/sessions/{name}/notifications",
        response_model=Acknowledged,
        summary="Tell a message's sender that this offline session received, consumed or "
        "failed it; the message leaves the queue, as over LIME (the account's API key)",
    )
    async def acknowledge(
        identity: str,
        name: Text,
        notification: SessionNotification,
        who: Caller = Depends(caller),  # noqa: B008
    ) -> Acknowledged:
        owner = await owned(identity, who, Method.WRITE)
        reason = notification.reason
        removed = await sessions.acknowledge(
            owner,
            name,
            parse_address(notification.from_),
            notification.id,
            notification.event,
            None if reason is None else (reason.code, reason.description),
        )
        return Acknowledged(id=notification.id, removed=removed)

    return routes
