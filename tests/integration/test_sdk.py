"""The Python SDK against a real ``tidings serve`` process on loopback.

Each test gets its own server (fresh data folder, free ports) from the ``sdk_server`` fixture;
every wait in a test is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.server_process import ServerProcess

from tidings.sdk import (
    AuthenticationFailed,
    Backoff,
    Client,
    ClientClosed,
    CommandFailed,
    MessageFailed,
    ReceivedMessage,
    RequestTimeout,
    SeenMessages,
    SessionFailed,
)

pytestmark = pytest.mark.integration

STEP = 10.0  # bound on any single wait in a test
FAST = Backoff(initial=0.02, maximum=0.5)


@pytest.fixture
def sdk_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path, args=["--allow-guests"])
    server.add_accounts({name: f"{name}-pw" for name in ("alice", "bob")})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def alice(server: ServerProcess, instance: str = "a1", **kwargs: object) -> Client:
    return Client(
        server.ws_url, "alice@localhost", instance=instance, password="alice-pw", backoff=FAST,
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def bob(server: ServerProcess, instance: str = "b1", **kwargs: object) -> Client:
    return Client(
        server.ws_url, "bob@localhost", instance=instance, password="bob-pw", backoff=FAST,
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


async def take(messages: AsyncIterator[ReceivedMessage], count: int = 1) -> list[ReceivedMessage]:
    taken: list[ReceivedMessage] = []
    async with asyncio.timeout(STEP):
        while len(taken) < count:
            taken.append(await anext(messages))
    return taken


async def test_send_and_receive_between_two_clients(sdk_server: ServerProcess) -> None:
    async with alice(sdk_server) as a, bob(sdk_server) as b:
        assert (a.node, b.node) == ("alice@localhost/a1", "bob@localhost/b1")
        message_id = await a.send_message("bob@localhost/b1", "hello bob")  # waits for accepted
        json_id = await a.send_message(
            "bob@localhost/b1", {"n": 1, "tags": ["x"]}, type="application/json"
        )
        first, second = await take(b.messages(), 2)
        assert (first.id, first.sender, first.content) == (
            message_id,
            "alice@localhost/a1",
            "hello bob",
        )
        assert (second.id, second.type, second.content) == (
            json_id,
            "application/json",
            {"n": 1, "tags": ["x"]},
        )


async def test_wait_for_received_ends_when_the_destination_takes_it(
    sdk_server: ServerProcess,
) -> None:
    async with alice(sdk_server) as a, bob(sdk_server) as b:
        sending = asyncio.create_task(
            a.send_message("bob@localhost/b1", "ack me", wait="received", timeout=STEP)
        )
        (got,) = await take(b.messages())
        async with asyncio.timeout(STEP):
            assert await sending == got.id


async def test_failed_is_raised_for_an_unknown_destination(sdk_server: ServerProcess) -> None:
    async with alice(sdk_server) as a:
        with pytest.raises(MessageFailed) as caught:
            await a.send_message("nobody@localhost", "anyone?", id="to-nobody", timeout=STEP)
        assert caught.value.code == 42
        assert caught.value.message_id == "to-nobody"
        assert a.unaccepted == []  # settled: it will not be re-sent


async def test_commands_return_resources_and_raise_typed_failures(
    sdk_server: ServerProcess,
) -> None:
    async with alice(sdk_server) as a:
        pong = await a.command("get", "/ping")
        assert (pong.type, pong.resource) == ("application/vnd.lime.ping+json", {})
        with pytest.raises(CommandFailed) as caught:
            await a.command("get", "/no-such-resource")
        assert caught.value.code > 0


async def test_wrong_password_is_an_authentication_failure(sdk_server: ServerProcess) -> None:
    client = Client(sdk_server.ws_url, "alice@localhost", instance="x", password="wrong")
    with pytest.raises(AuthenticationFailed) as caught:
        await client.connect()
    assert caught.value.code == 13


async def test_key_and_guest_schemes(sdk_server: ServerProcess) -> None:
    key = sdk_server.tidings("account", "key", "alice").stdout.strip().splitlines()[-1]
    async with Client(sdk_server.ws_url, "alice@localhost", instance="k", key=key) as a:
        assert a.node == "alice@localhost/k"
        async with Client(sdk_server.ws_url, "visitor@localhost", instance="g", guest=True) as g:
            assert g.connected
            await g.send_message("alice@localhost/k", "hi from a guest")
            (got,) = await take(a.messages())
            assert (got.content, got.sender) == ("hi from a guest", g.node)


async def test_missing_instance_gets_the_default_one(sdk_server: ServerProcess) -> None:
    async with Client(sdk_server.ws_url, "bob@localhost", password="bob-pw") as b:
        assert b.node == "bob@localhost/default"


async def test_auto_ack_removes_the_message_from_the_queue(sdk_server: ServerProcess) -> None:
    async with alice(sdk_server) as a:
        async with bob(sdk_server) as b:
            first_id = await a.send_message("bob@localhost/b1", "first")
            (got,) = await take(b.messages())
            assert got.id == first_id
        # bob closed cleanly after acknowledging; a new session of the same node must not get
        # "first" again: the marker sent after it connects is the first thing it sees.
        async with bob(sdk_server) as b2:
            marker_id = await a.send_message("bob@localhost/b1", "marker")
            (got,) = await take(b2.messages())
            assert (got.id, got.content) == (marker_id, "marker")


async def test_unacknowledged_messages_are_redelivered_in_order(sdk_server: ServerProcess) -> None:
    async with alice(sdk_server) as a:
        ids = [await a.send_message("bob@localhost/b1", f"m{n}") for n in range(3)]
        async with bob(sdk_server) as b:
            taken = await take(b.messages(auto_ack=False), 3)
            assert [m.id for m in taken] == ids
        async with bob(sdk_server) as b2:
            again = await take(b2.messages(auto_ack=False), 3)
            assert [m.id for m in again] == ids
            for message in again:
                b2.ack(message)
        async with bob(sdk_server) as b3:
            marker_id = await a.send_message("bob@localhost/b1", "marker")
            (got,) = await take(b3.messages())
            assert got.id == marker_id


async def test_persisted_dedupe_drops_a_redelivery_after_a_restart(
    sdk_server: ServerProcess, tmp_path: Path
) -> None:
    seen_file = tmp_path / "bob-seen.log"
    async with alice(sdk_server) as a:
        message_id = await a.send_message("bob@localhost/b1", "once only")
        async with bob(sdk_server) as b:
            (got,) = await take(b.messages(auto_ack=False))
        # The application recorded the message, then "crashed" before its ack reached the
        # server: the key is in the file, the message is still queued on the server.
        record = SeenMessages(path=seen_file)
        record.add((got.sender, message_id))
        record.close()
        async with bob(sdk_server, dedupe_path=seen_file) as b2:
            marker_id = await a.send_message("bob@localhost/b1", "marker")
            (first,) = await take(b2.messages())
            assert first.id == marker_id  # the redelivered copy was dropped ...
        async with bob(sdk_server) as b3:  # ... and acknowledged, so it is gone for good
            marker2_id = await a.send_message("bob@localhost/b1", "marker 2")
            (first,) = await take(b3.messages())
            assert first.id == marker2_id


async def test_reconnect_and_resume_after_the_server_is_killed(sdk_server: ServerProcess) -> None:
    async with alice(sdk_server) as a, bob(sdk_server) as b:
        incoming = b.messages()
        taken_id = await a.send_message("bob@localhost/b1", "before the crash")
        held = b.messages(auto_ack=False)
        unacked_id = await a.send_message("bob@localhost/b1", "held, not acknowledged")
        (got,) = await take(incoming)
        assert got.id == taken_id
        (held_message,) = await take(held)
        assert held_message.id == unacked_id

        sdk_server.kill()
        # Sent while the server is down: queued, then sent after the reconnection.
        sending = asyncio.create_task(
            a.send_message("bob@localhost/b1", "during the outage", timeout=3 * STEP)
        )
        await asyncio.sleep(0)  # let the send start before the restart (not synchronisation)
        sdk_server.restart()
        async with asyncio.timeout(3 * STEP):
            outage_id = await sending
        # bob sees neither the acknowledged message nor the held one again (the server
        # redelivers the held one; the SDK drops it), only the new one.
        (after,) = await take(incoming)
        assert after.id == outage_id
        assert a.reconnections >= 1 and b.reconnections >= 1
        b.ack(held_message)


async def test_acknowledgements_after_a_server_restart_take_effect(
    sdk_server: ServerProcess,
) -> None:
    async with alice(sdk_server) as a, bob(sdk_server) as b:
        incoming = b.messages()
        taken_id = await a.send_message("bob@localhost/b1", "before the crash")
        (got,) = await take(incoming)
        assert got.id == taken_id
        sdk_server.kill()
        sdk_server.restart()
        outage_id = await a.send_message("bob@localhost/b1", "after", timeout=3 * STEP)
        (after,) = await take(incoming)  # the SDK re-acknowledged any redelivered copy
        assert after.id == outage_id
    async with bob(sdk_server) as b2:
        async with alice(sdk_server) as a2:
            marker_id = await a2.send_message("bob@localhost/b1", "marker")
        (first,) = await take(b2.messages())
        assert (first.id, first.content) == (marker_id, "marker")


async def test_reconnect_after_a_graceful_server_restart(sdk_server: ServerProcess) -> None:
    async with alice(sdk_server) as a, bob(sdk_server) as b:
        sdk_server.stop()  # SIGINT: sessions are told the server is shutting down
        sdk_server.restart()
        message_id = await a.send_message("bob@localhost/b1", "after restart", timeout=3 * STEP)
        (got,) = await take(b.messages())
        assert got.id == message_id
        assert a.unaccepted == []
        assert a.reconnections >= 1 and b.reconnections >= 1


async def test_a_second_connection_takes_the_session_over(sdk_server: ServerProcess) -> None:
    old = bob(sdk_server)
    await old.connect()
    try:
        async with bob(sdk_server) as new:
            with pytest.raises(SessionFailed) as caught:
                await take(old.messages())
            assert caught.value.code == 12
            assert new.connected
    finally:
        await old.close()


async def test_close_finishes_and_ends_iterators(sdk_server: ServerProcess) -> None:
    b = bob(sdk_server)
    await b.connect()
    reading = asyncio.create_task(take(b.messages()))
    await asyncio.sleep(0)  # let the reader start waiting
    async with asyncio.timeout(STEP):
        await b.close()
        with pytest.raises(StopAsyncIteration):
            await reading
    assert not b.connected
    with pytest.raises(ClientClosed):
        await b.send_message("alice@localhost", "after close")


async def test_a_resent_id_is_accepted_again_and_seen_once(sdk_server: ServerProcess) -> None:
    async with alice(sdk_server) as a:
        await a.send_message("bob@localhost/b1", "one copy", id="fixed-id")
    # A restarted sender re-sends the same id (what the SDK does for unaccepted messages):
    # the server answers "accepted" again and the application sees the message once.
    async with alice(sdk_server) as a2:
        assert await a2.send_message("bob@localhost/b1", "one copy", id="fixed-id") == "fixed-id"
        marker_id = await a2.send_message("bob@localhost/b1", "marker")
    async with bob(sdk_server) as b:
        first, second = await take(b.messages(), 2)
        assert [first.id, second.id] == ["fixed-id", marker_id]


async def test_max_in_flight_paces_a_fast_producer(sdk_server: ServerProcess) -> None:
    """Fire-and-forget sends wait for room once max_in_flight are unaccepted; all arrive."""
    async with alice(sdk_server, max_in_flight=4) as a, bob(sdk_server) as b:
        sent = []
        for n in range(50):
            sent.append(await a.send_message("bob@localhost/b1", f"m{n}", wait=None))
            assert len(a.unaccepted) <= 4
        got = await take(b.messages(), 50)
        assert [m.id for m in got] == sent
    with pytest.raises(ValueError, match="max_in_flight"):
        alice(sdk_server, max_in_flight=0)


async def test_no_room_within_the_timeout_raises_and_sends_nothing(
    sdk_server: ServerProcess,
) -> None:
    a = alice(sdk_server, max_in_flight=1)
    await a.connect()
    try:
        sdk_server.kill()  # nothing will be accepted any more
        first = await a.send_message("bob@localhost/b1", "stuck", wait=None)
        with pytest.raises(RequestTimeout, match="max_in_flight"):
            await a.send_message("bob@localhost/b1", "no room", id="late", timeout=0.2)
        assert a.unaccepted == [first]
    finally:
        await a.close(timeout=0.1)
