"""Commands addressed to the server: LIME resources mapped onto core services.

Each resource answers the methods it supports; anything else gets the LIME code the spec
names: 62 unknown resource, 63 method not supported, 64 invalid argument, 67 not found.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

import msgspec

from ..core.authz import Resource
from ..core.errors import ErrorId, Invalid, NotFound, TidingsError
from ..core.federation_keys import RemoteKeys
from ..core.owner_feeds import parse_publication
from ..core.session_registry import DeliveryEvent, LiveSession
from ..protocol.e2e import NODE_INFO_TYPE
from ..protocol.feedme import feed_md5
from ..protocol.lime import (
    UNSET,
    Command,
    CommandMethod,
    CommandStatus,
    InvalidNode,
    Reason,
    ReasonCode,
    parse_node,
)
from .context import LimeContext
from .errors import lime_reason
from .lime_apps import apps_resource
from .lime_consent import consent_resource
from .lime_resource import (
    Unsupported,
    authorize,
    collection,
    no_method,
    no_resource,
    resource_of,
)
from .lime_sessions import sessions_resource

PING: Final = "application/vnd.lime.ping+json"
PRESENCE: Final = "application/vnd.lime.presence+json"
RECEIPT: Final = "application/vnd.lime.receipt+json"
ACCOUNT: Final = "application/vnd.lime.account+json"
CONTACT: Final = "application/vnd.lime.contact+json"
DELEGATION: Final = "application/vnd.lime.delegation+json"
FEED_PUBLICATION: Final = "application/vnd.tidings.feed-publication+json"
FEED_REVEALED: Final = "application/vnd.tidings.feed-revealed+json"
FEED: Final = "application/vnd.tidings.feed+json"

_EMPTY: Final = msgspec.Raw(b"{}")
_RECEIPT_EVENTS: Final = frozenset(
    {"failed", "accepted", "validated", "authorized", "dispatched", "received", "consumed"}
)


def _success(
    command: Command, server: str, node: str, type_: str | None = None, resource: Any = None
) -> Command:
    raw: Any = UNSET
    if resource is not None:
        raw = (
            resource
            if isinstance(resource, msgspec.Raw)
            else msgspec.Raw(msgspec.json.encode(resource))
        )
    return Command(
        id=command.id,
        from_=server,
        to=node,
        method=command.method,
        status=CommandStatus.SUCCESS,
        type=type_ if type_ is not None else UNSET,
        resource=raw,
    )


def _failure(command: Command, server: str, node: str, reason: Reason) -> Command:
    return Command(
        id=command.id,
        from_=server,
        to=node,
        method=command.method,
        status=CommandStatus.FAILURE,
        reason=reason,
    )


def ping_response(command: Command, server: str, node: str) -> Command:
    return _success(command, server, node, PING, _EMPTY)


def receipt_command(command: Command, live: LiveSession, server: str) -> Command:
    """``/receipt``: which server events the session wants about the messages it sends."""
    method = command.method
    if method is CommandMethod.GET:
        current = sorted(event.value for event in live.receipt)
        return _success(command, server, live.node, RECEIPT, {"events": current})
    if method not in (CommandMethod.SET, CommandMethod.MERGE):
        return _failure(command, server, live.node, _method_reason(method, "/receipt"))
    try:
        document = resource_of(command)
        events = document.get("events") if isinstance(document, dict) else None
        if not isinstance(events, list) or not all(e in _RECEIPT_EVENTS for e in events):
            raise Invalid(
                ErrorId.INVALID_ARGUMENT,
                f'A receipt is {{"events": [...]}} with events from {sorted(_RECEIPT_EVENTS)}',
            )
    except TidingsError as error:
        return _failure(command, server, live.node, lime_reason(error))
    wanted: list[str] = events
    chosen = {DeliveryEvent(e) for e in wanted if e in DeliveryEvent._value2member_map_}
    if method is CommandMethod.MERGE:
        chosen |= set(live.receipt)
    live.receipt = frozenset(chosen | {DeliveryEvent.FAILED})
    return _success(command, server, live.node)


def _method_reason(method: CommandMethod, path: str) -> Reason:
    return Reason(
        code=ReasonCode.COMMAND_METHOD_NOT_SUPPORTED,
        description=f"The method {method.value!r} is not supported on {path}",
    )


def _split_uri(uri: str, session_identity: str, domain: str) -> tuple[str, list[str]]:
    """Owner identity and path segments of ``/path`` or ``lime://owner/path`` (query ignored)."""
    owner = session_identity
    if uri.startswith("lime://"):
        authority, slash, rest = uri[len("lime://") :].partition("/")
        try:
            owner = parse_node(authority, domain).identity
        except InvalidNode as exc:
            raise Unsupported(ReasonCode.VALIDATION_INVALID_METHOD, f"Invalid URI: {exc}") from None
        path = slash + rest
    elif uri.startswith("/"):
        path = uri
    else:
        raise Unsupported(
            ReasonCode.VALIDATION_INVALID_METHOD,
            f"Invalid URI {uri!r}: expected '/resource' or 'lime://identity/resource'",
        )
    path = path.partition("?")[0].rstrip("/")
    return owner, [unquote(part) for part in path.split("/")[1:]]


