"""Consent rows in memory: the state, its ``ConsentTable`` and its committed reads."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from ..core.consent_model import (
    Acceptance,
    Alert,
    ChatMessage,
    InboxEvent,
    InboxKind,
    Invite,
    InviteStatus,
    Refusal,
    Relationship,
    RelationshipState,
    ScopeRequest,
)
from ._consent_sql import identity_key


class ConsentState:
    """Every consent row (copied for rollback: values are frozen, containers are not)."""

    __slots__ = (
        "acceptances",
        "alerts",
        "chat",
        "inbox",
        "invites",
        "refusals",
        "relationships",
        "scope_requests",
        "tokens",
    )

    def __init__(self) -> None:
        self.invites: dict[str, Invite] = {}
        self.tokens: dict[bytes, str] = {}
        self.acceptances: dict[str, dict[str, Acceptance]] = {}
        self.refusals: dict[str, list[Refusal]] = {}
        self.relationships: dict[str, Relationship] = {}
        self.scope_requests: dict[str, ScopeRequest] = {}
        self.chat: dict[str, list[ChatMessage]] = {}
        self.alerts: dict[str, Alert] = {}
        self.inbox: dict[str, list[InboxEvent]] = {}

    def copy(self) -> ConsentState:
        other = ConsentState()
        other.invites = dict(self.invites)
        other.tokens = dict(self.tokens)
        other.acceptances = {key: dict(rows) for key, rows in self.acceptances.items()}
        other.refusals = {key: list(rows) for key, rows in self.refusals.items()}
        other.relationships = dict(self.relationships)
        other.scope_requests = dict(self.scope_requests)
        other.chat = {key: list(rows) for key, rows in self.chat.items()}
        other.alerts = dict(self.alerts)
        other.inbox = {key: list(rows) for key, rows in self.inbox.items()}
        return other

    # -- reads ----------------------------------------------------------------------------

    def invite(self, invite_id: str) -> Invite | None:
        invite = self.invites.get(invite_id)
        if invite is None:
            return None
        accepted = sorted(
            self.acceptances.get(invite_id, {}).items(), key=lambda item: (item[1].at, item[0])
        )
        return replace(
            invite,
            accepted_by=tuple(a for _, a in accepted),
            refused_by=tuple(self.refusals.get(invite_id, ())),
        )

    def invite_by_token(self, token_hash: bytes) -> Invite | None:
        invite_id = self.tokens.get(token_hash)
        return None if invite_id is None else self.invite(invite_id)

    def invites_of(self, requester: str) -> list[Invite]:
        found = [i for i in self.invites.values() if i.requester == requester]
        found.sort(key=lambda i: (i.created_at, i.id))
        return [invite for i in found if (invite := self.invite(i.id)) is not None]

    def relationships_of(self, identity: str) -> list[Relationship]:
        found = [r for r in self.relationships.values() if r.party(identity)]
        return sorted(found, key=lambda r: (r.created_at, r.id))

    def relationships_between(self, requester: str, accepter: str) -> list[Relationship]:
        found = [
            r
            for r in self.relationships.values()
            if r.requester == requester
            and r.accepter == accepter
            and r.state is RelationshipState.ACTIVE
        ]
        return sorted(found, key=lambda r: (r.created_at, r.id))

    def relationships_expiring(self, limit: int) -> list[Relationship]:
        found = [
            r
            for r in self.relationships.values()
            if r.state is RelationshipState.ACTIVE and r.expires_at is not None
        ]
        found.sort(key=lambda r: (r.expires_at or 0.0, r.id))
        return found[: max(limit, 0)]

    def scope_requests_of(self, relationship_id: str) -> list[ScopeRequest]:
        found = [s for s in self.scope_requests.values() if s.relationship_id == relationship_id]
        return sorted(found, key=lambda s: (s.created_at, s.id))

    def chat_since(self, relationship_id: str, since: int, limit: int) -> list[ChatMessage]:
        return [m for m in self.chat.get(relationship_id, ()) if m.seq > since][: max(limit, 0)]

    def inbox_since(self, identity: str, since: int, limit: int) -> list[InboxEvent]:
        found = [e for e in self.inbox.get(identity, ()) if e.seq > since][: max(limit, 0)]
        return [replace(e, data=copy.deepcopy(e.data)) for e in found]


class ConsentTable:
    """``core.ports.ConsentTable`` over a ``ConsentState``."""

    __slots__ = ("_state",)

    def __init__(self, state: ConsentState) -> None:
        self._state = state

    def invite(self, invite_id: str) -> Invite | None:
        return self._state.invite(invite_id)

    def invite_by_token(self, token_hash: bytes) -> Invite | None:
        return self._state.invite_by_token(token_hash)

    def add_invite(self, invite: Invite) -> None:
        state = self._state
        if invite.id in state.invites or invite.token_hash in state.tokens:
            raise ValueError(f"invite {invite.id} (or its token) is kept already")
        state.invites[invite.id] = replace(invite, accepted_by=(), refused_by=())
        state.tokens[invite.token_hash] = invite.id

    def set_invite_status(
        self, invite_id: str, status: InviteStatus, at: float, *, expected: InviteStatus
    ) -> bool:
        invite = self._state.invites.get(invite_id)
        if invite is None or invite.status is not expected:
            return False
        self._state.invites[invite_id] = replace(invite, status=status, status_at=at)
        return True

    def add_acceptance(self, invite_id: str, acceptance: Acceptance) -> bool:
        rows = self._state.acceptances.setdefault(invite_id, {})
        key = identity_key(acceptance.identity)
        if key in rows:
            return False
        rows[key] = acceptance
        return True

    def add_refusal(self, invite_id: str, refusal: Refusal) -> None:
        self._state.refusals.setdefault(invite_id, []).append(refusal)

    def relationship(self, relationship_id: str) -> Relationship | None:
        return self._state.relationships.get(relationship_id)

    def put_relationship(self, relationship: Relationship) -> None:
        self._state.relationships[relationship.id] = relationship

    def scope_request(self, scope_request_id: str) -> ScopeRequest | None:
        return self._state.scope_requests.get(scope_request_id)

    def put_scope_request(self, request: ScopeRequest) -> None:
        self._state.scope_requests[request.id] = request

    def add_chat(self, relationship_id: str, sender: str, text: str, at: float) -> ChatMessage:
        rows = self._state.chat.setdefault(relationship_id, [])
        message = ChatMessage(len(rows) + 1, relationship_id, sender, text, at)
        rows.append(message)
        return message

    def alert(self, alert_id: str) -> Alert | None:
        return self._state.alerts.get(alert_id)

    def put_alert(self, alert: Alert) -> None:
        self._state.alerts[alert.id] = alert

    def add_event(
        self, identity: str, kind: InboxKind, data: dict[str, Any], at: float
    ) -> InboxEvent:
        rows = self._state.inbox.setdefault(identity, [])
        event = InboxEvent(len(rows) + 1, identity, kind, copy.deepcopy(data), at)
        rows.append(event)
        return replace(event, data=copy.deepcopy(data))
