"""The mm-platform acceptance scenarios (reference 2.10) that apply to a server-relayed design,
one test each, on a real ``tidings serve`` with SDK clients (docs/e2e.md maps the others)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from tests.server_process import ServerProcess

from tidings.sdk import Backoff, Client, KeyFileError, KeyStore, MessageFailed, ReceivedMessage

pytestmark = pytest.mark.integration

STEP = 10.0
FAST = Backoff(initial=0.02, maximum=0.5)
EXPIRED = 123


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data")
    process.add_accounts({name: f"{name}-pw" for name in ("alice", "bob")})
    process.start()
    try:
        yield process
    finally:
        process.stop()


def client(server: ServerProcess, node: str, **kwargs: Any) -> Client:
    identity, _, instance = node.partition("/")
    name = identity.partition("@")[0]
    return Client(
        server.ws_url, identity, instance=instance, password=f"{name}-pw", backoff=FAST,
        **kwargs,
    )  # fmt: skip


async def take(receiver: Client) -> ReceivedMessage:
    async with asyncio.timeout(STEP):
        return await anext(receiver.messages())


async def test_scenario_1_identity_persists_and_derives(server, tmp_path):
    keys = tmp_path / "keys"
    async with client(server, "bob@localhost/b1", key_dir=keys) as bob:
        sign_id, box_id = bob.sign_id, bob.box_id
        (published,) = await bob.devices("bob@localhost")
    raw_sign = base64.b64decode(sign_id)
    assert len(raw_sign) == 32
    assert base64.b64decode(box_id) == crypto_sign_ed25519_pk_to_curve25519(raw_sign)
    assert (published["signId"], published["boxId"]) == (sign_id, box_id)
    key_file = KeyStore(keys).path_of("bob@localhost/b1")
    assert len(base64.b64decode(key_file.read_text())) == 64
    server.stop()
    server.restart()
    async with client(server, "bob@localhost/b1", key_dir=keys) as bob:
        assert (bob.sign_id, bob.box_id) == (sign_id, box_id)
    key_file.write_text(base64.b64encode(b"\x01" * 63).decode() + "\n")
    garbage = key_file.read_bytes()
    with pytest.raises(KeyFileError, match=str(key_file.name)):
        async with client(server, "bob@localhost/b1", key_dir=keys):
            pass
    assert key_file.read_bytes() == garbage  # refused, not replaced


async def test_scenario_4_scope_follows_devices_and_contacts(server):
    async with (
        client(server, "alice@localhost/a1") as alice,
        client(server, "alice@localhost/a2") as other_device,
        client(server, "bob@localhost/b1") as bob,
    ):
        await bob.send_message("alice@localhost/a1", "from bob")
        assert (await take(alice)).scope == "public"
        await other_device.send_message("alice@localhost/a1", "from my other device")
        assert (await take(alice)).scope == "self"
        await alice.command(
            "set", "/contacts", {"identity": "bob@localhost"},
            type="application/vnd.lime.contact+json",
        )  # fmt: skip
        await bob.send_message("alice@localhost/a1", "from a friend")
        assert (await take(alice)).scope == "friends"
        await alice.command("delete", "/contacts/bob@localhost")
        await bob.send_message("alice@localhost/a1", "from bob again")
        assert (await take(alice)).scope == "public"


async def test_scenario_5_replacing_contacts_replaces_the_circle(server, tmp_path):
    """mm-platform's ``friends.update [K1,K2]`` then ``[K3]``: here the contacts are the
    circle, and the scope is read when a message is delivered."""
    server.add_accounts({name: f"{name}-pw" for name in ("carol", "dave")})
    contact = "application/vnd.lime.contact+json"
    async with (
        client(server, "alice@localhost/a1") as alice,
        client(server, "bob@localhost/b1") as bob,
        client(server, "carol@localhost/c1") as carol,
        client(server, "dave@localhost/d1") as dave,
    ):
        for friend in ("bob@localhost", "carol@localhost"):
            await alice.command("set", "/contacts", {"identity": friend}, type=contact)
        await alice.command("delete", "/contacts/bob@localhost")
        await alice.command("delete", "/contacts/carol@localhost")
        await alice.command("set", "/contacts", {"identity": "dave@localhost"}, type=contact)
        scopes = {}
        for sender in (bob, carol, dave):
            await sender.send_message("alice@localhost/a1", "hi")
            got = await take(alice)
            scopes[got.sender.partition("@")[0]] = got.scope
        assert scopes == {"bob": "public", "carol": "public", "dave": "friends"}


async def test_scenario_8_expiry_tells_the_sender(server):
    async with client(server, "bob@localhost/b1"):
        pass  # bob's session exists, and is offline from now on
    async with client(server, "alice@localhost/a1") as alice:
        with pytest.raises(MessageFailed) as failure:
            await alice.send_message(
                "bob@localhost/b1",
                "only for the next 200 ms",
                metadata={"tidings.expireAfter": "200"},
                wait="received",
            )
        assert failure.value.code == EXPIRED
    async with client(server, "bob@localhost/b1") as bob:
        await bob.command("get", "/ping")  # the backlog has been written by now
        later = await alice_sends(server, "bob@localhost/b1", "after the expiry")
        got = await take(bob)
        while got.sender.startswith("postmaster@"):  # the gap marker of the expired message
            got = await take(bob)
        assert (got.id, got.content) == (later, "after the expiry")


async def alice_sends(server: ServerProcess, to: str, text: str) -> str:
    async with client(server, "alice@localhost/a1") as alice:
        return await alice.send_message(to, text)
