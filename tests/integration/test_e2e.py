"""End-to-end sealed messages through a real ``tidings serve``: SDK clients with keys in
temporary folders, a raw LIME client as the adversary, the CLI, and a byte-for-byte scan of the
server's data folder for the plaintext."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.server_process import ServerProcess

from tidings.protocol.e2e import SEALED_TYPE, NodeKeys, seal
from tidings.sdk import Backoff, Client, KeyStore, ReceivedMessage, Rejection, SealingFailed

pytestmark = pytest.mark.integration

STEP = 10.0
FAST = Backoff(initial=0.02, maximum=0.5)
NAMES = ("alice", "bob", "mallory")


@pytest.fixture
def e2e_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data")
    server.add_accounts({name: f"{name}-pw" for name in NAMES})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"


def node(server: ServerProcess, name: str, instance: str, keys: Path, **kwargs: Any) -> Client:
    return Client(
        server.ws_url, f"{name}@localhost", instance=instance, password=f"{name}-pw",
        backoff=FAST, key_dir=keys, directory_ttl=0, **kwargs,
    )  # fmt: skip


async def take(client: Client, count: int = 1) -> list[ReceivedMessage]:
    taken: list[ReceivedMessage] = []
    messages = client.messages()
    async with asyncio.timeout(STEP):
        while len(taken) < count:
            taken.append(await anext(messages))
    return taken


class Rejections:
    """Collects a client's rejections (reported as the application takes messages)."""

    def __init__(self) -> None:
        self.seen: list[Rejection] = []

    def __call__(self, rejection: Rejection) -> None:
        self.seen.append(rejection)


async def test_every_other_device_of_both_sides_opens_it(e2e_server, keys):
    """A recipient with 3 devices and a sender with 2: each of the 4 other devices reads it,
    with the sender node its signature proves."""
    async with contextlib.AsyncExitStack() as stack:
        a1, a2 = [
            await stack.enter_async_context(node(e2e_server, "alice", i, keys))
            for i in ("a1", "a2")
        ]
        bobs = [
            await stack.enter_async_context(node(e2e_server, "bob", i, keys))
            for i in ("b1", "b2", "b3")
        ]
        message_id = await a1.send_sealed("bob@localhost", {"pin": 1}, "application/json")
        for device in bobs:
            (got,) = await take(device)
            assert (got.id, got.type, got.content) == (
                message_id,
                "application/json",
                {"pin": 1},
            )
            assert got.verified_sender == "alice@localhost/a1"
            assert got.envelope.type == "application/json"
        (copy,) = await take(a2)
        assert copy.id == message_id + ":copy"
        assert (copy.content, copy.verified_sender) == ({"pin": 1}, "alice@localhost/a1")
        await a1.send_message("alice@localhost/a1", "after")  # a1 took only its own later text
        (after,) = await take(a1)
        assert after.content == "after"
        assert a1.rejections == []


async def test_a_plain_client_sees_only_ciphertext_and_a_sealed_send_needs_keys(e2e_server, keys):
    async with node(e2e_server, "bob", "b1", keys):
        pass  # bob has published its keys once
    async with (
        node(e2e_server, "alice", "a1", keys) as alice,
        Client(
            e2e_server.ws_url, "bob@localhost", instance="raw", password="bob-pw", backoff=FAST
        ) as raw_bob,
    ):
        await alice.send_sealed("bob@localhost/raw", "secret words")
        (got,) = await take(raw_bob)
        assert got.type == SEALED_TYPE
        assert "secret words" not in repr(got.content)
        assert got.verified_sender is None
        with pytest.raises(SealingFailed):
            await raw_bob.send_sealed("alice@localhost", "no keys here")
        with pytest.raises(SealingFailed, match="no published keys"):
            await alice.send_sealed("mallory@localhost", "mallory never connected with keys")


def raw(server: ServerProcess, name: str, instance: str = "raw") -> Client:
    """A client without keys: it sees sealed messages as the server does."""
    return Client(
        server.ws_url, f"{name}@localhost", instance=instance, password=f"{name}-pw",
        backoff=FAST,
    )  # fmt: skip


