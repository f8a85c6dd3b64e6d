"""Trust scopes on a real server: ``metadata["tidings.scope"]`` as stamped at delivery, and
``allowUnknownSender`` (docs/e2e.md, Trust scopes)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

from tidings.sdk import Client

pytestmark = pytest.mark.integration

SCOPE = "tidings.scope"
NAMES = ("ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal", "ida", "jon")
CONTACT = "application/vnd.lime.contact+json"
ACCOUNT = "application/vnd.lime.account+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("tidings-scopes")
    process = ServerProcess(data_dir, args=["--allow-guests"])
    process.add_accounts({name: f"{name}-pw" for name in NAMES})
    process.start()
    yield process
    process.stop()


async def login(server: ServerProcess, node: str) -> WireClient:
    client = await WireClient.connect(server.ws_url)
    name = node.partition("@")[0]
    session = await client.establish(node, password=f"{name}-pw")
    assert session["state"] == "established", session
    return client


async def command(client: WireClient, **fields: Any) -> dict[str, Any]:
    response = await client.command(**fields)
    assert response["status"] == "success", response
    return response


async def add_contact(owner: WireClient, identity: str, **extra: Any) -> None:
    await command(
        owner,
        id=f"add-{identity}",
        method="set",
        uri="/contacts",
        type=CONTACT,
        resource={"identity": identity, **extra},
    )


def message(mid: str | None, to: str, **metadata: str) -> dict[str, Any]:
    envelope: dict[str, Any] = {"to": to, "type": "text/plain", "content": f"text {mid}"}
    if mid is not None:
        envelope["id"] = mid
    if metadata:
        envelope["metadata"] = metadata
    return envelope


async def received(client: WireClient, content: str) -> dict[str, Any]:
    return await client.expect(lambda e: e.get("content") == content)


async def test_each_scope_and_a_forged_one_overwritten(server: ServerProcess) -> None:
    """self: another node of the recipient; friends: an accepted contact; public: anyone else,
    a pending contact included. The sender's own tidings.scope never survives."""
    ann = await login(server, "ann@localhost/a")
    await add_contact(ann, "bob@localhost")
    await add_contact(ann, "cat@localhost", isPending=True)
    senders = {
        "ann@localhost/other": "self",
        "bob@localhost/b": "friends",
        "cat@localhost/c": "public",
        "dan@localhost/d": "public",
    }
    for node, scope in senders.items():
        sender = await login(server, node)
        for mid in (f"{node}-acked", None):
            sender.send(message(mid, "ann@localhost/a", **{SCOPE: "self", "x": "kept"}))
            got = await received(ann, f"text {mid}")
            assert got["from"] == node
            assert got["metadata"] == {SCOPE: scope, "x": "kept"}
            assert list(got["metadata"]) == [SCOPE, "x"]
    guest = await WireClient.guest(server.ws_url, "stranger@localhost/g")
    # an escaped key is the same key: replaced as well
    guest.send_raw(
        b'{"id":"esc","to":"ann@localhost/a","type":"text/plain","content":"text esc",'
        b'"metadata":{"tidings\\u002escope":"self"}}'
    )
    assert (await received(ann, "text esc"))["metadata"] == {SCOPE: "public"}


async def test_the_scope_is_that_of_delivery_time(server: ServerProcess) -> None:
    """Messages wait in an offline queue while a contact is added and another removed."""
    eve = await login(server, "eve@localhost/q")
    await add_contact(eve, "fay@localhost")
    assert (await eve.finish())["state"] == "finished"
    fay = await login(server, "fay@localhost/f")
    gus = await login(server, "gus@localhost/g")
    await fay.set_receipt("accepted")
    await gus.set_receipt("accepted")
    for client, name in ((fay, "fay"), (gus, "gus")):
        client.send(message(f"{name}-1", "eve@localhost/q"))
        await client.expect_id(f"{name}-1", event="accepted")
        client.send(message(None, "eve@localhost/q", n=name))
    # each sender's envelopes are handled in order: after this answer, both are queued
    await fay.command(id="sync", method="get", uri="/ping")
    await gus.command(id="sync", method="get", uri="/ping")
    admin = await login(server, "eve@localhost/admin")
    await add_contact(admin, "gus@localhost")
    await command(admin, id="rm", method="delete", uri="/contacts/fay@localhost")
    assert (await admin.finish())["state"] == "finished"
    eve = await login(server, "eve@localhost/q")
    for mid, scope in (("fay-1", "public"), ("gus-1", "friends")):
        assert (await received(eve, f"text {mid}"))["metadata"] == {SCOPE: scope}
    got = [await received(eve, "text None") for _ in range(2)]
    assert sorted((e["metadata"]["n"], e["metadata"][SCOPE]) for e in got) == [
        ("fay", "public"),
        ("gus", "friends"),
    ]


