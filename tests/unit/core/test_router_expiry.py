"""Expiring messages in the router, over the memory store: what the sweep and the writes of
stored entries do with an envelope past its expiry, ``realtime``, and the metadata rules.

Expiry times are set in the past (a negative ``expire_after``) or the sweep is given a later
``now``: no test waits for the clock.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tidings.core.address import parse_address
from tidings.core.errors import ErrorId, Invalid, TidingsError
from tidings.core.expiry import MAX_EXPIRE_AFTER_MS, expire_after_s, is_realtime
from tidings.core.model import DeliveryEvent
from tidings.core.router import Router
from tidings.core.session_registry import LiveSession, SessionRegistry

from .test_router_memory import BOB, connect, world


async def send(
    router: Router,
    sender: LiveSession,
    to: str,
    mid: str | None,
    *,
    expire_after: float | None = None,
    realtime: bool = False,
) -> None:
    pending = router.send_message(
        sender,
        mid,
        parse_address(to),
        f"{sender.node}:{mid}".encode(),
        expire_after=expire_after,
        realtime=realtime,
    )
    if pending is not None:
        await pending


def documents(written: list[bytes]) -> list[Any]:
    return [json.loads(w) if w.startswith(b"{") else w.decode() for w in written]


async def depth_is_stored(store: Any, registry: SessionRegistry) -> None:
    await store.barrier()
    for record in registry.all_records():
        rows = await store.backlog(record.identity, record.instance, 0, 10_000)
        assert record.depth == len(rows), record


async def test_the_sweep_expires_queued_messages_and_tells_the_live_sender() -> None:
    store, registry, router = world()
    alice, alice_out = await connect(router, registry, "alice@x", "p")
    registry.record(BOB, "a")
    await send(router, alice, f"{BOB}/a", "short", expire_after=60)
    await send(router, alice, f"{BOB}/a", "long", expire_after=3600)
    await store.barrier()
    assert await router.sweep(time.time() + 120) == 1
    assert documents(alice_out.written) == [{"failed": "short", "why": "message-expired"}]
    await depth_is_stored(store, registry)
    _, bob_out = await connect(router, registry, BOB, "a")
    got = documents(bob_out.written)
    assert got[0]["dropped"] == 1 and got[0]["lost"] == [{"from": "alice@x/p", "id": "short"}]
    assert got[1:] == ["alice@x/p:long"]


async def test_the_default_expiry_is_the_message_ttl() -> None:
    store, registry, router = world()
    alice, _ = await connect(router, registry, "alice@x", "p")
    registry.record(BOB, "a")
    await send(router, alice, f"{BOB}/a", "m")
    await store.barrier()
    (row,) = await store.backlog(BOB, "a", 0, 10)
    assert row.expires_at is not None
    assert abs(row.expires_at - (time.time() + router.limits.message_ttl)) < 60
    assert await router.sweep(time.time() + router.limits.message_ttl - 60) == 0
    assert await router.sweep(time.time() + router.limits.message_ttl + 60) == 1


async def test_a_backlog_never_writes_an_expired_message_even_before_the_sweep() -> None:
    store, registry, router = world()
    alice, alice_out = await connect(router, registry, "alice@x", "p")
    registry.record(BOB, "a")
    await send(router, alice, f"{BOB}/a", "before")
    await send(router, alice, f"{BOB}/a", "gone", expire_after=-1)  # expired already
    await send(router, alice, f"{BOB}/a", None, expire_after=-1)  # fire-and-forget, expired
    await send(router, alice, f"{BOB}/a", "after")
    await store.barrier()
    _, bob_out = await connect(router, registry, BOB, "a")
    await store.barrier()
    got = documents(bob_out.written)
    assert got[0] == "alice@x/p:before" and got[2] == "alice@x/p:after"
    assert got[1]["dropped"] == 2 and got[1]["lost"] == [{"from": "alice@x/p", "id": "gone"}]
    assert len(got) == 3
    assert {"failed": "gone", "why": "message-expired"} in documents(alice_out.written)
    await depth_is_stored(store, registry)


async def test_a_live_recipient_is_not_written_a_message_that_expired_while_stored() -> None:
    store, registry, router = world()
    alice, alice_out = await connect(router, registry, "alice@x", "p")
    _, bob_out = await connect(router, registry, BOB, "a")
    await send(router, alice, f"{BOB}/a", "gone", expire_after=-1)
    await store.barrier()
    await store.barrier()  # the expiry transaction the write submitted
    assert [t[:2] for t in alice_out.told] == [("gone", DeliveryEvent.ACCEPTED)]
    assert {"failed": "gone", "why": "message-expired"} in documents(alice_out.written)
    got = documents(bob_out.written)
    assert len(got) == 1 and got[0]["dropped"] == 1  # only the gap marker
    await depth_is_stored(store, registry)


async def test_the_sweep_leaves_messages_a_live_client_holds() -> None:
    store, registry, router = world()
    alice, alice_out = await connect(router, registry, "alice@x", "p")
    bob, bob_out = await connect(router, registry, BOB, "a")
    await send(router, alice, f"{BOB}/a", "held", expire_after=60)
    await store.barrier()
    assert bob_out.written == [b"alice@x/p:held"]
    assert await router.sweep(time.time() + 120) == 0  # written, awaiting its received
    router.detach(bob)
    assert await router.sweep(time.time() + 120) == 1  # the connection went: not in hand now
    assert {"failed": "held", "why": "message-expired"} in documents(alice_out.written)
    await depth_is_stored(store, registry)


async def test_realtime_fails_at_once_without_an_online_session() -> None:
    store, registry, router = world()
    alice, _ = await connect(router, registry, "alice@x", "p")
    registry.record(BOB, "a")
    with pytest.raises(TidingsError) as refused:
        await send(router, alice, f"{BOB}/a", "now", realtime=True)
    assert refused.value.error_id is ErrorId.MESSAGE_EXPIRED
    with pytest.raises(TidingsError):
        await send(router, alice, "carol@x", "now", realtime=True)  # no session ever
    await send(router, alice, f"{BOB}/a", None, realtime=True)  # no id: dropped, nobody to tell
    await store.barrier()
    assert await store.backlog(BOB, "a", 0, 10) == []
    bob, bob_out = await connect(router, registry, BOB, "a")
    bob.presence["status"] = "unavailable"
    with pytest.raises(TidingsError):
        await send(router, alice, f"{BOB}/a", "busy", realtime=True)
    bob.presence["status"] = "available"
    await send(router, alice, f"{BOB}/a", "now", realtime=True)
    await store.barrier()
    assert bob_out.written == [b"alice@x/p:now"]
    await depth_is_stored(store, registry)


@pytest.mark.parametrize(
    ("metadata", "seconds"),
    [
        (None, None),
        ({}, None),
        ({"other": "1"}, None),
        ({"tidings.expireAfter": "1"}, 0.001),
        ({"tidings.expireAfter": "15000"}, 15.0),
        ({"tidings.expireAfter": str(MAX_EXPIRE_AFTER_MS)}, MAX_EXPIRE_AFTER_MS / 1000),
    ],
)
def test_expire_after_is_read_from_metadata(metadata: Any, seconds: float | None) -> None:
    assert expire_after_s(metadata) == seconds


@pytest.mark.parametrize(
    "value",
    ["0", "-5", "+5", "1.5", " 5", "5 ", "", "abc", "١٢", str(MAX_EXPIRE_AFTER_MS + 1), 5, None],
)
def test_a_bad_expire_after_is_refused_naming_the_key(value: Any) -> None:
    with pytest.raises(Invalid) as refused:
        expire_after_s({"tidings.expireAfter": value})
    assert refused.value.error_id is ErrorId.INVALID_ARGUMENT
    assert "tidings.expireAfter" in refused.value.message


def test_realtime_is_the_string_true_only() -> None:
    assert is_realtime({"tidings.realtime": "true"})
    assert not is_realtime({"tidings.realtime": "false"})
    assert not is_realtime({"tidings.realtime": True})
    assert not is_realtime(None)