async def test_a_copy_replayed_to_another_recipient_is_rejected(e2e_server, keys):
    rejected = Rejections()
    async with (
        node(e2e_server, "alice", "a1", keys) as alice,
        node(e2e_server, "bob", "b1", keys, on_rejected=rejected) as bob,
        node(e2e_server, "mallory", "m1", keys),
        raw(e2e_server, "mallory") as mallory,
    ):
        message_id = await alice.send_sealed("mallory@localhost", "for mallory only")
        (sealed,) = await take(mallory)
        assert sealed.type == SEALED_TYPE
        await mallory.send_message("bob@localhost", sealed.content, SEALED_TYPE, id=message_id)
        await alice.send_sealed("bob@localhost", "next")
        (got,) = await take(bob)  # opening happens as the application takes messages
        assert got.content == "next"  # the replayed copy never reached the application
        (refusal,) = rejected.seen
        assert (refusal.id, refusal.sender, refusal.kind) == (
            message_id,
            "mallory@localhost/raw",
            "wrong-recipient",
        )


async def test_malformed_and_unpublished_keys_are_rejected(e2e_server, keys):
    rejected = Rejections()
    async with (
        node(e2e_server, "bob", "b1", keys, on_rejected=rejected) as bob,
        raw(e2e_server, "mallory") as mallory,
    ):
        await mallory.send_message("bob@localhost", {"v": 1, "junk": True}, SEALED_TYPE)
        listed = await mallory.command("get", "lime://bob@localhost/keys")
        box_ids = sorted(item["boxId"] for item in listed.resource["items"])
        message_id = str(uuid.uuid4())
        forged = seal(
            NodeKeys.generate(),  # a key mallory never published
            message_id=message_id,
            sender="mallory@localhost/raw",
            to="bob@localhost",
            content_type="text/plain",
            content="trust me",
            recipients=box_ids,
        )
        await mallory.send_message("bob@localhost", forged, SEALED_TYPE, id=message_id)
        await mallory.send_message("bob@localhost", "plain and last")
        (got,) = await take(bob)
        assert got.content == "plain and last"
        assert [r.kind for r in rejected.seen] == ["malformed", "unknown-key"]
        assert bob.rejections == rejected.seen


async def test_a_revoked_key_is_refused_even_for_what_it_sealed_before(e2e_server, keys):
    async with node(e2e_server, "bob", "b1", keys):
        pass
    async with node(e2e_server, "mallory", "m1", keys) as mallory:
        await mallory.send_sealed("bob@localhost/b1", "sealed before the revocation")
        await mallory.revoke_key(mallory.sign_id)
    rejected = Rejections()
    async with (
        node(e2e_server, "bob", "b1", keys, on_rejected=rejected) as bob,
        node(e2e_server, "alice", "a1", keys) as alice,
    ):
        await alice.send_sealed("bob@localhost/b1", "still flowing")
        (got,) = await take(bob)
        assert got.content == "still flowing"
        (refusal,) = rejected.seen
        assert (refusal.sender, refusal.kind) == ("mallory@localhost/m1", "revoked-key")


async def test_a_rotated_node_still_opens_what_was_sealed_to_its_old_key(e2e_server, keys):
    async with node(e2e_server, "bob", "b1", keys) as bob:
        first = bob.sign_id
    async with node(e2e_server, "alice", "a1", keys) as alice:
        await alice.send_sealed("bob@localhost/b1", "sealed to the first key")
    KeyStore(keys).rotate("bob@localhost/b1")
    async with node(e2e_server, "bob", "b1", keys) as bob:
        second = bob.sign_id
        assert second != first
        (got,) = await take(bob)
        assert (got.content, got.verified_sender) == (
            "sealed to the first key",
            "alice@localhost/a1",
        )
        assert [d["signId"] for d in await bob.devices("bob@localhost")] == [second]
        third = await bob.rotate_keys(revoke_old=True)
        owner = await bob.key_owner(second)
        assert owner is not None and owner.revoked and owner.node == "bob@localhost/b1"
        assert [d["signId"] for d in await bob.devices("bob@localhost")] == [third]
        async with node(e2e_server, "alice", "a1", keys) as alice:
            await alice.send_sealed("bob@localhost/b1", "sealed to the third key")
        (got,) = await take(bob)
        assert got.content == "sealed to the third key"