async def test_allow_unknown_sender_false_refuses_strangers_not_contacts(
    server: ServerProcess,
) -> None:
    hal = await login(server, "hal@localhost/h")
    await add_contact(hal, "ida@localhost")
    await add_contact(hal, "jon@localhost", isPending=True)
    await command(
        hal,
        id="strict",
        method="merge",
        uri="/account",
        type=ACCOUNT,
        resource={"allowUnknownSender": False},
    )
    for node in ("jon@localhost/j", "dan@localhost/h"):
        stranger = await login(server, node)
        stranger.send(message("no", "hal@localhost/h"))
        failed = await stranger.expect_id("no", event="failed")
        assert failed["reason"]["code"] == 32, failed
        assert "contacts" in failed["reason"]["description"]
    ida = await login(server, "ida@localhost/i")
    ida.send(message("yes", "hal@localhost/h"))
    assert (await received(hal, "text yes"))["metadata"] == {SCOPE: "friends"}
    me = await login(server, "hal@localhost/other")
    me.send(message("mine", "hal@localhost/h"))
    assert (await received(hal, "text mine"))["metadata"] == {SCOPE: "self"}
    # fire-and-forget is refused as other refusals of one are: the session fails with the code
    guest = await WireClient.guest(server.ws_url, "stranger2@localhost/g")
    guest.send(message(None, "hal@localhost/h"))
    ended = await guest.expect(lambda e: e.get("state") == "failed")
    assert ended["reason"]["code"] == 32
    assert not [e for e in hal.held if e.get("content") in ("text no", "text None")]


async def test_the_sdk_exposes_the_scope(server: ServerProcess) -> None:
    async with Client(server.ws_url, "ida@localhost", instance="sdk", password="ida-pw") as ida:
        await ida.command("set", "/contacts", {"identity": "jon@localhost"}, type=CONTACT)
        jon = await login(server, "jon@localhost/s")
        dan = await login(server, "dan@localhost/s")
        jon.send(message("j1", "ida@localhost/sdk"))
        dan.send(message("d1", "ida@localhost/sdk", **{SCOPE: "friends"}))
        scopes = {}
        async with asyncio.timeout(10):
            async for received_message in ida.messages():
                scopes[received_message.id] = received_message.scope
                if len(scopes) == 2:
                    break
        assert scopes == {"j1": "friends", "d1": "public"}


async def test_a_guest_using_a_contacts_name_is_public(server: ServerProcess) -> None:
    """A contact counts as ``friends`` only as an account: a guest may take any name that is
    not an account's (one never created, or one removed since), so a guest using a name in the
    recipient's contacts is a stranger (docs/e2e.md: a guest is ``public``). Otherwise it would
    pass ``allowUnknownSender: false``, read the recipient's keys and be stamped ``friends``."""
    ann = await login(server, "ann@localhost/guarded")
    await add_contact(ann, "nobody-yet@localhost")
    open_ann = await login(server, "cat@localhost/open")
    await add_contact(open_ann, "nobody-yet@localhost")
    await command(
        ann,
        id="strict",
        method="merge",
        uri="/account",
        type=ACCOUNT,
        resource={"allowUnknownSender": False},
    )
    impostor = await WireClient.guest(server.ws_url, "nobody-yet@localhost/g")
    impostor.send(message("sneak", "ann@localhost/guarded"))
    failed = await impostor.expect_id("sneak", event="failed")
    assert failed["reason"]["code"] == 32, failed
    keys = await impostor.command(id="keys", method="get", uri="lime://ann@localhost/keys")
    assert keys["status"] == "failure" and keys["reason"]["code"] == 35, keys
    impostor.send(message("open", "cat@localhost/open"))
    assert (await received(open_ann, "text open"))["metadata"] == {SCOPE: "public"}
    # undo for the other tests of the module
    await command(
        ann,
        id="lax",
        method="merge",
        uri="/account",
        type=ACCOUNT,
        resource={"allowUnknownSender": True},
    )
