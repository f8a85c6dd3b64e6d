"""A Feedme client whose FeedOpen needs the store while the store is gone (its PostgreSQL
database dropped under the running server): the client gets a FeedOpenResponse naming the
failure, never silence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.lime_wire import WireClient
from tests.postgres import PostgresDatabases
from tests.server_process import ServerProcess, running

pytestmark = pytest.mark.integration


@pytest.fixture
def server(postgres: PostgresDatabases, tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    url = postgres.fresh()
    process = ServerProcess(tmp_path, args=["--allow-guests", "--store", url])
    with running(process):
        yield process, url
    postgres.drop(url)


async def open_feed(client: WireClient, name: str) -> dict[str, object]:
    client.send({"MessageType": "FeedOpen", "FeedName": name, "FeedArgs": {}})
    return await client.expect(
        lambda m: m.get("MessageType") == "FeedOpenResponse" and m.get("FeedName") == name
    )


async def test_a_feed_open_the_store_cannot_answer_is_answered_with_the_failure(
    server: tuple[ServerProcess, str], postgres: PostgresDatabases
) -> None:
    process, url = server
    client = await WireClient.connect(process.ws_url, subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    await client.expect(lambda m: m.get("MessageType") == "HandshakeResponse")
    before = await open_feed(client, "before")
    assert before["Success"] is False
    assert before["ErrorData"] == {"message": "No such feed"}
    postgres.drop(url)
    after = await open_feed(client, "after")
    assert after["Success"] is False
    assert after["ErrorCode"] == "INTERNAL_ERROR"
    assert after["ErrorData"]["errorId"] == "storage-unavailable"  # type: ignore[index]
