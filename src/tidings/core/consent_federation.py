"""Consent across servers (issue 13): a capability URL of another server's invite, accepted or
refused by a user of this one, and the relationship each server then keeps a copy of.

The invite lives on the requester's server (alpha). A user of this server (bob on beta) hands
beta alpha's capability URL: beta recognises a configured peer's base URL in it (any other URL
is only ever a token of this server: beta never fetches an arbitrary URL), reads the offer from
alpha (query ``consent.offer``), records what bob accepts (``ConsentService.begin_remote_accept``)
and asks alpha to accept (query ``consent.accept``, signed: the accepter is the identity beta
vouches for, D12). Alpha accepts in one transaction (single use stays atomic, D5) with the
relationship id beta chose, so that a retry gets the same relationship; beta keeps its copy
with what bob agreed to, never widened by alpha's answer.

After that, each operation (chat, alerts and acks, scope requests and decisions, revoke) is
applied on the server of the side that made it, with the same rules as between two local
users, and carried to the other server as a ``consent-sync`` LIME message from this server's
node, queued in the federation outbox **in the operation's own transaction** (``stage``):
durable and in order. The other server applies it to its copy (``ConsentService.apply_remote``)
and tells its user. The data grant is enforced where the data is: on the accepter's server,
by its copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import msgspec

from ..protocol.lime import Message, encode_envelope
from .consent import (
    ConsentService,
    PendingAccept,
    SyncOp,
    parse_features,
    parse_permissions,
)
from .consent_documents import offer_document, relationship_document
from .consent_model import Relationship
from .errors import ErrorId, Forbidden, Invalid, NotFound, TidingsError, Unavailable
from .federation import outbox_of
from .model import OUTBOX_INSTANCE, QueueEntry
from .ports import QueueTransaction

__all__ = ["SYNC_TYPE", "ConsentFederation", "Peers", "remote_relationship_id"]

log = logging.getLogger("tidings.consent")

SYNC_TYPE: Final = "application/vnd.tidings.consent-sync+json"
"""The content type of an operation for the other side's copy of a relationship."""
_SYNC_OUT: Final = "consent/sync-out/"
"""State keys of the last operation numbered per relationship, for the other server."""
OFFER_PATH: Final = "/consent/offers/"

Query = Callable[[str, dict[str, Any]], Awaitable[Any]]


class Peers(Protocol):
    """What this needs of ``core.federation.Federation``."""

    async def ask(self, domain: str, kind: str, actor: str, **fields: Any) -> Any:
        """A query to ``domain``'s server for ``actor``; its answer, or its refusal raised."""

    def queued(self, domain: str, count: int) -> None:
        """Rows a transaction put in ``domain``'s outbox committed: send them."""


def remote_relationship_id(domain: str, token: str, accepter: str) -> str:
    """The id of the relationship an accept of ``domain``'s capability by ``accepter`` makes:
    the same on every retry (so the invite's server answers a retry with the relationship it
    made), and telling nothing of the token."""
    seed = "\0".join(("tidings-consent-accept", domain, token, accepter)).encode("utf-8")
    return hashlib.sha256(seed).hexdigest()[:32]


def _origin_of(url: str) -> tuple[str, str, str] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.casefold(), str(port or default)


def _token(body: dict[str, Any]) -> str:
    token = body.get("token")
    if not isinstance(token, str):
        raise Forbidden(ErrorId.CAPABILITY_INVALID, "The capability link is not valid")
    return token


