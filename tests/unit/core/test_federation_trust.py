"""``core.federation_trust.PeerKeys``: a request signed by a key nobody knows makes the
receiver read the origin's key document. Anyone can send such requests, unsigned by anything
real, so how often that happens is bounded: one read at a time per domain (requests that come
meanwhile share its outcome) and none again within ``refresh_interval_s`` of a read that
taught nothing new (one that did, first contact or a rotation, only the peer can cause)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
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


# -- rotation: a key the peer retired or let expire is trusted no more ------------------------


def reloaded(keys: PeerKeys, pins: Pins, peer: Peer, clock: Clock) -> PeerKeys:
    """Another node, or this one after a restart: only the stored pins carry over."""
    del keys
    return PeerKeys({}, pins, peer.document, clock=clock)


async def test_a_key_a_vouched_document_no_longer_lists_is_unpinned() -> None:
    clock, pins = Clock(), Pins()
    old, new = SigningKey.generate(ALPHA), SigningKey.generate(ALPHA)
    peer = Peer(old, clock)
    keys = PeerKeys({}, pins, peer.document, clock=clock)
    await keys.refresh(ALPHA)
    peer.published = [(old, None), (new, None)]  # the overlap: old vouches for new
    await keys.refresh(ALPHA)
    assert keys.lookup(ALPHA, old.key_id) == old.public
    # the old key leaked: the peer drops it at once; its next document lists only the new key
    peer.published = [(new, None)]
    clock.now += keys.refresh_interval_s
    await keys.refresh(ALPHA)
    assert peer.reads == 3
    assert keys.lookup(ALPHA, old.key_id) is None
    assert keys.lookup(ALPHA, new.key_id) == new.public
    keys = reloaded(keys, pins, peer, clock)
    await keys.load()
    assert keys.lookup(ALPHA, old.key_id) is None
    assert keys.lookup(ALPHA, new.key_id) == new.public


async def test_a_pinned_key_is_not_trusted_past_the_expiry_its_document_gave() -> None:
    clock, pins = Clock(), Pins()
    old, new = SigningKey.generate(ALPHA), SigningKey.generate(ALPHA)
    peer = Peer(old, clock)
    keys = PeerKeys({}, pins, peer.document, clock=clock)
    await keys.refresh(ALPHA)
    peer.published = [(old, clock.now + 3600), (new, None)]
    await keys.refresh(ALPHA)
    assert keys.lookup(ALPHA, old.key_id) == old.public  # within the overlap
    clock.now += 3600  # the expiry itself is past (read_server_document's rule)
    assert keys.lookup(ALPHA, old.key_id) is None  # by the clock, without another read
    assert keys.lookup(ALPHA, new.key_id) == new.public
    assert peer.reads == 2
    keys = reloaded(keys, pins, peer, clock)
    await keys.load()
    assert keys.lookup(ALPHA, old.key_id) is None
    assert keys.lookup(ALPHA, new.key_id) == new.public


async def test_an_expired_pin_cannot_vouch_for_a_document_even_if_it_says_otherwise() -> None:
    """Whoever holds a leaked, rotated-out key signs a document giving it no expiry and adding
    a key of theirs: neither is believed, before or after a reload."""
    clock, pins = Clock(), Pins()
    old, new, evil = (SigningKey.generate(ALPHA) for _ in range(3))
    peer = Peer(old, clock)
    keys = PeerKeys({}, pins, peer.document, clock=clock)
    await keys.refresh(ALPHA)
    peer.published = [(old, clock.now + 60), (new, None)]
    await keys.refresh(ALPHA)
    clock.now += 60 + keys.refresh_interval_s
    peer.published = [(old, None), (evil, None)]
    for fresh in (False, True):
        if fresh:
            keys = reloaded(keys, pins, peer, clock)
            await keys.load()
        with pytest.raises(FederationRefused) as refused:
            await keys.refresh(ALPHA)
        assert refused.value.error_id is FederationErrorId.UNKNOWN_KEY
        assert keys.lookup(ALPHA, old.key_id) is None
        assert keys.lookup(ALPHA, evil.key_id) is None
        assert keys.lookup(ALPHA, new.key_id) == new.public


async def test_once_every_pin_expired_no_document_is_a_first_contact_again() -> None:
    clock, pins = Clock(), Pins()
    old = SigningKey.generate(ALPHA)
    peer = Peer(old, clock)
    peer.published = [(old, int(clock.now) + 60)]
    keys = PeerKeys({}, pins, peer.document, clock=clock)
    await keys.refresh(ALPHA)
    clock.now += 60 + keys.refresh_interval_s
    peer.published = [(SigningKey.generate(ALPHA), None)]
    for fresh in (False, True):
        if fresh:
            keys = reloaded(keys, pins, peer, clock)
            await keys.load()
        with pytest.raises(FederationRefused) as refused:
            await keys.refresh(ALPHA)
        assert "expired" in refused.value.detail
        assert peer.reads == 1  # refused without reading the document
    assert PINNED_PREFIX + ALPHA in pins.rows


async def test_pins_stored_by_the_former_version_are_read_and_stay_readable_by_it() -> None:
    clock, pins = Clock(), Pins()
    old, new = SigningKey.generate(ALPHA), SigningKey.generate(ALPHA)
    pins.rows[PINNED_PREFIX + ALPHA] = json.dumps([base64.b64encode(old.public).decode()])
    peer = Peer(old, clock)
    keys = PeerKeys({}, pins, peer.document, clock=clock)
    await keys.load()
    assert keys.lookup(ALPHA, old.key_id) == old.public  # no expiry known yet
    peer.published = [(old, clock.now + 3600), (new, None)]
    await keys.refresh(ALPHA)  # vouched for by the old pin; gives it an expiry
    clock.now += 3600
    assert keys.lookup(ALPHA, old.key_id) is None
    # the former loader: {base64.b64decode(k) for k in json.loads(text)}
    row = pins.rows[PINNED_PREFIX + ALPHA]
    assert {base64.b64decode(k) for k in json.loads(row)} == {old.public, new.public}


async def test_configured_keys_stay_trusted_whatever_documents_say() -> None:
    clock, pins = Clock(), Pins()
    configured, new = SigningKey.generate(ALPHA), SigningKey.generate(ALPHA)
    peer = Peer(configured, clock)
    peer.published = [(configured, clock.now + 60), (new, None)]
    keys = PeerKeys(
        {ALPHA: [base64.b64encode(configured.public).decode()]},
        pins,
        peer.document,
        clock=clock,
    )
    await keys.refresh(ALPHA)
    clock.now += 60
    assert keys.lookup(ALPHA, configured.key_id) == configured.public  # the operator's choice
    assert keys.lookup(ALPHA, new.key_id) == new.public
    assert not pins.rows  # nothing learned is stored for a configured peer


@pytest.mark.parametrize("row", ['{"AAAA": null}', "[5]", '"text"', '{"%s": "soon"}' % ("A" * 44)])
async def test_a_row_that_is_not_pins_stops_the_load_rather_than_being_skipped(row: str) -> None:
    """Skipped, its domain would be a first contact again (trust on first use)."""
    pins = Pins()
    pins.rows[PINNED_PREFIX + ALPHA] = row
    keys = PeerKeys({}, pins, Peer(SigningKey.generate(ALPHA), Clock()).document)
    with pytest.raises(ValueError, match=re.escape(PINNED_PREFIX + ALPHA)):
        await keys.load()
