"""The Client's session over the in-memory transport: establishment, reconnection, closing."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tidings.protocol.lime import Command, CommandMethod, Message, Notification, SessionState
from tidings.sdk import (
    AuthenticationFailed,
    Backoff,
    ClientClosed,
    CommandFailed,
    ConnectError,
    ConnectionLost,
    FrameReceiver,
    SessionFailed,
)
from tidings.sdk._transport import Connection
from tidings.sdk.testing import FakeServer

from .harness import bounded, connected, make_client, take


class TestEstablishment:
    async def test_the_server_assigns_the_instance_and_the_receipt_is_set(self) -> None:
        server = FakeServer()
        async with connected(server, instance=None) as (client, peer):
            assert client.node == "bob@localhost/default"
            assert client.connected
            (receipt,) = peer.received
            assert isinstance(receipt, Command)
            assert (receipt.method, receipt.uri) == (CommandMethod.SET, "/receipt")
            assert receipt.resource is not None
            assert msgspec.json.decode(bytes(receipt.resource)) == {  # type: ignore[arg-type]
                "events": ["accepted", "dispatched", "received", "consumed"]
            }

    async def test_refused_credentials_raise_authentication_failed(self) -> None:
        server = FakeServer()
        server.refuse(13, "bad password")
        client = make_client(server)
        with pytest.raises(AuthenticationFailed) as caught:
            await bounded(client.connect())
        assert caught.value.code == 13
        with pytest.raises(ClientClosed):
            await client.send_message("alice@localhost", "after a failed connect")

    async def test_other_refusals_raise_session_failed(self) -> None:
        server = FakeServer()
        server.refuse(12)
        with pytest.raises(SessionFailed) as caught:
            await bounded(make_client(server).connect())
        assert caught.value.code == 12
        assert not isinstance(caught.value, AuthenticationFailed)

    async def test_an_unreachable_server_is_a_connect_error(self) -> None:
        server = FakeServer()
        server.down = True
        with pytest.raises(ConnectError):
            await bounded(make_client(server).connect())

    async def test_no_session_within_the_connect_timeout_is_a_connect_error(self) -> None:
        server = FakeServer()
        server.unresponsive = True
        with pytest.raises(ConnectError, match="no established session"):
            await bounded(make_client(server, connect_timeout=0.01).connect())
        assert server.connections[0].closed

    async def test_a_refused_receipt_fails_the_connection(self) -> None:
        server = FakeServer(auto_receipt=False)
        client = make_client(server)
        connecting = asyncio.create_task(client.connect())
        peer = await bounded(server.next_connection())
        receipt = await bounded(peer.expect(Command))
        peer.respond_failure(receipt, 61, "no receipts today")
        with pytest.raises(CommandFailed, match="set /receipt failed"):
            await bounded(connecting)

    async def test_a_client_connects_once_and_only_after_connect_is_usable(self) -> None:
        server = FakeServer()
        client = make_client(server)
        with pytest.raises(RuntimeError, match="connect"):
            await client.send_message("alice@localhost", "too early")
        async with connected(server) as (client, _):
            with pytest.raises(RuntimeError, match="connects once"):
                await client.connect()

    async def test_closing_a_client_that_never_connected_is_harmless(self) -> None:
        client = make_client(FakeServer())
        await client.close()
        await client.close()


class TestReconnection:
    async def test_a_dropped_connection_is_replaced_as_the_same_node(self) -> None:
        server = FakeServer()
        async with connected(server, instance=None) as (client, peer):
            peer.drop()
            again = await bounded(server.next_connection())
            assert again.node == peer.node
            assert str(again.node) == "bob@localhost/default"  # the assigned instance, kept
            await again.ping()  # the client has handled the establishment
            assert client.reconnections == 1
            assert client.connected

    async def test_iterators_and_messages_carry_on_across_a_reconnection(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            reading = asyncio.create_task(take(client))
            peer.drop()
            again = await bounded(server.next_connection())
            again.deliver("after the outage", id="m1")
            (got,) = await bounded(reading)
            assert (got.id, got.content) == ("m1", "after the outage")

    async def test_a_shutdown_failure_is_retried(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            peer.fail(11, "the server is shutting down")
            again = await bounded(server.next_connection())
            await again.ping()
            assert client.reconnections == 1

    @pytest.mark.parametrize("code", [12, 13, 25, 31, 32, 35])
    async def test_permanent_failures_end_the_client(self, code: int) -> None:
        server = FakeServer()
        client = make_client(server)
        await bounded(client.connect())
        peer = await bounded(server.next_connection())
        messages = client.messages()
        peer.fail(code, "taken over")
        with pytest.raises(SessionFailed) as caught:
            await bounded(anext(messages))
        assert caught.value.code == code
        with pytest.raises(SessionFailed):
            await client.send_message("alice@localhost", "after the end")
        with pytest.raises(SessionFailed):
            await client.command("get", "/ping")
        await client.close()
        assert len(server.connections) == 1  # never retried

    async def test_without_reconnect_a_drop_ends_the_client(self) -> None:
        server = FakeServer()
        client = make_client(server, reconnect=False)
        await bounded(client.connect())
        peer = await bounded(server.next_connection())
        messages = client.messages()
        peer.drop()
        with pytest.raises(ConnectionLost):
            await bounded(anext(messages))
        await client.close()

    async def test_the_client_gives_up_when_the_backoff_runs_out(self) -> None:
        server = FakeServer()
        client = make_client(server, backoff=Backoff(initial=0.0, jitter=0.0, max_attempts=3))
        await bounded(client.connect())
        peer = await bounded(server.next_connection())
        messages = client.messages()
        server.down = True
        peer.drop()
        with pytest.raises(ConnectError, match="gave up"):
            await bounded(anext(messages))
        await client.close()

    async def test_failed_attempts_are_retried_through_the_transport(self) -> None:
        """The transport is injected: this one refuses the first two reconnections."""
        server = FakeServer()

        class Flaky:
            def __init__(self) -> None:
                self.refused = 0

            async def connect(self, url: str, receiver: FrameReceiver) -> Connection:
                if server.connections and self.refused < 2:
                    self.refused += 1
                    raise ConnectError("not yet")
                return await server.transport().connect(url, receiver)

        flaky = Flaky()
        async with connected(server, transport=flaky) as (client, peer):
            peer.drop()
            again = await bounded(server.next_connection())
            await again.ping()
            assert flaky.refused == 2
            assert client.reconnections == 1


class TestClosing:
    async def test_close_waits_for_acceptance_then_finishes(self) -> None:
        server = FakeServer(auto_accept=False)
        client = make_client(server)
        await bounded(client.connect())
        peer = await bounded(server.next_connection())
        message_id = await client.send_message("alice@localhost", "last words", wait=None)
        closing = asyncio.create_task(client.close())
        await bounded(peer.expect(Message))
        await peer.ping()
        assert not closing.done()  # still waiting for "accepted"
        peer.notify(message_id, "accepted")
        await bounded(closing)
        assert peer.session.state is SessionState.FINISHED
        assert peer.closed
        assert client.unaccepted == [] and not client.connected

    async def test_close_gives_up_waiting_after_its_timeout(self) -> None:
        server = FakeServer(auto_accept=False)
        client = make_client(server)
        await bounded(client.connect())
        message_id = await client.send_message("alice@localhost", "never stored", wait=None)
        await bounded(client.close(timeout=0.01))
        assert client.unaccepted == [message_id]  # to be sent again by a new client
        with pytest.raises(ClientClosed):
            await client.send_message("alice@localhost", "after close")

    async def test_close_ends_iterators_and_fails_waiting_calls(self) -> None:
        server = FakeServer()
        client = make_client(server)
        await bounded(client.connect())
        reading = asyncio.create_task(anext(client.messages()))
        waiting = asyncio.create_task(
            client.send_message("alice@localhost", "read me", wait="received")
        )
        peer = await bounded(server.next_connection())
        await bounded(peer.expect(Message))  # accepted at once; "received" will never come
        await bounded(client.close())
        with pytest.raises(StopAsyncIteration):
            await bounded(reading)
        with pytest.raises(ClientClosed):
            await bounded(waiting)

    async def test_acks_made_offline_are_sent_before_finishing(self) -> None:
        server = FakeServer()
        client = make_client(server)
        await bounded(client.connect())
        peer = await bounded(server.next_connection())
        peer.deliver("hold me", id="m1")
        (held,) = await take(client, auto_ack=False)
        peer.drop()
        await bounded(peer.wait_closed())
        client.ack(held)  # no connection: queued
        closing = asyncio.create_task(client.close())
        again = await bounded(server.next_connection())
        ack = await bounded(again.expect(Notification))
        assert (ack.id, ack.event) == ("m1", "received")
        await bounded(closing)
        assert again.session.state is SessionState.FINISHED
