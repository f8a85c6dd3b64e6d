"""``/consent/...``: invites, offers, relationships, chat, alerts and the inbox over LIME.

A thin edge over the core's ``ConsentService``: it reads the command's resource and query,
calls one service method as the session's own identity (the authenticated one: consent is
never done on another identity's behalf, delegation or not), and answers the resulting
document. The core decides everything else and raises ``TidingsError``s with consent error
ids, which ``errors.lime_reason`` turns into reasons whose description starts with the id.
docs/consent-lime.md lists the resources.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs

import msgspec

from ..core.errors import ErrorId, Forbidden, Invalid
from ..core.session_registry import LiveSession
from ..protocol.lime import UNSET, Command, CommandMethod
from .consent_documents import (
    ALERT,
    CHAT,
    EVENT,
    INVITE,
    OFFER,
    RELATIONSHIP,
    SCOPE_REQUEST,
    alert_document,
    chat_document,
    event_document,
    invite_document,
    offer_document,
    relationship_document,
    scope_request_document,
)
from .context import LimeContext
from .lime_resource import collection, no_method, no_resource

__all__ = ["consent_resource", "forget_consent"]

PAGE: Final = 100
MAX_PAGE: Final = 1000


def _query(command: Command) -> dict[str, str]:
    query = str(command.uri).partition("?")[2]
    return {name: values[-1] for name, values in parse_qs(query).items()}


def _int_query(command: Command, name: str, default: int, top: int | None = None) -> int:
    text = _query(command).get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"'{name}' must be an integer") from None
    if value < 0 or (top is not None and value > top):
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"'{name}' is out of range")
    return value


def _body(command: Command, *, required: bool = True) -> dict[str, Any]:
    """The command's resource as a JSON object (``{}`` when optional and absent)."""
    if command.resource is UNSET:
        if required:
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"'{command.method.value}' needs a resource")
        return {}
    document = msgspec.json.decode(command.resource)
    if document is None and not required:
        return {}
    if not isinstance(document, dict):
        raise Invalid(ErrorId.INVALID_ARGUMENT, "The resource must be a JSON object")
    return document


def _text(document: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = document.get(name)
    if value is None:
        if required:
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"'{name}' must be a string")
    return value


def _list(document: dict[str, Any], name: str) -> list[Any] | None:
    value = document.get(name)
    if value is not None and not isinstance(value, list):
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"'{name}' must be an array")
    return value


def _decision(document: dict[str, Any]) -> bool:
    decision = document.get("decision")
    if decision not in ("accept", "refuse"):
        raise Invalid(ErrorId.INVALID_ARGUMENT, "'decision' must be 'accept' or 'refuse'")
    return decision == "accept"


