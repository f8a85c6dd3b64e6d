"""The consent service over the memory store with a clock the test sets: every state
transition, each error id provoked with its exact id, the gaps of the original that Tidings
fixes (reference 1.10: D4, D5, D6, D8, D12, D14, D15), inbox events and live subscribers."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.core.consent import (
    DEFAULT_TTL_S,
    MAX_CHAT_CHARS,
    MAX_TTL_S,
    MIN_TTL_S,
    ConsentService,
)
from tidings.core.consent_model import (
    InboxEvent,
    InboxKind,
    InviteMode,
    InviteStatus,
    Level,
    Permission,
    RelationshipState,
    ScopeState,
)
from tidings.core.errors import ErrorId, Invalid, TidingsError
from tidings.store.memory import MemoryStore

NOW = 1_764_500_000.0
ALICE, BOB, CAROL, DAVE = "alice@x", "bob@x", "carol@x", "dave@x"
HEART = {"resource": "feed:heart*", "level": "read"}
PRESENCE = {"resource": "presence", "level": "read"}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(clock: Clock) -> ConsentService:
    return ConsentService(MemoryStore(), clock)


def offer(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "app_code": "study-1",
        "display_name": "A study",
        "consent": {"en": "Share your heart rate", "fr": "Partagez"},
        "permissions": [HEART, PRESENCE],
        "mode": "single-use",
        "features": None,
        "expires_at": None,
    }
    base.update(changes)
    return base


async def raises(error_id: ErrorId, call: Any) -> TidingsError:
    with pytest.raises(TidingsError) as caught:
        await call
    assert caught.value.error_id is error_id, caught.value.message
    return caught.value


async def related(service: ConsentService, **changes: Any) -> Any:
    _, token = await service.create_invite(ALICE, **offer(**changes))
    return await service.accept(token, BOB)


# -- invites --------------------------------------------------------------------------------


async def test_an_invite_is_pending_with_a_default_ttl_of_seven_days(
    service: ConsentService,
) -> None:
    invite, token = await service.create_invite(ALICE, **offer())
    assert invite.status is InviteStatus.PENDING
    assert invite.expires_at == NOW + DEFAULT_TTL_S
    assert invite.features == {"chat": True, "system_messaging": True}
    assert len(token) >= 43 and token not in repr(invite)
    assert (await service.read_offer(token)) == invite
    assert await service.invites(ALICE) == [invite]
    assert await service.invite(invite.id, ALICE) == invite
    assert [e.kind for e in await service.inbox(ALICE)] == [InboxKind.INVITE_CREATED]


@pytest.mark.parametrize("ttl", [MIN_TTL_S, 3600, MAX_TTL_S])
async def test_ttl_within_bounds(service: ConsentService, ttl: int) -> None:
    invite, _ = await service.create_invite(ALICE, **offer(expires_at=NOW + ttl))
    assert invite.expires_at == NOW + ttl


@pytest.mark.parametrize("ttl", [30, MIN_TTL_S - 1, MAX_TTL_S + 1, 31 * 86400, -5])
async def test_ttl_out_of_range(service: ConsentService, ttl: int) -> None:
    error = await raises(
        ErrorId.CAPABILITY_TTL_OUT_OF_RANGE,
        service.create_invite(ALICE, **offer(expires_at=NOW + ttl)),
    )
    assert error.details == {"minTtlSeconds": 60, "maxTtlSeconds": 2592000}
    assert await service.invites(ALICE) == []
    assert await service.inbox(ALICE) == []


async def test_empty_and_invalid_permissions(service: ConsentService) -> None:
    await raises(
        ErrorId.OFFER_EMPTY_PERMISSIONS, service.create_invite(ALICE, **offer(permissions=[]))
    )
    for bad in (
        [{"resource": "files", "level": "read"}],
        [{"resource": "presence", "level": "manage"}],
        [{"resource": "messages", "level": "read"}],
        [{"resource": "feed:a?b", "level": "read"}],
        [{"resource": "feed:", "level": "read"}],
        [{"resource": "feed:a/b", "level": "read"}],
        [{"resource": "feed:a", "level": "admin"}],
        [{"resource": "feed:a", "level": "read", "extra": 1}],
        [HEART, HEART],
        [{"resource": f"feed:f{i}", "level": "read"} for i in range(65)],
        "feed:a",
    ):
        await raises(
            ErrorId.OFFER_INVALID_PERMISSIONS,
            service.create_invite(ALICE, **offer(permissions=bad)),
        )
    ok = [{"resource": f"feed:f{i}", "level": "manage"} for i in range(64)]
    await service.create_invite(ALICE, **offer(permissions=ok))


@pytest.mark.parametrize(
    "changes",
    [
        {"app_code": "Study"},
        {"app_code": ""},
        {"app_code": "a" * 65},
        {"display_name": ""},
        {"display_name": "x" * 257},
        {"consent": {}},
        {"consent": {"english": "x"}},
        {"consent": {"en": 5}},
        {"consent": {"en": "é" * 5121}},
        {"consent": {f"l{chr(97 + i // 26)}{chr(97 + i % 26)}"[-3:]: "x" for i in range(33)}},
        {"mode": "twice"},
        {"features": {"video": True}},
        {"features": {"chat": "yes"}},
        {"expires_at": "tomorrow"},
    ],
)
async def test_invalid_offer_fields(service: ConsentService, changes: dict[str, Any]) -> None:
    await raises(ErrorId.INVALID_ARGUMENT, service.create_invite(ALICE, **offer(**changes)))


async def test_unknown_and_malformed_tokens_are_invalid(service: ConsentService) -> None:
    for token in ("nope", "", "é", "x" * 300):
        await raises(ErrorId.CAPABILITY_INVALID, service.read_offer(token))
        await raises(ErrorId.CAPABILITY_INVALID, service.accept(token, BOB))
        await raises(ErrorId.CAPABILITY_INVALID, service.refuse(token, BOB))


async def test_single_use_accept_then_consumed(service: ConsentService) -> None:
    invite, token = await service.create_invite(ALICE, **offer())
    relationship = await service.accept(token, BOB)
    assert (relationship.requester, relationship.accepter) == (ALICE, BOB)
    assert relationship.permissions == (
        Permission("feed:heart*", Level.READ),
        Permission("presence", Level.READ),
    )
    seen = await service.invite(invite.id, ALICE)
    assert seen.status is InviteStatus.ACCEPTED and seen.status_at == NOW
    assert [(a.identity, a.relationship_id) for a in seen.accepted_by] == [(BOB, relationship.id)]
    await raises(ErrorId.CAPABILITY_CONSUMED, service.read_offer(token))
    await raises(ErrorId.CAPABILITY_CONSUMED, service.accept(token, CAROL))
    await raises(ErrorId.CAPABILITY_CONSUMED, service.accept(token, BOB))
    await raises(ErrorId.CAPABILITY_CONSUMED, service.refuse(token, CAROL))
    assert await service.relationships(CAROL) == []


async def test_accept_tells_both_inboxes(service: ConsentService) -> None:
    relationship = await related(service)
    alice = await service.inbox(ALICE)
    bob = await service.inbox(BOB)
    assert [e.kind for e in alice] == [
        InboxKind.INVITE_CREATED,
        InboxKind.INVITE_ACCEPTED,
        InboxKind.RELATIONSHIP_CREATED,
    ]
    assert alice[1].data["by"] == BOB and alice[1].data["relationshipId"] == relationship.id
    assert [e.kind for e in bob] == [InboxKind.RELATIONSHIP_CREATED]
    assert bob[0].data["requester"] == ALICE and bob[0].data["accepter"] == BOB


async def test_own_invite_cannot_be_answered(service: ConsentService) -> None:
    _, token = await service.create_invite(ALICE, **offer())
    await raises(ErrorId.OWN_INVITE, service.accept(token, ALICE))
    await raises(ErrorId.OWN_INVITE, service.accept(token, "ALICE@X"))
    await raises(ErrorId.OWN_INVITE, service.refuse(token, ALICE))
    await service.accept(token, BOB)  # still pending: nothing was consumed


async def test_expired_invite(service: ConsentService, clock: Clock) -> None:
    invite, token = await service.create_invite(ALICE, **offer(expires_at=NOW + 60))
    clock.now = NOW + 60
    await service.read_offer(token)  # at the instant: still good
    clock.now = NOW + 61
    for call in (service.read_offer(token), service.accept(token, BOB), service.refuse(token, BOB)):
        error = await raises(ErrorId.CAPABILITY_EXPIRED, call)
        assert error.details == {"expiresAt": NOW + 60}
    assert (await service.invite(invite.id, ALICE)).status is InviteStatus.EXPIRED
    assert [i.status for i in await service.invites(ALICE)] == [InviteStatus.EXPIRED]
    # invalidating an expired invite changes nothing
    assert (await service.invalidate(invite.id, ALICE)).status is InviteStatus.EXPIRED


async def test_open_link_many_accepters_then_invalidated(service: ConsentService) -> None:
    invite, token = await service.create_invite(ALICE, **offer(mode="open-link"))
    first = await service.accept(token, BOB)
    second = await service.accept(token, CAROL)
    assert first.id != second.id
    seen = await service.invite(invite.id, ALICE)
    assert seen.status is InviteStatus.PENDING
    assert [a.identity for a in seen.accepted_by] == [BOB, CAROL]
    error = await raises(ErrorId.CAPABILITY_ALREADY_ACCEPTED_BY_YOU, service.accept(token, BOB))
    assert error.details["acceptedAt"] == NOW
    await raises(ErrorId.CAPABILITY_ALREADY_ACCEPTED_BY_YOU, service.accept(token, "BOB@x"))
    await raises(ErrorId.CAPABILITY_ALREADY_ACCEPTED_BY_YOU, service.refuse(token, "Bob@X"))
    await service.read_offer(token)  # open links stay readable
    invalidated = await service.invalidate(invite.id, ALICE, reason="enough")
    assert invalidated.status is InviteStatus.INVALIDATED
    await raises(ErrorId.CAPABILITY_INVALIDATED, service.accept(token, DAVE))
    await raises(ErrorId.CAPABILITY_INVALIDATED, service.read_offer(token))
    await raises(ErrorId.CAPABILITY_INVALIDATED, service.refuse(token, DAVE))
    # the relationships made before go on
    await service.chat(first.id, BOB, "still here")
    await service.chat(second.id, ALICE, "me too")
    # idempotent: again, nothing new and nobody told twice
    events = await service.inbox(ALICE)
    again = await service.invalidate(invite.id, ALICE)
    assert again.status is InviteStatus.INVALIDATED
    assert await service.inbox(ALICE) == events
    assert [e.kind for e in events].count(InboxKind.INVITE_INVALIDATED) == 1


async def test_invalidating_a_pending_single_use_invite(service: ConsentService) -> None:
    invite, token = await service.create_invite(ALICE, **offer())
    assert (await service.invalidate(invite.id, ALICE)).status is InviteStatus.INVALIDATED
    await raises(ErrorId.CAPABILITY_INVALIDATED, service.accept(token, BOB))


async def test_invalidating_an_accepted_invite_changes_nothing(service: ConsentService) -> None:
    invite, token = await service.create_invite(ALICE, **offer())
    await service.accept(token, BOB)
    assert (await service.invalidate(invite.id, ALICE)).status is InviteStatus.ACCEPTED


async def test_invites_are_the_requesters_only(service: ConsentService) -> None:
    invite, _ = await service.create_invite(ALICE, **offer())
    await raises(ErrorId.CONSENT_NOT_FOUND, service.invite(invite.id, BOB))
    await raises(ErrorId.CONSENT_NOT_FOUND, service.invite("nope", ALICE))
    await raises(ErrorId.CONSENT_NOT_FOUND, service.invalidate(invite.id, BOB))
    await raises(ErrorId.CONSENT_NOT_FOUND, service.invalidate("nope", ALICE))
    assert await service.invites(BOB) == []


async def test_refusal_reaches_the_requester_d6(service: ConsentService) -> None:
    invite, token = await service.create_invite(ALICE, **offer())
    await service.refuse(token, BOB, reason="not now")
    seen = await service.invite(invite.id, ALICE)
    assert seen.status is InviteStatus.REFUSED
    assert [(r.identity, r.reason) for r in seen.refused_by] == [(BOB, "not now")]
    last = (await service.inbox(ALICE))[-1]
    assert last.kind is InboxKind.INVITE_REFUSED
    assert last.data == {"inviteId": invite.id, "by": BOB, "reason": "not now"}
    assert [e.kind for e in await service.inbox(BOB)] == [InboxKind.INVITE_REFUSED]
    await raises(ErrorId.CAPABILITY_CONSUMED, service.accept(token, CAROL))
    await raises(ErrorId.INVALID_ARGUMENT, service.refuse(token, CAROL, reason="x" * 1025))


async def test_open_link_refusal_leaves_it_open(service: ConsentService) -> None:
    invite, token = await service.create_invite(ALICE, **offer(mode="open-link"))
    await service.refuse(token, BOB)
    await service.accept(token, CAROL)
    seen = await service.invite(invite.id, ALICE)
    assert seen.status is InviteStatus.PENDING and seen.mode is InviteMode.OPEN_LINK
    assert [r.identity for r in seen.refused_by] == [BOB]


async def test_granted_subset(service: ConsentService) -> None:
    _, token = await service.create_invite(ALICE, **offer())
    await raises(
        ErrorId.GRANTED_PERMISSIONS_NOT_SUBSET,
        service.accept(token, BOB, granted=[{"resource": "feed:steps", "level": "read"}]),
    )
    await raises(
        ErrorId.GRANTED_PERMISSIONS_NOT_SUBSET,
        service.accept(token, BOB, granted=[{"resource": "feed:heart*", "level": "manage"}]),
    )
    await raises(ErrorId.OFFER_EMPTY_PERMISSIONS, service.accept(token, BOB, granted=[]))
    await raises(
        ErrorId.OFFER_INVALID_PERMISSIONS,
        service.accept(token, BOB, granted=[{"resource": "x", "level": "read"}]),
    )
    relationship = await service.accept(token, BOB, granted=[PRESENCE])
    assert relationship.permissions == (Permission("presence", Level.READ),)
    assert await service.grants.allows(ALICE, BOB, "presence", Level.READ)
    assert not await service.grants.allows(ALICE, BOB, "feed:heart-rate", Level.READ)


# -- relationships ------------------------------------------------------------------------


async def test_relationships_seen_by_both_sides_only(service: ConsentService) -> None:
    relationship = await related(service)
    assert await service.relationships(ALICE) == [relationship]
    assert await service.relationships(BOB) == [relationship]
    assert await service.relationship(relationship.id, BOB) == relationship
    await raises(ErrorId.CONSENT_NOT_FOUND, service.relationship(relationship.id, CAROL))
    await raises(ErrorId.CONSENT_NOT_FOUND, service.relationship("nope", ALICE))
    await raises(ErrorId.CONSENT_NOT_FOUND, service.revoke(relationship.id, CAROL))


@pytest.mark.parametrize("revoker", [ALICE, BOB])
async def test_revoke_by_either_side_ends_both_d4(service: ConsentService, revoker: str) -> None:
    relationship = await related(service)
    changes: list[tuple[str, str]] = []
    service.grants.listen(lambda owner, requester: changes.append((owner, requester)))
    revoked = await service.revoke(relationship.id, revoker, reason="bye")
    assert (revoked.state, revoked.revoked_by, revoked.revoke_reason) == (
        RelationshipState.REVOKED,
        revoker,
        "bye",
    )
    assert changes == [(BOB, ALICE)]
    for side in (ALICE, BOB):
        assert (
            await service.relationship(relationship.id, side)
        ).state is RelationshipState.REVOKED
        last = (await service.inbox(side))[-1]
        assert last.kind is InboxKind.RELATIONSHIP_REVOKED and last.data["by"] == revoker
    assert not await service.grants.allows(ALICE, BOB, "presence", "read")
    # again: unchanged, nobody told twice
    events = await service.inbox(ALICE)
    assert (await service.revoke(relationship.id, ALICE)).revoked_by == revoker
    assert await service.inbox(ALICE) == events and changes == [(BOB, ALICE)]
    await raises(ErrorId.RELATIONSHIP_REVOKED, service.chat(relationship.id, ALICE, "hi"))
    await raises(
        ErrorId.RELATIONSHIP_REVOKED,
        service.alert(relationship.id, ALICE, level="info", title={"en": "t"}, body={"en": "b"}),
    )
    await raises(
        ErrorId.RELATIONSHIP_REVOKED, service.request_scope(relationship.id, ALICE, [HEART])
    )
    # history survives the revoke
    assert await service.chat_history(relationship.id, BOB) == []


# -- scope requests (D8) --------------------------------------------------------------------


async def test_accepted_scope_request_applies_the_permissions_d8(service: ConsentService) -> None:
    relationship = await related(service, permissions=[HEART])
    account = {"resource": "account", "level": "read"}
    request = await service.request_scope(
        relationship.id, ALICE, [HEART, account], message={"en": "also your account"}
    )
    assert request.state is ScopeState.PENDING
    assert not await service.grants.allows(ALICE, BOB, "account", "read")
    changes: list[tuple[str, str]] = []
    service.grants.listen(lambda owner, requester: changes.append((owner, requester)))
    decided = await service.decide_scope(request.id, BOB, accept=True)
    assert decided.state is ScopeState.ACCEPTED and decided.decided_at == NOW
    assert changes == [(BOB, ALICE)]
    assert (await service.relationship(relationship.id, ALICE)).permissions == (
        Permission("feed:heart*", Level.READ),
        Permission("account", Level.READ),
    )
    assert await service.grants.allows(ALICE, BOB, "account", "read")
    await raises(ErrorId.SCOPE_REQUEST_DECIDED, service.decide_scope(request.id, BOB, accept=False))
    for side in (ALICE, BOB):
        kinds = [e.kind for e in await service.inbox(side)]
        assert kinds[-2:] == [InboxKind.SCOPE_REQUESTED, InboxKind.SCOPE_ACCEPTED]


async def test_a_scope_request_may_narrow(service: ConsentService) -> None:
    relationship = await related(service)
    request = await service.request_scope(relationship.id, ALICE, [PRESENCE])
    await service.decide_scope(request.id, BOB, accept=True)
    assert not await service.grants.allows(ALICE, BOB, "feed:heart", "read")
    assert await service.grants.allows(ALICE, BOB, "presence", "read")


async def test_refused_scope_request_changes_nothing(service: ConsentService) -> None:
    relationship = await related(service, permissions=[HEART])
    request = await service.request_scope(relationship.id, ALICE, [PRESENCE])
    decided = await service.decide_scope(request.id, BOB, accept=False)
    assert decided.state is ScopeState.REFUSED
    assert (await service.relationship(relationship.id, BOB)).permissions == (
        Permission("feed:heart*", Level.READ),
    )
    assert (await service.inbox(ALICE))[-1].kind is InboxKind.SCOPE_REFUSED


async def test_scope_request_sides_and_errors(service: ConsentService) -> None:
    relationship = await related(service)
    await raises(
        ErrorId.INSUFFICIENT_PERMISSIONS, service.request_scope(relationship.id, BOB, [HEART])
    )
    await raises(ErrorId.CONSENT_NOT_FOUND, service.request_scope(relationship.id, CAROL, [HEART]))
    await raises(ErrorId.OFFER_EMPTY_PERMISSIONS, service.request_scope(relationship.id, ALICE, []))
    await raises(
        ErrorId.INVALID_ARGUMENT,
        service.request_scope(relationship.id, ALICE, [HEART], message={"EN": "x"}),
    )
    request = await service.request_scope(relationship.id, ALICE, [HEART])
    await raises(
        ErrorId.INSUFFICIENT_PERMISSIONS, service.decide_scope(request.id, ALICE, accept=True)
    )
    await raises(ErrorId.CONSENT_NOT_FOUND, service.decide_scope(request.id, CAROL, accept=True))
    await raises(ErrorId.CONSENT_NOT_FOUND, service.decide_scope("nope", BOB, accept=True))
    await service.revoke(relationship.id, ALICE)
    await raises(ErrorId.RELATIONSHIP_REVOKED, service.decide_scope(request.id, BOB, accept=True))


# -- chat and alerts (D15) --------------------------------------------------------------------


async def test_chat_both_ways_with_cursor(service: ConsentService) -> None:
    relationship = await related(service)
    await service.chat(relationship.id, ALICE, "hi")
    await service.chat(relationship.id, BOB, "x" * MAX_CHAT_CHARS)
    history = await service.chat_history(relationship.id, ALICE)
    assert [(m.seq, m.sender) for m in history] == [(1, ALICE), (2, BOB)]
    assert [m.seq for m in await service.chat_history(relationship.id, BOB, since=1)] == [2]
    assert [m.seq for m in await service.chat_history(relationship.id, BOB, limit=1)] == [1]
    last = (await service.inbox(BOB))[-2]
    assert last.kind is InboxKind.CHAT and last.data["from"] == ALICE and last.data["text"] == "hi"
    await raises(ErrorId.CONSENT_NOT_FOUND, service.chat_history(relationship.id, CAROL))
    await raises(ErrorId.INVALID_ARGUMENT, service.chat_history(relationship.id, BOB, since=-1))
    await raises(ErrorId.INVALID_ARGUMENT, service.chat_history(relationship.id, BOB, limit=0))
    await raises(ErrorId.CONSENT_NOT_FOUND, service.chat(relationship.id, CAROL, "hi"))


@pytest.mark.parametrize("text", ["", "x" * (MAX_CHAT_CHARS + 1), 5, "\ud800"])
async def test_chat_content_bounds(service: ConsentService, text: Any) -> None:
    relationship = await related(service)
    await raises(ErrorId.INVALID_EVENT_CONTENT, service.chat(relationship.id, ALICE, text))


async def test_chat_disabled_by_the_offer_d15(service: ConsentService) -> None:
    relationship = await related(service, features={"chat": False})
    assert relationship.features == {"chat": False, "system_messaging": True}
    for side in (ALICE, BOB):
        await raises(ErrorId.CHAT_DISABLED, service.chat(relationship.id, side, "hi"))
    await service.alert(relationship.id, ALICE, level="info", title={"en": "t"}, body={"en": "b"})


async def test_alert_and_ack(service: ConsentService) -> None:
    relationship = await related(service)
    alert = await service.alert(
        relationship.id,
        ALICE,
        level="warning",
        title={"en": "x"},
        body={"en": "y"},
        ack_required=True,
        ack_id="d1",
    )
    assert (await service.inbox(BOB))[-1].data["ackId"] == "d1"
    await raises(ErrorId.INVALID_EVENT_CONTENT, service.ack(alert.id, BOB, "d2"))
    await raises(ErrorId.INVALID_EVENT_CONTENT, service.ack(alert.id, BOB, ""))
    await raises(ErrorId.INSUFFICIENT_PERMISSIONS, service.ack(alert.id, ALICE, "d1"))
    await raises(ErrorId.CONSENT_NOT_FOUND, service.ack(alert.id, CAROL, "d1"))
    await raises(ErrorId.CONSENT_NOT_FOUND, service.ack("nope", BOB, "d1"))
    acked = await service.ack(alert.id, BOB, "d1")
    assert (acked.acked_by, acked.acked_at) == (BOB, NOW)
    events = await service.inbox(ALICE)
    assert events[-1].kind is InboxKind.ALERT_ACKED and events[-1].data["by"] == BOB
    assert await service.ack(alert.id, BOB, "d1") == acked  # again: unchanged
    assert await service.inbox(ALICE) == events
    default = await service.alert(
        relationship.id, BOB, level="critical", title={"en": "t"}, body={"en": "b"}
    )
    assert default.ack_id == default.id
    await service.ack(default.id, ALICE, default.id)
    await service.revoke(relationship.id, BOB)
    await raises(ErrorId.RELATIONSHIP_REVOKED, service.ack(alert.id, BOB, "d1"))


@pytest.mark.parametrize(
    "changes",
    [
        {"level": "urgent"},
        {"title": {}},
        {"body": {"english": "x"}},
        {"ack_id": ""},
        {"ack_id": "x" * 257},
        {"ack_required": "yes"},
    ],
)
async def test_alert_content_bounds(service: ConsentService, changes: dict[str, Any]) -> None:
    relationship = await related(service)
    args: dict[str, Any] = {"level": "info", "title": {"en": "t"}, "body": {"en": "b"}}
    args.update(changes)
    await raises(ErrorId.INVALID_EVENT_CONTENT, service.alert(relationship.id, ALICE, **args))


async def test_system_messaging_disabled_by_the_offer_d15(service: ConsentService) -> None:
    relationship = await related(service, features={"systemMessaging": False})
    await raises(
        ErrorId.SYSTEM_MESSAGING_DISABLED,
        service.alert(relationship.id, ALICE, level="info", title={"en": "t"}, body={"en": "b"}),
    )
    await service.chat(relationship.id, ALICE, "chat still works")
    await service.request_scope(relationship.id, ALICE, [HEART])  # scope requests too


# -- inbox and live subscribers -------------------------------------------------------------


async def test_subscribers_hear_committed_events_in_order(service: ConsentService) -> None:
    heard: dict[str, list[InboxEvent]] = {ALICE: [], BOB: []}
    stop_alice = service.subscribe(ALICE, heard[ALICE].append)
    service.subscribe(BOB, heard[BOB].append)
    relationship = await related(service)
    await service.chat(relationship.id, BOB, "hi")
    assert heard[ALICE] == await service.inbox(ALICE)
    assert heard[BOB] == await service.inbox(BOB)
    stop_alice()
    stop_alice()
    await service.chat(relationship.id, BOB, "again")
    assert len(heard[ALICE]) == 4 and len(heard[BOB]) == 3
    # a failing operation tells nobody
    await raises(ErrorId.CONSENT_NOT_FOUND, service.chat("nope", BOB, "x"))
    assert len(heard[BOB]) == 3


async def test_a_failing_listener_costs_nothing(clock: Clock) -> None:
    seen: list[InboxEvent] = []

    def broken(event: InboxEvent) -> None:
        raise RuntimeError("boom")

    service = ConsentService(MemoryStore(), clock, events=seen.append)
    service.subscribe(ALICE, broken)
    service.grants.listen(lambda owner, requester: 1 / 0)
    relationship = await related(service)
    assert relationship.requester == ALICE
    assert [e.identity for e in seen] == [ALICE, ALICE, ALICE, BOB]


async def test_inbox_paging(service: ConsentService) -> None:
    relationship = await related(service)
    for n in range(5):
        await service.chat(relationship.id, ALICE, f"m{n}")
    events = await service.inbox(BOB, since=2, limit=2)
    assert [e.seq for e in events] == [3, 4]
    for since, limit in ((-1, 10), (0, 0), (0, 1001), ("0", 10), (0, True)):
        await raises(ErrorId.INVALID_ARGUMENT, service.inbox(BOB, since=since, limit=limit))


# -- grants -----------------------------------------------------------------------------------


async def test_grants_follow_levels_patterns_and_direction(service: ConsentService) -> None:
    await related(
        service,
        permissions=[
            {"resource": "feed:heart-*", "level": "contribute"},
            {"resource": "messages", "level": "contribute"},
        ],
    )
    grants = service.grants
    assert await grants.allows(ALICE, BOB, "feed:heart-rate", "read")
    assert await grants.allows(ALICE, BOB, "feed:heart-rate", "contribute")
    assert not await grants.allows(ALICE, BOB, "feed:heart-rate", "manage")
    assert not await grants.allows(ALICE, BOB, "feed:Heart-rate", "read")
    assert not await grants.allows(ALICE, BOB, "feed:heart", "read")
    assert await grants.allows(ALICE, BOB, "messages", "contribute")
    assert not await grants.allows(ALICE, BOB, "presence", "read")
    assert not await grants.allows(BOB, ALICE, "feed:heart-rate", "read")  # owner = accepter
    assert not await grants.allows(CAROL, BOB, "feed:heart-rate", "read")
    assert await grants.allows(BOB, BOB, "anything", "manage")
    await raises(ErrorId.INVALID_ARGUMENT, grants.allows(ALICE, BOB, "presence", "admin"))


async def test_grants_listener_stops(service: ConsentService) -> None:
    changes: list[tuple[str, str]] = []
    stop = service.grants.listen(lambda owner, requester: changes.append((owner, requester)))
    relationship = await related(service)
    assert changes == [(BOB, ALICE)]
    stop()
    await service.revoke(relationship.id, ALICE)
    assert changes == [(BOB, ALICE)]


@pytest.mark.parametrize("since", [-1, 2**53 + 1, 2**63])
async def test_a_cursor_out_of_range_is_refused_before_the_store(
    service: ConsentService, since: int
) -> None:
    with pytest.raises(Invalid):
        await service.inbox(ALICE, since)
