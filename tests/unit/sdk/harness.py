"""Driving a ``Client`` against ``tidings.sdk.testing.FakeServer``, in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from tidings.sdk import Backoff, Client, ReceivedMessage
from tidings.sdk.testing import FakeConnection, FakeServer

T = TypeVar("T")

STEP = 5.0
"""Bound on any single wait: a hang fails the test instead of stalling the suite."""

NO_DELAY = Backoff(initial=0.0, maximum=0.0, jitter=0.0)
"""Reconnect at once: the fake server is in the same loop, nothing is gained by waiting."""


def make_client(
    server: FakeServer,
    identity: str = "bob@localhost",
    *,
    instance: str | None = "b1",
    **kwargs: Any,
) -> Client:
    kwargs.setdefault("backoff", NO_DELAY)
    kwargs.setdefault("transport", server.transport())
    return Client("memory://", identity, instance=instance, guest=True, **kwargs)


async def bounded(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(STEP):
        return await awaitable


@asynccontextmanager
async def connected(
    server: FakeServer, **kwargs: Any
) -> AsyncIterator[tuple[Client, FakeConnection]]:
    """A connected client and the server's end of its connection; closed afterwards."""
    client = make_client(server, **kwargs)
    await bounded(client.connect())
    peer = await bounded(server.next_connection())
    try:
        yield client, peer
    finally:
        await bounded(client.close(timeout=1.0))


async def take(client: Client, count: int = 1, *, auto_ack: bool = True) -> list[ReceivedMessage]:
    messages = client.messages(auto_ack=auto_ack)
    return [await bounded(anext(messages)) for _ in range(count)]
