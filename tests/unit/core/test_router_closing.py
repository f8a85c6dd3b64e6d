"""Entries that go once written (kept notifications, fire-and-forget) must not go when the
connection they were written to was already closing: they wait for the next connection.

The router runs against a real SQLite store; the connection side is the core's ``Outlet`` port,
implemented here by a recorder that can be closing (the window between a session ending and its
transport reporting the disconnect)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.unit.core.outlets import Recorder
from tidings.core.address import Address, parse_address
from tidings.core.router import Router
from tidings.core.session_registry import LiveSession, SessionRegistry
from tidings.store.sqlite import SqliteStore


async def _exists(identity: Address) -> bool:
    return True


async def test_a_notification_written_to_a_closing_connection_stays_queued(tmp_path: Path):
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    try:
        registry = SessionRegistry()
        router = Router("localhost", store, registry, _exists)
        closing = Recorder(closing=True)
        record = registry.record("bob@localhost", "a")
        first = LiveSession("bob@localhost", "a", closing, record, guest=True)
        await router.attach(first)
        notification = b'{"id":"m1","from":"alice@localhost/x","event":"received"}'
        router.forward_notification(parse_address("bob@localhost/a"), notification)
        await store.barrier()  # the kept copy is committed and its completion has run
        router.detach(first)
        fresh = Recorder(closing=False)
        await router.attach(LiveSession("bob@localhost", "a", fresh, record, guest=True))
        assert fresh.written == [notification]
    finally:
        store.close()
