from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


@pytest.fixture(autouse=True)
async def _close_wire_clients() -> AsyncIterator[None]:
    """Tests share a module's server: a client left open would be another live session of its
    identity in the next test (and change, say, which presence wins)."""
    yield
    await WireClient.close_all()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("tidings-data")
    process = ServerProcess(data_dir, args=["--allow-guests"])
    process.add_accounts(PASSWORDS)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def guest() -> str:
    """A fresh guest name, so tests sharing a server do not share queues."""
    return f"guest-{uuid.uuid4().hex[:12]}"
