"""Consent rows in SQL (migrations 0007, 0008): the ``ConsentTable`` over a connection inside a
transaction, the committed reads, and the row codecs they share."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..core.consent_model import (
    Acceptance,
    Alert,
    AlertLevel,
    ChatMessage,
    InboxEvent,
    InboxKind,
    Invite,
    InviteMode,
    InviteStatus,
    Level,
    Permission,
    Refusal,
    Relationship,
    RelationshipState,
    ScopeRequest,
    ScopeState,
)
from ._db import Db, Read

_INVITE: Final = (
    "SELECT id, requester, app_code, display_name, consent, permissions, mode, features,"
    " created_at, expires_at, status, token_hash, status_at, grant_expires_at FROM consent_invites"
)
_RELATIONSHIP: Final = (
    "SELECT id, invite_id, requester, accepter, permissions, features, app_code, created_at,"
    " state, revoked_at, revoked_by, revoke_reason, expires_at FROM consent_relationships"
)
_SCOPE: Final = (
    "SELECT id, relationship_id, permissions, message, created_at, state, decided_at"
    " FROM consent_scope_requests"
)
_ALERT: Final = (
    "SELECT id, relationship_id, sender, level, title, body, ack_required, ack_id, at,"
    " acked_at, acked_by FROM consent_alerts"
)


_RELATIONSHIP_COLUMNS: Final = (
    "invite_id requester accepter permissions features app_code created_at state revoked_at"
    " revoked_by revoke_reason expires_at"
)
_SCOPE_COLUMNS: Final = "relationship_id permissions message created_at state decided_at"
_ALERT_COLUMNS: Final = (
    "relationship_id sender level title body ack_required ack_id at acked_at acked_by"
)


def _replace(columns: str) -> str:
    """``SET`` of an upsert that replaces every column but the key (``INSERT OR REPLACE``)."""
    return ", ".join(f"{column}=excluded.{column}" for column in columns.split())


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _permissions_text(permissions: Sequence[Permission]) -> str:
    return _dumps([p.to_json() for p in permissions])


def _permissions(text: str) -> tuple[Permission, ...]:
    return tuple(Permission(p["resource"], Level(p["level"])) for p in json.loads(text))


def identity_key(identity: str) -> str:
    """The same identity whatever its case (``BOB@x`` accepted is ``bob@x`` accepted)."""
    return identity.casefold()


def _invite(read: Read, row: Any) -> Invite:
    accepted = read(
        "SELECT identity, at, relationship_id FROM consent_acceptances WHERE invite_id=?"
        " ORDER BY at, identity_key",
        (row[0],),
    )
    refused = read(
        "SELECT identity, at, reason FROM consent_refusals WHERE invite_id=? ORDER BY rowid",
        (row[0],),
    )
    return Invite(
        id=row[0],
        requester=row[1],
        app_code=row[2],
        display_name=row[3],
        consent=json.loads(row[4]),
        permissions=_permissions(row[5]),
        mode=InviteMode(row[6]),
        features=json.loads(row[7]),
        created_at=row[8],
        expires_at=row[9],
        status=InviteStatus(row[10]),
        token_hash=bytes(row[11]),
        accepted_by=tuple(Acceptance(a[0], a[1], a[2]) for a in accepted),
        refused_by=tuple(Refusal(r[0], r[1], r[2]) for r in refused),
        status_at=row[12],
        grant_expires_at=row[13],
    )


def _relationship(row: Any) -> Relationship:
    return Relationship(
        id=row[0],
        invite_id=row[1],
        requester=row[2],
        accepter=row[3],
        permissions=_permissions(row[4]),
        features=json.loads(row[5]),
        app_code=row[6],
        created_at=row[7],
        state=RelationshipState(row[8]),
        revoked_at=row[9],
        revoked_by=row[10],
        revoke_reason=row[11],
        expires_at=row[12],
    )


def _scope(row: Any) -> ScopeRequest:
    return ScopeRequest(
        id=row[0],
        relationship_id=row[1],
        permissions=_permissions(row[2]),
        message=None if row[3] is None else json.loads(row[3]),
        created_at=row[4],
        state=ScopeState(row[5]),
        decided_at=row[6],
    )


def _alert(row: Any) -> Alert:
    return Alert(
        id=row[0],
        relationship_id=row[1],
        sender=row[2],
        level=AlertLevel(row[3]),
        title=json.loads(row[4]),
        body=json.loads(row[5]),
        ack_required=bool(row[6]),
        ack_id=row[7],
        at=row[8],
        acked_at=row[9],
        acked_by=row[10],
    )


def _event(row: Any) -> InboxEvent:
    return InboxEvent(row[1], row[0], InboxKind(row[2]), json.loads(row[3]), row[4])


# -- committed reads (the store's reader connection) ---------------------------------------


class ConsentReads:
    """The read half of ``ConsentStore`` over a query function."""

    def __init__(self, read: Read) -> None:
        self._read = read

    def invite(self, invite_id: str) -> Invite | None:
        rows = self._read(f"{_INVITE} WHERE id=?", (invite_id,))
        return _invite(self._read, rows[0]) if rows else None

    def invite_by_token(self, token_hash: bytes) -> Invite | None:
        rows = self._read(f"{_INVITE} WHERE token_hash=?", (token_hash,))
        return _invite(self._read, rows[0]) if rows else None

    def invites_of(self, requester: str) -> list[Invite]:
        rows = self._read(f"{_INVITE} WHERE requester=? ORDER BY created_at, id", (requester,))
        return [_invite(self._read, row) for row in rows]

    def relationship(self, relationship_id: str) -> Relationship | None:
        rows = self._read(f"{_RELATIONSHIP} WHERE id=?", (relationship_id,))
        return _relationship(rows[0]) if rows else None

    def relationships_of(self, identity: str) -> list[Relationship]:
        rows = self._read(
            f"{_RELATIONSHIP} WHERE requester=? OR accepter=? ORDER BY created_at, id",
            (identity, identity),
        )
        return [_relationship(row) for row in rows]

    def relationships_between(self, requester: str, accepter: str) -> list[Relationship]:
        rows = self._read(
            f"{_RELATIONSHIP} WHERE requester=? AND accepter=? AND state=? ORDER BY created_at, id",
            (requester, accepter, RelationshipState.ACTIVE.value),
        )
        return [_relationship(row) for row in rows]

    def relationships_expiring(self, limit: int) -> list[Relationship]:
        rows = self._read(
            f"{_RELATIONSHIP} WHERE state='active' AND expires_at IS NOT NULL"
            " ORDER BY expires_at, id LIMIT ?",
            (limit,),
        )
        return [_relationship(row) for row in rows]

    def scope_request(self, scope_request_id: str) -> ScopeRequest | None:
        rows = self._read(f"{_SCOPE} WHERE id=?", (scope_request_id,))
        return _scope(rows[0]) if rows else None

    def scope_requests(self, relationship_id: str) -> list[ScopeRequest]:
        rows = self._read(
            f"{_SCOPE} WHERE relationship_id=? ORDER BY created_at, id", (relationship_id,)
        )
        return [_scope(row) for row in rows]

    def chat(self, relationship_id: str, since: int, limit: int) -> list[ChatMessage]:
        rows = self._read(
            "SELECT seq, relationship_id, sender, text, at FROM consent_chat"
            " WHERE relationship_id=? AND seq>? ORDER BY seq LIMIT ?",
            (relationship_id, since, limit),
        )
        return [ChatMessage(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def alert(self, alert_id: str) -> Alert | None:
        rows = self._read(f"{_ALERT} WHERE id=?", (alert_id,))
        return _alert(rows[0]) if rows else None

    def inbox(self, identity: str, since: int, limit: int) -> list[InboxEvent]:
        rows = self._read(
            "SELECT identity, seq, kind, data, at FROM consent_inbox"
            " WHERE identity=? AND seq>? ORDER BY seq LIMIT ?",
            (identity, since, limit),
        )
        return [_event(row) for row in rows]


# -- inside a transaction (the writer's connection) ----------------------------------------


class ConsentTable:
    """``core.ports.ConsentTable`` over the writer's connection, inside its transaction."""

    __slots__ = ("_connection", "_lock", "_reads")

    def __init__(self, connection: Db, lock: Callable[[str], None] | None = None) -> None:
        """``lock`` takes ``Db.lock`` for the transaction (once per key); by default the
        connection's."""
        self._connection = connection
        self._lock = connection.lock if lock is None else lock
        self._reads = ConsentReads(self._query)

    def _query(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        return self._connection.execute(sql, parameters).fetchall()

    def invite(self, invite_id: str) -> Invite | None:
        return self._reads.invite(invite_id)

    def invite_by_token(self, token_hash: bytes) -> Invite | None:
        return self._reads.invite_by_token(token_hash)

    def add_invite(self, invite: Invite) -> None:
        self._connection.execute(
            "INSERT INTO consent_invites (id, requester, token_hash, app_code, display_name,"
            " consent, permissions, mode, features, created_at, expires_at, status, status_at,"
            " grant_expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                invite.id,
                invite.requester,
                invite.token_hash,
                invite.app_code,
                invite.display_name,
                _dumps(invite.consent),
                _permissions_text(invite.permissions),
                invite.mode.value,
                _dumps(invite.features),
                invite.created_at,
                invite.expires_at,
                invite.status.value,
                invite.status_at,
                invite.grant_expires_at,
            ),
        )

    def set_invite_status(
        self, invite_id: str, status: InviteStatus, at: float, *, expected: InviteStatus
    ) -> bool:
        cursor = self._connection.execute(
            "UPDATE consent_invites SET status=?, status_at=? WHERE id=? AND status=?",
            (status.value, at, invite_id, expected.value),
        )
        return cursor.rowcount == 1

    def add_acceptance(self, invite_id: str, acceptance: Acceptance) -> bool:
        cursor = self._connection.execute(
            "INSERT INTO consent_acceptances (invite_id, identity_key, identity, at,"
            " relationship_id) VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
            (
                invite_id,
                identity_key(acceptance.identity),
                acceptance.identity,
                acceptance.at,
                acceptance.relationship_id,
            ),
        )
        return cursor.rowcount == 1

    def add_refusal(self, invite_id: str, refusal: Refusal) -> None:
        self._connection.execute(
            "INSERT INTO consent_refusals (invite_id, identity, at, reason) VALUES (?,?,?,?)",
            (invite_id, refusal.identity, refusal.at, refusal.reason),
        )

    def relationship(self, relationship_id: str) -> Relationship | None:
        # read inside a transaction to be written back (revoke, scope, expiry) or to decide
        # (chat, alerts): one change of a relationship at a time, on every node
        self._lock(f"consent-relationship:{relationship_id}")
        return self._reads.relationship(relationship_id)

    def put_relationship(self, relationship: Relationship) -> None:
        r = relationship
        self._connection.execute(
            "INSERT INTO consent_relationships (id, invite_id, requester, accepter,"
            " permissions, features, app_code, created_at, state, revoked_at, revoked_by,"
            " revoke_reason, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
            f" ON CONFLICT (id) DO UPDATE SET {_replace(_RELATIONSHIP_COLUMNS)}",
            (
                r.id,
                r.invite_id,
                r.requester,
                r.accepter,
                _permissions_text(r.permissions),
                _dumps(r.features),
                r.app_code,
                r.created_at,
                r.state.value,
                r.revoked_at,
                r.revoked_by,
                r.revoke_reason,
                r.expires_at,
            ),
        )

    def scope_request(self, scope_request_id: str) -> ScopeRequest | None:
        self._lock(f"consent-scope:{scope_request_id}")  # decided once
        return self._reads.scope_request(scope_request_id)

    def put_scope_request(self, request: ScopeRequest) -> None:
        self._connection.execute(
            "INSERT INTO consent_scope_requests (id, relationship_id, permissions,"
            " message, created_at, state, decided_at) VALUES (?,?,?,?,?,?,?)"
            f" ON CONFLICT (id) DO UPDATE SET {_replace(_SCOPE_COLUMNS)}",
            (
                request.id,
                request.relationship_id,
                _permissions_text(request.permissions),
                None if request.message is None else _dumps(request.message),
                request.created_at,
                request.state.value,
                request.decided_at,
            ),
        )

    def add_chat(self, relationship_id: str, sender: str, text: str, at: float) -> ChatMessage:
        # the next seq of the relationship, committed in seq order
        self._lock(f"consent-relationship:{relationship_id}")
        row = self._connection.execute(
            "SELECT coalesce(max(seq), 0) FROM consent_chat WHERE relationship_id=?",
            (relationship_id,),
        ).fetchone()
        seq = int(row[0]) + 1
        self._connection.execute(
            "INSERT INTO consent_chat (relationship_id, seq, sender, text, at) VALUES (?,?,?,?,?)",
            (relationship_id, seq, sender, text, at),
        )
        return ChatMessage(seq, relationship_id, sender, text, at)

    def alert(self, alert_id: str) -> Alert | None:
        self._lock(f"consent-alert:{alert_id}")  # acknowledged once
        return self._reads.alert(alert_id)

    def put_alert(self, alert: Alert) -> None:
        a = alert
        self._connection.execute(
            "INSERT INTO consent_alerts (id, relationship_id, sender, level, title,"
            " body, ack_required, ack_id, at, acked_at, acked_by) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
            f" ON CONFLICT (id) DO UPDATE SET {_replace(_ALERT_COLUMNS)}",
            (
                a.id,
                a.relationship_id,
                a.sender,
                a.level.value,
                _dumps(a.title),
                _dumps(a.body),
                int(a.ack_required),
                a.ack_id,
                a.at,
                a.acked_at,
                a.acked_by,
            ),
        )

    def add_event(
        self, identity: str, kind: InboxKind, data: dict[str, Any], at: float
    ) -> InboxEvent:
        # the next seq of the inbox, committed in seq order (a reader's cursor skips nothing)
        self._lock(f"consent-inbox:{identity}")
        row = self._connection.execute(
            "SELECT coalesce(max(seq), 0) FROM consent_inbox WHERE identity=?", (identity,)
        ).fetchone()
        seq = int(row[0]) + 1
        self._connection.execute(
            "INSERT INTO consent_inbox (identity, seq, kind, data, at) VALUES (?,?,?,?,?)",
            (identity, seq, kind.value, _dumps(data), at),
        )
        return InboxEvent(seq, identity, kind, json.loads(_dumps(data)), at)
