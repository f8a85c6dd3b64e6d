"""tidings.sdk.testing itself: the documented example, and what the fake server promises."""

from __future__ import annotations

import asyncio

import pytest

from tidings.protocol.lime import Command, Message, Notification, SessionState
from tidings.sdk import Client
from tidings.sdk.testing import FakeServer

from .harness import bounded, connected


async def run_bot(client: Client) -> None:
    """Answers every text message with its upper case (the application under test)."""
    async for message in client.messages():
        await client.send_message(message.sender, str(message.content).upper())


async def test_the_documented_example() -> None:
    server = FakeServer()
    async with Client(
        "memory://", "bot@localhost", guest=True, transport=server.transport()
    ) as client:
        bot = asyncio.create_task(run_bot(client))
        peer = await bounded(server.next_connection())
        peer.deliver("hello", sender="alice@localhost/phone", id="m1")
        ack = await bounded(peer.expect(Notification))  # "received": the bot took it
        assert (ack.id, ack.event) == ("m1", "received")
        reply = await bounded(peer.expect(Message))
        assert reply.to == "alice@localhost/phone"
        assert bytes(reply.content) == b'"HELLO"'
    await bounded(bot)  # the iterator ended with the client


async def test_what_the_client_sent_is_logged_and_queued_in_order() -> None:
    server = FakeServer()
    async with connected(server) as (client, peer):
        await client.send_message("alice@localhost", "one", id="m1")
        await client.send_message("alice@localhost", "two", id="m2")
        await peer.ping()
        assert [m.id for m in peer.pending()] == ["m1", "m2"]
        with pytest.raises(AssertionError, match="expected a Notification"):
            await peer.expect(Notification)
        assert (await peer.receive()).id == "m2"
        assert [type(item) for item in peer.received] == [Command, Message, Message, Command]


async def test_receive_after_the_connection_closed_raises() -> None:
    server = FakeServer()
    async with connected(server, reconnect=False) as (_client, peer):
        peer.drop()
        with pytest.raises(ConnectionError):
            await bounded(peer.receive())
        with pytest.raises(ConnectionError):
            await bounded(peer.ping())


async def test_a_clean_close_finishes_the_session() -> None:
    server = FakeServer()
    async with connected(server) as (_client, peer):
        pass
    await bounded(peer.wait_closed())
    assert peer.session.state is SessionState.FINISHED
