"""Session garbage collection against a real SQLite store, on a clock the test passes in."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.unit.core.outlets import Recorder
from tidings.core.address import Address
from tidings.core.router import Router
from tidings.core.session_registry import LiveSession, SessionRegistry
from tidings.core.session_service import SessionGcLimits, SessionService
from tidings.gateway.lime_sessions import LimeNotices
from tidings.store.sqlite import SqliteStore

SERVER = "postmaster@localhost/server"


async def _exists(identity: Address) -> bool:
    return True


async def test_a_collection_round_stores_connected_sessions_as_seen(tmp_path: Path):
    """A crash records no disconnect: what the store holds for a connected session must be
    recent, or a restart would find it idle since its connect and collect it."""
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    try:
        registry = SessionRegistry()
        notices = LimeNotices(SERVER)
        router = Router("localhost", store, registry, _exists, notices=notices)
        sessions = SessionService(router, registry, store, notices, SERVER)
        record = registry.record("bob@localhost", "a")
        await router.attach(LiveSession("bob@localhost", "a", Recorder(False), record, guest=True))
        live = registry.live("bob@localhost", "a")
        assert live is not None
        await router.save(live)
        later = record.last_seen + 3600
        collected = await sessions.collect(SessionGcLimits(idle_s=60), now=later)
        assert collected == []
        await store.barrier()
        stored = {(r.identity, r.instance): r for r in await store.load_sessions()}
        assert stored[("bob@localhost", "a")].last_seen == later
    finally:
        store.close()