async def test_the_server_never_holds_the_plaintext(e2e_server, keys, tmp_path):
    """Sealed messages sent, queued for an offline device, delivered, the server stopped:
    every byte the server wrote (database, WAL, its log) is free of the plaintext, while a
    plain message's text is found (the scan itself works)."""
    secret = f"sealed-{uuid.uuid4().hex}"
    plain = f"plain-{uuid.uuid4().hex}"
    async with node(e2e_server, "bob", "b1", keys):
        pass
    async with node(e2e_server, "alice", "a1", keys) as alice:
        for n in range(20):
            await alice.send_sealed("bob@localhost/b1", f"{secret} #{n}", "text/x-secret")
        await alice.send_message("bob@localhost/b1", plain)
    async with node(e2e_server, "bob", "b2", keys) as b2:
        await alice_sends_then_b2_reads(e2e_server, keys, b2, secret)
    log = e2e_server.tail(100_000)
    e2e_server.stop()
    written = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert any(p.name.endswith("-wal") or p.suffix == ".db" for p in written), written
    blobs = [p.read_bytes() for p in written] + [log.encode()]
    assert any(plain.encode() in blob for blob in blobs)
    for needle in (secret, "text/x-secret"):
        for path, blob in zip([*written, Path("<log>")], blobs, strict=True):
            assert needle.encode() not in blob, path
            assert needle.encode("utf-16-le") not in blob, path


async def alice_sends_then_b2_reads(
    server: ServerProcess, keys: Path, b2: Client, secret: str
) -> None:
    async with node(server, "alice", "a1", keys) as alice:
        await alice.send_sealed("bob@localhost/b2", f"{secret} live", "text/x-secret")
    (got,) = await take(b2)
    assert got.content == f"{secret} live"


async def test_cli_send_sealed_to_a_listener(e2e_server, tmp_path):
    """``tidings send --sealed`` works as soon as the recipient has listened once."""
    listen = subprocess.Popen(
        [sys.executable, "-m", "tidings", "listen", "--as", "bob", "--password", "bob-pw",
         "--url", e2e_server.ws_url, "--count", "1", "--key-dir", str(tmp_path / "bob-keys")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        async with Client(
            e2e_server.ws_url, "alice@localhost", instance="watch", password="alice-pw"
        ) as watcher:
            await _until_published(watcher, "bob@localhost")
        sent = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tidings", "send", "--sealed", "--as", "alice", "--password",
             "alice-pw", "--url", e2e_server.ws_url, "--to", "bob@localhost", "--key-dir",
             str(tmp_path / "alice-keys"), "over the wire, sealed"],
            capture_output=True, text=True, timeout=STEP,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        out, errors = await asyncio.to_thread(listen.communicate, timeout=STEP)
    finally:
        if listen.poll() is None:
            listen.kill()
    assert listen.returncode == 0, errors
    line = out.strip().splitlines()[-1]
    assert '"content":"over the wire, sealed"' in line
    assert '"verifiedSender":"alice@localhost/cli"' in line
    assert (tmp_path / "bob-keys" / "bob@localhost" / "cli.key").stat().st_mode & 0o777 == 0o600


async def _until_published(watcher: Client, identity: str) -> None:
    """Wait for ``identity``'s first key publication: subscribe, then take the observe."""
    await watcher.command("subscribe", f"lime://{identity}/keys")
    envelopes = watcher.envelopes()
    async with asyncio.timeout(STEP):
        while True:
            item = await anext(envelopes)
            if getattr(item, "method", None) == "observe":
                return


async def test_a_recipient_spelled_in_another_case_is_sealed_for(e2e_server, keys):
    """LIME names and domains are case-insensitive: send_sealed finds the devices of
    ``Bob@LocalHost`` as send_message reaches them (it refused with "no published keys")."""
    async with (
        node(e2e_server, "bob", "b1", keys) as bob,
        node(e2e_server, "alice", "a1", keys) as alice,
    ):
        message_id = await alice.send_sealed("Bob@LocalHost/b1", "mixed case")
        (got,) = await take(bob)
        assert (got.id, got.content, got.verified_sender) == (
            message_id,
            "mixed case",
            "alice@localhost/a1",
        )
