"""Relationship expiry with a clock the test sets: ``grantExpiresAt`` bounds, the expiry in force
on every answer before the sweep records it (grants, trust, chat, alerts, scope requests, the
relationship's state), the sweep recording it once (events in both inboxes, grant listeners
told once), the expiry task woken by an accept, and expiries that fell while the server was
down recorded at start."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from tidings.core.consent import MAX_GRANT_TTL_S, ConsentService
from tidings.core.consent_documents import (
    invite_document,
    offer_document,
    relationship_document,
)
from tidings.core.consent_model import InboxEvent, InboxKind, InviteStatus, RelationshipState
from tidings.core.errors import ErrorId, TidingsError
from tidings.core.trust import TrustCircles
from tidings.store.memory import MemoryStore
from tidings.store.sqlite import SqliteStore

NOW = 1_764_500_000.0
ALICE, BOB, CAROL = "alice@x", "bob@x", "carol@x"
HEART = {"resource": "feed:heart*", "level": "read"}
MESSAGES = {"resource": "messages", "level": "contribute"}
ALERT: dict[str, Any] = {"level": "info", "title": {"en": "t"}, "body": {"en": "b"}}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def service(store: MemoryStore, clock: Clock) -> ConsentService:
    return ConsentService(store, clock)


def offer(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "app_code": "study-1",
        "display_name": "A study",
        "consent": {"en": "Share your heart rate"},
        "permissions": [HEART],
    }
    base.update(changes)
    return base


async def raises(error_id: ErrorId, call: Any) -> TidingsError:
    with pytest.raises(TidingsError) as caught:
        await call
    assert caught.value.error_id is error_id, caught.value.message
    return caught.value


async def related(service: ConsentService, accepter: str = BOB, **changes: Any) -> Any:
    _, token = await service.create_invite(ALICE, **offer(**changes))
    return await service.accept(token, accepter)


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def kinds(service: ConsentService, identity: str) -> list[InboxKind]:
    return [event.kind for event in await service.inbox(identity, 0, 1000)]


# -- grantExpiresAt ---------------------------------------------------------------------------


@pytest.mark.parametrize("ahead", [0.5, 1, 60, 30 * 86_400 + 1, MAX_GRANT_TTL_S])
async def test_grant_expiry_within_bounds(service: ConsentService, ahead: float) -> None:
    """Before or after the invite's own expiry (7 days by default), up to 365 days ahead."""
    invite, _ = await service.create_invite(ALICE, **offer(grant_expires_at=NOW + ahead))
    assert invite.grant_expires_at == NOW + ahead


@pytest.mark.parametrize(
    "value", [NOW, NOW - 1, 0, NOW + MAX_GRANT_TTL_S + 1, float("inf"), float("nan")]
)
async def test_grant_expiry_out_of_range(service: ConsentService, value: float) -> None:
    error = await raises(
        ErrorId.GRANT_EXPIRY_OUT_OF_RANGE,
        service.create_invite(ALICE, **offer(grant_expires_at=value)),
    )
    assert error.details == {"maxGrantTtlSeconds": MAX_GRANT_TTL_S}


@pytest.mark.parametrize("value", ["soon", True, [1]])
async def test_grant_expiry_must_be_a_number(service: ConsentService, value: Any) -> None:
    await raises(
        ErrorId.INVALID_ARGUMENT, service.create_invite(ALICE, **offer(grant_expires_at=value))
    )


async def test_without_grant_expiry_nothing_expires(service: ConsentService, clock: Clock) -> None:
    relationship = await related(service)
    assert relationship.expires_at is None
    assert "expiresAt" not in relationship_document(relationship, NOW)
    clock.now = NOW + 10 * MAX_GRANT_TTL_S
    assert await service.grants.allows(ALICE, BOB, "feed:heart", "read")
    assert await service.expire_due() is None
    assert (await service.relationship(relationship.id, BOB)).state is RelationshipState.ACTIVE


async def test_the_documents_carry_the_expiry(service: ConsentService) -> None:
    invite, token = await service.create_invite(ALICE, **offer(grant_expires_at=NOW + 90.7))
    assert offer_document(invite)["grantExpiresAt"] == int(NOW + 90)
    assert invite_document(invite, NOW)["grantExpiresAt"] == int(NOW + 90)
    plain, _ = await service.create_invite(ALICE, **offer())
    assert "grantExpiresAt" not in offer_document(plain)
    relationship = await service.accept(token, BOB)
    assert relationship.expires_at == NOW + 90.7
    document = relationship_document(relationship, NOW)
    assert (document["expiresAt"], document["state"]) == (int(NOW + 90), "active")
    assert relationship_document(relationship, NOW + 90.7)["state"] == "expired"
    created = [e for e in await service.inbox(BOB) if e.kind is InboxKind.RELATIONSHIP_CREATED]
    assert created[0].data["expiresAt"] == int(NOW + 90)


