"""The Redis broker against a real Redis: order, subscriptions, a Redis restart mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.broker.redis import BrokerUnavailable, RedisBroker
from tidings.devcluster.services import Redis, free_port

pytestmark = pytest.mark.integration

WAIT_S = 20.0


class Heard:
    """What one receiver got, and a way to wait until it got enough."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, message: bytes) -> None:
        self.messages.append(message)
        self._changed.set()

    async def until(self, done: Callable[[list[bytes]], bool]) -> list[bytes]:
        async def wait() -> None:
            while not done(self.messages):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), WAIT_S)
        return self.messages


@pytest.fixture
async def pair(redis_service: Redis) -> AsyncIterator[tuple[RedisBroker, RedisBroker]]:
    a, b = RedisBroker(redis_service.url, "a"), RedisBroker(redis_service.url, "b")
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


def numbered(count: int, prefix: bytes = b"") -> list[bytes]:
    return [prefix + str(i).encode() for i in range(count)]


async def test_messages_arrive_in_order_on_node_and_broadcast_channels(pair):
    a, b = pair
    to_b, b_all, a_all = Heard(), Heard(), Heard()
    b.subscribe("tidings:node:b", to_b)
    b.subscribe("tidings:all", b_all)
    a.subscribe("tidings:all", a_all)
    await a.settled()
    await b.settled()
    direct, broadcast = numbered(2000, b"d"), numbered(2000, b"b")
    for one, other in zip(direct, broadcast, strict=True):
        a.publish("tidings:node:b", one)
        a.publish("tidings:all", other)
    assert await to_b.until(lambda got: len(got) >= len(direct)) == direct
    assert await b_all.until(lambda got: len(got) >= len(broadcast)) == broadcast
    # a node hears its own publications too
    assert await a_all.until(lambda got: len(got) >= len(broadcast)) == broadcast
    assert a.published == 4000 and a.dropped == 0
    assert b.listening("tidings:node:nobody")


async def test_unsubscribe_stops_delivery_and_tells_redis(pair):
    a, b = pair
    first, second, marker = Heard(), Heard(), Heard()
    unsubscribe_first = b.subscribe("tidings:feed:x", first)
    unsubscribe_second = b.subscribe("tidings:feed:x", second)
    b.subscribe("tidings:node:b", marker)
    await b.settled()
    a.publish("tidings:feed:x", b"one")
    await second.until(lambda got: got == [b"one"])
    unsubscribe_first()
    assert "tidings:feed:x" in b.channels  # ``second`` still listens
    a.publish("tidings:feed:x", b"two")
    await second.until(lambda got: len(got) == 2)
    unsubscribe_second()
    unsubscribe_second()  # twice is harmless
    assert "tidings:feed:x" not in b.channels
    await b.settled()
    a.publish("tidings:feed:x", b"three")  # nobody subscribed: Redis relays it to no one
    a.publish("tidings:node:b", b"after")  # same publisher, so it comes after "three"
    await marker.until(lambda got: got == [b"after"])
    assert first.messages == [b"one"]
    assert second.messages == [b"one", b"two"]
    assert b.received == 3  # "one", "two", "after": counted per message, not per receiver


async def test_redis_restart_mid_stream_reconnects_resubscribes_and_resumes(
    redis_service: Redis,
):
    a = RedisBroker(redis_service.url, "a", backoff_max_s=0.5)
    b = RedisBroker(redis_service.url, "b", backoff_max_s=0.5)
    await a.start()
    await b.start()
    try:
        heard, own = Heard(), Heard()
        b.subscribe("tidings:node:b", heard)
        a.subscribe("tidings:all", own)
        back = {"a": asyncio.Event(), "b": asyncio.Event()}
        a.on_reconnect(back["a"].set)
        b.on_reconnect(back["b"].set)
        await b.settled()
        await a.settled()
        sent = 0
        streaming = True

        async def stream() -> None:
            nonlocal sent
            while streaming:
                a.publish("tidings:node:b", str(sent).encode())
                sent += 1
                await asyncio.sleep(0.001)  # pacing of the stream, not a synchronisation

        streamer = asyncio.create_task(stream())
        await heard.until(lambda got: len(got) >= 50)
        await asyncio.to_thread(redis_service.restart)
        await asyncio.wait_for(back["a"].wait(), WAIT_S)
        await asyncio.wait_for(back["b"].wait(), WAIT_S)
        assert a.connected and b.connected
        assert a.reconnects == 1 and b.reconnects == 1
        resumed_from = sent
        await heard.until(lambda got: int(got[-1]) >= resumed_from + 50)
        streaming = False
        await streamer
        numbers = [int(message) for message in heard.messages]
        assert numbers == sorted(numbers)  # in order, with a gap where Redis was down
        assert len(set(numbers)) == len(numbers)
        tail = [n for n in numbers if n >= resumed_from]
        assert tail == list(range(resumed_from, tail[-1] + 1))  # nothing lost after it
        # a's own subscription came back too
        a.publish("tidings:all", b"hello again")
        await own.until(lambda got: got[-1:] == [b"hello again"])
    finally:
        await a.close()
        await b.close()


async def test_unreachable_redis_at_start_names_the_url():
    url = f"redis://127.0.0.1:{free_port()}/0"
    broker = RedisBroker(url, "lonely", connect_timeout_s=2)
    with pytest.raises(BrokerUnavailable, match=f"cannot reach Redis at {url}"):
        await broker.start()
    await broker.close()


async def test_publications_while_disconnected_or_beyond_the_bound_are_dropped_and_counted(
    redis_service: Redis,
):
    broker = RedisBroker(redis_service.url, "bounded", buffer_limit=3)
    broker.publish("tidings:all", b"before start")
    assert broker.dropped == 1
    await broker.start()
    try:
        for i in range(5):  # synchronous: the sender task has not run yet
            broker.publish("tidings:all", str(i).encode())
        assert broker.dropped == 3
    finally:
        await broker.close()


def test_any_channel_name_and_payload_round_trip(redis_service: Redis):
    loop = asyncio.new_event_loop()
    a, b = RedisBroker(redis_service.url, "a"), RedisBroker(redis_service.url, "b")
    loop.run_until_complete(a.start())
    loop.run_until_complete(b.start())

    async def round_trip(channel: str, payload: bytes) -> None:
        heard = Heard()
        unsubscribe = b.subscribe(channel, heard)
        await b.settled()
        a.publish(channel, payload)
        assert await heard.until(lambda got: bool(got)) == [payload]
        unsubscribe()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        name=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=200),
        payload=st.binary(max_size=20_000),
    )
    def check(name: str, payload: bytes) -> None:
        loop.run_until_complete(round_trip(f"tidings:feed:{name}", payload))

    try:
        check()
    finally:
        loop.run_until_complete(a.close())
        loop.run_until_complete(b.close())
        loop.close()
