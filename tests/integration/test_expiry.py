"""Expiring messages on a real ``tidings serve``: ``tidings.expireAfter``, the sweep,
delivery-time expiry, expiry across a restart, ``tidings.realtime``.

Expiry needs time to pass: messages expire after 200 ms and tests wait for what follows (the
sender's ``failed``) with a generous deadline. Where the sweep is off, a test waits out the
message's expiry itself, counted from its ``accepted`` (the server stamped it before that).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

GAP = "application/vnd.tidings.gap+json"
MESSAGE_EXPIRED = 123
INVALID_ARGUMENT = 64
EVENT_DEADLINE = 30.0
SWEEP_OFF = ["--expiry-sweep-interval-s", "86400"]
SWEEP_OFTEN = ["--expiry-sweep-interval-s", "0.1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("expiry-data")
    process = ServerProcess(data_dir, args=["--allow-guests", *SWEEP_OFTEN]).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def unswept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose sweep effectively never runs: only delivery-time checks expire."""
    data_dir: Path = tmp_path_factory.mktemp("unswept-data")
    process = ServerProcess(data_dir, args=["--allow-guests", *SWEEP_OFF]).start()
    yield process
    process.stop()


def node(instance: str) -> str:
    return f"g{uuid.uuid4().hex[:10]}@localhost/{instance}"


async def login(server: ServerProcess, who: str) -> WireClient:
    client = await WireClient.connect(server.ws_url)
    session = await client.establish(who, scheme="guest")
    assert session["state"] == "established", session
    return client


async def sender(server: ServerProcess, who: str | None = None) -> WireClient:
    client = await login(server, who or node("s"))
    await client.set_receipt("accepted")
    return client


async def offline(server: ServerProcess, who: str) -> None:
    """Make ``who`` a known session with nobody connected."""
    client = await login(server, who)
    await client.finish()
    await client.closed()


def message(to: str, message_id: str, **metadata: str) -> dict[str, Any]:
    envelope: dict[str, Any] = {"id": message_id, "to": to, "type": "text/plain"}
    envelope["content"] = message_id
    if metadata:
        envelope["metadata"] = metadata
    return envelope


async def outcome(client: WireClient, message_id: str, timeout: float = 10.0) -> dict[str, Any]:
    return await client.expect(
        lambda e: e.get("id") == message_id and e.get("event") in ("accepted", "failed"),
        timeout,
    )


async def send_accepted(client: WireClient, envelope: dict[str, Any]) -> float:
    """Send; wait for ``accepted``; the time it came (the expiry was stamped before)."""
    client.send(envelope)
    event = await outcome(client, envelope["id"])
    assert event["event"] == "accepted", event
    return time.time()


async def expired(client: WireClient, message_id: str) -> dict[str, Any]:
    event = await client.expect(
        lambda e: e.get("id") == message_id and e.get("event") == "failed", EVENT_DEADLINE
    )
    assert event["reason"]["code"] == MESSAGE_EXPIRED, event
    return event


async def delivered_until(client: WireClient, last_id: str) -> list[dict[str, Any]]:
    """Every message written to ``client`` up to the one with ``last_id`` (in order)."""
    got = []
    while True:
        envelope = await client.expect(lambda e: "content" in e)
        got.append(envelope)
        if envelope.get("id") == last_id:
            return got


def lost_ids(gap: dict[str, Any]) -> list[str]:
    return [entry["id"] for entry in gap["content"]["lost"]]