Handler = Callable[[LimeContext, LiveSession, str, list[str], Command], Awaitable[Any]]


async def execute_command(
    ctx: LimeContext, live: LiveSession, acting: str, command: Command, server: str
) -> Command | None:
    """Run a request addressed to the server; ``acting`` is the identity it acts for."""
    if command.method is CommandMethod.OBSERVE:
        return None  # observe is one-way and never answered
    assert isinstance(command.uri, str)
    try:
        owner, segments = _split_uri(command.uri, acting, ctx.domain)
        handler = _RESOURCES.get(segments[0] if segments else "")
        if handler is None:
            raise Unsupported(
                ReasonCode.COMMAND_RESOURCE_NOT_SUPPORTED,
                f"The resource {command.uri!r} is not supported",
            )
        result = await handler(ctx, live, owner, segments[1:], command)
    except Unsupported as exc:
        return _failure(command, server, live.node, exc.reason)
    except msgspec.DecodeError as exc:
        return _failure(
            command,
            server,
            live.node,
            Reason(
                code=ReasonCode.COMMAND_INVALID_ARGUMENT, description=f"Invalid resource: {exc}"
            ),
        )
    except TidingsError as error:
        return _failure(command, server, live.node, lime_reason(error))
    if result is None:
        return _success(command, server, live.node)
    type_, resource = result
    return _success(command, server, live.node, type_, resource)


