"""Receiving through the in-memory transport: deduplication, acknowledgements, iterators."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tidings.protocol.lime import (
    Command,
    CommandMethod,
    Message,
    Notification,
    NotificationEvent,
    Raw,
)
from tidings.sdk import ReceivedMessage, SeenMessages
from tidings.sdk.testing import FakeConnection, FakeServer

from .harness import bounded, connected, make_client, take

ALICE = "alice@localhost/a"


def acks(peer: FakeConnection) -> list[str]:
    """Ids of the ``received`` notifications the client sent, in order."""
    return [
        item.id
        for item in peer.received
        if isinstance(item, Notification)
        and item.event is NotificationEvent.RECEIVED
        and isinstance(item.id, str)
    ]


class TestAcknowledgements:
    async def test_taking_a_message_acknowledges_it_to_its_sender(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            peer.deliver({"n": 1}, id="m1", sender=ALICE, type="application/json")
            (got,) = await take(client)
            assert (got.id, got.sender, got.to, got.content) == (
                "m1",
                ALICE,
                peer.node and peer.node.text,
                {"n": 1},
            )
            ack = await bounded(peer.expect(Notification))
            assert (ack.id, ack.to, ack.event) == ("m1", ALICE, NotificationEvent.RECEIVED)

    async def test_with_auto_ack_off_nothing_is_acknowledged_until_ack(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            peer.deliver("hold", id="m1")
            (held,) = await take(client, auto_ack=False)
            await peer.ping()
            assert acks(peer) == []
            client.ack(held)
            client.ack(held)  # harmless twice
            await peer.ping()
            assert acks(peer) == ["m1", "m1"]

    async def test_messages_without_id_are_neither_deduplicated_nor_acknowledged(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            anonymous = Message(
                from_=ALICE, to=str(peer.node), type="text/plain", content=Raw(b'"hey"')
            )
            peer.send(anonymous)
            peer.send(anonymous)
            first, second = await take(client, 2)
            assert first.id is None and second.key is None
            client.ack(first)
            await peer.ping()
            assert acks(peer) == []


class TestDeduplication:
    async def test_a_copy_of_a_message_still_in_the_inbox_is_dropped(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            peer.deliver("one", id="m1")
            peer.deliver("one", id="m1")
            peer.deliver("two", id="m2")
            got = await take(client, 2)
            assert [m.id for m in got] == ["m1", "m2"]

    async def test_the_sender_is_part_of_the_key(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            peer.deliver("from alice", id="m1", sender=ALICE)
            peer.deliver("from carol", id="m1", sender="carol@localhost/c")
            got = await take(client, 2)
            assert [m.sender for m in got] == [ALICE, "carol@localhost/c"]

    async def test_a_redelivery_of_a_taken_message_is_dropped_and_acknowledged_again(
        self,
    ) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            peer.deliver("once", id="m1")
            await take(client)
            peer.drop()  # say the ack was lost with the connection
            again = await bounded(server.next_connection())
            again.deliver("once", id="m1")
            again.deliver("next", id="m2")
            (got,) = await take(client)
            assert got.id == "m2"
            await again.ping()
            assert acks(again) == ["m1", "m2"]

    async def test_a_held_message_is_not_given_twice_nor_acknowledged_by_its_copy(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            peer.deliver("hold", id="m1")
            (held,) = await take(client, auto_ack=False)
            peer.drop()
            again = await bounded(server.next_connection())
            again.deliver("hold", id="m1")
            again.deliver("next", id="m2")
            (got,) = await take(client, auto_ack=False)
            assert got.id == "m2"
            await again.ping()
            assert acks(again) == []  # the application still holds m1
            client.ack(held)
            client.ack(got)
            await again.ping()
            assert acks(again) == ["m1", "m2"]

    async def test_dedupe_path_carries_the_record_across_a_restart(self, tmp_path: Path) -> None:
        record = tmp_path / "seen.log"
        server = FakeServer()
        async with connected(server, dedupe_path=record) as (client, peer):
            peer.deliver("once only", id="m1")
            await take(client)
        recorded = SeenMessages(path=record)
        assert (ALICE, "m1") in recorded
        recorded.close()
        async with connected(server, dedupe_path=record) as (client, peer):
            peer.deliver("once only", id="m1")  # the server redelivers after the restart
            peer.deliver("marker", id="m2")
            (got,) = await take(client)
            assert got.id == "m2"
            await peer.ping()
            assert acks(peer) == ["m1", "m2"]


class TestIterators:
    async def test_envelopes_yields_everything_in_arrival_order(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            peer.deliver("first", id="m1")
            peer.notify("elsewhere", "dispatched")
            request = Command(
                id="c1", from_=ALICE, to=str(peer.node), method=CommandMethod.SET, uri="/x"
            )
            peer.send(request)
            peer.deliver("second", id="m2")
            envelopes = client.envelopes()
            items = [await bounded(anext(envelopes)) for _ in range(4)]
            assert isinstance(items[0], ReceivedMessage) and items[0].id == "m1"
            assert isinstance(items[1], Notification) and items[1].id == "elsewhere"
            assert items[2] == request
            assert isinstance(items[3], ReceivedMessage) and items[3].id == "m2"

    async def test_messages_skip_what_envelopes_would_also_yield(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            peer.notify("elsewhere", "dispatched")
            peer.deliver("only this", id="m1")
            (got,) = await take(client)
            assert got.id == "m1"
            left = await bounded(anext(client.envelopes()))
            assert isinstance(left, Notification) and left.id == "elsewhere"

    async def test_the_servers_pings_are_answered_not_yielded(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            await peer.ping()
            peer.deliver("after the ping", id="m1")
            item = await bounded(anext(client.envelopes()))
            assert isinstance(item, ReceivedMessage) and item.id == "m1"

    async def test_iterators_share_one_inbox(self) -> None:
        server = FakeServer()
        async with connected(server) as (client, peer):
            one, two = client.messages(), client.messages()
            readers = [asyncio.create_task(anext(one)), asyncio.create_task(anext(two))]
            peer.deliver("a", id="m1")
            peer.deliver("b", id="m2")
            got = await bounded(asyncio.gather(*readers))
            assert sorted(m.id or "" for m in got) == ["m1", "m2"]

    async def test_an_iterator_made_before_connecting_reads_after(self) -> None:
        server = FakeServer()
        client = make_client(server)
        messages = client.messages()
        await bounded(client.connect())
        peer = await bounded(server.next_connection())
        peer.deliver("hi", id="m1")
        assert (await bounded(anext(messages))).id == "m1"
        await bounded(client.close())
        with pytest.raises(StopAsyncIteration):
            await anext(messages)

    async def test_messages_left_in_the_inbox_at_close_are_not_acknowledged(self) -> None:
        server = FakeServer()
        async with connected(server) as (_client, peer):
            peer.deliver("never taken", id="m1")
            await peer.ping()
        assert acks(peer) == []
