"""One store fixture over every adapter: each contract test runs against memory and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tidings.store.memory import MemoryStore
from tidings.store.sqlite import SqliteStore

ADAPTERS = ["memory", "sqlite"]


@pytest.fixture(params=ADAPTERS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    sqlite = SqliteStore(tmp_path)
    sqlite.open(asyncio.get_running_loop())
    try:
        yield sqlite
    finally:
        sqlite.close()