class ConsentFederation:
    """This server's side of consent with other servers: the accepter's flow, the queries the
    requester's server answers, and the outbox of operations (``ConsentOutbound``)."""

    def __init__(
        self,
        consent: ConsentService,
        federation: Peers,
        peers: dict[str, str],
        server_node: str,
    ) -> None:
        """``peers``: domain -> base URL of its HTTP API (``[federation] peers``): the only
        URLs a capability of another server may start with."""
        self._consent = consent
        self._federation = federation
        self._peers = peers
        self._server_node = server_node

    # -- the accepter's server ---------------------------------------------------------------

    def names(self, capability: str) -> tuple[str, str] | None:
        """(peer domain, token) when ``capability`` is a capability URL under a peer's base
        URL; None for anything else (a token of this server, or a URL that is not a peer's:
        its token then names nothing here)."""
        if not isinstance(capability, str) or "://" not in capability:
            return None
        found = _origin_of(capability)
        if found is None:
            return None
        path = urlsplit(capability).path
        for domain, base in self._peers.items():
            if domain.casefold() == self._consent.domain or _origin_of(base) != found:
                continue
            prefix = urlsplit(base).path.rstrip("/") + OFFER_PATH
            token = path[len(prefix) :] if path.startswith(prefix) else ""
            if not token or "/" in token:
                raise Forbidden(ErrorId.CAPABILITY_INVALID, "The capability link is not valid")
            return domain, token
        return None

    async def read_offer(self, domain: str, token: str, actor: str) -> dict[str, Any]:
        """The offer document ``domain``'s server shows for ``token``."""
        offer = await self._federation.ask(domain, "consent.offer", actor, token=token)
        if not isinstance(offer, dict):
            raise Unavailable(ErrorId.PEER_REFUSED, f"{domain} answered no offer")
        return offer

    async def accept(
        self, domain: str, token: str, actor: str, granted: list[dict[str, Any]] | None
    ) -> Relationship:
        """Accept ``domain``'s invite as ``actor`` (a user of this server): read the offer,
        record the accept, ask, keep this side. Raises the invite's server's refusal with
        its error id; ``Unavailable`` when it cannot be asked now (the accept stays recorded:
        if that server took it, its ``created`` operation completes it here later). Accepting
        again answers the relationship made (a retry after a lost answer included)."""
        relationship_id = remote_relationship_id(domain, token, actor)
        try:
            return await self._consent.relationship(relationship_id, actor)
        except NotFound:
            pass
        pending = await self._consent.pending_accept(relationship_id)
        if pending is None:
            pending = await self._pending(domain, token, actor, granted, relationship_id)
            await self._consent.begin_remote_accept(pending)
        try:
            answer = await self._federation.ask(
                domain,
                "consent.accept",
                actor,
                token=token,
                granted=[p.to_json() for p in pending.permissions],
                relationshipId=relationship_id,
            )
        except Unavailable:
            raise
        except TidingsError:
            await self._consent.abandon_remote_accept(relationship_id)
            raise
        if not isinstance(answer, dict) or answer.get("id") != relationship_id:
            raise Unavailable(ErrorId.PEER_REFUSED, f"{domain} answered another relationship")
        return await self._consent.mirror_accepted(
            domain,
            relationship_id,
            answer.get("inviteId"),
            answer.get("requester"),
            answer.get("accepter"),
        )

    async def _pending(
        self,
        domain: str,
        token: str,
        actor: str,
        granted: list[dict[str, Any]] | None,
        relationship_id: str,
    ) -> PendingAccept:
        """What ``actor`` accepts: from the offer ``domain``'s server shows, and its choice."""
        offer = await self.read_offer(domain, token, actor)
        requester = offer.get("requester")
        if not isinstance(requester, str) or requester.rpartition("@")[2].casefold() != domain:
            raise Forbidden(ErrorId.CAPABILITY_INVALID, f"{domain} offered for another domain")
        offered = parse_permissions(offer.get("requestedPermissions"))
        chosen = offered if granted is None else parse_permissions(granted)
        expires = offer.get("grantExpiresAt")
        return PendingAccept(
            relationship_id=relationship_id,
            origin=domain,
            accepter=actor,
            requester=requester,
            app_code=str(offer.get("appCode")),
            permissions=chosen,
            features=parse_features(offer.get("features")),
            expires_at=float(expires) if isinstance(expires, int | float) else None,
        )

    async def refuse(self, domain: str, token: str, actor: str, reason: str | None) -> None:
        """Refuse ``domain``'s invite as ``actor``: that server records it and tells the
        requester (D6); the refuser's inbox here hears of it too."""
        answer = await self._federation.ask(
            domain, "consent.refuse", actor, token=token, reason=reason
        )
        invite_id = answer.get("inviteId") if isinstance(answer, dict) else None
        await self._consent.remote_refused(actor, invite_id, reason)

    # -- the requester's server: queries from the accepter's ---------------------------------

    def queries(self) -> dict[str, Query]:
        """The query kinds of ``/federation/v1/query`` this answers."""
        return {
            "consent.offer": self._query_offer,
            "consent.accept": self._query_accept,
            "consent.refuse": self._query_refuse,
        }

    @staticmethod
    def _actor(origin: str, body: dict[str, Any]) -> str:
        """The identity a signed query acts for: one of its origin's (a server speaks only for
        its own users: an accept for anyone else is refused, D12)."""
        actor = body.get("actor")
        if not isinstance(actor, str) or "@" not in actor or "/" in actor:
            raise Invalid(ErrorId.INVALID_ARGUMENT, "actor must be an identity")
        if actor.rpartition("@")[2].casefold() != origin.casefold():
            raise Forbidden(
                ErrorId.FORBIDDEN, f"{origin} asked for {actor}: a server speaks for its own"
            )
        return actor

    async def _query_offer(self, origin: str, body: dict[str, Any]) -> Any:
        self._actor(origin, body)
        return offer_document(await self._consent.read_offer(_token(body)))

    async def _query_accept(self, origin: str, body: dict[str, Any]) -> Any:
        actor = self._actor(origin, body)
        relationship = await self._consent.accept(
            _token(body),
            actor,
            granted=body.get("granted"),
            relationship_id=body.get("relationshipId"),
        )
        return relationship_document(relationship)

    async def _query_refuse(self, origin: str, body: dict[str, Any]) -> Any:
        actor = self._actor(origin, body)
        invite_id = await self._consent.refuse(
            _token(body),
            actor,
            reason=body.get("reason"),
        )
        return {"inviteId": invite_id}

    # -- operations, both ways ---------------------------------------------------------------

    def stage(self, transaction: QueueTransaction, ops: list[SyncOp]) -> None:
        """Number each op for its relationship and queue it in the outbox of its server, in
        the operation's transaction. It never expires: a revoke must reach the other side
        however long its server is away."""
        for sync in ops:
            key = _SYNC_OUT + sync.relationship_id
            seq = int(transaction.state.get(key) or 0) + 1
            transaction.state.put(key, str(seq))
            domain = sync.to.rpartition("@")[2]
            envelope = Message(
                id=f"consent-sync:{sync.relationship_id}:{seq}",
                from_=self._server_node,
                to=sync.to,
                type=SYNC_TYPE,
                content=msgspec.Raw(
                    json.dumps(
                        {**sync.op, "relationshipId": sync.relationship_id, "seq": seq}
                    ).encode("utf-8")
                ),
            )
            entry = QueueEntry(
                outbox_of(domain), OUTBOX_INSTANCE, "", None, False, encode_envelope(envelope)
            )
            transaction.insert([entry], None)

    def staged(self, ops: list[SyncOp]) -> None:
        for sync in ops:
            self._federation.queued(sync.to.rpartition("@")[2], 1)

    async def received(self, origin: str, to: str, content: Any) -> None:
        """An operation ``origin``'s server sent for ``to`` (``PeerEnvelopes``' consent hook):
        applied to this server's copy (a malformed one is dropped, logged)."""
        op = content if isinstance(content, dict) else None
        seq = op.get("seq") if op is not None else None
        if op is None or isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            log.warning("consent: a malformed operation from %s dropped", origin)
            return
        await self._consent.apply_remote(origin, to, seq, op)
