"""HTTP routes for administrators: open connections, queue depths, disconnecting a session,
the settings, federation status and accounts with their API keys.

Every route needs ``Authorization: Bearer <admin_token>`` (``guard.admin_guard``): neither the
api_token nor an account's API key stands for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from ..core.accounts import ACCOUNT_NAME, MAX_PASSWORD_LENGTH, AccountService
from ..core.authz import Authorizer
from ..core.errors import ErrorId, NotFound, TidingsError
from ..core.session_registry import SessionRegistry
from ..core.session_service import SessionService
from .guard import Identify, admin_guard
from .problems import PROBLEM_RESPONSES
from .text import Text

MAX_TOP = 1000


class Connection(BaseModel):
    """One open WebSocket connection."""

    protocol: str = Field(description="``lime`` or ``feedme``")
    identity: str | None = Field(description="Who it signed in as (None: not yet, or anonymous)")
    instance: str | None = Field(description="The LIME session's instance (None: not established)")
    since: float = Field(description="When it was accepted (Unix seconds)")
    remote: str | None = Field(description="The client's address, ``host:port``, if known")


class QueueDepth(BaseModel):
    identity: str
    instance: str
    depth: int
    limit: int
    policy: str
    online: bool
    lastSeen: float


class Disconnected(BaseModel):
    identity: str
    instance: str
    disconnected: bool = True


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewAccount(_Body):
    name: str = Field(min_length=1, max_length=64, pattern=f"^{ACCOUNT_NAME.pattern}$")
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class Account(BaseModel):
    name: str
    identity: str


class NewKey(_Body):
    label: Text = Field(default="", max_length=256)


class ApiKey(BaseModel):
    name: str
    label: str
    key: str = Field(description="The API key: shown this once, only its hash is kept")


@dataclass(frozen=True, slots=True)
class AdminSources:
    """What the admin routes read: the wiring gathers it from the gateways and the core."""

    connections: Callable[[], list[Connection]]
    registry: SessionRegistry
    sessions: SessionService
    accounts: AccountService
    settings: Callable[[], dict[str, Any]]
    """The settings as JSON, secrets redacted."""
    federation: Callable[[], Awaitable[dict[str, Any]]] | None = None


def router(sources: AdminSources, authz: Authorizer, identify: Identify) -> APIRouter:
    routes = APIRouter(
        prefix="/admin",
        tags=["admin"],
        dependencies=[Depends(admin_guard(authz, identify))],
        responses=PROBLEM_RESPONSES,
    )
    accounts = sources.accounts

    @routes.get(
        "/connections",
        response_model=list[Connection],
        summary="Open LIME and Feedme connections on this node",
    )
    async def connections() -> list[Connection]:
        return sorted(sources.connections(), key=lambda c: c.since)

    @routes.get(
        "/queues",
        response_model=list[QueueDepth],
        summary="The sessions with the deepest queues, deepest first",
    )
    async def queues(top: Annotated[int, Query(ge=1, le=MAX_TOP)] = 20) -> list[QueueDepth]:
        return [QueueDepth(**q) for q in sources.sessions.deepest(top)]

    @routes.delete(
        "/sessions/{identity}/{instance}",
        response_model=Disconnected,
        summary="End a live session on this node with a reason; its queue is kept",
    )
    async def disconnect(identity: str, instance: Text) -> Disconnected:
        live = sources.registry.live(identity, instance)
        if live is None:
            raise NotFound(
                ErrorId.SESSION_NOT_FOUND, f"No live session {identity}/{instance} on this node"
            )
        live.outlet.end(
            TidingsError(ErrorId.SESSION_DISCONNECTED, "The session was ended by an administrator")
        )
        return Disconnected(identity=identity, instance=instance)

    @routes.get("/settings", summary="The server's settings, secrets redacted")
    async def settings() -> dict[str, Any]:
        return sources.settings()

    if sources.federation is not None:
        federation = sources.federation

        @routes.get(
            "/federation",
            summary="Each federation peer: outbox depth, oldest waiting envelope, last error",
        )
        async def federation_status() -> dict[str, Any]:
            return await federation()

    @routes.post("/accounts", response_model=Account, status_code=201, summary="Create an account")
    async def create_account(body: NewAccount) -> Account:
        await accounts.add(body.name, body.password)
        return Account(name=body.name, identity=f"{body.name}@{accounts.domain}")

    @routes.get("/accounts", response_model=list[Account], summary="Every account")
    async def list_accounts() -> list[Account]:
        return [
            Account(name=name, identity=f"{name}@{accounts.domain}")
            for name in sorted(await accounts.names())
        ]

    @routes.delete(
        "/accounts/{name}",
        status_code=204,
        response_class=Response,
        summary="Delete an account (its contacts and delegations go with it)",
    )
    async def delete_account(name: Text) -> Response:
        await accounts.remove(name)
        return Response(status_code=204)

    @routes.post(
        "/accounts/{name}/keys",
        response_model=ApiKey,
        status_code=201,
        summary="A new API key for the account (shown once)",
    )
    async def create_key(name: Text, body: NewKey | None = None) -> ApiKey:
        label = body.label if body is not None else ""
        return ApiKey(name=name, label=label, key=await accounts.create_key(name, label))

    return routes
