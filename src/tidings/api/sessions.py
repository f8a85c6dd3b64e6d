"""HTTP routes for server-side apps: notify named sessions, read their queues.

Every route needs ``Authorization: Bearer <api_token>`` (queues are private to their identity).
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from ..core.address import parse_identity
from ..core.authz import Authorizer
from ..core.session_service import SessionService
from .guard import bearer_guard


class Notification(BaseModel):
    """A message from the server to one session, every session of the identity, or every
    existing session whose name matches ``pattern`` (shell-style glob: ``*``, ``?``, ``[...]``)."""

    type: str = Field(default="application/json", min_length=3, max_length=256)
    content: Any = Field(description="JSON value (a string for non-JSON types)")
    id: str | None = Field(
        default=None,
        max_length=256,
        description="Message id; a retry with the same id is stored once (default: a new uuid)",
    )
    session: str | None = Field(default=None, description="One session name (created if new)")
    pattern: str | None = Field(default=None, description="Glob over existing session names")


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


def router(sessions: SessionService, authz: Authorizer) -> APIRouter:
    routes = APIRouter(prefix="/identities/{identity}", tags=["sessions"])
    guarded = [Depends(bearer_guard(authz))]

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

    @routes.get(
        "/sessions",
        response_model=list[SessionInfo],
        dependencies=guarded,
        summary="The identity's sessions with depth, limit, policy and last-seen time",
    )
    async def list_sessions(identity: str) -> list[SessionInfo]:
        return [SessionInfo(**s) for s in await sessions.sessions_of(identity)]

    @routes.get(
        "/sessions/{name}",
        response_model=SessionInfo,
        dependencies=guarded,
        summary="One session and a snapshot of its queue (envelopes as sent)",
    )
    async def session_info(
        identity: str, name: str, limit: Annotated[int, Query(ge=0, le=1000)] = 100
    ) -> SessionInfo:
        info = await sessions.info(identity, name, limit)
        for entry in info["queue"]:
            entry["envelope"] = json.loads(entry["envelope"])
        return SessionInfo(**info)

    return routes
