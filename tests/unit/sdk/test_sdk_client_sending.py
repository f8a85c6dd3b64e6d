"""Sending through the in-memory transport: delivery waits, the outbox across reconnections,
and max_in_flight pacing."""

from __future__ import annotations

import asyncio

import pytest

from tidings.protocol.lime import Message, Notification, NotificationEvent
from tidings.sdk import MessageFailed, MessageInDoubt, RequestTimeout
from tidings.sdk.testing import FakeServer

from .harness import bounded, connected, make_client, take


class TestDeliveryWaits:
    async def test_send_returns_once_the_server_accepts(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server) as (client, peer):
            sending = asyncio.create_task(client.send_message("alice@localhost", "hi", id="m1"))
            sent = await bounded(peer.expect(Message))
            assert (sent.id, sent.to, bytes(sent.content)) == ("m1", "alice@localhost", b'"hi"')
            await peer.ping()
            assert not sending.done() and client.unaccepted == ["m1"]
            peer.notify("m1", "accepted")
            assert await bounded(sending) == "m1"
            assert client.unaccepted == []

    async def test_only_accepted_ends_a_wait_for_accepted(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server) as (client, peer):
            sending = asyncio.create_task(client.send_message("alice@localhost", "hi", id="m1"))
            await bounded(peer.expect(Message))
            peer.notify("m1", "dispatched")
            peer.notify("m1", "consumed")
            await peer.ping()
            assert not sending.done()
            peer.notify("m1", "accepted")
            await bounded(sending)

    async def test_a_later_event_ends_a_wait_for_an_earlier_one(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            sending = asyncio.create_task(
                client.send_message("alice@localhost", "hi", id="m1", wait="received")
            )
            await bounded(peer.expect(Message))
            peer.notify("m1", "dispatched")
            await peer.ping()
            assert not sending.done()
            peer.notify("m1", "consumed")
            await bounded(sending)

    async def test_failed_raises_with_the_reason_and_settles_the_message(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server) as (client, peer):
            sending = asyncio.create_task(client.send_message("nobody@localhost", "?", id="m1"))
            await bounded(peer.expect(Message))
            peer.notify("m1", "failed", code=42, description="no such account")
            with pytest.raises(MessageFailed) as caught:
                await bounded(sending)
            assert (caught.value.code, caught.value.message_id) == (42, "m1")
            assert caught.value.description == "no such account"
            assert client.unaccepted == []

    async def test_a_timeout_leaves_the_message_queued_for_re_sending(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server) as (client, peer):
            with pytest.raises(RequestTimeout, match="no 'accepted' notification"):
                await client.send_message("alice@localhost", "slow", id="m1", timeout=0.01)
            assert client.unaccepted == ["m1"]
            peer.drop()
            again = await bounded(server.next_connection())
            resent = await bounded(again.expect(Message))
            assert resent.id == "m1"
            again.notify("m1", "accepted")
            await again.ping()
            assert client.unaccepted == []

    async def test_wait_none_returns_at_once(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server) as (client, peer):
            assert await client.send_message("alice@localhost", "go", id="m1", wait=None) == "m1"
            assert client.unaccepted == ["m1"]
            peer.notify("m1", "accepted")

    async def test_an_id_still_waiting_cannot_be_sent_again(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server) as (client, peer):
            await client.send_message("alice@localhost", "one", id="m1", wait=None)
            with pytest.raises(ValueError, match="already waiting"):
                await client.send_message("alice@localhost", "two", id="m1", wait=None)
            peer.notify("m1", "accepted")

    async def test_contents_and_metadata_go_on_the_wire(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            await client.send_message(
                "alice@localhost", {"n": 1}, "application/json", metadata={"k": "v"}
            )
            sent = await bounded(peer.expect(Message))
            assert (sent.type, bytes(sent.content), sent.metadata) == (
                "application/json",
                b'{"n":1}',
                {"k": "v"},
            )
            with pytest.raises(ValueError):
                await client.send_message("alice@localhost", "x", wait="failed")  # type: ignore[arg-type]


class TestOutboxAcrossReconnections:
    async def test_unaccepted_messages_are_re_sent_in_order_with_their_ids(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server) as (client, peer):
            ids = [
                await client.send_message("alice@localhost", f"m{n}", wait=None) for n in range(4)
            ]
            first = [(await bounded(peer.expect(Message))) for _ in ids]
            assert [m.id for m in first] == ids
            peer.notify(ids[1], "accepted")
            peer.notify(ids[2], "failed", code=42)
            await peer.ping()
            peer.drop()
            again = await bounded(server.next_connection())
            replay = [await bounded(again.expect(Message)), await bounded(again.expect(Message))]
            assert [m.id for m in replay] == [ids[0], ids[3]]
            assert replay == [first[0], first[3]]  # the very same envelopes
            for message_id in (ids[0], ids[3]):
                again.notify(message_id, "accepted")
            await again.ping()
            assert client.unaccepted == [] and client.reconnections == 1

    async def test_a_message_sent_while_disconnected_goes_out_once_reconnected(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            peer.drop()
            await bounded(peer.wait_closed())
            assert not client.connected
            sending = asyncio.create_task(client.send_message("alice@localhost", "later", id="m1"))
            again = await bounded(server.next_connection())
            assert (await bounded(again.expect(Message))).id == "m1"
            await bounded(sending)
            await again.ping()
            assert not again.pending()  # sent once

    async def test_queued_acks_go_out_before_the_re_sent_messages(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server) as (client, peer):
            peer.deliver("to hold", id="in1")
            (held,) = await take(client, auto_ack=False)
            await client.send_message("alice@localhost", "out", id="out1", wait=None)
            await bounded(peer.expect(Message))
            peer.drop()
            await bounded(peer.wait_closed())
            client.ack(held)
            again = await bounded(server.next_connection())
            ack = await bounded(again.expect(Notification))
            assert (ack.id, ack.to, ack.event) == ("in1", held.sender, NotificationEvent.RECEIVED)
            assert (await bounded(again.expect(Message))).id == "out1"
            again.notify("out1", "accepted")


class TestResendHorizon:
    """A re-send is safe only while the server remembers the id (its duplicate window); the
    client stops re-sending a message out longer than ``resend_horizon``."""

    async def test_a_message_out_past_the_horizon_is_not_re_sent_but_in_doubt(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server, resend_horizon=1.0) as (client, peer):
            waiting = asyncio.create_task(client.send_message("alice@localhost", "old", id="old"))
            await bounded(peer.expect(Message))
            await asyncio.sleep(1.2)
            await client.send_message("alice@localhost", "new", id="new", wait=None)
            await bounded(peer.expect(Message))
            peer.drop()
            again = await bounded(server.next_connection())
            assert (await bounded(again.expect(Message))).id == "new"
            with pytest.raises(MessageInDoubt) as raised:
                await bounded(waiting)
            assert raised.value.message_id == "old" and raised.value.age > 1.0
            assert client.in_doubt == ["old"] and client.unaccepted == ["new"]
            again.notify("new", "accepted")
            await again.ping()
            assert not again.pending()  # "old" never went out again
            assert client.unaccepted == []

    async def test_without_a_horizon_everything_is_re_sent(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server, resend_horizon=None) as (client, peer):
            await client.send_message("alice@localhost", "old", id="old", wait=None)
            await bounded(peer.expect(Message))
            await asyncio.sleep(0.05)
            peer.drop()
            again = await bounded(server.next_connection())
            assert (await bounded(again.expect(Message))).id == "old"
            again.notify("old", "accepted")
            await again.ping()
            assert client.in_doubt == [] and client.unaccepted == []

    @pytest.mark.parametrize("horizon", [0.0, -1.0, float("nan")])
    def test_the_horizon_must_be_positive(self, horizon: float) -> None:
        with pytest.raises(ValueError, match="resend_horizon"):
            make_client(FakeServer(), resend_horizon=horizon)


class TestPacing:
    async def test_a_full_outbox_holds_the_next_send_until_one_settles(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server, max_in_flight=2) as (client, peer):
            for n in range(2):
                await client.send_message("alice@localhost", "x", id=f"m{n}", wait=None)
            third = asyncio.create_task(
                client.send_message("alice@localhost", "x", id="m2", wait=None)
            )
            assert [(await bounded(peer.expect(Message))).id for _ in range(2)] == ["m0", "m1"]
            await peer.ping()
            assert not peer.pending() and not third.done()
            assert client.unaccepted == ["m0", "m1"]
            peer.notify("m0", "accepted")
            assert await bounded(third) == "m2"
            assert (await bounded(peer.expect(Message))).id == "m2"
            peer.notify("m1", "accepted")
            peer.notify("m2", "accepted")

    async def test_no_room_within_the_timeout_sends_nothing(self) -> None:
        server = FakeServer(auto_accept=False)
        async with connected(server, max_in_flight=1) as (client, peer):
            first = await client.send_message("alice@localhost", "stuck", wait=None)
            with pytest.raises(RequestTimeout, match="max_in_flight"):
                await client.send_message("alice@localhost", "no room", id="late", timeout=0.01)
            assert client.unaccepted == [first]
            await bounded(peer.expect(Message))
            await peer.ping()
            assert not peer.pending()
            peer.notify(first, "accepted")

    async def test_a_fast_producer_is_paced_and_everything_arrives_in_order(self) -> None:
        server = FakeServer()
        async with connected(server, max_in_flight=3) as (client, peer):
            sent = []
            for n in range(30):
                sent.append(await client.send_message("alice@localhost", f"m{n}", wait=None))
                assert len(client.unaccepted) <= 3
            got = [(await bounded(peer.expect(Message))).id for _ in sent]
            assert got == sent

    def test_max_in_flight_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="max_in_flight"):
            make_client(FakeServer(), max_in_flight=0)