async def consent_resource(
    ctx: LimeContext, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    """Dispatch ``/consent/{collection}/...`` (``rest`` excludes ``consent``)."""
    if owner != live.identity:
        raise Forbidden(ErrorId.FORBIDDEN, "Consent commands act only for the session's identity")
    if live.guest:
        raise Forbidden(ErrorId.FORBIDDEN, "Consent needs an account: guests have none")
    if not rest:
        raise no_resource(command)
    handler = _COLLECTIONS.get(rest[0])
    if handler is None:
        raise no_resource(command)
    return await handler(ctx, live, rest[1:], command)


async def _invites(ctx: LimeContext, live: LiveSession, rest: list[str], command: Command) -> Any:
    consent, actor, method = ctx.consent, live.identity, command.method
    if not rest:
        if method is CommandMethod.GET:
            invites = await consent.invites(actor)
            return collection(INVITE, [invite_document(i, ctx.capability_url) for i in invites])
        if method is CommandMethod.SET:
            document = _body(command)
            expires_at = document.get("expiresAt")
            if expires_at is not None and (
                isinstance(expires_at, bool) or not isinstance(expires_at, int | float)
            ):
                raise Invalid(ErrorId.INVALID_ARGUMENT, "'expiresAt' must be Unix seconds")
            features = document.get("features")
            if features is not None and not isinstance(features, dict):
                raise Invalid(ErrorId.INVALID_ARGUMENT, "'features' must be an object")
            invite, token = await consent.create_invite(
                actor,
                app_code=_text(document, "appCode", required=True),
                display_name=_text(document, "displayName", required=True),
                consent=document.get("consent"),
                permissions=_list(document, "requestedPermissions") or [],
                mode=_text(document, "mode") or "single-use",
                features=features,
                expires_at=float(expires_at) if expires_at is not None else None,
            )
            created = invite_document(invite, ctx.capability_url)
            created["capabilityUrl"] = ctx.capability_url(token)
            created["capabilityToken"] = token
            return INVITE, created
        raise no_method(command)
    invite_id = rest[0]
    if len(rest) == 1 and method is CommandMethod.GET:
        return INVITE, invite_document(await consent.invite(invite_id, actor), ctx.capability_url)
    if rest[1:] == ["invalidate"] and method is CommandMethod.SET:
        reason = _text(_body(command, required=False), "reason")
        invite = await consent.invalidate(invite_id, actor, reason=reason)
        return INVITE, invite_document(invite, ctx.capability_url)
    if len(rest) <= 2:
        raise no_method(command)
    raise no_resource(command)


async def _offers(ctx: LimeContext, live: LiveSession, rest: list[str], command: Command) -> Any:
    if len(rest) != 1:
        raise no_resource(command)
    consent, token, method = ctx.consent, rest[0], command.method
    if method is CommandMethod.GET:
        return OFFER, offer_document(await consent.read_offer(token))
    if method is CommandMethod.SET:
        document = _body(command)
        if _decision(document):
            relationship = await consent.accept(
                token, live.identity, granted=_list(document, "grantedPermissions")
            )
            return RELATIONSHIP, relationship_document(relationship)
        await consent.refuse(token, live.identity, reason=_text(document, "reason"))
        return None
    raise no_method(command)


async def _relationships(
    ctx: LimeContext, live: LiveSession, rest: list[str], command: Command
) -> Any:
    consent, actor, method = ctx.consent, live.identity, command.method
    if not rest:
        if method is CommandMethod.GET:
            found = await consent.relationships(actor)
            return collection(RELATIONSHIP, [relationship_document(r) for r in found])
        raise no_method(command)
    relationship_id, sub = rest[0], rest[1:]
    if not sub:
        if method is CommandMethod.GET:
            return RELATIONSHIP, relationship_document(
                await consent.relationship(relationship_id, actor)
            )
        if method is CommandMethod.DELETE:
            reason = _text(_body(command, required=False), "reason")
            revoked = await consent.revoke(relationship_id, actor, reason=reason)
            return RELATIONSHIP, relationship_document(revoked)
        raise no_method(command)
    if sub == ["chat"]:
        if method is CommandMethod.SET:
            text = _text(_body(command), "text", required=True)
            assert text is not None
            return CHAT, chat_document(await consent.chat(relationship_id, actor, text))
        if method is CommandMethod.GET:
            since = _int_query(command, "since", 0)
            limit = _int_query(command, "limit", PAGE, MAX_PAGE)
            history = await consent.chat_history(relationship_id, actor, since, limit)
            return collection(CHAT, [chat_document(m) for m in history])
        raise no_method(command)
    if sub == ["alerts"]:
        if method is not CommandMethod.SET:
            raise no_method(command)
        document = _body(command)
        ack_required = document.get("ackRequired", False)
        if not isinstance(ack_required, bool):
            raise Invalid(ErrorId.INVALID_ARGUMENT, "'ackRequired' must be a boolean")
        alert = await consent.alert(
            relationship_id,
            actor,
            level=_text(document, "level", required=True),
            title=document.get("title"),
            body=document.get("body"),
            ack_required=ack_required,
            ack_id=_text(document, "ackId"),
        )
        return ALERT, alert_document(alert)
    if sub == ["scope-requests"]:
        if method is not CommandMethod.SET:
            raise no_method(command)
        document = _body(command)
        request = await consent.request_scope(
            relationship_id,
            actor,
            _list(document, "requestedPermissions") or [],
            message=document.get("message"),
        )
        return SCOPE_REQUEST, scope_request_document(request)
    raise no_resource(command)


async def _scope_requests(
    ctx: LimeContext, live: LiveSession, rest: list[str], command: Command
) -> Any:
    if len(rest) != 1:
        raise no_resource(command)
    if command.method is not CommandMethod.SET:
        raise no_method(command)
    accept = _decision(_body(command))
    request = await ctx.consent.decide_scope(rest[0], live.identity, accept=accept)
    return SCOPE_REQUEST, scope_request_document(request)


async def _alerts(ctx: LimeContext, live: LiveSession, rest: list[str], command: Command) -> Any:
    if len(rest) != 2 or rest[1] != "ack":
        raise no_resource(command)
    if command.method is not CommandMethod.SET:
        raise no_method(command)
    ack_id = _text(_body(command), "ackId", required=True)
    assert ack_id is not None
    return ALERT, alert_document(await ctx.consent.ack(rest[0], live.identity, ack_id))


async def _inbox(ctx: LimeContext, live: LiveSession, rest: list[str], command: Command) -> Any:
    if rest:
        raise no_resource(command)
    method, actor = command.method, live.identity
    if method is CommandMethod.GET:
        since = _int_query(command, "since", 0)
        limit = _int_query(command, "limit", PAGE, MAX_PAGE)
        events = await ctx.consent.inbox(actor, since, limit)
        return collection(EVENT, [event_document(e) for e in events])
    if method is CommandMethod.SUBSCRIBE:
        since = _int_query(command, "since", -1)
        cursor = await _subscribe(ctx, live, None if since < 0 else since)
        return EVENT, {"cursor": cursor} if cursor is not None else {}
    if method is CommandMethod.UNSUBSCRIBE:
        forget_consent(ctx, live)
        return None
    raise no_method(command)


async def _subscribe(ctx: LimeContext, live: LiveSession, since: int | None) -> int | None:
    """Follow the identity's inbox on this session (replacing an earlier subscription):
    events after ``since`` first (read while new ones are held back), then each new one as an
    ``observe`` of ``lime://IDENTITY/consent/inbox``. Returns the last seq pushed (``since``
    when none was), None without ``since``."""
    forget_consent(ctx, live)
    identity, outlet = live.identity, live.outlet
    uri = f"lime://{identity}/consent/inbox"
    held: list[Any] | None = [] if since is not None else None
    pushed = since if since is not None else 0

    def push(event: Any) -> None:
        nonlocal pushed
        if event.seq <= pushed:
            return  # read with the backlog already
        pushed = event.seq
        outlet.observe_resource(identity, uri, EVENT, event_document(event))

    def listener(event: Any) -> None:
        if held is not None:
            held.append(event)
        else:
            push(event)

    ctx.consent_watches[live] = ctx.consent.subscribe(identity, listener)
    if since is None:
        return None
    try:
        while True:
            page = await ctx.consent.inbox(identity, pushed, PAGE)
            for event in page:
                push(event)
            if len(page) < PAGE:
                break
    except BaseException:
        forget_consent(ctx, live)
        raise
    waiting, held = held, None
    for event in waiting or ():
        push(event)
    return pushed


def forget_consent(ctx: LimeContext, live: LiveSession) -> None:
    """Drop the session's inbox subscription (unsubscribe, or its connection went)."""
    stop: Callable[[], None] | None = ctx.consent_watches.pop(live, None)
    if stop is not None:
        stop()


_COLLECTIONS: Final = {
    "invites": _invites,
    "offers": _offers,
    "relationships": _relationships,
    "scope-requests": _scope_requests,
    "alerts": _alerts,
    "inbox": _inbox,
}
