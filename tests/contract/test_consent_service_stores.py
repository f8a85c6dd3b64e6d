"""The consent service end to end over every store adapter (memory, SQLite, PostgreSQL): the
seed's handshake, and what one transaction must hold together."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.core.consent import ConsentService
from tidings.core.consent_model import InboxKind, InviteStatus, RelationshipState
from tidings.core.errors import ErrorId, TidingsError

ALICE, BOB = "alice@x", "bob@x"
OFFER: dict[str, Any] = {
    "app_code": "study",
    "display_name": "Study <1>",
    "consent": {"en": "Share your heart rate"},
    "permissions": [{"resource": "feed:heart*", "level": "read"}],
    "mode": "single-use",
}


async def test_the_whole_handshake(store: Any) -> None:
    service = ConsentService(store)
    invite, token = await service.create_invite(ALICE, **OFFER)
    assert (await service.read_offer(token)).id == invite.id
    relationship = await service.accept(token, BOB)
    assert await service.grants.allows(ALICE, BOB, "feed:heart-rate", "read")
    assert not await service.grants.allows(ALICE, BOB, "feed:steps", "read")
    assert (await service.invite(invite.id, ALICE)).status is InviteStatus.ACCEPTED
    message = await service.chat(relationship.id, ALICE, "hi")
    assert [m.text for m in await service.chat_history(relationship.id, BOB)] == ["hi"]
    assert message.seq == 1
    alert = await service.alert(
        relationship.id,
        ALICE,
        level="info",
        title={"en": "x"},
        body={"en": "y"},
        ack_required=True,
        ack_id="d1",
    )
    acked = await service.ack(alert.id, BOB, "d1")
    assert acked.acked_by == BOB
    request = await service.request_scope(
        relationship.id, ALICE, [{"resource": "presence", "level": "read"}]
    )
    await service.decide_scope(request.id, BOB, accept=True)
    assert await service.grants.allows(ALICE, BOB, "presence", "read")
    assert not await service.grants.allows(ALICE, BOB, "feed:heart-rate", "read")
    revoked = await service.revoke(relationship.id, BOB, reason="done")
    assert revoked.state is RelationshipState.REVOKED
    assert not await service.grants.allows(ALICE, BOB, "presence", "read")
    assert (await service.relationship(relationship.id, ALICE)).state is RelationshipState.REVOKED
    kinds = [e.kind for e in await service.inbox(ALICE)]
    assert kinds == [
        InboxKind.INVITE_CREATED,
        InboxKind.INVITE_ACCEPTED,
        InboxKind.RELATIONSHIP_CREATED,
        InboxKind.CHAT,
        InboxKind.ALERT,
        InboxKind.ALERT_ACKED,
        InboxKind.SCOPE_REQUESTED,
        InboxKind.SCOPE_ACCEPTED,
        InboxKind.RELATIONSHIP_REVOKED,
    ]
    assert [e.seq for e in await service.inbox(ALICE)] == list(range(1, 10))
    assert [e.kind for e in await service.inbox(BOB, since=5)] == [
        InboxKind.SCOPE_ACCEPTED,
        InboxKind.RELATIONSHIP_REVOKED,
    ]


async def test_a_failed_operation_leaves_nothing(store: Any) -> None:
    service = ConsentService(store)
    _, token = await service.create_invite(ALICE, **OFFER)
    await service.accept(token, BOB)
    before = await service.inbox(ALICE)
    with pytest.raises(TidingsError) as caught:
        await service.accept(token, "carol@x")
    assert caught.value.error_id is ErrorId.CAPABILITY_CONSUMED
    assert await service.inbox(ALICE) == before
    assert await service.relationships("carol@x") == []


async def test_nul_in_a_text_or_an_id_gets_the_same_answer_on_every_store(store: Any) -> None:
    """PostgreSQL text cannot hold NUL (U+0000), SQLite can: the service refuses it first, so
    every store answers alike (before, PostgreSQL's was a storage error)."""
    service = ConsentService(store)
    nul = "\x00"

    async def refused(error_id: ErrorId, call: Any) -> str:
        with pytest.raises(TidingsError) as caught:
            await call
        assert caught.value.error_id is error_id, caught.value.message
        return caught.value.message

    invalid = ErrorId.INVALID_ARGUMENT
    assert (
        await refused(invalid, service.create_invite(ALICE, **{**OFFER, "display_name": nul}))
        == "displayName may not contain NUL (U+0000)"
    )
    await refused(invalid, service.create_invite(ALICE, **{**OFFER, "consent": {"en": nul}}))
    invite, token = await service.create_invite(ALICE, **OFFER)
    relationship = await service.accept(token, BOB)
    content = ErrorId.INVALID_EVENT_CONTENT
    assert (
        await refused(content, service.chat(relationship.id, BOB, f"hi{nul}"))
        == "text may not contain NUL (U+0000)"
    )
    alert = {"level": "info", "title": {"en": "t"}, "body": {"en": "b"}, "ack_required": True}
    await refused(content, service.alert(relationship.id, ALICE, **{**alert, "ack_id": nul}))
    await refused(content, service.alert(relationship.id, ALICE, **{**alert, "body": {"en": nul}}))
    await refused(invalid, service.revoke(relationship.id, BOB, reason=nul))
    missing = ErrorId.CONSENT_NOT_FOUND
    await refused(missing, service.invite(f"{invite.id}{nul}", ALICE))
    await refused(missing, service.invalidate(f"{invite.id}{nul}", ALICE))
    await refused(missing, service.relationship(f"{relationship.id}{nul}", ALICE))
    await refused(missing, service.chat(f"{relationship.id}{nul}", BOB, "hi"))
    await refused(missing, service.decide_scope(nul, BOB, accept=True))
    await refused(missing, service.ack(nul, BOB, "d1"))
    # nothing of it was stored: the relationship is as it was
    assert await service.chat_history(relationship.id, ALICE) == []
    assert (await service.relationship(relationship.id, ALICE)).state is RelationshipState.ACTIVE
