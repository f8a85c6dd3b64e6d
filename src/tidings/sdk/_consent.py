"""``client.consent``: invites, capability links, relationships, chat and alerts over LIME.

The vocabulary is the Pryv CMC seed's (``create_invite``, ``read_offer``, ``accept_invite``,
...); each call is one command on a ``/consent/...`` resource (docs/consent.md). Answers
are the server's JSON documents as dicts (camelCase keys, times in Unix seconds). A refusal is
a ``ConsentError`` carrying the consent ``error_id`` (``cmc-capability-consumed``, ...) and the
LIME reason code.

``inbox()`` is the live inbox: ``subscribe /consent/inbox?since=CURSOR``, then each event as
the server pushes it (an ``observe`` command). After a reconnection it subscribes again from
the last event it handed over, so no event is missed or given twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote, urlsplit

from tidings.protocol.lime import UNSET, Command, CommandMethod

from ._exceptions import ClientClosed, CommandFailed, ConsentError, InviteRefused, RequestTimeout
from ._signal import Signal
from ._types import decode_document

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["Consent", "ConsentInbox", "InboxEvent", "capability_token"]

EVENT_TYPE: Final = "application/vnd.tidings.consent-event+json"
CHAT_TYPE: Final = "application/vnd.tidings.consent-chat+json"
"""The content type of a chat message delivered as a LIME message (``client.messages()``)."""
INBOX: Final = "/consent/inbox"

Mode = Literal["single-use", "open-link"]
Level = Literal["info", "warning", "critical"]


def capability_token(capability: str) -> str:
    """The token of a capability URL (its last path segment); a bare token is returned as is."""
    if "/" not in capability:
        return capability
    path = urlsplit(capability).path.rstrip("/")
    token = path.rpartition("/")[2]
    if not token:
        raise ValueError(f"no capability token in {capability!r}")
    return token


@dataclass(frozen=True, slots=True)
class InboxEvent:
    """One lifecycle event of the consent inbox: ``seq`` is the identity's cursor (pass it as
    ``since`` to resume after it), ``kind`` one of ``invite-created``, ``invite-accepted``,
    ``invite-refused``, ``invite-invalidated``, ``relationship-created``,
    ``relationship-revoked``, ``relationship-expired``, ``scope-requested``,
    ``scope-accepted``, ``scope-refused``, ``chat``, ``alert``, ``alert-acked``; ``data`` its
    document; ``at`` Unix seconds."""

    seq: int
    kind: str
    data: dict[str, Any]
    at: int

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> InboxEvent:
        return cls(
            seq=int(document["seq"]),
            kind=str(document["kind"]),
            data=dict(document.get("data") or {}),
            at=int(document.get("at", 0)),
        )


def _whole(capability: str) -> dict[str, str]:
    """``capabilityUrl`` for a URL (the server decides whose it is); nothing for a token."""
    return {"capabilityUrl": capability} if "://" in capability else {}


def _segment(value: str) -> str:
    return quote(value, safe="")


class Consent:
    """The consent operations of one ``Client`` (``client.consent``); see the module doc."""

    CHAT_TYPE: Final = CHAT_TYPE
    """The content type of chat messages delivered as LIME messages (``client.messages()``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def _call(
        self, method: CommandMethod, uri: str, resource: Any = None, *, timeout: float | None = None
    ) -> Any:
        try:
            result = await self._client.command(method, uri, resource, timeout=timeout)
        except CommandFailed as failure:
            raise ConsentError.from_failure(failure) from None
        return result.resource

    async def _items(self, uri: str) -> list[dict[str, Any]]:
        answer = await self._call(CommandMethod.GET, uri)
        return list(answer.get("items", [])) if isinstance(answer, dict) else []

    # -- invites (the requester) --------------------------------------------------------------

    async def create_invite(
        self,
        *,
        app_code: str,
        display_name: str,
        consent: Mapping[str, str],
        permissions: Sequence[Mapping[str, str]],
        mode: Mode = "single-use",
        features: Mapping[str, bool] | None = None,
        expires_at: float | None = None,
        grant_expires_at: float | None = None,
    ) -> dict[str, Any]:
        """Publish an invite; the answer is the invite with ``capabilityUrl`` (give it to the
        accepter) and ``capabilityToken`` (the same token, alone). ``consent`` is a language
        map (``{"en": "..."}``), ``permissions`` ``[{"resource": "feed:hr*", "level":
        "read"}, ...]``, ``features`` ``{"chat": bool, "systemMessaging": bool}`` (both true
        by default), ``expires_at`` Unix seconds (60 s to 30 days ahead; default 7 days),
        ``grant_expires_at`` Unix seconds when the relationship made by accepting ends (in the
        future, at most 365 days ahead; default: until revoked)."""
        document: dict[str, Any] = {
            "appCode": app_code,
            "displayName": display_name,
            "consent": dict(consent),
            "requestedPermissions": [dict(p) for p in permissions],
            "mode": mode,
        }
        if features is not None:
            document["features"] = dict(features)
        if expires_at is not None:
            document["expiresAt"] = int(expires_at)
        if grant_expires_at is not None:
            document["grantExpiresAt"] = int(grant_expires_at)
        created: dict[str, Any] = await self._call(CommandMethod.SET, "/consent/invites", document)
        return created

    async def list_invites(self) -> list[dict[str, Any]]:
        """This identity's invites, newest first."""
        return await self._items("/consent/invites")

    async def get_invite_status(self, invite_id: str) -> dict[str, Any]:
        """One invite: ``status`` (pending, accepted, refused, invalidated, expired),
        ``acceptedBy`` ``[{identity, at, relationshipId}]``, ``refusedBy``."""
        invite: dict[str, Any] = await self._call(
            CommandMethod.GET, f"/consent/invites/{_segment(invite_id)}"
        )
        return invite

    async def invalidate_capability(
        self, invite_id: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        """Close the invite's capability link (idempotent); relationships made stay."""
        invite: dict[str, Any] = await self._call(
            CommandMethod.SET,
            f"/consent/invites/{_segment(invite_id)}/invalidate",
            {"reason": reason} if reason is not None else {},
        )
        return invite

    async def wait_for_accept(self, invite_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the invite is accepted and return the relationship it made (for an
        open link: the first one). Raises ``InviteRefused`` when a single-use invite is
        refused, ``ConsentError`` (``cmc-capability-invalidated`` / ``-expired``) when it can
        no longer be accepted, ``RequestTimeout`` after ``timeout`` seconds.

        It follows the live inbox, subscribed before the first look at the invite, so an
        acceptance cannot slip between the look and the wait."""
        try:
            async with asyncio.timeout(timeout), self.inbox(since=None) as events:
                await events.subscribe()
                while True:
                    settled = await self._settled(await self.get_invite_status(invite_id))
                    if settled is not None:
                        return settled
                    async for event in events:
                        if event.data.get("inviteId") == invite_id:
                            break
        except TimeoutError:
            raise RequestTimeout(
                f"invite {invite_id} was not accepted within {timeout} s"
            ) from None

    async def _settled(self, invite: dict[str, Any]) -> dict[str, Any] | None:
        accepted = invite.get("acceptedBy") or []
        if accepted:
            return await self.get_relationship(accepted[0]["relationshipId"])
        status = invite.get("status")
        if status == "refused":
            refused = (invite.get("refusedBy") or [{}])[0]
            raise InviteRefused(invite["id"], refused.get("identity", ""), refused.get("reason"))
        if status in ("invalidated", "expired"):
            raise ConsentError(0, f"the invite is {status}", "", f"cmc-capability-{status}")
        return None

    # -- offers (the accepter) ----------------------------------------------------------------

    async def read_offer(self, capability: str) -> dict[str, Any]:
        """The offer behind a capability URL (or token): ``requester``, ``displayName``,
        ``consent``, ``requestedPermissions``, ``mode``, ``features``, ``expiresAt``."""
        offer: dict[str, Any] = await self._call(
            CommandMethod.GET, f"/consent/offers/{_segment(capability_token(capability))}"
        )
        return offer

    async def accept_invite(
        self, capability: str, *, granted_permissions: Sequence[Mapping[str, str]] | None = None
    ) -> dict[str, Any]:
        """Accept the offer as this identity; returns the relationship. ``granted_permissions``
        (a subset of the requested ones) narrows the grant; default: all requested. A URL is
        sent whole: when it is another server's (a federation peer of this one), the accept
        runs there."""
        document: dict[str, Any] = {"decision": "accept", **_whole(capability)}
        if granted_permissions is not None:
            document["grantedPermissions"] = [dict(p) for p in granted_permissions]
        relationship: dict[str, Any] = await self._call(
            CommandMethod.SET,
            f"/consent/offers/{_segment(capability_token(capability))}",
            document,
        )
        return relationship

    async def refuse_invite(self, capability: str, *, reason: str | None = None) -> None:
        """Refuse the offer; the requester is told (its inbox: ``invite-refused``), also when
        it is another server's."""
        document: dict[str, Any] = {"decision": "refuse", **_whole(capability)}
        if reason is not None:
            document["reason"] = reason
        await self._call(
            CommandMethod.SET,
            f"/consent/offers/{_segment(capability_token(capability))}",
            document,
        )

    # -- relationships ------------------------------------------------------------------------

    async def list_relationships(self) -> list[dict[str, Any]]:
        """Relationships this identity is a side of (requester or accepter), active or not."""
        return await self._items("/consent/relationships")

    async def get_relationship(self, relationship_id: str) -> dict[str, Any]:
        relationship: dict[str, Any] = await self._call(
            CommandMethod.GET, f"/consent/relationships/{_segment(relationship_id)}"
        )
        return relationship

    async def revoke_relationship(
        self, relationship_id: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        """End the relationship (either side); both sides are told, the grant goes at once."""
        relationship: dict[str, Any] = await self._call(
            CommandMethod.DELETE,
            f"/consent/relationships/{_segment(relationship_id)}",
            {"reason": reason} if reason is not None else None,
        )
        return relationship

    async def request_scope_update(
        self,
        relationship_id: str,
        permissions: Sequence[Mapping[str, str]],
        *,
        message: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Ask the accepter for a new set of permissions (requester side)."""
        document: dict[str, Any] = {"requestedPermissions": [dict(p) for p in permissions]}
        if message is not None:
            document["message"] = dict(message)
        request: dict[str, Any] = await self._call(
            CommandMethod.SET,
            f"/consent/relationships/{_segment(relationship_id)}/scope-requests",
            document,
        )
        return request

    async def accept_scope_update(self, scope_request_id: str) -> dict[str, Any]:
        """Accept a scope request (accepter side): the relationship's permissions become the
        requested ones at once."""
        return await self._decide_scope(scope_request_id, "accept")

    async def refuse_scope_update(self, scope_request_id: str) -> dict[str, Any]:
        return await self._decide_scope(scope_request_id, "refuse")

    async def _decide_scope(self, scope_request_id: str, decision: str) -> dict[str, Any]:
        request: dict[str, Any] = await self._call(
            CommandMethod.SET,
            f"/consent/scope-requests/{_segment(scope_request_id)}",
            {"decision": decision},
        )
        return request

    # -- chat and alerts ----------------------------------------------------------------------

    async def send_chat(self, relationship_id: str, text: str) -> dict[str, Any]:
        """Send a chat message (1 to 10240 characters); returns it with its ``seq``. The other
        side gets it in its inbox and as a LIME message of type ``CHAT_TYPE``."""
        message: dict[str, Any] = await self._call(
            CommandMethod.SET,
            f"/consent/relationships/{_segment(relationship_id)}/chat",
            {"text": text},
        )
        return message

    async def chat_history(
        self, relationship_id: str, *, since: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The relationship's chat messages with ``seq`` > ``since``, oldest first."""
        return await self._items(
            f"/consent/relationships/{_segment(relationship_id)}/chat?since={since}&limit={limit}"
        )

    async def send_system_alert(
        self,
        relationship_id: str,
        *,
        level: Level,
        title: Mapping[str, str],
        body: Mapping[str, str],
        ack_required: bool = False,
        ack_id: str | None = None,
    ) -> dict[str, Any]:
        """Send a system alert (``title``/``body`` language maps); returns it with its ``id``."""
        document: dict[str, Any] = {
            "level": level,
            "title": dict(title),
            "body": dict(body),
            "ackRequired": ack_required,
        }
        if ack_id is not None:
            document["ackId"] = ack_id
        alert: dict[str, Any] = await self._call(
            CommandMethod.SET,
            f"/consent/relationships/{_segment(relationship_id)}/alerts",
            document,
        )
        return alert

    async def send_system_ack(self, alert_id: str, ack_id: str) -> dict[str, Any]:
        """Acknowledge an alert (the receiving side) with the ``ackId`` it named."""
        alert: dict[str, Any] = await self._call(
            CommandMethod.SET, f"/consent/alerts/{_segment(alert_id)}/ack", {"ackId": ack_id}
        )
        return alert

    # -- the inbox ----------------------------------------------------------------------------

    async def events(self, *, since: int = 0, limit: int = 100) -> list[InboxEvent]:
        """Inbox events with ``seq`` > ``since`` (one page), oldest first."""
        items = await self._items(f"{INBOX}?since={since}&limit={limit}")
        return [InboxEvent.from_document(item) for item in items]

    def inbox(self, *, since: int | None = 0) -> ConsentInbox:
        """The live inbox: events with ``seq`` > ``since`` first, then each new one as it
        happens; ``since=None`` starts with the events to come. Use ``async with`` (or call
        ``aclose()``) to unsubscribe; iterating ends when the client closes."""
        return ConsentInbox(self._client, since)


class ConsentInbox:
    """``async for event in client.consent.inbox(since=...)``: see ``Consent.inbox``.

    The server keeps one inbox subscription per session: several iterators of one client share
    it (each sees every event, each with its own cursor), and the last one closed unsubscribes.
    """

    def __init__(self, client: Client, since: int | None) -> None:
        self._client = client
        self._cursor = since
        self._queue: deque[InboxEvent] = deque()
        self._arrived = Signal()
        self._subscribed_link: object | None = None
        self._closed = False
        self._stop_watching: Callable[[], None] | None = None

    async def __aenter__(self) -> ConsentInbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ConsentInbox:
        return self

    async def __anext__(self) -> InboxEvent:
        while True:
            if self._closed:
                raise StopAsyncIteration
            try:
                await self.subscribe()
            except ClientClosed:
                raise StopAsyncIteration from None
            while self._queue:
                event = self._queue.popleft()
                if self._cursor is not None and event.seq <= self._cursor:
                    continue  # pushed twice (a backlog and a live push crossed): once is enough
                self._cursor = event.seq
                return event
            await self._wait()

    async def _wait(self) -> None:
        """Until an event arrives or the client changes (connection lost or back, closed)."""
        waits = {
            asyncio.ensure_future(self._arrived.wait()),
            asyncio.ensure_future(self._client._changes.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def subscribe(self) -> None:
        """Subscribe on the current connection unless done already: iterating does it (at
        first, and after a reconnection, since the server forgets subscriptions with the
        connection); call it first to be sure no later event is missed."""
        link = await self._client._wait_live()
        if self._subscribed_link is link:
            return
        if self._stop_watching is None:
            self._stop_watching = self._client._watch_commands(self._observed)
        uri = INBOX if self._cursor is None else f"{INBOX}?since={self._cursor}"
        try:
            answer = await self._client.command(CommandMethod.SUBSCRIBE, uri)
        except CommandFailed as failure:
            raise ConsentError.from_failure(failure) from None
        self._subscribed_link = link
        if self._cursor is None and isinstance(answer.resource, dict):
            self._cursor = int(answer.resource.get("cursor", 0))

    def _observed(self, command: Command) -> bool:
        """Take the server's ``observe`` of the inbox; leave every other command alone."""
        if command.method is not CommandMethod.OBSERVE or not isinstance(command.uri, str):
            return False
        if not command.uri.endswith(INBOX) or command.resource is UNSET:
            return False
        if not self._closed:
            self._queue.append(InboxEvent.from_document(decode_document(command.resource)))
            self._arrived.notify()
        return True

    async def aclose(self) -> None:
        """Stop; the last open inbox of the client unsubscribes (if the connection is up)."""
        if self._closed:
            return
        self._closed = True
        self._arrived.notify()
        if self._stop_watching is None:
            return
        last = self._client._watch_commands_count() == 1
        self._stop_watching()
        if last and self._subscribed_link is not None and self._client.connected:
            # the server drops the subscription with the connection anyway
            with contextlib.suppress(CommandFailed, ClientClosed, RequestTimeout):
                await self._client.command(CommandMethod.UNSUBSCRIBE, INBOX, timeout=5.0)
