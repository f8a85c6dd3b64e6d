"""The JSON documents of consent objects, on HTTP and LIME: camelCase fields, times in Unix seconds.

One function per object of ``core.consent_model``, and the content type each travels as
(docs/consent.md lists the fields).
"""

from __future__ import annotations

import time
from typing import Any, Final

from .consent_model import (
    Alert,
    ChatMessage,
    InboxEvent,
    Invite,
    Permission,
    Relationship,
    ScopeRequest,
)

__all__ = [
    "ALERT",
    "CHAT",
    "EVENT",
    "INVITE",
    "OFFER",
    "RELATIONSHIP",
    "SCOPE_REQUEST",
    "alert_document",
    "chat_document",
    "event_document",
    "invite_document",
    "offer_document",
    "relationship_document",
    "scope_request_document",
]

INVITE: Final = "application/vnd.tidings.consent-invite+json"
OFFER: Final = "application/vnd.tidings.consent-offer+json"
RELATIONSHIP: Final = "application/vnd.tidings.consent-relationship+json"
SCOPE_REQUEST: Final = "application/vnd.tidings.consent-scope-request+json"
CHAT: Final = "application/vnd.tidings.consent-chat+json"
"""Also the content type of the LIME message that carries a chat message to the other side."""
ALERT: Final = "application/vnd.tidings.consent-alert+json"
EVENT: Final = "application/vnd.tidings.consent-event+json"


def _seconds(at: float | None) -> int | None:
    return None if at is None else int(at)


def _permissions(permissions: tuple[Permission, ...]) -> list[dict[str, str]]:
    return [permission.to_json() for permission in permissions]


def _features(features: dict[str, bool]) -> dict[str, bool]:
    return {
        "chat": features.get("chat", True),
        "systemMessaging": features.get("system_messaging", True),
    }


def _without_none(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if value is not None}


def offer_document(invite: Invite) -> dict[str, Any]:
    """What a capability holder sees: no id, no token, no acceptances. ``grantExpiresAt``
    only when the invite sets one (the relationship then ends at that time)."""
    document: dict[str, Any] = {
        "requester": invite.requester,
        "appCode": invite.app_code,
        "displayName": invite.display_name,
        "consent": invite.consent,
        "requestedPermissions": _permissions(invite.permissions),
        "mode": invite.mode.value,
        "features": _features(invite.features),
        "expiresAt": int(invite.expires_at),
    }
    if invite.grant_expires_at is not None:
        document["grantExpiresAt"] = int(invite.grant_expires_at)
    return document


def invite_document(invite: Invite, now: float | None = None) -> dict[str, Any]:
    """The requester's view of an invite (``status`` as of ``now``: expired is derived)."""
    status = invite.status_at_time(time.time() if now is None else now)
    return {
        "id": invite.id,
        **offer_document(invite),
        "createdAt": int(invite.created_at),
        "status": status.value,
        "acceptedBy": [
            {"identity": a.identity, "at": int(a.at), "relationshipId": a.relationship_id}
            for a in invite.accepted_by
        ],
        "refusedBy": [
            {"identity": r.identity, "at": int(r.at), "reason": r.reason} for r in invite.refused_by
        ],
    }


def relationship_document(relationship: Relationship, now: float | None = None) -> dict[str, Any]:
    """A relationship, its ``state`` as of ``now`` (``expired`` from ``expiresAt`` on, even
    before the expiry sweep records it); ``expiresAt`` only when it expires."""
    state = relationship.state_at(time.time() if now is None else now)
    return _without_none(
        {
            "id": relationship.id,
            "inviteId": relationship.invite_id,
            "requester": relationship.requester,
            "accepter": relationship.accepter,
            "appCode": relationship.app_code,
            "permissions": _permissions(relationship.permissions),
            "features": _features(relationship.features),
            "createdAt": int(relationship.created_at),
            "state": state.value,
            "expiresAt": _seconds(relationship.expires_at),
            "revokedAt": _seconds(relationship.revoked_at),
            "revokedBy": relationship.revoked_by,
            "revokeReason": relationship.revoke_reason,
        }
    )


def scope_request_document(request: ScopeRequest) -> dict[str, Any]:
    return _without_none(
        {
            "id": request.id,
            "relationshipId": request.relationship_id,
            "requestedPermissions": _permissions(request.permissions),
            "message": request.message,
            "createdAt": int(request.created_at),
            "state": request.state.value,
            "decidedAt": _seconds(request.decided_at),
        }
    )


def chat_document(message: ChatMessage) -> dict[str, Any]:
    return {
        "relationshipId": message.relationship_id,
        "seq": message.seq,
        "sender": message.sender,
        "text": message.text,
        "at": int(message.at),
    }


def alert_document(alert: Alert) -> dict[str, Any]:
    return _without_none(
        {
            "id": alert.id,
            "relationshipId": alert.relationship_id,
            "sender": alert.sender,
            "level": alert.level.value,
            "title": alert.title,
            "body": alert.body,
            "ackRequired": alert.ack_required,
            "ackId": alert.ack_id,
            "at": int(alert.at),
            "ackedAt": _seconds(alert.acked_at),
            "ackedBy": alert.acked_by,
        }
    )


def event_document(event: InboxEvent) -> dict[str, Any]:
    return {"seq": event.seq, "kind": event.kind.value, "data": event.data, "at": int(event.at)}
