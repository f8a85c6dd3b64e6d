from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.federation.support import Server, pair
from tests.lime_wire import WireClient


@pytest.fixture(autouse=True)
async def _close_wire_clients() -> AsyncIterator[None]:
    """A client left open would outlive its test (and its event loop)."""
    yield
    await WireClient.close_all()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """alpha.test and beta.test, each the other's peer, shared by a module's tests."""
    alpha, beta = pair(tmp_path_factory.mktemp("federation"))
    alpha.start()
    beta.start()
    yield alpha, beta
    alpha.stop()
    beta.stop()