async def _presence(
    ctx: LimeContext, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    if rest:
        raise Unsupported(ReasonCode.COMMAND_RESOURCE_NOT_FOUND, "Presence has no sub-resources")
    method = command.method
    if method is CommandMethod.GET:
        return PRESENCE, await ctx.presence.read(live, owner)
    if method in (CommandMethod.SET, CommandMethod.MERGE):
        await authorize(ctx, live, Resource.PRESENCE, owner, command)
        await ctx.presence.update(live, resource_of(command), merge=method is CommandMethod.MERGE)
        return None
    if method is CommandMethod.SUBSCRIBE:
        await ctx.presence.subscribe(live, owner)
        return None
    if method is CommandMethod.UNSUBSCRIBE:
        told = ctx.presence.unsubscribe(live, owner)
        if told is not None:
            await told  # another domain's server forgot the subscriber: then the answer
        return None
    raise no_method(command)


async def _account(
    ctx: LimeContext, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    if rest:
        raise Unsupported(ReasonCode.COMMAND_RESOURCE_NOT_FOUND, "Account has no sub-resources")
    await authorize(ctx, live, Resource.ACCOUNT, owner, command)
    name = owner.partition("@")[0]
    method = command.method
    if method is CommandMethod.GET:
        return ACCOUNT, await ctx.accounts.profile(name)
    if method in (CommandMethod.SET, CommandMethod.MERGE):
        document = resource_of(command)
        if not isinstance(document, dict):
            raise Invalid(ErrorId.INVALID_ARGUMENT, "An account document must be a JSON object")
        await ctx.accounts.update_profile(name, document, merge=method is CommandMethod.MERGE)
        return None
    raise no_method(command)


async def _contacts(
    ctx: LimeContext, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    await authorize(ctx, live, Resource.CONTACTS, owner, command)
    method = command.method
    roster = ctx.roster
    if not rest:
        if method is CommandMethod.GET:
            return collection(CONTACT, await roster.contacts(owner))
        if method in (CommandMethod.SET, CommandMethod.MERGE):
            await roster.put_contact(
                owner, resource_of(command), merge=method is CommandMethod.MERGE
            )
            return None
    elif len(rest) == 1:
        if method is CommandMethod.GET:
            return CONTACT, await roster.contact(owner, rest[0])
        if method in (CommandMethod.SET, CommandMethod.MERGE):
            await roster.put_contact(
                owner,
                resource_of(command),
                merge=method is CommandMethod.MERGE,
                identity=rest[0],
            )
            return None
        if method is CommandMethod.DELETE:
            await roster.delete_contact(owner, rest[0])
            return None
    else:
        raise no_resource(command)
    raise no_method(command)


async def _delegations(
    ctx: LimeContext, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    await authorize(ctx, live, Resource.DELEGATIONS, owner, command)
    method = command.method
    roster = ctx.roster
    if not rest:
        if method is CommandMethod.GET:
            return collection(DELEGATION, await roster.delegations(owner))
        if method in (CommandMethod.SET, CommandMethod.MERGE):
            await roster.put_delegation(owner, resource_of(command))
            return None
    elif len(rest) == 1:
        if method is CommandMethod.GET:
            target = parse_identity(rest[0], ctx.domain)
            for delegation in await roster.delegations(owner):
                if delegation["target"] == target:
                    return DELEGATION, delegation
            raise TidingsError(ErrorId.RESOURCE_NOT_FOUND, f"No delegation to {target}")
        if method is CommandMethod.DELETE:
            await roster.delete_delegation(owner, rest[0])
            return None
    else:
        raise no_resource(command)
    raise no_method(command)


async def _keys(
    ctx: LimeContext, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    """``/keys``: the key directory. ``lime://ID/keys`` is ID's current node infos (get),
    followed with subscribe/unsubscribe; ``set /keys`` publishes the session's own node info;
    ``/keys/{signId}`` (percent-encoded, as base64 may hold '/') is the latest publication of
    one key (get) or revokes it (delete)."""
    method = command.method
    remote = ctx.remote_keys
    if remote is not None and remote.serves(owner):
        return await _remote_keys(remote, live, owner, rest, command)
    directory = ctx.keys
    if not rest:
        if method is CommandMethod.SET:
            await authorize(ctx, live, Resource.KEYS, owner, command)
            await directory.publish(live, resource_of(command))
            return None
        if method is CommandMethod.GET:
            return collection(NODE_INFO_TYPE, await directory.keys_of(live.identity, owner))
        if method is CommandMethod.SUBSCRIBE:
            outlet = live.outlet

            def observe(identity: str, document: dict[str, Any]) -> None:
                outlet.observe_resource(
                    identity, f"lime://{identity}/keys", NODE_INFO_TYPE, document
                )

            await directory.subscribe(live, owner, observe)
            return None
        if method is CommandMethod.UNSUBSCRIBE:
            directory.unsubscribe(live, owner)
            return None
        raise no_method(command)
    sign_id = "/".join(rest)  # an unencoded '/' of base64 splits the path: join it again
    named = command.uri is not UNSET and str(command.uri).startswith("lime://")
    if method is CommandMethod.GET:
        document = await directory.key(live.identity, sign_id)
        if named and document["identity"] != owner:
            raise TidingsError(ErrorId.RESOURCE_NOT_FOUND, f"{owner} published no key {sign_id}")
        return NODE_INFO_TYPE, document
    if method is CommandMethod.DELETE:
        await directory.revoke(live, sign_id)
        return None
    raise no_method(command)


async def _remote_keys(
    remote: RemoteKeys, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    """``get lime://ID/keys[/{signId}]`` of another domain's ID: its server answers."""
    if command.method is not CommandMethod.GET:
        raise Unsupported(
            ReasonCode.COMMAND_METHOD_NOT_SUPPORTED,
            f"Only 'get' reaches the keys of {owner} (another domain's identity)",
        )
    if not rest:
        return collection(NODE_INFO_TYPE, await remote.listing(live.identity, live.guest, owner))
    document = await remote.key(live.identity, live.guest, owner, "/".join(rest))
    return NODE_INFO_TYPE, document


async def _feeds(
    ctx: LimeContext, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    """``/feeds/FEED``: the session's identity's own feed ``~name/FEED``;
    ``lime://ID/feeds/FEED``: ID's (granted to the session's identity, core decides). ``set``
    publishes (resource: a publication), ``get`` reads (query string: the feed args)."""
    owner_feeds = ctx.owner_feeds
    if owner_feeds is None or len(rest) != 1:
        raise no_resource(command)
    name, _, domain = owner.partition("@")
    if domain != ctx.domain:
        raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"{owner} is not an account of this server")
    feed = owner_feeds.of(name, rest[0])
    method = command.method
    if method is CommandMethod.SET:
        if command.type not in (FEED_PUBLICATION, "application/json"):
            raise Invalid(
                ErrorId.INVALID_ARGUMENT, f"A feed publication has the type {FEED_PUBLICATION}"
            )
        publication = parse_publication(resource_of(command))
        revealed = await owner_feeds.publish(live.identity, feed, publication)
        return FEED_REVEALED, {
            "feed_name": feed.feed_name,
            "feed_args": publication.feed_args,
            "feed_md5": revealed.feed_md5 or "",
            "delivered": revealed.delivered,
        }
    if method is CommandMethod.GET:
        assert isinstance(command.uri, str)
        args = dict(parse_qsl(command.uri.partition("?")[2]))
        document = await owner_feeds.read(live.identity, feed, args)
        return FEED, {
            "feed_name": feed.feed_name,
            "feed_args": args,
            "feed_data": document,
            "feed_md5": feed_md5(document),
        }
    raise no_method(command)


async def _ping(
    ctx: LimeContext, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    if command.method is not CommandMethod.GET or rest:
        raise Unsupported(ReasonCode.COMMAND_METHOD_NOT_SUPPORTED, "Only 'get /ping' exists")
    return PING, _EMPTY


def parse_identity(text: str, domain: str) -> str:
    """A user-supplied identity (``name[@domain]``), normalized; raises ``Invalid``."""
    try:
        return parse_node(text, domain).identity
    except InvalidNode as exc:
        raise Invalid(ErrorId.INVALID_ADDRESS, f"Invalid identity: {exc}") from None


_RESOURCES: Final[dict[str, Handler]] = {
    "apps": apps_resource,
    "consent": consent_resource,
    "presence": _presence,
    "account": _account,
    "contacts": _contacts,
    "delegations": _delegations,
    "feeds": _feeds,
    "keys": _keys,
    "ping": _ping,
    "sessions": sessions_resource,
}
