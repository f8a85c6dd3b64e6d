"""Which keys speak for which peer domain (issue 13).

A peer's keys are pinned in the configuration, or learned on first contact (trust on first
use) and pinned from then on, in the store's state table so that every node and every restart
agrees. Afterwards a new key of that peer (a rotation) is taken only from a key document that a
key already pinned signed. The trade-off: a first contact over a network someone else controls
can be intercepted, and the impostor's key would be the one pinned; pin keys in the
configuration where that matters (docs/federation.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

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
        self._learned: dict[str, set[bytes]] = {}
        self._by_id: dict[str, dict[str, bytes]] = {
            domain: {key_id(domain, raw): raw for raw in keys}
            for domain, keys in self._configured.items()
        }

    async def load(self) -> None:
        """Read the pins learned before (on this node or another)."""
        for name in await self._store.app_state_keys(PINNED_PREFIX):
            domain = name[len(PINNED_PREFIX) :]
            text = await self._store.app_state_get(name)
            if text is None or domain in self._configured:
                continue
            keys = {base64.b64decode(k) for k in json.loads(text)}
            self._learned[domain] = keys
            self._by_id[domain] = {key_id(domain, raw): raw for raw in keys}

    def lookup(self, origin: str, keyid: str) -> bytes | None:
        """The raw key ``keyid`` of ``origin`` that we trust, if we know it (for
        ``verify_request``)."""
        return self._by_id.get(origin, {}).get(keyid)

    def pinned(self, domain: str) -> set[bytes]:
        return self._configured.get(domain) or self._learned.get(domain) or set()

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
        try:
            document = await self._fetch(domain)
        except Exception as exc:  # the peer may be down or not a Tidings server
            raise FederationRefused(
                FederationErrorId.UNKNOWN_KEY, f"cannot read the key document of {domain}: {exc}"
            ) from None
        pinned = self.pinned(domain)
        keys = read_server_document(document, domain=domain, pinned=pinned, now=self._clock())
        found = {raw for _, raw, _ in keys}
        known = set(self._by_id.get(domain, {}).values())
        self._by_id[domain] = {kid: raw for kid, raw, _ in keys} | {
            key_id(domain, raw): raw for raw in pinned
        }
        if found - known:
            # The read taught us a key (first contact, a rotation): only the peer can make
            # that happen, so it does not count against the interval.
            self._read_at.pop(domain, None)
        if domain in self._configured:
            return
        if not pinned:
            log.warning("pinned the keys of %s on first contact (trust on first use)", domain)
        learned = pinned | found
        if learned != self._learned.get(domain):
            self._learned[domain] = learned
            await self._save(domain, learned)

    async def _save(self, domain: str, keys: set[bytes]) -> None:
        text = json.dumps(sorted(base64.b64encode(k).decode("ascii") for k in keys))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def work(tx: QueueTransaction) -> None:
            tx.state.put(PINNED_PREFIX + domain, text)

        self._store.transact(work, settling(future))
        await future
