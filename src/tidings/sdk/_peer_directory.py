"""Where peer nodes are: mm-platform's directory lookup, answered by the bus or the server.

A lookup of a ``signId`` that is not cached publishes ``transports.requestNodeInfo`` on the
local bus (so that an application's own discovery service, mDNS or a DHT, may answer with
``transports.nodeInfo``, as in mm-platform) and, when the node has a Tidings server, asks its
key directory too; the first answer wins and every waiter of that key shares it. Nothing
here is trusted for identity: the direct link's handshake proves the peer's key, and the
key expected there is computed from the ``signId`` itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from tidings.protocol.e2e import E2EError, InvalidKey, NodeInfo, box_id_of, verify_node_info

from ._bus import LocalBus
from ._directory import KeyOwner
from ._exceptions import PeerSendFailed

__all__ = ["PeerAddress", "PeerDirectory", "tcp_addresses"]

logger = logging.getLogger("tidings.sdk.peer")

CACHE_TTL_MS: Final = 5 * 60 * 1000
"""mm-platform's ``CACHE_REFRESH_INTERVAL``: an answer is used this long at most."""
MAX_CONNECTION_INFO: Final = 8

OwnerLookup = Callable[[str], Awaitable[KeyOwner | None]]
"""The server's ``get /keys/{signId}`` (``Client.key_owner``), or None without a server."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """What this node knows of a peer: its keys, its node when known, where to dial it."""

    sign_id: str
    box_id: str
    node: str | None
    connection_info: tuple[Any, ...]
    expires_ms: int

    @classmethod
    def of(cls, info: NodeInfo, now_ms: int) -> PeerAddress:
        return cls(
            sign_id=info.sign_id,
            box_id=info.box_id,
            node=info.node,
            connection_info=tuple(info.connection_info or ())[:MAX_CONNECTION_INFO],
            expires_ms=min(info.expires, now_ms + CACHE_TTL_MS),
        )


def tcp_addresses(connection_info: tuple[Any, ...]) -> list[tuple[str, int]]:
    """The ``tcp://host:port`` entries of a ``connectionInfo`` (others are for other
    transports and are skipped)."""
    addresses = []
    for entry in connection_info:
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str):
            continue
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            continue
        if parts.scheme == "tcp" and parts.hostname and port:
            addresses.append((parts.hostname, port))
    return addresses


class PeerDirectory:
    def __init__(
        self,
        bus: LocalBus,
        *,
        lookup_timeout: float,
        server: Callable[[], OwnerLookup | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._lookup_timeout = lookup_timeout
        self._server = server
        self._clock = clock
        self._cache: dict[str, PeerAddress] = {}
        self._pending: dict[str, asyncio.Future[PeerAddress]] = {}
        bus.on("self.transports.nodeInfo", self._on_node_info)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def cached(self, sign_id: str) -> PeerAddress | None:
        entry = self._cache.get(sign_id)
        if entry is not None and entry.expires_ms <= self._now_ms():
            del self._cache[sign_id]
            return None
        return entry

    def learn(self, address: PeerAddress) -> None:
        """Cache an answer and hand it to whoever waits for it."""
        self._cache[address.sign_id] = address
        waiter = self._pending.pop(address.sign_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(address)

    def learn_node_info(self, info: NodeInfo) -> None:
        self.learn(PeerAddress.of(info, self._now_ms()))

    def clear(self) -> None:
        """Forget every answer (mm-platform flushes its cache every 5 minutes)."""
        self._cache.clear()

    async def lookup(self, sign_id: str) -> PeerAddress:
        """The address of ``sign_id``; ``PeerSendFailed(kind="lookup-timeout")`` when nobody
        answers within the lookup timeout. Concurrent lookups of one key ask once."""
        cached = self.cached(sign_id)
        if cached is not None:
            return cached
        waiter = self._pending.get(sign_id)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._pending[sign_id] = waiter
            self._bus.emit("self.transports.requestNodeInfo", "local", sign_id)
            server = self._server()
            if server is not None:
                asyncio.get_running_loop().create_task(self._ask_server(server, sign_id, waiter))
        try:
            async with asyncio.timeout(self._lookup_timeout):
                return await asyncio.shield(waiter)
        except TimeoutError:
            if self._pending.get(sign_id) is waiter:
                del self._pending[sign_id]
                waiter.cancel()
            raise PeerSendFailed(
                "key lookup timeout", kind="lookup-timeout", destination=sign_id
            ) from None

    async def _ask_server(
        self, server: OwnerLookup, sign_id: str, waiter: asyncio.Future[PeerAddress]
    ) -> None:
        try:
            owner = await server(sign_id)
        except Exception as error:  # the server is one answerer among others
            logger.debug("directory lookup of %s on the server failed: %s", sign_id, error)
            return
        if owner is None or owner.revoked or waiter.done():
            return
        self.learn_node_info(owner.info)

    def _on_node_info(self, topic: str, sender: Any, payload: Any) -> None:
        """An answer from a discovery service on the bus: ``{signId, boxId?,
        connectionInfo?, expireTime?}`` (mm-platform's nodeInfo), or a signed node info."""
        try:
            address = self._address_of(payload)
        except (E2EError, InvalidKey, ValueError, TypeError) as error:
            logger.warning("ignoring a malformed transports.nodeInfo: %s", error)
            return
        self.learn(address)

    def _address_of(self, payload: Any) -> PeerAddress:
        now = self._now_ms()
        if not isinstance(payload, dict):
            raise ValueError("a nodeInfo is an object")
        if "signature" in payload:
            return PeerAddress.of(verify_node_info(payload), now)
        sign_id = payload.get("signId")
        if not isinstance(sign_id, str):
            raise ValueError("a nodeInfo names its signId")
        box_id = box_id_of(sign_id)
        if payload.get("boxId", box_id) != box_id:
            raise ValueError("its boxId is not the one its signId gives")
        info = payload.get("connectionInfo", [])
        if not isinstance(info, list):
            raise ValueError("connectionInfo is a list")
        expires = payload.get("expireTime", now + CACHE_TTL_MS)
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise ValueError("expireTime is an integer (ms)")
        return PeerAddress(
            sign_id=sign_id,
            box_id=box_id,
            node=None,
            connection_info=tuple(info)[:MAX_CONNECTION_INFO],
            expires_ms=min(expires, now + CACHE_TTL_MS),
        )
