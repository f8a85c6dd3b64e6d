"""An in-memory store: every store port, nothing durable, for core tests and quick experiments.

It passes the same contract suite as SQLite (tests/contract), so core code tested over it behaves
the same over a real store. Writes apply at once on the event loop; completions run on a later
loop iteration, in submission order, as a real store's would. A transaction snapshots the state
it may change and restores it if the work raises (O(size of the store): this adapter is for
tests, not for production).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ..core.consent_model import (
    Alert,
    ChatMessage,
    InboxEvent,
    Invite,
    Relationship,
    ScopeRequest,
)
from ..core.errors import Conflict, ErrorId
from ..core.model import (
    KEPT_PUBLICATIONS,
    Account,
    AppendResult,
    ExpiredRow,
    GapState,
    KeyPublication,
    OverflowPolicy,
    PersistenceState,
    PersistStep,
    QueuedEnvelope,
    QueueEntry,
    QueueKind,
    QueueRow,
    QueueSnapshotEntry,
    RoutingRule,
    SessionRecord,
    WriteCounts,
)
from ..core.ports import QueueTransaction
from ._consent_memory import ConsentState, ConsentTable

__all__ = ["MemoryStore"]

T = TypeVar("T")
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Row:
    sender: str
    message_id: str | None
    needs_ack: bool
    payload: bytes
    enqueued_at: float
    kind: int
    expires_at: float | None = None

    @property
    def head(self) -> tuple[str, str | None, bool]:
        """(sender, message id, needs acknowledgement): a ``QueueRow`` without its seq."""
        return (self.sender, self.message_id, self.needs_ack)


@dataclass(slots=True)
class _Session:
    routing_rule: RoutingRule
    queue_limit: int | None
    policy: OverflowPolicy | None
    last_seen: float


class _State:
    """Everything a transaction may change (copied for rollback)."""

    __slots__ = ("app_state", "gaps", "message_ids", "next_seq", "persistence", "queues", "where")

    def __init__(self) -> None:
        self.queues: dict[Key, dict[int, _Row]] = {}
        self.where: dict[int, Key] = {}
        self.next_seq = 1
        self.message_ids: dict[tuple[str, str], float] = {}
        self.gaps: dict[Key, tuple[int, list[dict[str, str]]]] = {}
        self.persistence: dict[Key, tuple[str | None, str | None]] = {}
        self.app_state: dict[str, str] = {}

    def copy(self) -> _State:
        other = _State()
        other.queues = {key: dict(rows) for key, rows in self.queues.items()}
        other.where = dict(self.where)
        other.next_seq = self.next_seq
        other.message_ids = dict(self.message_ids)
        other.gaps = {key: (d, list(lost)) for key, (d, lost) in self.gaps.items()}
        other.persistence = dict(self.persistence)
        other.app_state = dict(self.app_state)
        return other

    def add(self, key: Key, row: _Row, seq: int | None = None) -> int:
        if seq is None:
            seq = self.next_seq
        self.next_seq = max(self.next_seq, seq + 1)
        self.queues.setdefault(key, {})[seq] = row
        self.where[seq] = key
        return seq

    def remove(self, seq: int) -> bool:
        key = self.where.pop(seq, None)
        if key is None:
            return False
        rows = self.queues[key]
        del rows[seq]
        if not rows:
            del self.queues[key]
        return True

    def rows(self, key: Key) -> list[tuple[int, _Row]]:
        return sorted(self.queues.get(key, {}).items())


class MemoryStore:
    """``MessageStore``, ``AccountStore``, ``RosterStore``, ``FeedStore``, ``RequestStore``,
    ``KeyDirectoryStore`` and ``ConsentStore``."""

    def __init__(self) -> None:
        self._state = _State()
        self._sessions: dict[Key, _Session] = {}
        self._accounts: dict[str, Account] = {}
        self._keys: dict[bytes, str] = {}
        self._contacts: dict[str, dict[str, str]] = {}
        self._delegations: dict[str, dict[str, str]] = {}
        self._feeds: dict[tuple[str, str], str] = {}
        self._key_history: dict[str, list[KeyPublication]] = {}
        """Every publication per signId, oldest first."""
        self._key_owners: dict[str, set[str]] = {}
        """The signIds each identity published."""
        self._revocations: dict[str, tuple[int, str]] = {}
        self._consent = ConsentState()

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing to start: every operation completes on the loop."""

    def close(self) -> None:
        """Nothing to commit: the state goes with the process."""

    def write_counts(self) -> WriteCounts:
        """Memory commits nothing."""
        return WriteCounts()

    def commit_histograms(self) -> None:
        return None

    def _complete(self, done: Callable[[Any], None] | None, result: Any) -> None:
        if done is not None:
            asyncio.get_running_loop().call_soon(done, result)

    # -- transactions -------------------------------------------------------------------------

    def transact(
        self, work: Callable[[QueueTransaction], T], done: Callable[[T | BaseException], None]
    ) -> None:
        saved_state = self._state.copy()
        saved_sessions = dict(self._sessions)
        transaction = _Transaction(self, time.time())
        try:
            result: T | BaseException = work(transaction)
        except Exception as exc:
            self._state = saved_state
            self._sessions = saved_sessions
            if transaction.saved_consent is not None:
                self._consent = transaction.saved_consent
            result = exc
        self._complete(done, result)

    # -- messages -----------------------------------------------------------------------------

    def append(
        self,
        entries: Sequence[QueueEntry],
        dedupe: tuple[str, str] | None,
        done: Callable[[AppendResult | BaseException], None],
    ) -> None:
        seqs = _insert_once(self._state, entries, dedupe, time.time())
        self._complete(done, AppendResult(True) if seqs is None else AppendResult(False, seqs))

    def acknowledge(
        self,
        identity: str,
        instance: str,
        sender: str,
        message_id: str,
        done: Callable[[int | BaseException], None],
    ) -> None:
        state = self._state
        seqs = [
            seq
            for seq, row in state.queues.get((identity, instance), {}).items()
            if row.sender == sender and row.message_id == message_id
        ]
        for seq in seqs:
            state.remove(seq)
        self._complete(done, len(seqs))

    def discard(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self._state.remove(seq)

    def touch_session(self, identity: str, instance: str, last_seen: float) -> None:
        session = self._sessions.get((identity, instance))
        if session is not None:
            session.last_seen = last_seen

    async def queued_at(
        self, sender: str, message_id: str, sessions: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        found = {}
        for key in sessions:
            for seq, row in self._state.queues.get(key, {}).items():
                if row.sender == sender and row.message_id == message_id:
                    found[key] = seq
                    break
        return found

    async def was_stored(self, sender: str, message_id: str) -> bool:
        return (sender, message_id) in self._state.message_ids

    async def drain(self) -> None:
        """Nothing refuses a write after ``close``: what completions write is kept anyway."""
        await self.barrier()

    async def barrier(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._complete(future.set_result, None)  # after every completion queued before it
        await future

    async def backlog(
        self, identity: str, instance: str, after_seq: int, limit: int
    ) -> list[QueuedEnvelope]:
        rows = [
            QueuedEnvelope(
                seq, r.sender, r.message_id, r.needs_ack, r.payload, r.enqueued_at, r.expires_at
            )
            for seq, r in self._state.rows((identity, instance))
            if seq > after_seq
        ]
        return rows[:limit]

    async def claim_unclaimed(self, identity: str, instance: str) -> int:
        state = self._state
        rows = state.queues.pop((identity, ""), {})
        target = state.queues.setdefault((identity, instance), {})
        for seq, row in rows.items():
            target[seq] = row
            state.where[seq] = (identity, instance)
        if not target:
            del state.queues[(identity, instance)]
        return len(rows)

    async def load_sessions(self) -> list[SessionRecord]:
        depths = {key: len(rows) for key, rows in self._state.queues.items()}
        records = []
        for (identity, instance), s in self._sessions.items():
            depth = depths.pop((identity, instance), 0)
            records.append(
                SessionRecord(
                    identity, instance, s.routing_rule, s.queue_limit, s.policy, s.last_seen, depth
                )
            )
        for (identity, instance), depth in depths.items():
            records.append(
                SessionRecord(identity, instance, RoutingRule.IDENTITY, None, None, 0.0, depth)
            )
        return records

    async def load_session(self, identity: str, instance: str) -> SessionRecord | None:
        depth = len(self._state.queues.get((identity, instance), ()))
        s = self._sessions.get((identity, instance))
        if s is None:
            if not depth:
                return None
            return SessionRecord(identity, instance, RoutingRule.IDENTITY, None, None, 0.0, depth)
        return SessionRecord(
            identity, instance, s.routing_rule, s.queue_limit, s.policy, s.last_seen, depth
        )

    async def save_session(self, record: SessionRecord) -> None:
        self._sessions[(record.identity, record.instance)] = _Session(
            record.routing_rule, record.queue_limit, record.policy, record.last_seen
        )

    async def forget_message_ids(self, older_than: float, limit: int) -> int:
        """The oldest keys first, as the SQL stores: a dict keeps insertion order, which is
        the order of ``now`` (a backward clock step only delays the keys stored after it)."""
        ids = self._state.message_ids
        old: list[tuple[str, str]] = []
        for key, accepted_at in ids.items():
            if accepted_at >= older_than or len(old) == limit:
                break
            old.append(key)
        for key in old:
            del ids[key]
        return len(old)

    async def queue_snapshot(
        self, identity: str, instance: str, limit: int
    ) -> list[QueueSnapshotEntry]:
        rows = [
            QueueSnapshotEntry(seq, r.kind, r.sender, r.message_id, r.payload, r.enqueued_at)
            for seq, r in self._state.rows((identity, instance))
            if r.kind != QueueKind.NOTICE
        ]
        return rows[:limit]

    async def begin_persistence(self, identity: str, instance: str) -> PersistenceState:
        nonce = base64.b64encode(os.urandom(15)).decode("ascii")
        previous = self._state.persistence.get((identity, instance))
        crashed = previous is not None and previous[0] is not None
        memento = previous[1] if previous is not None else None
        self._state.persistence[(identity, instance)] = (nonce, memento)
        return PersistenceState(nonce, memento, crashed)

    async def end_persistence(self, identity: str, instance: str, nonce: str) -> bool:
        current = self._state.persistence.get((identity, instance))
        if current is None or current == (None, None):
            return True
        if current[0] != nonce:
            return False
        self._state.persistence[(identity, instance)] = (None, None)
        return True

    async def persistence_of(self, identity: str) -> dict[str, PersistenceState]:
        return {
            instance: PersistenceState(nonce, memento)
            for (owner, instance), (nonce, memento) in self._state.persistence.items()
            if owner == identity
        }

    async def idle_sessions(self, seen_before: float) -> list[tuple[str, str]]:
        return [
            key
            for key, session in self._sessions.items()
            if session.last_seen < seen_before and key[1] != ""
        ]

    # -- app state (read outside transactions; written through ``transact``) ----------------

    async def app_state_get(self, key: str) -> str | None:
        return self._state.app_state.get(key)

    async def app_state_keys(self, prefix: str) -> list[str]:
        return sorted(key for key in self._state.app_state if key.startswith(prefix))

    # -- consent (written through ``transact``) -----------------------------------------------

    async def consent_invite(self, invite_id: str) -> Invite | None:
        return self._consent.invite(invite_id)

    async def consent_invite_by_token(self, token_hash: bytes) -> Invite | None:
        return self._consent.invite_by_token(token_hash)

    async def consent_invites_of(self, requester: str) -> list[Invite]:
        return self._consent.invites_of(requester)

    async def consent_relationship(self, relationship_id: str) -> Relationship | None:
        return self._consent.relationships.get(relationship_id)

    async def consent_relationships_of(self, identity: str) -> list[Relationship]:
        return self._consent.relationships_of(identity)

    async def consent_relationships_between(
        self, requester: str, accepter: str
    ) -> list[Relationship]:
        return self._consent.relationships_between(requester, accepter)

    async def consent_relationships_expiring(self, limit: int) -> list[Relationship]:
        return self._consent.relationships_expiring(limit)

    async def consent_scope_request(self, scope_request_id: str) -> ScopeRequest | None:
        return self._consent.scope_requests.get(scope_request_id)

    async def consent_scope_requests(self, relationship_id: str) -> list[ScopeRequest]:
        return self._consent.scope_requests_of(relationship_id)

    async def consent_chat(self, relationship_id: str, since: int, limit: int) -> list[ChatMessage]:
        return self._consent.chat_since(relationship_id, since, limit)

    async def consent_alert(self, alert_id: str) -> Alert | None:
        return self._consent.alerts.get(alert_id)

    async def consent_inbox(self, identity: str, since: int, limit: int) -> list[InboxEvent]:
        return self._consent.inbox_since(identity, since, limit)

    # -- accounts -----------------------------------------------------------------------------

    async def create_account(self, name: str, password_hash: str | None) -> None:
        if name in self._accounts:
            raise Conflict(ErrorId.ACCOUNT_EXISTS, f"The account {name!r} exists already")
        self._accounts[name] = Account(name, password_hash, {}, time.time())

    async def get_account(self, name: str) -> Account | None:
        account = self._accounts.get(name)
        if account is None:
            return None
        return Account(
            account.name, account.password_hash, dict(account.profile), account.created_at
        )

    async def has_account(self, name: str) -> bool:
        return name in self._accounts

    async def list_accounts(self) -> list[Account]:
        return [a for name in sorted(self._accounts) if (a := await self.get_account(name))]

    async def delete_account(self, name: str) -> bool:
        self._contacts.pop(name, None)
        self._delegations.pop(name, None)
        if self._accounts.pop(name, None) is None:
            return False
        for key in [k for k, owner in self._keys.items() if owner == name]:
            del self._keys[key]
        return True

    async def update_account(
        self, name: str, *, password_hash: str | None = None, profile: dict[str, Any] | None = None
    ) -> None:
        account = self._accounts.get(name)
        if account is None:
            return
        if password_hash is not None:
            account.password_hash = password_hash
        if profile is not None:
            account.profile = json.loads(json.dumps(profile))

    async def add_key(self, name: str, key_hash: bytes, label: str) -> None:
        if name not in self._accounts:
            raise Conflict(ErrorId.ACCOUNT_NOT_FOUND, f"There is no account {name!r}")
        self._keys[key_hash] = name

    async def account_for_key(self, key_hash: bytes) -> str | None:
        return self._keys.get(key_hash)

    def key_owner(self, key_hash: bytes) -> str | None:
        return self._keys.get(key_hash)

    # -- feeds --------------------------------------------------------------------------------

    async def feed_document(self, name: str, args: Mapping[str, str]) -> dict[str, Any] | None:
        text = self._feeds.get((name, _args_key(args)))
        return None if text is None else dict(json.loads(text))

    async def save_feed_document(
        self, name: str, args: Mapping[str, str], document: dict[str, Any]
    ) -> None:
        text = json.dumps(document, ensure_ascii=False, allow_nan=False)
        self._feeds[(name, _args_key(args))] = text

    # -- roster -------------------------------------------------------------------------------

    async def contacts(self, owner: str) -> list[dict[str, Any]]:
        docs = self._contacts.get(owner, {})
        return [json.loads(docs[identity]) for identity in sorted(docs)]

    async def put_contact(self, owner: str, contact: dict[str, Any]) -> None:
        self._contacts.setdefault(owner, {})[contact["identity"]] = json.dumps(contact)

    async def delete_contact(self, owner: str, identity: str) -> bool:
        return self._contacts.get(owner, {}).pop(identity, None) is not None

    async def delegations(self, owner: str) -> list[dict[str, Any]]:
        docs = self._delegations.get(owner, {})
        return [json.loads(docs[target]) for target in sorted(docs)]

    async def put_delegation(self, owner: str, delegation: dict[str, Any]) -> None:
        self._delegations.setdefault(owner, {})[delegation["target"]] = json.dumps(delegation)

    async def delete_delegation(self, owner: str, target: str) -> bool:
        return self._delegations.get(owner, {}).pop(target, None) is not None

    # -- key directory ------------------------------------------------------------------------

    async def add_key_publication(self, publication: KeyPublication) -> None:
        history = self._key_history.setdefault(publication.sign_id, [])
        if history and history[-1].published >= publication.published:
            raise Conflict(
                ErrorId.KEY_STALE,
                f"A publication of {publication.sign_id} as recent as {publication.published}"
                f" is kept already ({history[-1].published})",
            )
        history.append(replace(publication, revoked=None))
        history.sort(key=lambda kept: kept.published)
        del history[:-KEPT_PUBLICATIONS]
        self._key_owners.setdefault(publication.identity, set()).add(publication.sign_id)

    def _with_revocation(self, publication: KeyPublication) -> KeyPublication:
        revocation = self._revocations.get(publication.sign_id)
        return publication if revocation is None else replace(publication, revoked=revocation[0])

    async def key_publication(self, sign_id: str) -> KeyPublication | None:
        history = self._key_history.get(sign_id)
        return self._with_revocation(history[-1]) if history else None

    async def key_publications_of(self, identity: str) -> list[KeyPublication]:
        found = []
        for sign_id in sorted(self._key_owners.get(identity, ())):
            latest = self._key_history[sign_id][-1]
            if latest.identity == identity:
                found.append(self._with_revocation(latest))
        return found

    async def key_history(self, sign_id: str) -> list[KeyPublication]:
        return [self._with_revocation(kept) for kept in self._key_history.get(sign_id, [])]

    async def revoke_key(self, sign_id: str, revoked: int, by: str) -> int:
        return self._revocations.setdefault(sign_id, (revoked, by))[0]


class _Transaction:
    """``core.ports.QueueTransaction`` over the memory store (rolled back if the work raises)."""

    __slots__ = ("_consent", "_state", "_store", "now", "saved_consent", "state")

    def __init__(self, store: MemoryStore, now: float) -> None:
        self._store = store
        self._state = store._state
        self.now = now
        self.state = _StateTable(self._state.app_state)
        self.saved_consent: ConsentState | None = None
        self._consent: ConsentTable | None = None

    @property
    def consent(self) -> ConsentTable:
        """The consent rows; the first use keeps a copy to restore if the work raises."""
        if self._consent is None:
            self.saved_consent = self._store._consent.copy()
            self._consent = ConsentTable(self._store._consent)
        return self._consent

    def insert(
        self, entries: Sequence[QueueEntry], dedupe: tuple[str, str] | None
    ) -> list[int] | None:
        return _insert_once(self._state, entries, dedupe, self.now)

    def count(self, identity: str, instance: str) -> int:
        rows = self._state.queues.get((identity, instance), {})
        return sum(1 for row in rows.values() if row.kind == QueueKind.ENVELOPE)

    def envelopes(
        self, identity: str, instance: str, *, after: int, before: int, limit: int
    ) -> list[QueueRow]:
        found = [
            QueueRow(seq, r.sender, r.message_id, r.needs_ack)
            for seq, r in self._state.rows((identity, instance))
            if r.kind == QueueKind.ENVELOPE and after < seq < before
        ]
        return found[:limit]

    def delete(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self._state.remove(seq)

    def expired(self, now: float, after: tuple[float, int], limit: int) -> list[ExpiredRow]:
        found = sorted(
            (
                ExpiredRow(key[0], key[1], row.expires_at, QueueRow(seq, *row.head))
                for key, rows in self._state.queues.items()
                for seq, row in rows.items()
                if row.expires_at is not None
                and row.expires_at <= now
                and (row.expires_at, seq) > after
            ),
            key=lambda expired: (expired.expires_at, expired.row.seq),
        )
        return found[:limit]

    def expired_in(
        self, identity: str, instance: str, now: float, *, after: int, limit: int
    ) -> list[ExpiredRow]:
        found = [
            ExpiredRow(identity, instance, row.expires_at, QueueRow(seq, *row.head))
            for seq, row in self._state.rows((identity, instance))
            if seq > after and row.expires_at is not None and row.expires_at <= now
        ]
        return found[:limit]

    def gap(self, identity: str, instance: str) -> GapState | None:
        for seq, row in self._state.rows((identity, instance)):
            if row.kind == QueueKind.GAP:
                dropped, lost = self._state.gaps.get((identity, instance), (0, []))
                return GapState(seq, dropped, list(lost))
        return None

    def put_gap(
        self, identity: str, instance: str, gap: GapState, sender: str, gap_id: str, payload: bytes
    ) -> None:
        row = _Row(sender, gap_id, True, payload, self.now, QueueKind.GAP)
        self._state.add((identity, instance), row, gap.seq)
        self._state.gaps[(identity, instance)] = (gap.dropped, list(gap.lost))

    def put_notice(self, identity: str, instance: str, sender: str, payload: bytes) -> int:
        row = _Row(sender, None, False, payload, self.now, QueueKind.NOTICE)
        return self._state.add((identity, instance), row)

    def remove_session(self, identity: str, instance: str) -> int:
        key = (identity, instance)
        seqs = list(self._state.queues.get(key, {}))
        for seq in seqs:
            self._state.remove(seq)
        self._store._sessions.pop(key, None)
        self._state.persistence.pop(key, None)
        self._state.gaps.pop(key, None)
        return len(seqs)

    def nonce_is_current(self, persist: PersistStep) -> bool:
        current = self._state.persistence.get((persist.identity, persist.instance))
        return current is not None and current[0] is not None and current[0] == persist.nonce

    def store_memento(self, persist: PersistStep) -> None:
        key = (persist.identity, persist.instance)
        current = self._state.persistence.get(key)
        if current is not None:
            self._state.persistence[key] = (current[0], persist.memento)


class _StateTable:
    __slots__ = ("_rows",)

    def __init__(self, rows: dict[str, str]) -> None:
        self._rows = rows

    def get(self, key: str) -> str | None:
        return self._rows.get(key)

    def put(self, key: str, value: str) -> None:
        self._rows[key] = value

    def delete(self, key: str) -> bool:
        return self._rows.pop(key, None) is not None

    def keys(self, prefix: str) -> list[str]:
        return sorted(key for key in self._rows if key.startswith(prefix))


def _insert_once(
    state: _State, entries: Sequence[QueueEntry], dedupe: tuple[str, str] | None, now: float
) -> list[int] | None:
    if dedupe is not None:
        if dedupe in state.message_ids:
            return None
        state.message_ids[dedupe] = now
    return [
        state.add(
            (e.identity, e.instance),
            _Row(
                e.sender,
                e.message_id,
                e.needs_ack,
                e.payload,
                now,
                QueueKind.ENVELOPE,
                e.expires_at,
            ),
        )
        for e in entries
    ]


def _args_key(args: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(args.items())), ensure_ascii=False, separators=(",", ":"))
