"""The consent part of the store contract (``core.ports.ConsentStore`` and ``ConsentTable``):
rows written in one transaction are kept together or not at all, conditional updates, per
identity and per relationship sequences; memory and SQLite alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tidings.core.consent_model import (
    Acceptance,
    Alert,
    AlertLevel,
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
from tidings.core.ports import ConsentTable, QueueTransaction, settling

T = TypeVar("T")
ALICE, BOB = "alice@x", "bob@x"
READ_HEART = Permission("feed:heart*", Level.READ)


async def transact(store: Any, work: Callable[[ConsentTable], T]) -> T:
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def run(transaction: QueueTransaction) -> T:
        return work(transaction.consent)

    store.transact(run, settling(future))
    return await future


def invite(
    invite_id: str = "i1", token: bytes = b"t1", mode: InviteMode = InviteMode.SINGLE_USE
) -> Invite:
    return Invite(
        id=invite_id,
        requester=ALICE,
        app_code="study",
        display_name="Étude",
        consent={"en": "yes", "fr": "oui"},
        permissions=(READ_HEART, Permission("presence", Level.READ)),
        mode=mode,
        features={"chat": True, "system_messaging": False},
        created_at=100.0,
        expires_at=200.0,
        status=InviteStatus.PENDING,
        token_hash=token,
    )


def relationship(rel_id: str = "r1", requester: str = ALICE, accepter: str = BOB) -> Relationship:
    return Relationship(
        id=rel_id,
        invite_id="i1",
        requester=requester,
        accepter=accepter,
        permissions=(READ_HEART,),
        features={"chat": True, "system_messaging": True},
        app_code="study",
        created_at=150.0,
    )


async def test_an_invite_reads_back_as_written(store: Any) -> None:
    await transact(store, lambda t: t.add_invite(invite()))
    assert await store.consent_invite("i1") == invite()
    assert await store.consent_invite_by_token(b"t1") == invite()
    assert await store.consent_invite_by_token(b"nope") is None
    assert await store.consent_invite("nope") is None
    assert await store.consent_invites_of(ALICE) == [invite()]
    assert await store.consent_invites_of(BOB) == []


async def test_invites_of_a_requester_come_oldest_first(store: Any) -> None:
    from dataclasses import replace

    later = replace(invite("i2", b"t2"), created_at=300.0)
    await transact(store, lambda t: t.add_invite(later))
    await transact(store, lambda t: t.add_invite(invite()))
    assert [i.id for i in await store.consent_invites_of(ALICE)] == ["i1", "i2"]


async def test_the_status_changes_only_from_the_expected_one(store: Any) -> None:
    await transact(store, lambda t: t.add_invite(invite()))
    flip = lambda t: t.set_invite_status(  # noqa: E731
        "i1", InviteStatus.ACCEPTED, 160.0, expected=InviteStatus.PENDING
    )
    assert await transact(store, flip) is True
    assert await transact(store, flip) is False
    kept = await store.consent_invite("i1")
    assert kept is not None and (kept.status, kept.status_at) == (InviteStatus.ACCEPTED, 160.0)


async def test_an_identity_accepts_once_whatever_its_case(store: Any) -> None:
    await transact(store, lambda t: t.add_invite(invite(mode=InviteMode.OPEN_LINK)))
    assert await transact(store, lambda t: t.add_acceptance("i1", Acceptance(BOB, 1.0, "r1")))
    assert not await transact(
        store, lambda t: t.add_acceptance("i1", Acceptance("BOB@X", 2.0, "r2"))
    )
    assert await transact(store, lambda t: t.add_acceptance("i1", Acceptance("carol@x", 3.0, "r3")))
    await transact(store, lambda t: t.add_refusal("i1", Refusal("dave@x", 4.0, "no")))
    await transact(store, lambda t: t.add_refusal("i1", Refusal("erin@x", 5.0, None)))
    kept = await store.consent_invite("i1")
    assert kept is not None
    assert kept.accepted_by == (Acceptance(BOB, 1.0, "r1"), Acceptance("carol@x", 3.0, "r3"))
    assert kept.refused_by == (Refusal("dave@x", 4.0, "no"), Refusal("erin@x", 5.0, None))


async def test_a_failing_transaction_keeps_nothing(store: Any) -> None:
    def work(table: ConsentTable) -> None:
        table.add_invite(invite())
        table.put_relationship(relationship())
        table.add_event(ALICE, InboxKind.INVITE_ACCEPTED, {"x": 1}, 1.0)
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await transact(store, work)
    assert await store.consent_invite("i1") is None
    assert await store.consent_relationship("r1") is None
    assert await store.consent_inbox(ALICE, 0, 10) == []


async def test_a_transaction_sees_its_own_writes(store: Any) -> None:
    def work(table: ConsentTable) -> tuple[Any, ...]:
        table.add_invite(invite())
        table.set_invite_status("i1", InviteStatus.REFUSED, 2.0, expected=InviteStatus.PENDING)
        table.put_relationship(relationship())
        return (table.invite("i1"), table.invite_by_token(b"t1"), table.relationship("r1"))

    seen, by_token, rel = await transact(store, work)
    assert seen.status is InviteStatus.REFUSED and by_token == seen
    assert rel == relationship()


async def test_relationships_by_side_and_active_pairs(store: Any) -> None:
    from dataclasses import replace

    revoked = replace(
        relationship("r2"),
        state=RelationshipState.REVOKED,
        revoked_at=9.0,
        revoked_by=BOB,
        revoke_reason="bye",
        created_at=160.0,
    )
    other = replace(relationship("r3", requester="carol@x"), created_at=170.0)
    await transact(store, lambda t: t.put_relationship(relationship()))
    await transact(store, lambda t: t.put_relationship(revoked))
    await transact(store, lambda t: t.put_relationship(other))
    assert [r.id for r in await store.consent_relationships_of(BOB)] == ["r1", "r2", "r3"]
    assert [r.id for r in await store.consent_relationships_of(ALICE)] == ["r1", "r2"]
    assert await store.consent_relationship("r2") == revoked
    assert [r.id for r in await store.consent_relationships_between(ALICE, BOB)] == ["r1"]
    assert await store.consent_relationships_between(BOB, ALICE) == []


async def test_put_replaces_by_id(store: Any) -> None:
    from dataclasses import replace

    await transact(store, lambda t: t.put_relationship(relationship()))
    wider = replace(relationship(), permissions=(Permission("account", Level.READ),))
    await transact(store, lambda t: t.put_relationship(wider))
    assert await store.consent_relationship("r1") == wider
    request = ScopeRequest("s1", "r1", (READ_HEART,), {"en": "please"}, 10.0)
    await transact(store, lambda t: t.put_scope_request(request))
    decided = replace(request, state=ScopeState.ACCEPTED, decided_at=11.0)
    await transact(store, lambda t: t.put_scope_request(decided))
    assert await store.consent_scope_request("s1") == decided
    assert await store.consent_scope_requests("r1") == [decided]
    assert await store.consent_scope_request("nope") is None
    alert = Alert("a1", "r1", ALICE, AlertLevel.WARNING, {"en": "t"}, {"en": "b"}, True, "d1", 5.0)
    await transact(store, lambda t: t.put_alert(alert))
    acked = replace(alert, acked_at=6.0, acked_by=BOB)
    await transact(store, lambda t: t.put_alert(acked))
    assert await store.consent_alert("a1") == acked
    assert await store.consent_alert("nope") is None


async def test_chat_and_inbox_sequences_rise_per_key(store: Any) -> None:
    def work(table: ConsentTable) -> list[int]:
        return [
            table.add_chat("r1", ALICE, "one", 1.0).seq,
            table.add_chat("r2", BOB, "other", 1.5).seq,
            table.add_chat("r1", BOB, "two", 2.0).seq,
            table.add_event(ALICE, InboxKind.CHAT, {"n": 1}, 1.0).seq,
            table.add_event(BOB, InboxKind.CHAT, {"n": 1}, 1.0).seq,
            table.add_event(ALICE, InboxKind.ALERT, {"n": [2, "é"]}, 2.0).seq,
        ]

    assert await transact(store, work) == [1, 1, 2, 1, 1, 2]
    assert [(m.seq, m.sender, m.text) for m in await store.consent_chat("r1", 0, 10)] == [
        (1, ALICE, "one"),
        (2, BOB, "two"),
    ]
    assert [m.text for m in await store.consent_chat("r1", 1, 10)] == ["two"]
    assert [m.text for m in await store.consent_chat("r1", 0, 1)] == ["one"]
    events = await store.consent_inbox(ALICE, 0, 10)
    assert [(e.seq, e.kind, e.data, e.at) for e in events] == [
        (1, InboxKind.CHAT, {"n": 1}, 1.0),
        (2, InboxKind.ALERT, {"n": [2, "é"]}, 2.0),
    ]
    assert [e.seq for e in await store.consent_inbox(ALICE, 1, 10)] == [2]
    assert await store.consent_inbox("nobody@x", 0, 10) == []


# -- relationship expiry (migration 0008) -----------------------------------------------------


async def test_grant_expiry_and_relationship_expiry_round_trip(store: Any) -> None:
    from dataclasses import replace

    offered = replace(invite(), grant_expires_at=5000.5)
    await transact(store, lambda t: t.add_invite(offered))
    assert await store.consent_invite("i1") == offered
    assert await store.consent_invite_by_token(b"t1") == offered
    assert await store.consent_invite("i1") != invite()  # the column is kept, not dropped

    expiring = replace(relationship(), expires_at=5000.5)
    await transact(store, lambda t: t.put_relationship(expiring))
    assert await store.consent_relationship("r1") == expiring
    assert await store.consent_relationships_of(BOB) == [expiring]
    assert await store.consent_relationships_between(ALICE, BOB) == [expiring]
    expired = replace(expiring, state=RelationshipState.EXPIRED)
    await transact(store, lambda t: t.put_relationship(expired))
    assert await store.consent_relationship("r1") == expired
    assert await store.consent_relationships_between(ALICE, BOB) == []


async def test_no_expiry_reads_back_as_none(store: Any) -> None:
    await transact(store, lambda t: t.add_invite(invite()))
    await transact(store, lambda t: t.put_relationship(relationship()))
    kept_invite = await store.consent_invite("i1")
    kept = await store.consent_relationship("r1")
    assert kept_invite is not None and kept_invite.grant_expires_at is None
    assert kept is not None and kept.expires_at is None


async def test_expiring_relationships_are_active_ones_soonest_first(store: Any) -> None:
    from dataclasses import replace

    rows = [
        replace(relationship("late"), expires_at=900.0),
        replace(relationship("soon"), expires_at=300.0),
        replace(relationship("never"), expires_at=None),
        replace(relationship("revoked"), expires_at=100.0, state=RelationshipState.REVOKED),
        replace(relationship("expired"), expires_at=50.0, state=RelationshipState.EXPIRED),
        replace(relationship("mid"), expires_at=600.0),
    ]
    for row in rows:
        await transact(store, lambda t, row=row: t.put_relationship(row))
    found = await store.consent_relationships_expiring(10)
    assert [r.id for r in found] == ["soon", "mid", "late"]
    assert [r.id for r in await store.consent_relationships_expiring(2)] == ["soon", "mid"]
    assert found[0] == rows[1]
