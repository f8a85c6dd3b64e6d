"""Who may be whom: guests never take an account's name (even one added while the server runs),
and nobody takes the names the server speaks as."""

from __future__ import annotations

import uuid

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration


def fresh() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


async def refused(server: ServerProcess, node: str, **credentials: str) -> dict[str, object]:
    session = await (await WireClient.connect(server.ws_url)).establish(node, **credentials)
    assert session["state"] == "failed", session
    return session


async def test_a_guest_cannot_take_an_account_added_while_the_server_runs(server):
    name = fresh()
    added = server.tidings("account", "add", name, "--password", "pw")
    assert added.returncode == 0, added.stderr
    failed = await refused(server, f"{name}@localhost/default", scheme="guest")
    assert failed["reason"]["code"] == 13  # type: ignore[index]
    owner = await WireClient.connect(server.ws_url)
    assert (await owner.establish(f"{name}@localhost/default", password="pw"))["state"] == (
        "established"
    )
    await refused(server, f"{name}@localhost/default", scheme="guest")
    await refused(server, f"{name}@localhost/other", scheme="guest")


async def test_a_guest_squatting_a_name_goes_when_its_account_signs_in(server):
    name = fresh()
    squatter = await WireClient.guest(server.ws_url, f"{name}@localhost/lurk")
    assert server.tidings("account", "add", name, "--password", "pw").returncode == 0
    owner = await WireClient.connect(server.ws_url)
    assert (await owner.establish(f"{name}@localhost/home", password="pw"))["state"] == (
        "established"
    )
    ended = await squatter.expect(lambda e: e.get("state") == "failed")
    assert ended["reason"]["code"] == 13 and "account" in ended["reason"]["description"]
    await squatter.closed()


@pytest.mark.parametrize(
    "node",
    [
        "postmaster@localhost/server",
        "postmaster@localhost/spy",
        "Postmaster@localhost/spy",
        "POSTMASTER@localhost",
    ],
)
async def test_nobody_signs_in_as_the_server(server, node):
    failed = await refused(server, node, scheme="guest")
    assert failed["reason"]["code"] == 13  # type: ignore[index]
    assert "the server" in failed["reason"]["description"]  # type: ignore[index]
    await refused(server, node, password="anything")


async def test_messages_to_the_server_reach_no_client(server, guest):
    alice = await WireClient.guest(server.ws_url, f"{guest}@localhost/a")
    await alice.set_receipt("accepted")
    alice.send({"id": "pm", "to": "postmaster@localhost/spy", "type": "text/plain", "content": "x"})
    answer = await alice.expect(lambda e: e.get("id") == "pm" and "event" in e)
    assert answer["event"] == "failed" and answer["reason"]["code"] == 42


def test_the_server_names_cannot_become_accounts(server):
    for name in ("postmaster", "POSTMASTER"):
        result = server.tidings("account", "add", name, "--password", "pw")
        assert result.returncode != 0
    assert "postmaster" not in server.tidings("account", "list").stdout.split()