async def test_an_invite_past_its_grant_expiry_can_no_longer_be_accepted(
    service: ConsentService, clock: Clock
) -> None:
    invite, token = await service.create_invite(ALICE, **offer(grant_expires_at=NOW + 100))
    clock.now = NOW + 100
    assert (await service.invite(invite.id, ALICE)).status is InviteStatus.EXPIRED
    await raises(ErrorId.CAPABILITY_EXPIRED, service.read_offer(token))
    await raises(ErrorId.CAPABILITY_EXPIRED, service.accept(token, BOB))


# -- in force on every answer, before the sweep -----------------------------------------------


async def test_expiry_is_checked_on_read_before_the_sweep(
    service: ConsentService, clock: Clock
) -> None:
    relationship = await related(service, grant_expires_at=NOW + 100)
    grants = service.grants
    told: list[tuple[str, str]] = []
    grants.listen(lambda owner, requester: told.append((owner, requester)))
    scope = await service.request_scope(relationship.id, ALICE, [HEART])
    alert = await service.alert(relationship.id, BOB, ack_required=True, **ALERT)
    assert await grants.allows(ALICE, BOB, "feed:heart-rate", "read")  # cached from here
    assert await grants.permissions(ALICE, BOB)

    clock.now = NOW + 99.9
    assert await grants.allows(ALICE, BOB, "feed:heart-rate", "read")
    clock.now = NOW + 100  # the expiry instant: no sweep has run
    assert not await grants.allows(ALICE, BOB, "feed:heart-rate", "read")
    assert await grants.permissions(ALICE, BOB) == ()
    assert (await service.relationship(relationship.id, ALICE)).state is RelationshipState.EXPIRED
    assert [r.state for r in await service.relationships(BOB)] == [RelationshipState.EXPIRED]
    error = await raises(ErrorId.RELATIONSHIP_EXPIRED, service.chat(relationship.id, ALICE, "hi"))
    assert error.details == {"expiresAt": NOW + 100}
    await raises(ErrorId.RELATIONSHIP_EXPIRED, service.alert(relationship.id, BOB, **ALERT))
    await raises(ErrorId.RELATIONSHIP_EXPIRED, service.ack(alert.id, ALICE, alert.ack_id or ""))
    await raises(
        ErrorId.RELATIONSHIP_EXPIRED, service.request_scope(relationship.id, ALICE, [HEART])
    )
    await raises(ErrorId.RELATIONSHIP_EXPIRED, service.decide_scope(scope.id, BOB, accept=True))
    revoked = await service.revoke(relationship.id, BOB)  # ended already: unchanged
    assert (revoked.state, revoked.revoked_at) == (RelationshipState.EXPIRED, None)
    assert await service.chat_history(relationship.id, BOB) == []  # still readable
    assert told == []  # nobody told yet: the sweep does that
    assert InboxKind.RELATIONSHIP_EXPIRED not in await kinds(service, BOB)


async def test_a_messages_grant_expires_in_the_trust_circle(
    store: MemoryStore, service: ConsentService, clock: Clock
) -> None:
    await store.create_account("bob", None)
    await store.update_account("bob", profile={"allowUnknownSender": False})
    trust = TrustCircles(store, store, consent=store, clock=clock)
    await related(service, permissions=[MESSAGES], grant_expires_at=NOW + 100)
    await related(service, accepter=BOB, permissions=[MESSAGES], grant_expires_at=NOW + 200)
    assert await trust.accepts(ALICE, BOB)
    assert trust.cached(BOB) is not None
    clock.now = NOW + 100  # one expired: the cached circle is stale, the other still grants
    assert trust.cached(BOB) is None
    assert await trust.accepts(ALICE, BOB)
    assert (await trust.circle(BOB)).granted_until == NOW + 200
    clock.now = NOW + 200  # both expired
    assert trust.cached(BOB) is None
    assert not await trust.accepts(ALICE, BOB)
    assert not (await trust.circle(BOB)).granted


# -- the sweep ------------------------------------------------------------------------------


