"""Shared pieces of the peer platform tests: platforms with short timing constants, and a
recorder of bus events that tests wait on (no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.server_process import ServerProcess

from tidings.sdk import Backoff, Platform

STEP = 15.0
FAST = Backoff(initial=0.02, maximum=0.3)


def peer(
    tmp: Path,
    name: str,
    instance: str = "desk",
    *,
    server: ServerProcess | None = None,
    listen: bool | tuple[str, int] = True,
    **options: Any,
) -> Platform:
    """A platform on loopback; with ``server``, signed in as ``name`` (password ``<name>-pw``)."""
    settings: dict[str, Any] = {
        "flush_interval": 0.2,
        "lookup_timeout": 2.0,
        "connect_timeout": 2.0,
        "republish_interval": 60.0,
        **options,
    }
    credentials: dict[str, Any] = {}
    if server is not None:
        credentials = {
            "server": server.ws_url,
            "password": f"{name}-pw",
            "client_options": {"backoff": FAST, "directory_ttl": 0},
        }
    return Platform(
        f"{name}@localhost",
        instance=instance,
        data_dir=tmp / "nodes" / f"{name}-{instance}",
        key_dir=tmp / "keys",
        listen=listen if isinstance(listen, tuple) else ("127.0.0.1", 0) if listen else None,
        **credentials,
        **settings,
    )


class Recorder:
    """Every bus event matching ``pattern``: ``(topic, sender, payload)``."""

    def __init__(self, platform: Platform, pattern: str) -> None:
        self.events: list[tuple[str, Any, Any]] = []
        self._changed = asyncio.Event()
        platform.bus.on(pattern, self._record)

    def _record(self, topic: str, sender: Any, payload: Any) -> None:
        self.events.append((topic, sender, payload))
        self._changed.set()

    async def until(self, done: Callable[[list[tuple[str, Any, Any]]], bool]) -> None:
        async with asyncio.timeout(STEP):
            while not done(self.events):
                self._changed.clear()
                await self._changed.wait()

    async def count(self, n: int) -> list[tuple[str, Any, Any]]:
        await self.until(lambda events: len(events) >= n)
        return self.events

    @property
    def payloads(self) -> list[Any]:
        return [payload for _, _, payload in self.events]


def node_info_of(platform: Platform) -> dict[str, Any]:
    """What a discovery service would answer for ``platform`` (``transports.nodeInfo``)."""
    assert platform.address is not None
    host, port = platform.address
    return {
        "signId": platform.sign_id,
        "boxId": platform.box_id,
        "connectionInfo": [{"url": f"tcp://{host}:{port}"}],
    }


def introduce(sender: Platform, receiver: Platform) -> None:
    """Answer ``sender``'s directory as a discovery service would (mm-platform's
    ``transports.nodeInfo`` on the local bus)."""
    sender.messaging.send("transports.nodeInfo", "local", node_info_of(receiver))
