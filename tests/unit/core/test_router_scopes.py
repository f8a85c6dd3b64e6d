"""Trust scopes in the router (memory store): stamped at delivery, refused at send time."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from tidings.core.address import Address, parse_address
from tidings.core.errors import ErrorId, TidingsError
from tidings.core.model import DeliveryEvent, EnvelopeKind
from tidings.core.router import Router
from tidings.core.session_registry import LiveSession, SessionRegistry
from tidings.core.trust import TrustCircles
from tidings.protocol.lime import (
    SCOPE_KEY,
    Message,
    Raw,
    encode_envelope,
    scoped_metadata,
    stamp_scope,
)
from tidings.store.memory import MemoryStore

BOB = "bob@x"
DEADLINE = 5.0


class Client:
    """An ``Outlet`` whose writes can be awaited one by one."""

    def __init__(self) -> None:
        self.written: asyncio.Queue[bytes] = asyncio.Queue()
        self.told: list[tuple[str, DeliveryEvent, str | None]] = []

    def deliver(self, payload: bytes, kind: EnvelopeKind = EnvelopeKind.MESSAGE) -> bool:
        self.written.put_nowait(payload)
        return True

    def notify(
        self, message_id: str, event: DeliveryEvent, error: TidingsError | None = None
    ) -> None:
        self.told.append((message_id, event, error.error_id if error else None))

    def observe(self, identity: str, presence: dict[str, Any]) -> None: ...
    def end(self, error: TidingsError) -> None: ...

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(DEADLINE):
            return json.loads(await self.written.get())  # type: ignore[no-any-return]


async def _anyone(address: Address) -> bool:
    return True


def world() -> tuple[MemoryStore, SessionRegistry, Router, TrustCircles]:
    store = MemoryStore()
    registry = SessionRegistry()
    trust = TrustCircles(store, store)
    router = Router("x", store, registry, _anyone, trust=trust, stamp=stamp_scope)
    return store, registry, router, trust


async def connect(
    router: Router, registry: SessionRegistry, node: str
) -> tuple[LiveSession, Client]:
    identity, _, instance = node.partition("/")
    client = Client()
    live = LiveSession(identity, instance, client, registry.record(identity, instance), guest=False)
    live.receipt = frozenset(DeliveryEvent)
    await router.attach(live)
    return live, client


async def send(
    router: Router, sender: LiveSession, to: str, mid: str | None, forged: str | None = None
) -> None:
    """As the gateway sends: the scope first in the metadata (a sender's own is replaced)."""
    metadata = {SCOPE_KEY: forged} if forged is not None else None
    message = Message(
        id=mid if mid is not None else msgspec.UNSET,
        from_=sender.node,
        to=to,
        metadata=scoped_metadata(metadata),
        type="text/plain",
        content=Raw(b'"hi"'),
    )
    pending = router.send_message(sender, mid, parse_address(to), encode_envelope(message))
    if pending is not None:
        await pending


async def befriend(
    store: MemoryStore, trust: TrustCircles, owner: str, friend: str, *, pending: bool = False
) -> None:
    name = friend.partition("@")[0]
    if not await store.has_account(name):
        await store.create_account(name, None)  # only accounts are friends (a guest is public)
    await store.put_contact(owner, {"identity": friend, "isPending": pending})
    trust.forget(owner)  # as RosterService does after a change


def scope_of(envelope: dict[str, Any]) -> str:
    return envelope["metadata"][SCOPE_KEY]  # type: ignore[no-any-return]


@pytest.mark.parametrize("mid", ["m1", None])
async def test_live_deliveries_carry_the_three_scopes(mid: str | None) -> None:
    store, registry, router, trust = world()
    await befriend(store, trust, BOB, "ann@x")
    await befriend(store, trust, BOB, "pat@x", pending=True)
    _, bob_out = await connect(router, registry, f"{BOB}/a")
    for node, scope in [
        (f"{BOB}/b", "self"),
        ("ann@x/p", "friends"),
        ("pat@x/p", "public"),
        ("eve@x/p", "public"),
    ]:
        sender, _ = await connect(router, registry, node)
        await send(router, sender, f"{BOB}/a", mid, forged="self")
        envelope = await bob_out.next()
        assert (envelope["from"], scope_of(envelope)) == (node, scope)


async def test_the_scope_is_that_of_delivery_time() -> None:
    """Messages wait offline; one sender becomes a contact, another stops being one."""
    store, registry, router, trust = world()
    await befriend(store, trust, BOB, "old@x")
    registry.record(BOB, "a")
    new, _ = await connect(router, registry, "new@x/p")
    old, _ = await connect(router, registry, "old@x/p")
    await send(router, new, f"{BOB}/a", "m1")
    await send(router, old, f"{BOB}/a", "m2")
    await send(router, new, f"{BOB}/a", None)
    await store.barrier()
    await befriend(store, trust, BOB, "new@x")
    await store.delete_contact(BOB, "old@x")
    trust.forget(BOB)
    _, bob_out = await connect(router, registry, f"{BOB}/a")
    got = [await bob_out.next() for _ in range(3)]
    assert [(e.get("id"), scope_of(e)) for e in got] == [
        ("m1", "friends"),
        ("m2", "public"),
        (None, "friends"),
    ]


async def test_a_live_recipient_whose_circle_was_forgotten_gets_its_messages_in_order() -> None:
    """No blocking and no guess: the delivery waits in the queue while the circle loads."""
    store, registry, router, trust = world()
    bob, bob_out = await connect(router, registry, f"{BOB}/a")
    ann, ann_out = await connect(router, registry, "ann@x/p")
    await send(router, ann, f"{BOB}/a", "m1")
    assert scope_of(await bob_out.next()) == "public"
    await store.create_account("ann", None)
    await store.put_contact(BOB, {"identity": "ann@x"})
    trust.forget(BOB)
    await send(router, ann, f"{BOB}/a", "m2")  # the circle is loaded again at send time ...
    trust.forget(BOB)  # ... and forgotten once more before the store has written it
    await store.barrier()  # written: no circle for the live delivery
    await send(router, ann, f"{BOB}/a", None)
    got = [await bob_out.next() for _ in range(2)]
    assert [(e.get("id"), scope_of(e)) for e in got] == [("m2", "friends"), (None, "friends")]
    assert ("m2", DeliveryEvent.DISPATCHED, None) in ann_out.told
    assert not bob.replaying


async def test_a_contact_added_while_the_store_writes_counts_at_delivery() -> None:
    store, registry, router, trust = world()
    _, bob_out = await connect(router, registry, f"{BOB}/a")
    ann, _ = await connect(router, registry, "ann@x/p")
    await send(router, ann, f"{BOB}/a", "m1")  # admitted as public, not written yet
    await befriend(store, trust, BOB, "ann@x")
    await trust.circle(BOB)  # loaded again before the write completes
    assert scope_of(await bob_out.next()) == "friends"


async def test_public_senders_are_refused_when_the_account_says_so() -> None:
    store, registry, router, trust = world()
    await store.create_account("bob", None)
    await store.update_account("bob", profile={"allowUnknownSender": False})
    await befriend(store, trust, BOB, "ann@x")
    await befriend(store, trust, BOB, "pat@x", pending=True)
    _, bob_out = await connect(router, registry, f"{BOB}/a")
    for node in ("eve@x/p", "pat@x/p"):
        stranger, _ = await connect(router, registry, node)
        for mid in ("m1", None):
            with pytest.raises(TidingsError) as refused:
                await send(router, stranger, f"{BOB}/a", mid)
            assert refused.value.error_id is ErrorId.UNKNOWN_SENDER
    ann, _ = await connect(router, registry, "ann@x/p")
    await send(router, ann, f"{BOB}/a", "m1")
    me, _ = await connect(router, registry, f"{BOB}/b")
    await send(router, me, f"{BOB}/a", "m2")
    got = [await bob_out.next() for _ in range(2)]
    assert [(e["from"], scope_of(e)) for e in got] == [("ann@x/p", "friends"), (f"{BOB}/b", "self")]
    await store.barrier()
    assert registry.record(BOB, "a").depth == 2  # nothing of the strangers was stored


async def test_notifications_are_not_stamped() -> None:
    _, registry, router, _ = world()
    _, bob_out = await connect(router, registry, f"{BOB}/a")
    payload = (
        b'{"id":"m1","from":"ann@x/p","to":"bob@x/a",'
        b'"metadata":{"tidings.scope":"self"},"event":"received"}'
    )
    router.forward_notification(parse_address(f"{BOB}/a"), payload)
    assert await bob_out.written.get() == payload
