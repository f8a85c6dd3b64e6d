"""``/consent/...``: invites, offers, relationships, chat, alerts and the inbox over LIME.

A thin edge over the core's ``ConsentService``: it reads the command's resource and query,
calls one service method as the session's own identity (the authenticated one: consent is
never done on another identity's behalf, delegation or not), and answers the resulting
document. The core decides everything else and raises ``TidingsError``s with consent error
ids, which ``errors.lime_reason`` turns into reasons whose description starts with the id.
docs/consent.md (LIME, SDK and CLI) lists the resources.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs

import msgspec

from ..core.address import parse_address
from ..core.consent_documents import (
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
from ..core.consent_model import InboxEvent, InboxKind
from ..core.errors import ErrorId, Forbidden, Invalid, TidingsError
from ..core.session_registry import LiveSession
from ..core.session_service import SessionService
from ..protocol.lime import UNSET, Command, CommandMethod
from .context import LimeContext
from .lime_resource import collection, no_method, no_resource

__all__ = ["ChatRelay", "consent_resource", "forget_consent"]

log = logging.getLogger("tidings")

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


def _field(document: dict[str, Any], name: str) -> Any:
    """A request field as sent (None when absent): the core checks its type and value."""
    return document.get(name)


def _decision(document: dict[str, Any]) -> bool:
    decision = document.get("decision")
    if decision not in ("accept", "refuse"):
        raise Invalid(ErrorId.INVALID_ARGUMENT, "'decision' must be 'accept' or 'refuse'")
    return bool(decision == "accept")


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
            return collection(INVITE, [invite_document(i) for i in invites])
        if method is CommandMethod.SET:
            document = _body(command)  # the core checks every value
            invite, token = await consent.create_invite(
                actor,
                app_code=_field(document, "appCode"),
                display_name=_field(document, "displayName"),
                consent=_field(document, "consent"),
                permissions=_field(document, "requestedPermissions"),
                mode=document.get("mode", "single-use"),
                features=_field(document, "features"),
                expires_at=_field(document, "expiresAt"),
                grant_expires_at=_field(document, "grantExpiresAt"),
            )
            created = invite_document(invite)
            created["capabilityUrl"] = ctx.capability_url(token)
            created["capabilityToken"] = token
            return INVITE, created
        raise no_method(command)
    invite_id = rest[0]
    if len(rest) == 1 and method is CommandMethod.GET:
        return INVITE, invite_document(await consent.invite(invite_id, actor))
    if rest[1:] == ["invalidate"] and method is CommandMethod.SET:
        reason = _field(_body(command, required=False), "reason")
        invite = await consent.invalidate(invite_id, actor, reason=reason)
        return INVITE, invite_document(invite)
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
                token,
                live.identity,
                granted=_field(document, "grantedPermissions"),
                capability=_field(document, "capabilityUrl"),
            )
            return RELATIONSHIP, relationship_document(relationship)
        await consent.refuse(
            token,
            live.identity,
            reason=_field(document, "reason"),
            capability=_field(document, "capabilityUrl"),
        )
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
            reason = _field(_body(command, required=False), "reason")
            revoked = await consent.revoke(relationship_id, actor, reason=reason)
            return RELATIONSHIP, relationship_document(revoked)
        raise no_method(command)
    if sub == ["chat"]:
        if method is CommandMethod.SET:
            text = _field(_body(command), "text")
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
        alert = await consent.alert(
            relationship_id,
            actor,
            level=_field(document, "level"),
            title=_field(document, "title"),
            body=_field(document, "body"),
            ack_required=document.get("ackRequired", False),
            ack_id=_field(document, "ackId"),
        )
        return ALERT, alert_document(alert)
    if sub == ["scope-requests"]:
        if method is not CommandMethod.SET:
            raise no_method(command)
        document = _body(command)
        request = await consent.request_scope(
            relationship_id,
            actor,
            _field(document, "requestedPermissions"),
            message=_field(document, "message"),
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
    ack_id = _field(_body(command), "ackId")
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


class ChatRelay:
    """Delivers each consent chat message to the other side's sessions as a LIME message
    (``CHAT``, ``from`` the sender's identity) through their durable queues, whichever surface
    it was sent from: ``ConsentService``'s ``events`` hook, called after each commit."""

    def __init__(self, sessions: SessionService) -> None:
        self._sessions = sessions
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: InboxEvent) -> None:
        data = event.data
        sender = data.get("from")
        if event.kind is not InboxKind.CHAT or event.identity == sender:
            return  # the sender's own copy of the event: nothing to deliver
        task = asyncio.get_running_loop().create_task(self._deliver(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: InboxEvent) -> None:
        data, recipient = event.data, event.identity
        relationship_id, seq = data["relationshipId"], data["seq"]
        try:
            await self._sessions.notify(
                parse_address(recipient),
                message_id=f"consent-chat:{relationship_id}:{seq}",
                type_=CHAT,
                content={
                    "relationshipId": relationship_id,
                    "seq": seq,
                    "sender": data["from"],
                    "text": data["text"],
                    "at": int(event.at),
                },
                sender=data["from"],
            )
        except TidingsError as error:  # the chat is kept in the history all the same
            log.warning(
                "chat %s/%s not delivered to %s: %s", relationship_id, seq, recipient, error.message
            )
        except Exception:  # a task of its own: nobody else would hear of it
            log.exception("chat %s/%s not delivered to %s", relationship_id, seq, recipient)
