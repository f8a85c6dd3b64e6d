"""App requests (``set /apps/{name}``) as steps of a persistent session: the handler's writes
and the memento commit together, and a stale nonce changes nothing (issue 4, scope 4)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("shop"), args=["--app", "tests.integration.shop_app:app"]
    )
    assert server.tidings("account", "add", "ida", "--password", "pw").returncode == 0
    server.start()
    yield server
    server.stop()


async def connect(server: ServerProcess, instance: str) -> WireClient:
    client = await WireClient.connect(server.ws_url)
    assert (await client.establish(f"ida@localhost/{instance}", password="pw"))["state"] == (
        "established"
    )
    return client


async def request(
    client: WireClient, name: str, args: dict[str, Any], **metadata: str
) -> dict[str, Any]:
    command: dict[str, Any] = {
        "id": f"{name}-{args}-{metadata}",
        "method": "set",
        "uri": f"/apps/{name}",
        "type": "application/json",
        "resource": args,
    }
    if metadata:
        command["metadata"] = metadata
    return await client.command(**command)


async def begin(client: WireClient, name: str) -> dict[str, Any]:
    response = await client.command(
        id=f"begin-{name}", method="set", uri=f"/sessions/{name}/persistence"
    )
    assert response["status"] == "success", response
    return dict(response["resource"])


async def test_persistent_purchase_commits_with_the_memento(shop):
    client = await connect(shop, "till")
    state = await begin(client, "till")
    assert state["memento"] is None
    bought = await request(
        client, "buy", {"item": "pen"}, **{"tidings.nonce": state["nonce"], "tidings.memento": "1"}
    )
    assert bought["status"] == "success"
    assert bought["type"] == "application/json"
    assert bought["resource"]["item"] == "pen"
    client.drop()  # a crash: no end
    again = await connect(shop, "till")
    resumed = await begin(again, "till")
    assert resumed["crashed"] is True and resumed["memento"] == "1"
    stale = await request(
        again, "buy", {"item": "pen"}, **{"tidings.nonce": state["nonce"], "tidings.memento": "2"}
    )
    assert stale["status"] == "failure" and stale["reason"]["code"] == 125
    basket = await request(again, "basket", {})
    assert basket["resource"] == {"bought": ["pen"]}  # the stale request changed nothing
    fresh = await begin(again, "till")
    assert fresh["memento"] == "1"


async def test_refusal_keeps_nothing_and_carries_101(shop):
    client = await connect(shop, "counter")
    state = await begin(client, "counter")
    for n in range(3):
        ok = await request(
            client,
            "buy",
            {"item": "ink"},
            **{"tidings.nonce": state["nonce"], "tidings.memento": str(n)},
        )
        assert ok["status"] == "success", ok
    refused = await request(
        client,
        "buy",
        {"item": "ink"},
        **{"tidings.nonce": state["nonce"], "tidings.memento": "sold-out"},
    )
    assert refused["status"] == "failure" and refused["reason"]["code"] == 101
    assert "sold out" in refused["reason"]["description"]
    assert (await begin(client, "counter"))["memento"] == "2"  # the refused step left no memento


async def test_plain_request_and_errors(shop):
    client = await connect(shop, "plain")
    assert (await request(client, "basket", {}))["status"] == "success"
    missing = await request(client, "juggle", {})
    assert missing["reason"]["code"] == 67
    bad = await request(client, "buy", {"item": 5})
    assert bad["reason"]["code"] == 101
    wrong = await client.command(id="g", method="get", uri="/apps/basket")
    assert wrong["reason"]["code"] == 63
    crashed = await request(client, "crash", {})
    assert (
        crashed["reason"]["code"] == 101 and "ZeroDivisionError" in crashed["reason"]["description"]
    )
    assert (await client.command(id="p", method="get", uri="/ping"))["status"] == "success"
