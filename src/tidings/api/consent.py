"""HTTP routes of consent (docs/consent.md): invites, capability URLs, relationships, chat,
alerts and the inbox, for accounts authenticated by their API key.

The routes only translate: every rule is ``core.consent``'s, every document shape
``core.consent_documents``' (the LIME resources answer the same documents). The capability URL
itself (``GET /consent/offers/{token}``) needs no credentials: it is the capability; deciding on
it does, and the accepter is the authenticated identity, never one the body names.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..core.authz import Authorizer
from ..core.consent import MAX_ACK_ID, MAX_CHAT_CHARS, MAX_REASON, ConsentService
from ..core.consent_documents import (
    alert_document,
    chat_document,
    event_document,
    invite_document,
    offer_document,
    relationship_document,
    scope_request_document,
)
from ..core.consent_model import Invite
from ..core.errors import ErrorId, Forbidden, TidingsError
from ..core.login_throttle import source_key
from .guard import Caller, Identify, caller_guard
from .problems import PROBLEM_RESPONSES

MAX_TEXT = 10_240
"""Bounds of free texts the core checks again (pydantic refuses far larger bodies first)."""
LanguageMap = dict[Annotated[str, Field(max_length=3)], Annotated[str, Field(max_length=MAX_TEXT)]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PermissionBody(_Body):
    resource: str = Field(min_length=1, max_length=200, examples=["feed:heart-rate*"])
    level: Literal["read", "contribute", "manage"]


class FeaturesBody(_Body):
    chat: bool = True
    systemMessaging: bool = True


class InviteBody(_Body):
    appCode: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")
    displayName: str = Field(min_length=1, max_length=256)
    consent: LanguageMap = Field(min_length=1, max_length=32)
    requestedPermissions: list[PermissionBody] = Field(max_length=64)
    mode: Literal["single-use", "open-link"] = "single-use"
    features: FeaturesBody | None = None
    expiresAt: int | None = Field(default=None, ge=0, le=2**53)
    grantExpiresAt: int | None = Field(
        default=None,
        ge=0,
        le=2**53,
        description="When the relationship made by accepting ends (Unix seconds, at most 365"
        " days ahead; default: until revoked)",
    )


class AcceptBody(_Body):
    grantedPermissions: list[PermissionBody] | None = Field(default=None, max_length=64)
    capabilityUrl: str | None = Field(
        default=None,
        max_length=2048,
        description="The whole capability URL: one of a federation peer's is accepted there",
    )


class ReasonBody(_Body):
    reason: str | None = Field(default=None, max_length=MAX_REASON)


class RefuseBody(ReasonBody):
    capabilityUrl: str | None = Field(
        default=None,
        max_length=2048,
        description="The whole capability URL: one of a federation peer's is refused there",
    )


class ScopeRequestBody(_Body):
    requestedPermissions: list[PermissionBody] = Field(max_length=64)
    message: LanguageMap | None = Field(default=None, max_length=32)


class ChatBody(_Body):
    text: str = Field(max_length=4 * MAX_CHAT_CHARS)  # the core names a longer one precisely


class AlertBody(_Body):
    level: Literal["info", "warning", "critical"]
    title: LanguageMap = Field(min_length=1, max_length=32)
    body: LanguageMap = Field(min_length=1, max_length=32)
    ackRequired: bool = False
    ackId: str | None = Field(default=None, min_length=1, max_length=MAX_ACK_ID)


class AckBody(_Body):
    ackId: str = Field(min_length=1, max_length=MAX_ACK_ID)


class Document(BaseModel):
    """A consent document (docs/consent.md lists the fields of each)."""

    model_config = ConfigDict(extra="allow")


class Items(BaseModel):
    items: list[dict[str, Any]]


Since = Annotated[int, Query(ge=0, le=2**53, description="Only what comes after this cursor")]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _permissions(permissions: list[PermissionBody] | None) -> list[dict[str, Any]] | None:
    return None if permissions is None else [p.model_dump() for p in permissions]


def router(
    consent: ConsentService,
    authz: Authorizer,
    identify: Identify,
    capability_url: Callable[[str], str],
) -> APIRouter:
    routes = APIRouter(prefix="/consent", tags=["consent"], responses=PROBLEM_RESPONSES)
    guard = caller_guard(authz, identify)

    def account(caller: Caller = Depends(guard)) -> str:  # noqa: B008
        if caller.identity is None:
            raise Forbidden(ErrorId.BAD_CREDENTIALS, "Consent acts for an account: use its API key")
        return caller.identity

    # ``Depends(account)`` as a default: ``account`` is made per app, and an ``Annotated``
    # alias of it would not resolve under postponed annotations.
    actor_of = Depends(account)

    # -- invites (the requester) ----------------------------------------------------------------

    @routes.post("/invites", status_code=201, response_model=Document, summary="Create an invite")
    async def create_invite(body: InviteBody, actor: str = actor_of) -> dict[str, Any]:
        features = None if body.features is None else body.features.model_dump()
        invite, token = await consent.create_invite(
            actor,
            app_code=body.appCode,
            display_name=body.displayName,
            consent=body.consent,
            permissions=_permissions(body.requestedPermissions) or [],
            mode=body.mode,
            features=features,
            expires_at=body.expiresAt,
            grant_expires_at=body.grantExpiresAt,
        )
        document = invite_document(invite)
        document["inviteId"] = invite.id
        document["capabilityUrl"] = capability_url(token)
        return document

    @routes.get("/invites", response_model=Items, summary="The actor's invites")
    async def invites(actor: str = actor_of) -> dict[str, Any]:
        return {"items": [invite_document(i) for i in await consent.invites(actor)]}

    @routes.get("/invites/{invite_id}", response_model=Document, summary="One invite's status")
    async def invite(invite_id: str, actor: str = actor_of) -> dict[str, Any]:
        return invite_document(await consent.invite(invite_id, actor))

    @routes.post(
        "/invites/{invite_id}/invalidate",
        response_model=Document,
        summary="Close an invite's capability link (idempotent)",
    )
    async def invalidate(
        invite_id: str, actor: str = actor_of, body: ReasonBody | None = None
    ) -> dict[str, Any]:
        reason = None if body is None else body.reason
        return invite_document(await consent.invalidate(invite_id, actor, reason=reason))

    # -- the capability URL (anyone holding it; deciding needs an account) ------------------------

    @routes.get(
        "/offers/{token}",
        response_model=Document,
        summary="Read an offer (JSON, or an HTML page with Accept: text/html)",
        responses={200: {"content": {"text/html": {}}}},
    )
    async def read_offer(token: str, request: Request) -> Any:
        offer = await consent.read_offer(token)
        if _wants_html(request):
            return _html(offer_page(offer, request.url.path))
        return offer_document(offer)

    @routes.post(
        "/offers/{token}/accept",
        status_code=201,
        response_model=Document,
        summary="Accept an offer: the authenticated account becomes the accepter",
    )
    async def accept(
        token: str, actor: str = actor_of, body: AcceptBody | None = None
    ) -> dict[str, Any]:
        granted = None if body is None else _permissions(body.grantedPermissions)
        capability = None if body is None else body.capabilityUrl
        relationship = await consent.accept(token, actor, granted=granted, capability=capability)
        return relationship_document(relationship)

    @routes.post(
        "/offers/{token}/refuse",
        status_code=204,
        summary="Refuse an offer (the requester is told)",
    )
    async def refuse(token: str, actor: str = actor_of, body: RefuseBody | None = None) -> Response:
        await consent.refuse(
            token,
            actor,
            reason=None if body is None else body.reason,
            capability=None if body is None else body.capabilityUrl,
        )
        return Response(status_code=204)

    @routes.post(
        "/offers/{token}/decide",
        response_class=HTMLResponse,
        summary="The HTML page's form: an API key and a decision",
        include_in_schema=False,
    )
    async def decide(token: str, request: Request) -> HTMLResponse:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0]
        decision = (form.get("decision") or [""])[0]
        peer = (request.client.host, request.client.port) if request.client else None
        try:
            actor = identify(key, source_key(peer)) if key else None
        except TidingsError as error:  # throttled: the person gets a page, not JSON
            return _html(_page("Not signed in", f"<p>{html.escape(error.message)}</p>"), 429)
        if actor is None:
            return _html(_page("Not signed in", "<p>That API key is not valid.</p>"), 401)
        try:
            if decision == "accept":
                relationship = await consent.accept(token, actor)
                text = f"<p>Accepted: relationship {html.escape(relationship.id)}.</p>"
            elif decision == "refuse":
                await consent.refuse(token, actor)
                text = "<p>Refused: the requester has been told.</p>"
            else:
                return _html(_page("No decision", "<p>Accept or refuse.</p>"), 422)
        except TidingsError as error:
            body = f"<p>{html.escape(error.error_id)}: {html.escape(error.message)}</p>"
            return _html(_page("Not done", body), 409)
        return _html(_page("Done", text))

    # -- relationships -------------------------------------------------------------------------

    @routes.get("/relationships", response_model=Items, summary="The actor's relationships")
    async def relationships(actor: str = actor_of) -> dict[str, Any]:
        found = await consent.relationships(actor)
        return {"items": [relationship_document(r) for r in found]}

    @routes.get("/relationships/{relationship_id}", response_model=Document)
    async def relationship(relationship_id: str, actor: str = actor_of) -> dict[str, Any]:
        return relationship_document(await consent.relationship(relationship_id, actor))

    @routes.delete(
        "/relationships/{relationship_id}",
        response_model=Document,
        summary="Revoke (either side; both are told, grants go at once)",
    )
    async def revoke(
        relationship_id: str,
        actor: str = actor_of,
        reason: Annotated[str | None, Query(max_length=MAX_REASON)] = None,
    ) -> dict[str, Any]:
        revoked = await consent.revoke(relationship_id, actor, reason=reason)
        return relationship_document(revoked)

    @routes.post(
        "/relationships/{relationship_id}/scope-requests",
        status_code=201,
        response_model=Document,
        summary="Ask for a new permission set (the requester)",
    )
    async def request_scope(
        relationship_id: str, body: ScopeRequestBody, actor: str = actor_of
    ) -> dict[str, Any]:
        request = await consent.request_scope(
            relationship_id,
            actor,
            _permissions(body.requestedPermissions) or [],
            message=body.message,
        )
        return scope_request_document(request)

    @routes.post("/scope-requests/{request_id}/accept", response_model=Document)
    async def accept_scope(request_id: str, actor: str = actor_of) -> dict[str, Any]:
        decided = await consent.decide_scope(request_id, actor, accept=True)
        return scope_request_document(decided)

    @routes.post("/scope-requests/{request_id}/refuse", response_model=Document)
    async def refuse_scope(request_id: str, actor: str = actor_of) -> dict[str, Any]:
        decided = await consent.decide_scope(request_id, actor, accept=False)
        return scope_request_document(decided)

    # -- chat and alerts -----------------------------------------------------------------------

    @routes.post("/relationships/{relationship_id}/chat", status_code=201, response_model=Document)
    async def chat(relationship_id: str, body: ChatBody, actor: str = actor_of) -> dict[str, Any]:
        return chat_document(await consent.chat(relationship_id, actor, body.text))

    @routes.get("/relationships/{relationship_id}/chat", response_model=Items)
    async def chat_history(
        relationship_id: str, actor: str = actor_of, since: Since = 0, limit: Limit = 100
    ) -> dict[str, Any]:
        history = await consent.chat_history(relationship_id, actor, since, limit)
        return {"items": [chat_document(m) for m in history]}

    @routes.post(
        "/relationships/{relationship_id}/alerts", status_code=201, response_model=Document
    )
    async def alert(relationship_id: str, body: AlertBody, actor: str = actor_of) -> dict[str, Any]:
        sent = await consent.alert(
            relationship_id,
            actor,
            level=body.level,
            title=body.title,
            body=body.body,
            ack_required=body.ackRequired,
            ack_id=body.ackId,
        )
        return alert_document(sent)

    @routes.post("/alerts/{alert_id}/ack", response_model=Document)
    async def ack(alert_id: str, body: AckBody, actor: str = actor_of) -> dict[str, Any]:
        return alert_document(await consent.ack(alert_id, actor, body.ackId))

    # -- the inbox -----------------------------------------------------------------------------

    @routes.get("/inbox", response_model=Items, summary="Lifecycle events of both sides, in order")
    async def inbox(actor: str = actor_of, since: Since = 0, limit: Limit = 100) -> dict[str, Any]:
        events = await consent.inbox(actor, since, limit)
        return {"items": [event_document(e) for e in events]}

    return routes


PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
"""The pages carry a capability in their URL: nothing may run, frame them, cache them or
leak their address in a Referer."""


def _html(page: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(page, status, headers=PAGE_HEADERS)


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


def offer_page(invite: Invite, path: str) -> str:
    """The offer as a page a person reads and decides on; every value is escaped."""
    offer = offer_document(invite)
    consent_texts = "".join(
        f"<p lang='{html.escape(lang)}'>{html.escape(text)}</p>"
        for lang, text in offer["consent"].items()
    )
    permissions = "".join(
        f"<li>{html.escape(p['level'])} <code>{html.escape(p['resource'])}</code></li>"
        for p in offer["requestedPermissions"]
    )
    features = ", ".join(name for name, on in offer["features"].items() if on) or "none"
    body = (
        f"<p><strong>{html.escape(offer['displayName'])}</strong> "
        f"(<code>{html.escape(offer['requester'])}</code>, app "
        f"<code>{html.escape(offer['appCode'])}</code>) asks for:</p>"
        f"<ul>{permissions}</ul>{consent_texts}"
        f"<p>Features: {html.escape(features)}. Mode: {html.escape(offer['mode'])}.</p>"
        f"<form method='post' action='{html.escape(path)}/decide'>"
        "<label>Your API key <input type='password' name='key' required></label> "
        "<button name='decision' value='accept'>Accept</button> "
        "<button name='decision' value='refuse'>Refuse</button></form>"
    )
    return _page("Consent request", body)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