async def test_the_sweep_records_the_expiry_once(service: ConsentService, clock: Clock) -> None:
    soon = await related(service, grant_expires_at=NOW + 100)
    later = await related(service, accepter=CAROL, grant_expires_at=NOW + 500)
    told: list[tuple[str, str]] = []
    service.grants.listen(lambda owner, requester: told.append((owner, requester)))
    heard: list[InboxEvent] = []
    for identity in (ALICE, BOB, CAROL):
        service.subscribe(identity, heard.append)

    assert await service.expire_due() == NOW + 100  # nothing due yet: the next expiry
    assert told == [] and heard == []

    clock.now = NOW + 150
    assert await service.expire_due() == NOW + 500
    assert told == [(BOB, ALICE)]
    assert [(e.identity, e.kind) for e in heard] == [
        (ALICE, InboxKind.RELATIONSHIP_EXPIRED),
        (BOB, InboxKind.RELATIONSHIP_EXPIRED),
    ]
    assert heard[0].data == {"relationshipId": soon.id, "expiresAt": int(NOW + 100)}
    assert heard[0].at == NOW + 150
    kept = await service._store.consent_relationship(soon.id)
    assert kept is not None and kept.state is RelationshipState.EXPIRED
    assert (await service.relationship(later.id, CAROL)).state is RelationshipState.ACTIVE

    assert await service.expire_due() == NOW + 500  # again: nothing more to record
    assert told == [(BOB, ALICE)] and len(heard) == 2
    assert (await kinds(service, BOB)).count(InboxKind.RELATIONSHIP_EXPIRED) == 1
    assert (await kinds(service, ALICE)).count(InboxKind.RELATIONSHIP_EXPIRED) == 1

    clock.now = NOW + 500
    assert await service.expire_due() is None
    assert told == [(BOB, ALICE), (CAROL, ALICE)]


async def test_a_revoked_relationship_does_not_expire(
    service: ConsentService, clock: Clock
) -> None:
    relationship = await related(service, grant_expires_at=NOW + 100)
    await service.revoke(relationship.id, ALICE)
    clock.now = NOW + 100
    assert await service.expire_due() is None
    assert (await service.relationship(relationship.id, BOB)).state is RelationshipState.REVOKED
    assert InboxKind.RELATIONSHIP_EXPIRED not in await kinds(service, BOB)


async def test_the_sweep_works_through_more_than_a_batch(
    service: ConsentService, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tidings.core.consent.EXPIRY_BATCH", 2)
    for n in range(5):
        await related(service, accepter=f"user{n}@x", grant_expires_at=NOW + 10 + n)
    clock.now = NOW + 100
    assert await service.expire_due() is None
    assert all(r.state is RelationshipState.EXPIRED for r in await service.relationships(ALICE))
    assert (await kinds(service, ALICE)).count(InboxKind.RELATIONSHIP_EXPIRED) == 5


async def test_the_expiry_task_is_woken_by_an_accept(service: ConsentService, clock: Clock) -> None:
    expired = asyncio.get_running_loop().create_future()
    service.subscribe(
        BOB,
        lambda e: (
            e.kind is InboxKind.RELATIONSHIP_EXPIRED
            and not expired.done()
            and expired.set_result(e)
        ),
    )
    task = asyncio.create_task(service.expire_forever(max_wait=3600))
    try:
        await asyncio.sleep(0)  # the task looked: nothing expires, it waits (up to an hour)
        relationship = await related(service, grant_expires_at=NOW + 100)
        clock.now = NOW + 100  # before the task runs again
        event = await asyncio.wait_for(expired, 10)
        assert event.data["relationshipId"] == relationship.id
    finally:
        await stopped(task)


# -- restart --------------------------------------------------------------------------------


async def test_expiries_that_fell_while_down_are_recorded_at_start(
    tmp_path: Path, clock: Clock
) -> None:
    loop = asyncio.get_running_loop()
    store = SqliteStore(tmp_path)
    store.open(loop)
    try:
        relationship = await related(ConsentService(store, clock), grant_expires_at=NOW + 100)
    finally:
        store.close()

    clock.now = NOW + 3600  # the server was down when the relationship expired
    store = SqliteStore(tmp_path)
    store.open(loop)
    try:
        service = ConsentService(store, clock)
        assert not await service.grants.allows(ALICE, BOB, "feed:heart", "read")
        expired = loop.create_future()
        service.subscribe(
            ALICE,
            lambda e: (
                e.kind is InboxKind.RELATIONSHIP_EXPIRED
                and not expired.done()
                and expired.set_result(e)
            ),
        )
        task = asyncio.create_task(service.expire_forever())
        try:
            event = await asyncio.wait_for(expired, 10)
        finally:
            await stopped(task)
        assert event.data == {"relationshipId": relationship.id, "expiresAt": int(NOW + 100)}
        kept = await store.consent_relationship(relationship.id)
        assert kept is not None and kept.state is RelationshipState.EXPIRED
        assert InboxKind.RELATIONSHIP_EXPIRED in await kinds(service, BOB)
    finally:
        store.close()