async def test_a_queued_message_expires_the_sender_is_told_and_the_recipient_sees_a_gap(
    server: ServerProcess,
) -> None:
    alice = await sender(server)
    bob = node("phone")
    await offline(server, bob)
    await send_accepted(alice, message(bob, "short", **{"tidings.expireAfter": "200"}))
    await send_accepted(alice, message(bob, "long", **{"tidings.expireAfter": "600000"}))
    await send_accepted(alice, message(bob, "default"))
    failure = await expired(alice, "short")
    assert failure["from"] == "postmaster@localhost/server"
    phone = await login(server, bob)
    got = await delivered_until(phone, "default")
    assert [e["type"] for e in got] == [GAP, "text/plain", "text/plain"]
    assert got[0]["content"]["dropped"] == 1 and lost_ids(got[0]) == ["short"]
    assert [e["id"] for e in got[1:]] == ["long", "default"]
    assert got[1]["metadata"]["tidings.expireAfter"] == "600000"  # the recipient can read it


async def test_delivery_time_expiry_without_the_sweep(unswept: ServerProcess) -> None:
    alice = await sender(unswept)
    bob = node("phone")
    await offline(unswept, bob)
    stamped = await send_accepted(alice, message(bob, "gone", **{"tidings.expireAfter": "200"}))
    await send_accepted(alice, message(bob, "kept"))
    # no sweep will come: let the expiry pass, then connect the recipient
    await asyncio.sleep(max(0.0, stamped + 0.2 - time.time()) + 0.05)
    phone = await login(unswept, bob)
    got = await delivered_until(phone, "kept")
    assert [e["type"] for e in got] == [GAP, "text/plain"]
    assert lost_ids(got[0]) == ["gone"]
    await expired(alice, "gone")


async def test_expiry_across_a_restart(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "data", args=["--allow-guests", *SWEEP_OFF]).start()
    try:
        alice_node, bob = node("s"), node("phone")
        alice = await sender(process, alice_node)
        await offline(process, bob)
        await send_accepted(alice, message(bob, "m1", **{"tidings.expireAfter": "200"}))
        await alice.finish()
        await alice.closed()
        assert process.stop() == 0
        process.args = ["--allow-guests", *SWEEP_OFTEN]
        process.restart()
        alice = await login(process, alice_node)  # its kept failure, or the live one
        await expired(alice, "m1")
        alice.send(message(bob, "m2"))
        phone = await login(process, bob)
        got = await delivered_until(phone, "m2")
        assert [e["type"] for e in got] == [GAP, "text/plain"]
        assert lost_ids(got[0]) == ["m1"]
    finally:
        await WireClient.close_all()
        process.stop()


async def test_realtime_to_an_offline_node_fails_at_once(server: ServerProcess) -> None:
    alice = await sender(server)
    bob = node("phone")
    await offline(server, bob)
    alice.send(message(bob, "now", **{"tidings.realtime": "true"}))
    event = await outcome(alice, "now")
    assert event["event"] == "failed" and event["reason"]["code"] == MESSAGE_EXPIRED, event
    alice.send(message(bob, "after"))
    phone = await login(server, bob)
    got = await delivered_until(phone, "after")
    assert [e["id"] for e in got] == ["after"]  # the realtime one was never queued


async def test_realtime_to_an_online_node_is_delivered(server: ServerProcess) -> None:
    alice = await sender(server)
    bob = node("phone")
    phone = await login(server, bob)
    await send_accepted(alice, message(bob, "now", **{"tidings.realtime": "true"}))
    (got,) = await delivered_until(phone, "now")
    assert got["metadata"] == {"tidings.scope": "public", "tidings.realtime": "true"}


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "abc", "604800001", ""])
async def test_a_bad_expire_after_is_refused(server: ServerProcess, value: str) -> None:
    alice = await sender(server)
    bob = node("phone")
    phone = await login(server, bob)
    alice.send(message(bob, "bad", **{"tidings.expireAfter": value}))
    event = await outcome(alice, "bad")
    assert event["event"] == "failed", event
    assert event["reason"]["code"] == INVALID_ARGUMENT
    assert "tidings.expireAfter" in event["reason"]["description"]
    await send_accepted(alice, message(bob, "good"))
    assert [e["id"] for e in await delivered_until(phone, "good")] == ["good"]
