"""Which keys speak for which peer domain (issue 13).

A peer's keys are pinned in the configuration, or learned on first contact (trust on first
use) and pinned from then on, in the store's state table so that every node and every restart
agrees. Afterwards a new key of that peer (a rotation) is taken only from a key document that a
key already pinned (and unexpired) signed, and that document replaces the learned pins: a key it
no longer lists, or lists as expired, is trusted no more, and each pin keeps the expiry the
document gave it (a rotated-out key stops verifying when its overlap ends). The trade-off: a
first contact over a network someone else controls can be intercepted, and the impostor's key
would be the one pinned; pin keys in the configuration where that matters (docs/federation.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol, TypeAlias

from ..protocol.federation import (
    KEY_BYTES,
    FederationErrorId,
    FederationRefused,
    key_id,
    read_server_document,
)
from .errors import ErrorId, Invalid
from .ports import QueueTransaction, settling

PINNED_PREFIX: Final = "federation/pinned/"
REFRESH_INTERVAL_S: Final = 10.0
"""A peer's key document is read at most this often: an unknown key id costs anyone nothing
to send, and each would otherwise make us fetch the document."""
MAX_REMEMBERED: Final = 10_000
Pins: TypeAlias = dict[bytes, int | None]
"""Raw public key -> its expiry (epoch seconds) or ``None``."""
log = logging.getLogger("tidings.federation")


class PinStore(Protocol):
    """Where learned pins are kept (the store's app-state rows)."""

    async def app_state_get(self, key: str) -> str | None: ...
    async def app_state_keys(self, prefix: str) -> list[str]: ...
    def transact(
        self, work: Callable[[QueueTransaction], Any], done: Callable[[Any], None]
    ) -> None: ...


def parse_configured_keys(configured: Mapping[str, list[str]]) -> dict[str, set[bytes]]:
    """``[federation.keys]``: base64 raw Ed25519 public keys per domain; raises ``Invalid``."""
    pins: dict[str, set[bytes]] = {}
    for domain, keys in configured.items():
        for text in keys:
            try:
                raw = base64.b64decode(text.removeprefix("ed25519:"), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != KEY_BYTES:
                raise Invalid(
                    ErrorId.INVALID_ARGUMENT,
                    f"federation key of {domain!r} is not a base64 Ed25519 public key: {text!r}",
                )
            pins.setdefault(domain, set()).add(raw)
    return pins


def encode_pins(pins: Pins) -> str:
    """A learned-pins row: a JSON object base64 key -> expiry. Code that read the former row
    (a JSON list of base64 keys) iterates it the same way, so either version reads the other's
    rows (an older node ignores the expiries)."""
    return json.dumps(
        {base64.b64encode(raw).decode("ascii"): expires for raw, expires in sorted(pins.items())}
    )


def decode_pins(text: str) -> Pins:
    """A learned-pins row, the current form or the former list (no expiry known: ``None``
    until a document vouched for by one of them gives one); raises ``ValueError``."""
    value = json.loads(text)
    if isinstance(value, list) and all(isinstance(key, str) for key in value):
        value = dict.fromkeys(value)
    if not isinstance(value, dict):
        raise ValueError("a pins row is a JSON object or a list of keys")
    pins: Pins = {}
    for key, expires in value.items():
        raw = base64.b64decode(key, validate=True)  # binascii.Error is a ValueError
        if len(raw) != KEY_BYTES or not (expires is None or type(expires) is int):
            raise ValueError(f"not a pinned key and its expiry: {key!r}: {expires!r}")
        pins[raw] = expires
    return pins


def _live(expires: float | None, now: float) -> bool:
    """The rule of ``read_server_document``: a key is good until its expiry, excluded."""
    return expires is None or expires > now


class PeerKeys:
    def __init__(
        self,
        configured: Mapping[str, list[str]],
        store: PinStore,
        fetch_document: Callable[[str], Awaitable[Any]],
        clock: Callable[[], float] = time.time,
        refresh_interval_s: float = REFRESH_INTERVAL_S,
    ) -> None:
        self._configured = parse_configured_keys(configured)
        self._store = store
        self._fetch = fetch_document
        self._clock = clock
        self.refresh_interval_s = refresh_interval_s
        self._reading: dict[str, asyncio.Future[None]] = {}
        self._read_at: dict[str, float] = {}
        self._learned: dict[str, Pins] = {}
        """Kept with expired keys too: a domain with a row is never a first contact again."""
        self._by_id: dict[str, dict[str, tuple[bytes, int | None]]] = {
            domain: _ids(domain, dict.fromkeys(keys)) for domain, keys in self._configured.items()
        }

    async def load(self) -> None:
        """Read the pins learned before (on this node or another)."""
        for name in await self._store.app_state_keys(PINNED_PREFIX):
            domain = name[len(PINNED_PREFIX) :]
            text = await self._store.app_state_get(name)
            if text is None or domain in self._configured:
                continue
            try:
                pins = decode_pins(text)
            except ValueError as exc:  # never skipped: that would make it a first contact
                raise ValueError(f"state row {name!r} is not a set of pinned keys: {exc}") from None
            self._learned[domain] = pins
            self._by_id[domain] = _ids(domain, pins)

    def lookup(self, origin: str, keyid: str) -> bytes | None:
        """The raw key ``keyid`` of ``origin`` that we trust now, if any (for
        ``verify_request``): an expired key is not, even before a document says so."""
        found = self._by_id.get(origin, {}).get(keyid)
        if found is None or not _live(found[1], self._clock()):
            return None
        return found[0]

    def pinned(self, domain: str) -> set[bytes]:
        """The keys that may vouch for ``domain``'s document now: configured keys, else the
        learned ones not expired."""
        if domain in self._configured:
            return set(self._configured[domain])
        now = self._clock()
        return {
            raw for raw, expires in self._learned.get(domain, {}).items() if _live(expires, now)
        }

    async def refresh(self, domain: str) -> None:
        """Fetch ``domain``'s key document and trust what it proves: anything on first
        contact (unless pinned in the configuration), afterwards keys vouched for by a pinned
        key. Raises ``FederationRefused`` (``federation-unknown-key``) when it proves nothing.

        One read at a time per domain: callers that come meanwhile share its outcome. Within
        ``refresh_interval_s`` of a read that taught nothing new there is no other (refused at
        once), so a flood of requests with made-up key ids cannot make us flood the peer."""
        reading = self._reading.get(domain)
        if reading is None:
            now = self._clock()
            last = self._read_at.get(domain)
            if last is not None and now - last < self.refresh_interval_s:
                raise FederationRefused(
                    FederationErrorId.UNKNOWN_KEY,
                    f"no key we trust for {domain} has this id (its key document was read "
                    f"{now - last:.0f} s ago; it is read at most every "
                    f"{self.refresh_interval_s:g} s)",
                )
            if len(self._read_at) >= MAX_REMEMBERED:
                self._read_at = {
                    d: t for d, t in self._read_at.items() if now - t < self.refresh_interval_s
                }
            self._read_at[domain] = now
            reading = asyncio.ensure_future(self._read(domain))
            self._reading[domain] = reading
            reading.add_done_callback(lambda done: self._read_done(domain, done))
        await asyncio.shield(reading)

    def _read_done(self, domain: str, done: asyncio.Future[None]) -> None:
        self._reading.pop(domain, None)
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have gone

    async def _read(self, domain: str) -> None:
        if domain in self._learned and not self.pinned(domain):
            # Every pin expired: the next document is no first contact (its keys would be
            # anyone's word); an operator pins the peer's new key (docs/federation.md).
            raise FederationRefused(
                FederationErrorId.UNKNOWN_KEY,
                f"every key pinned for {domain} has expired; pin its new key in the configuration",
            )
        try:
            document = await self._fetch(domain)
        except Exception as exc:  # the peer may be down or not a Tidings server
            raise FederationRefused(
                FederationErrorId.UNKNOWN_KEY, f"cannot read the key document of {domain}: {exc}"
            ) from None
        now = self._clock()
        pinned = self.pinned(domain)
        keys = read_server_document(document, domain=domain, pinned=pinned, now=now)
        found: Pins = {raw: expires for _, raw, expires in keys}
        known = {raw for raw, _ in self._by_id.get(domain, {}).values()}
        # The document, vouched for, is the peer's word on its keys: what it no longer lists
        # (or lists as expired) is trusted no more. Configured keys stay, without expiry.
        self._by_id[domain] = _ids(domain, found | dict.fromkeys(self._configured.get(domain, ())))
        if found.keys() - known:
            # The read taught us a key (first contact, a rotation): only the peer can make
            # that happen, so it does not count against the interval.
            self._read_at.pop(domain, None)
        if domain in self._configured:
            return
        if not pinned:
            log.warning("pinned the keys of %s on first contact (trust on first use)", domain)
        dropped = self._learned.get(domain, {}).keys() - found.keys()
        if dropped:
            log.warning("%s no longer publishes %d pinned key(s): unpinned", domain, len(dropped))
        if found != self._learned.get(domain):
            self._learned[domain] = found
            await self._save(domain, found)

    async def _save(self, domain: str, pins: Pins) -> None:
        text = encode_pins(pins)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def work(tx: QueueTransaction) -> None:
            tx.state.put(PINNED_PREFIX + domain, text)

        self._store.transact(work, settling(future))
        await future


def _ids(domain: str, pins: Pins) -> dict[str, tuple[bytes, int | None]]:
    return {key_id(domain, raw): (raw, expires) for raw, expires in pins.items()}
