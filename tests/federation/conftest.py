from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.lime_wire import WireClient


@pytest.fixture(autouse=True)
async def _close_wire_clients() -> AsyncIterator[None]:
    """A client left open would outlive its test (and its event loop)."""
    yield
    await WireClient.close_all()
