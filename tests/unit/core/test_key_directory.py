"""The key directory service over the memory store, a real roster and trust circles, and a
clock the test sets: each publication rule with its error id, lookups and their permissions,
revocation, and subscriptions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from nacl.signing import SigningKey

from tidings.core.authz import Authorizer
from tidings.core.errors import ErrorId, TidingsError
from tidings.core.key_directory import (
    MAX_CLOCK_SKEW_MS,
    MAX_CURRENT_KEYS,
    MAX_LIFETIME_MS,
    KeyDirectory,
)
from tidings.core.roster import RosterService
from tidings.core.trust import TrustCircles
from tidings.protocol.e2e import box_id_of, sign_node_info
from tidings.store.memory import MemoryStore

from ..protocol.e2e.signers import TestSigner

NOW_MS = 1_764_500_000_000
DAY_MS = 86_400_000
ALICE = "alice@localhost"
BOB = "bob@localhost"
CAROL = "carol@localhost"


@dataclass(frozen=True)
class Node:
    identity: str
    instance: str


LAPTOP = Node(ALICE, "laptop")
PHONE = Node(ALICE, "phone")
BOBS = Node(BOB, "desk")
CAROLS = Node(CAROL, "pad")


class Clock:
    def __init__(self) -> None:
        self.ms = NOW_MS

    def __call__(self) -> float:
        return self.ms / 1000


@dataclass
class World:
    store: MemoryStore
    roster: RosterService
    trust: TrustCircles
    clock: Clock
    directory: KeyDirectory


@pytest.fixture
def world() -> World:
    store = MemoryStore()
    trust = TrustCircles(store, store)
    roster = RosterService(store, lambda text: text, changed=trust.forget)
    clock = Clock()
    directory = KeyDirectory(store, Authorizer(roster, trust), clock=clock)
    return World(store, roster, trust, clock, directory)


def info(
    signer: TestSigner,
    node: Node = LAPTOP,
    *,
    published: int = NOW_MS,
    expires: int = NOW_MS + 30 * DAY_MS,
    **overrides: Any,
) -> dict[str, Any]:
    document = sign_node_info(signer, node.identity, node.instance, published, expires)
    document.update(overrides)
    return document


async def refused(error_id: ErrorId, call: Any) -> TidingsError:
    with pytest.raises(TidingsError) as caught:
        await call
    assert caught.value.error_id is error_id, caught.value.message
    return caught.value


# -- publishing ---------------------------------------------------------------------------


async def test_a_publication_is_kept_as_published_and_is_current(world: World) -> None:
    signer = TestSigner()
    document = info(signer)
    assert await world.directory.publish(LAPTOP, document) == document
    assert await world.directory.keys_of(ALICE, ALICE) == [document]
    assert await world.directory.key(ALICE, signer.sign_id) == document


async def test_a_forged_signature_is_refused(world: World) -> None:
    signer = TestSigner()
    forged = info(signer, signature=info(TestSigner())["signature"])
    await refused(ErrorId.KEY_BAD_SIGNATURE, world.directory.publish(LAPTOP, forged))
    tampered = info(signer)
    tampered["expires"] += 1
    await refused(ErrorId.KEY_BAD_SIGNATURE, world.directory.publish(LAPTOP, tampered))
    assert await world.directory.history(signer.sign_id) == []


@pytest.mark.parametrize(
    "change",
    [
        {"boxId": box_id_of(TestSigner(SigningKey(bytes(32))).sign_id)},
        {"signId": "AAAA"},
        {"extra": True},
        {"connectionInfo": {"not": "a list"}},
    ],
)
async def test_malformed_node_info_is_refused(world: World, change: dict[str, Any]) -> None:
    await refused(
        ErrorId.KEY_MALFORMED, world.directory.publish(LAPTOP, info(TestSigner(), **change))
    )
    await refused(ErrorId.KEY_MALFORMED, world.directory.publish(LAPTOP, ["not", "an", "object"]))


@pytest.mark.parametrize("node", [PHONE, BOBS, Node(ALICE.upper(), "laptop")])
async def test_a_node_info_for_another_node_is_refused(world: World, node: Node) -> None:
    document = info(TestSigner(), node)
    await refused(ErrorId.KEY_NODE_MISMATCH, world.directory.publish(LAPTOP, document))


async def test_a_key_owned_by_another_node_is_refused(world: World) -> None:
    signer = TestSigner()
    await world.directory.publish(LAPTOP, info(signer))
    later = NOW_MS + 1000
    for thief in (PHONE, BOBS):  # another instance of the same identity, another identity
        await refused(
            ErrorId.KEY_OWNED_ELSEWHERE,
            world.directory.publish(thief, info(signer, thief, published=later)),
        )
    assert await world.directory.keys_of(BOB, BOB) == []


async def test_a_replayed_or_older_publication_is_refused(world: World) -> None:
    signer = TestSigner()
    first = info(signer, published=NOW_MS - 10)
    second = info(signer, published=NOW_MS, expires=NOW_MS + 60 * DAY_MS)
    await world.directory.publish(LAPTOP, first)
    await world.directory.publish(LAPTOP, second)
    await refused(ErrorId.KEY_STALE, world.directory.publish(LAPTOP, first))  # replayed old
    await refused(ErrorId.KEY_STALE, world.directory.publish(LAPTOP, second))  # replayed same
    await refused(
        ErrorId.KEY_STALE, world.directory.publish(LAPTOP, info(signer, published=NOW_MS - 5))
    )
    assert await world.directory.keys_of(ALICE, ALICE) == [second]
    assert await world.directory.history(signer.sign_id) == [first, second]


async def test_a_revoked_key_is_never_published_again(world: World) -> None:
    signer = TestSigner()
    await world.directory.publish(LAPTOP, info(signer))
    await world.directory.revoke(PHONE, signer.sign_id)  # any node of the identity
    world.clock.ms += 1000
    fresh = info(signer, published=world.clock.ms)
    await refused(ErrorId.KEY_REVOKED, world.directory.publish(LAPTOP, fresh))
    assert await world.directory.keys_of(ALICE, ALICE) == []


@pytest.mark.parametrize(
    ("published", "expires"),
    [
        (NOW_MS - 2 * DAY_MS, NOW_MS - DAY_MS),  # expired
        (NOW_MS - DAY_MS, NOW_MS),  # expires now
        (NOW_MS, NOW_MS + MAX_LIFETIME_MS + 1),  # too far ahead
        (NOW_MS + MAX_CLOCK_SKEW_MS + 1, NOW_MS + DAY_MS),  # published in the future
    ],
)
async def test_times_out_of_range_are_refused(world: World, published: int, expires: int) -> None:
    document = info(TestSigner(), published=published, expires=expires)
    await refused(ErrorId.KEY_EXPIRY_OUT_OF_RANGE, world.directory.publish(LAPTOP, document))


async def test_times_at_the_bounds_are_accepted(world: World) -> None:
    early, late = TestSigner(), TestSigner()
    await world.directory.publish(
        LAPTOP, info(early, published=NOW_MS + MAX_CLOCK_SKEW_MS, expires=NOW_MS + DAY_MS)
    )
    await world.directory.publish(LAPTOP, info(late, expires=NOW_MS + MAX_LIFETIME_MS))
    for signer in (early, late):
        assert (await world.directory.key(ALICE, signer.sign_id))["signId"] == signer.sign_id


async def test_the_current_set_lists_each_node_once_with_its_latest_key(world: World) -> None:
    old, new = TestSigner(), TestSigner()
    await world.directory.publish(LAPTOP, info(old, published=NOW_MS - 1000))
    await world.directory.publish(LAPTOP, info(new, published=NOW_MS))
    listed = await world.directory.keys_of(ALICE, ALICE)
    assert [item["signId"] for item in listed] == [new.sign_id]
    await world.directory.revoke(LAPTOP, new.sign_id)  # the old key is current again
    listed = await world.directory.keys_of(ALICE, ALICE)
    assert [item["signId"] for item in listed] == [old.sign_id]


async def test_an_expired_key_leaves_the_current_set_but_stays_known(world: World) -> None:
    signer = TestSigner()
    document = info(signer, expires=NOW_MS + DAY_MS)
    await world.directory.publish(LAPTOP, document)
    world.clock.ms = NOW_MS + DAY_MS
    assert await world.directory.keys_of(ALICE, ALICE) == []
    assert await world.directory.key(ALICE, signer.sign_id) == document


async def test_several_devices_and_a_renewal(world: World) -> None:
    laptop, phone = TestSigner(), TestSigner()
    await world.directory.publish(LAPTOP, info(laptop))
    await world.directory.publish(PHONE, info(phone, PHONE))
    renewed = info(laptop, published=NOW_MS + 1, expires=NOW_MS + 90 * DAY_MS)
    await world.directory.publish(LAPTOP, renewed)
    current = await world.directory.keys_of(ALICE, ALICE)
    assert sorted(d["signId"] for d in current) == sorted([laptop.sign_id, phone.sign_id])
    assert renewed in current


# -- revocation ----------------------------------------------------------------------------


async def test_revocation_is_kept_and_shown(world: World) -> None:
    signer = TestSigner()
    document = info(signer)
    await world.directory.publish(LAPTOP, document)
    world.clock.ms += 5
    revoked = await world.directory.revoke(LAPTOP, signer.sign_id)
    assert revoked == {**document, "revoked": NOW_MS + 5}
    assert await world.directory.key(ALICE, signer.sign_id) == revoked
    world.clock.ms += 5
    assert await world.directory.revoke(PHONE, signer.sign_id) == revoked  # once


async def test_only_the_owning_identity_revokes(world: World) -> None:
    signer = TestSigner()
    await world.directory.publish(LAPTOP, info(signer))
    await refused(ErrorId.FORBIDDEN, world.directory.revoke(BOBS, signer.sign_id))
    await refused(ErrorId.RESOURCE_NOT_FOUND, world.directory.revoke(LAPTOP, "nothing"))
    assert len(await world.directory.keys_of(ALICE, ALICE)) == 1


# -- lookups and who may make them ---------------------------------------------------------


async def closed_account(world: World, name: str) -> None:
    await world.store.create_account(name, None)
    await world.store.update_account(name, profile={"allowUnknownSender": False})
    world.trust.forget(f"{name}@localhost")


async def test_anyone_looks_up_an_identity_that_accepts_unknown_senders(world: World) -> None:
    signer = TestSigner()
    await world.directory.publish(LAPTOP, info(signer))
    assert len(await world.directory.keys_of(BOB, ALICE)) == 1
    assert (await world.directory.key(BOB, signer.sign_id))["signId"] == signer.sign_id


async def test_a_closed_identity_is_looked_up_only_by_accepted_contacts(world: World) -> None:
    await closed_account(world, "alice")
    signer = TestSigner()
    await world.directory.publish(LAPTOP, info(signer))
    await world.store.create_account("bob", None)  # only accounts are friends
    await world.roster.put_contact(ALICE, {"identity": BOB}, merge=False)
    await world.roster.put_contact(ALICE, {"identity": CAROL, "isPending": True}, merge=False)
    assert len(await world.directory.keys_of(BOB, ALICE)) == 1
    assert len(await world.directory.keys_of(ALICE, ALICE)) == 1
    await world.directory.key(BOB, signer.sign_id)
    await refused(ErrorId.NOT_SHARED, world.directory.keys_of(CAROL, ALICE))  # pending
    await world.directory.key(CAROL, signer.sign_id)  # it signed something carol holds
    await refused(ErrorId.FORBIDDEN, world.directory.key(None, signer.sign_id))
    await refused(ErrorId.NOT_SHARED, world.directory.keys_of("eve@localhost", ALICE))
    await refused(ErrorId.NOT_SHARED, world.directory.subscribe(CAROLS, ALICE, lambda *a: None))
    await refused(ErrorId.FORBIDDEN, world.directory.keys_of(None, ALICE))


async def test_an_unknown_key_is_not_found(world: World) -> None:
    await refused(ErrorId.RESOURCE_NOT_FOUND, world.directory.key(ALICE, "nope"))


# -- subscriptions -------------------------------------------------------------------------


class Heard:
    def __init__(self) -> None:
        self.changes: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, identity: str, document: dict[str, Any]) -> None:
        self.changes.append((identity, json.loads(json.dumps(document))))


async def test_subscribers_hear_publications_and_revocations(world: World) -> None:
    heard, own = Heard(), Heard()
    await world.directory.subscribe(BOBS, ALICE, heard)
    await world.directory.subscribe(PHONE, ALICE, own)
    signer = TestSigner()
    document = info(signer)
    await world.directory.publish(LAPTOP, document)
    await world.directory.publish(CAROLS, info(TestSigner(), CAROLS))  # not followed
    await world.directory.revoke(PHONE, signer.sign_id)
    expected = [(ALICE, document), (ALICE, {**document, "revoked": NOW_MS})]
    assert heard.changes == expected and own.changes == expected
    await world.directory.revoke(PHONE, signer.sign_id)  # nothing changes: nothing heard
    assert len(heard.changes) == 2


async def test_refused_publications_are_not_heard(world: World) -> None:
    heard = Heard()
    await world.directory.subscribe(BOBS, ALICE, heard)
    await refused(ErrorId.KEY_NODE_MISMATCH, world.directory.publish(PHONE, info(TestSigner())))
    assert heard.changes == []


async def test_unsubscribe_and_forget_stop_the_changes(world: World) -> None:
    heard, other = Heard(), Heard()
    await world.directory.subscribe(BOBS, ALICE, heard)
    await world.directory.subscribe(BOBS, CAROL, heard)
    await world.directory.subscribe(CAROLS, ALICE, other)
    assert world.directory.subscriptions() == 3
    world.directory.unsubscribe(CAROLS, ALICE)
    world.directory.forget(BOBS)
    assert world.directory.subscriptions() == 0
    await world.directory.publish(LAPTOP, info(TestSigner()))
    assert heard.changes == [] and other.changes == []


async def test_a_subscriber_no_longer_accepted_hears_nothing_more(world: World) -> None:
    await closed_account(world, "alice")
    await world.store.create_account("bob", None)  # only accounts are friends
    await world.roster.put_contact(ALICE, {"identity": BOB}, merge=False)
    heard = Heard()
    await world.directory.subscribe(BOBS, ALICE, heard)
    await world.directory.publish(LAPTOP, info(TestSigner()))
    await world.roster.delete_contact(ALICE, BOB)
    await world.directory.publish(PHONE, info(TestSigner(), PHONE))
    assert len(heard.changes) == 1


async def test_an_identity_has_at_most_64_current_keys(world: World) -> None:
    """Beyond, a sealed message could not name every device, and the directory would grow
    without end; a revoked or expired key makes room, a renewal needs none."""
    signers = [TestSigner() for _ in range(MAX_CURRENT_KEYS)]
    for n, signer in enumerate(signers):
        await world.directory.publish(Node(ALICE, f"d{n}"), info(signer, Node(ALICE, f"d{n}")))
    extra = Node(ALICE, "extra")
    await refused(
        ErrorId.KEY_LIMIT_REACHED, world.directory.publish(extra, info(TestSigner(), extra))
    )
    renewal = info(signers[0], Node(ALICE, "d0"), published=NOW_MS + 1)
    await world.directory.publish(Node(ALICE, "d0"), renewal)  # not a new key
    await world.directory.revoke(Node(ALICE, "d1"), signers[1].sign_id)
    await world.directory.publish(extra, info(TestSigner(), extra))
