"""``core.federation_trust.PeerKeys``: a request signed by a key nobody knows makes the
receiver read the origin's key document. Anyone can send such requests, unsigned by anything
real, so how often that happens is bounded: one read at a time per domain (requests that come
meanwhile share its outcome) and none again within ``refresh_interval_s`` of a read that
taught nothing new (one that did, first contact or a rotation, only the peer can cause)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tidings.core.federation_trust import PINNED_PREFIX, PeerKeys
from tidings.protocol.federation import (
    FederationErrorId,
    FederationRefused,
    SigningKey,
    server_document,
)

ALPHA = "alpha.test"


class _State:
    def __init__(self, rows: dict[str, str]) -> None:
        self.rows = rows

    def put(self, key: str, value: str) -> None:
        self.rows[key] = value


class _Tx:
    def __init__(self, rows: dict[str, str]) -> None:
        self.state = _State(rows)


class Pins:
    """The store's state rows, in memory."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    async def app_state_get(self, key: str) -> str | None:
        return self.rows.get(key)

    async def app_state_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.rows if k.startswith(prefix))

    def transact(self, work: Callable[[Any], Any], done: Callable[[Any], None]) -> None:
        done(work(_Tx(self.rows)))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Peer:
    """alpha's key document, counting reads; each read waits until ``release`` is set."""

    def __init__(self, key: SigningKey, clock: Clock) -> None:
        self.published: list[tuple[SigningKey, float | None]] = [(key, None)]
        self.clock = clock
        self.reads = 0
        self.release = asyncio.Event()
        self.release.set()
        self.reading = asyncio.Event()

    async def document(self, domain: str) -> Any:
        self.reads += 1
        self.reading.set()
        await self.release.wait()
        return server_document(domain, self.published)


async def test_first_contact_reads_the_document_once_for_requests_that_come_together() -> None:
    clock, pins = Clock(), Pins()
    key = SigningKey.generate(ALPHA)
    peer = Peer(key, clock)
    keys = PeerKeys({}, pins, peer.document, clock=clock)
    peer.release.clear()
    waiting = [asyncio.ensure_future(keys.refresh(ALPHA)) for _ in range(20)]
    # the tasks run in the order they were made: once the first reads, all 20 have asked
    await peer.reading.wait()
    peer.release.set()
    await asyncio.gather(*waiting)
    assert peer.reads == 1
    assert keys.lookup(ALPHA, key.key_id) == key.public
    assert PINNED_PREFIX + ALPHA in pins.rows


async def test_unknown_keys_do_not_make_the_document_read_again_within_the_interval() -> None:
    clock, pins = Clock(), Pins()
    peer = Peer(SigningKey.generate(ALPHA), clock)
    keys = PeerKeys({}, pins, peer.document, clock=clock)
    await keys.refresh(ALPHA)  # first contact
    assert peer.reads == 1
    peer.published = [(SigningKey.generate(ALPHA), None)]  # vouched for by no pinned key
    for _ in range(50):
        with pytest.raises(FederationRefused) as refused:
            await keys.refresh(ALPHA)
        assert refused.value.error_id is FederationErrorId.UNKNOWN_KEY
    assert peer.reads == 2
    clock.now += keys.refresh_interval_s
    with pytest.raises(FederationRefused):
        await keys.refresh(ALPHA)
    assert peer.reads == 3


async def test_a_refused_read_is_reported_to_every_request_that_waited_for_it() -> None:
    clock, pins = Clock(), Pins()

    async def down(domain: str) -> Any:
        raise OSError("connection refused")

    keys = PeerKeys({}, pins, down, clock=clock)
    outcomes = await asyncio.gather(
        *(keys.refresh(ALPHA) for _ in range(5)), return_exceptions=True
    )
    assert all(
        isinstance(o, FederationRefused) and o.error_id is FederationErrorId.UNKNOWN_KEY
        for o in outcomes
    ), outcomes


async def test_a_rotation_right_after_first_contact_is_read_at_once() -> None:
    clock, pins = Clock(), Pins()
    old = SigningKey.generate(ALPHA)
    peer = Peer(old, clock)
    keys = PeerKeys({}, pins, peer.document, clock=clock)
    await keys.refresh(ALPHA)
    new = SigningKey.generate(ALPHA)
    peer.published = [(old, clock.now + 3600), (new, None)]  # both sign
    await keys.refresh(ALPHA)  # no clock change: the first read taught a key
    assert peer.reads == 2
    assert keys.lookup(ALPHA, new.key_id) == new.public
