"""Trust circles and scopes over a real roster and account store (memory)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tidings.core.consent import ConsentService
from tidings.core.trust import Circle, Scope, TrustCircles, scope_of
from tidings.store.memory import MemoryStore

BOB = "bob@localhost"


@pytest.mark.parametrize(
    ("sender", "circle", "scope"),
    [
        (BOB, Circle(), Scope.SELF),
        ("ann@localhost", Circle(frozenset({"ann@localhost"})), Scope.FRIENDS),
        ("eve@localhost", Circle(frozenset({"ann@localhost"})), Scope.PUBLIC),
    ],
)
def test_scope_of(sender, circle, scope):
    assert scope_of(sender, BOB, circle) is scope


@pytest.fixture
def store():
    return MemoryStore()


async def test_pending_contacts_are_not_friends_and_changes_need_forget(store):
    trust = TrustCircles(store, store)
    await store.create_account("ann", None)
    await store.create_account("pat", None)
    await store.put_contact(BOB, {"identity": "ann@localhost"})
    await store.put_contact(BOB, {"identity": "pat@localhost", "isPending": True})
    assert trust.scope("ann@localhost", BOB) is None  # not loaded yet
    circle = await trust.circle(BOB)
    assert circle == Circle(frozenset({"ann@localhost"}), allow_unknown=True)
    assert trust.scope("pat@localhost", BOB) is Scope.PUBLIC
    await store.delete_contact(BOB, "ann@localhost")
    assert trust.scope("ann@localhost", BOB) is Scope.FRIENDS  # cached until told
    trust.forget(BOB)
    assert (await trust.circle(BOB)).friends == frozenset()


async def test_allow_unknown_sender_comes_from_the_account(store):
    trust = TrustCircles(store, store)
    await store.create_account("bob", None)
    await store.update_account("bob", profile={"allowUnknownSender": False})
    await store.create_account("ann", None)
    await store.put_contact(BOB, {"identity": "ann@localhost"})
    assert await trust.accepts("ann@localhost", BOB)
    assert await trust.accepts(BOB, BOB)
    assert not await trust.accepts("eve@localhost", BOB)
    assert await trust.accepts("eve@localhost", "guest@localhost")  # no account: open


async def test_only_accounts_are_friends(store):
    """A guest may take any name that is not an account's: a contact that is no account (never
    created, removed since, or of another domain) is no friend. Account changes need forget_all."""
    trust = TrustCircles(store, store)
    await store.create_account("ann", None)
    for contact in ("ann@localhost", "zed@localhost", "ann@elsewhere"):
        await store.put_contact(BOB, {"identity": contact})
    assert (await trust.circle(BOB)).friends == frozenset({"ann@localhost"})
    await store.create_account("zed", None)
    await store.delete_account("ann")
    trust.forget_all()
    assert (await trust.circle(BOB)).friends == frozenset({"zed@localhost"})


class _HeldRoster:
    """A roster whose reads wait until released: a load in flight, made observable."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def contacts(self, owner: str) -> list[dict[str, Any]]:
        self.reading.set()
        await self.release.wait()
        return await self.store.contacts(owner)


async def test_a_load_racing_a_change_is_not_cached(store):
    roster = _HeldRoster(store)
    trust = TrustCircles(roster, store)  # type: ignore[arg-type]
    load = asyncio.create_task(trust.circle(BOB))
    await roster.reading.wait()
    trust.forget(BOB)  # a change lands while the load is in flight
    roster.release.set()
    await load
    assert trust.cached(BOB) is None


async def test_the_cache_is_bounded(store):
    trust = TrustCircles(store, store, capacity=2)
    for name in ("a", "b", "c"):
        await trust.circle(f"{name}@localhost")
    assert trust.cached("a@localhost") is None
    assert trust.cached("c@localhost") is not None


async def test_a_consent_grant_of_messages_lets_its_requester_write_but_stays_public(store):
    consent = ConsentService(store)
    trust = TrustCircles(store, store, consent=store)
    consent.grants.listen(lambda owner, requester: trust.forget(owner))
    await store.create_account("bob", None)
    await store.update_account("bob", profile={"allowUnknownSender": False})
    lab = "lab@localhost"
    assert not await trust.accepts(lab, BOB)
    _, token = await consent.create_invite(
        lab,
        app_code="study",
        display_name="Study",
        consent={"en": "May we write to you?"},
        permissions=[{"resource": "messages", "level": "contribute"}],
        mode="single-use",
        features=None,
        expires_at=None,
    )
    relationship = await consent.accept(token, BOB)
    assert await trust.accepts(lab, BOB)
    assert trust.scope(lab, BOB) is Scope.PUBLIC
    await consent.revoke(relationship.id, BOB)
    assert not await trust.accepts(lab, BOB)
