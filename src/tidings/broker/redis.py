"""The broker of a deployment of several nodes: Redis pub/sub (``core.ports.Broker``).

One node holds two connections to Redis, whatever its number of sessions and feeds:

- the *subscriber*, subscribed to every channel someone on this node listens to; a reader task
  hands each message to the channel's receivers, in the order Redis sent them;
- the *publisher*: ``publish`` only appends to a bounded buffer (it never waits), and a sender
  task writes everything buffered as one pipeline, in order, then reads the replies.

Both live and die together as one *link*. When either connection is lost (or the subscriber
hears nothing, not even the answer to its own ``PING``, for ``3 * health_s``), both are closed
and opened again after a backoff that doubles from ``backoff_min_s`` to ``backoff_max_s``;
every channel is subscribed again, then the ``on_reconnect`` callbacks run (what this node
missed meanwhile is in the store: they re-read it). Publications made while the link is down,
beyond the buffer's bound, or in a pipeline the loss interrupted are dropped and counted in
``dropped``: the store holds the truth, the broker only makes it arrive sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.exceptions import RedisError

from ..config import without_password

log = logging.getLogger("tidings.broker")

BUFFER_LIMIT = 100_000
"""Publications waiting to be written beyond which new ones are dropped."""
BATCH_LIMIT = 1000
"""Most publications written as one pipeline."""


class BrokerUnavailable(RuntimeError):
    """Redis could not be reached when the broker started; the message names the URL."""


class _LinkLost(Exception):
    """The link to Redis is gone (or silent): the supervisor opens it again."""


class RedisBroker:
    """Redis pub/sub for the nodes of one deployment; see the module's docstring.

    Counters (read them as attributes): ``published`` (written to Redis), ``dropped`` (never
    written, or in a pipeline that the loss of the link interrupted), ``reconnects`` (links
    opened again after a loss), ``received`` (messages handed to this node's receivers)."""

    distributed = True

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        buffer_limit: int = BUFFER_LIMIT,
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 2.0,
        health_s: float = 5.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.node_id = node_id
        self._where = without_password(url)
        self.published = 0
        self.dropped = 0
        self.reconnects = 0
        self.received = 0
        self._options = parse_url(url)
        self._buffer_limit = buffer_limit
        self._backoff = (backoff_min_s, backoff_max_s)
        self._health_s = health_s
        self._connect_timeout_s = connect_timeout_s
        self._receivers: dict[str, list[Callable[[bytes], None]]] = {}
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._queued = 0
        """Publications put in the outbox so far."""
        self._settled = 0
        """Of those, how many Redis answered or the loss of a link dropped."""
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._commands: deque[tuple[Any, ...]] = deque()
        """Subscriber commands (SUBSCRIBE, UNSUBSCRIBE, PING) not written yet."""
        self._pings: dict[bytes, asyncio.Future[None]] = {}
        self._ping_ids = itertools.count()
        self._wake_sender = asyncio.Event()
        self._wake_commands = asyncio.Event()
        self._connected = False
        self._supervisor: asyncio.Task[None] | None = None
        self._link: tuple[AbstractConnection, AbstractConnection] | None = None

    # -- the port ------------------------------------------------------------------------------

    def publish(self, channel: str, message: bytes) -> None:
        """Queue ``message`` for ``channel``; never waits. Dropped (and counted) while the link
        is down or when ``buffer_limit`` publications are already waiting."""
        if not self._connected or len(self._outbox) >= self._buffer_limit:
            self.dropped += 1
            return
        self._outbox.append((channel, message))
        self._queued += 1
        self._wake_sender.set()

    def subscribe(self, channel: str, receiver: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``receiver`` with each message on ``channel`` (from every node, this one too);
        returns the function that unsubscribes it. Redis hears of the channel when its first
        receiver comes and of its end when its last one goes."""
        receivers = self._receivers.get(channel)
        if receivers is None:
            receivers = self._receivers[channel] = []
            self._command("SUBSCRIBE", channel)
        receivers.append(receiver)

        def unsubscribe() -> None:
            if receiver in receivers:
                receivers.remove(receiver)
            if not receivers and self._receivers.get(channel) is receivers:
                del self._receivers[channel]
                self._command("UNSUBSCRIBE", channel)

        return unsubscribe

    def listening(self, channel: str) -> bool:
        """Always: other nodes may be subscribed, and only Redis knows."""
        return True

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the link is back after a loss, once every channel is
        subscribed again (messages of the gap were missed: re-read the store)."""
        self._reconnect_callbacks.append(callback)

    async def start(self) -> None:
        """Open the link; raises ``BrokerUnavailable`` naming the URL if Redis does not answer."""
        if self._supervisor is not None:
            return
        try:
            await self._open()
        except (RedisError, OSError, _LinkLost) as exc:
            raise BrokerUnavailable(f"cannot reach Redis at {self._where}: {exc}") from exc
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name="redis-broker"
        )

    async def close(self) -> None:
        """Stop the tasks and close both connections (what is still buffered is dropped)."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._shut()
        self.dropped += len(self._outbox)
        self._settle(len(self._outbox))
        self._outbox.clear()

    async def flushed(self) -> None:
        target = self._queued
        if self._settled >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, future))  # targets only grow: kept in order
        await future

    # -- beyond the port -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def channels(self) -> frozenset[str]:
        """The channels this node is subscribed to."""
        return frozenset(self._receivers)

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until Redis has applied every subscription change made so far (a ``PING`` on
        the subscriber connection comes back after them): publications made afterwards by any
        node reach the channels subscribed before the call."""
        if not self._connected:
            raise ConnectionError(f"not connected to Redis at {self._where}")
        token = str(next(self._ping_ids)).encode()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[token] = future
        self._command("PING", token)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._pings.pop(token, None)

    # -- the link ------------------------------------------------------------------------------

    def _command(self, *args: Any) -> None:
        if self._connected:
            self._commands.append(args)
            self._wake_commands.set()
        # else: the whole set of channels is subscribed when the link opens

    def _connection(self) -> AbstractConnection:
        options: dict[str, Any] = dict(self._options)
        kind: Any = options.pop("connection_class", Connection)  # SSLConnection for rediss://
        connection: AbstractConnection = kind(
            **options,
            socket_connect_timeout=self._connect_timeout_s,
            socket_keepalive=True,
            # RESP2: pub/sub messages are replies read in a loop; redis-py's RESP3 parser reads
            # push messages by recursion (one frame per message waiting: deep under load)
            protocol=2,
            client_name="".join(
                c if c.isprintable() and not c.isspace() else "_"
                for c in f"tidings:{self.node_id}"[:64]
            ),
        )
        return connection

    async def _open(self) -> None:
        """Connect both connections and subscribe every channel; returns once Redis has
        confirmed the subscriptions (so that what a reconnect callback asks is heard)."""
        subscriber, publisher = self._connection(), self._connection()
        try:
            await subscriber.connect()  # type: ignore[no-untyped-call]
            await publisher.connect()  # type: ignore[no-untyped-call]
            channels = set(self._receivers)
            commands: list[tuple[Any, ...]] = [("SUBSCRIBE", *channels)] if channels else []
            await _write(subscriber, subscriber.pack_commands([*commands, ("PING", b"open")]))
            while True:  # messages may come before the confirmation: they are heard
                response = await subscriber.read_response(timeout=self._connect_timeout_s)
                if response is None:
                    raise _LinkLost("Redis did not confirm the subscriptions")
                if _pong(response) == b"open":
                    break
                if response[0] == b"message":
                    self._deliver(response[1], response[2])
        except BaseException:
            await _disconnect(subscriber, publisher)
            raise
        # From here to the end nothing awaits: changes made while the link was opening are
        # queued, after which the commands of ``subscribe``/``unsubscribe`` follow in order.
        now = set(self._receivers)
        self._commands.clear()
        if now - channels:
            self._commands.append(("SUBSCRIBE", *(now - channels)))
        if channels - now:
            self._commands.append(("UNSUBSCRIBE", *(channels - now)))
        self._link = (subscriber, publisher)
        self._connected = True
        self._wake_commands.set()

    async def _shut(self) -> None:
        self._connected = False
        link, self._link = self._link, None
        if link is not None:
            await _disconnect(*link)
        for future in self._pings.values():
            if not future.done():
                future.set_exception(ConnectionError("the link to Redis was lost"))

    async def _supervise(self) -> None:
        low, high = self._backoff
        while True:
            try:
                await self._run_link()
            except (_LinkLost, RedisError, OSError) as exc:
                log.warning("broker: lost Redis at %s: %s", self._where, exc)
            except Exception:  # a reply not understood: start afresh rather than go deaf
                log.exception("broker: the link to Redis at %s failed", self._where)
            await self._shut()
            self.dropped += len(self._outbox)
            self._settle(len(self._outbox))
            self._outbox.clear()
            delay = low
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._open()
                    break
                except (RedisError, OSError, _LinkLost) as exc:
                    log.debug("broker: Redis at %s still unreachable: %s", self._where, exc)
                    delay = min(delay * 2, high)
            self.reconnects += 1
            log.info("broker: reconnected to Redis at %s", self._where)
            for callback in tuple(self._reconnect_callbacks):
                try:
                    callback()
                except Exception:
                    log.exception("broker: an on_reconnect callback failed")

    async def _run_link(self) -> None:
        """Run the reader, the subscriber's writer and the sender until one of them fails."""
        assert self._link is not None
        subscriber, publisher = self._link
        tasks = [
            asyncio.ensure_future(self._read(subscriber)),
            asyncio.ensure_future(self._write_commands(subscriber)),
            asyncio.ensure_future(self._send(publisher)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            raise _LinkLost("a link task ended")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, subscriber: AbstractConnection) -> None:
        silent = 3 * self._health_s
        while True:
            response = await subscriber.read_response(timeout=silent)
            if response is None:
                raise _LinkLost(f"Redis said nothing for {silent} s")
            token = _pong(response)
            if token is not None:
                future = self._pings.get(token)
                if future is not None and not future.done():
                    future.set_result(None)
            elif response[0] == b"message":
                self._deliver(response[1], response[2])

    def _deliver(self, channel_name: bytes, message: bytes) -> None:
        receivers = self._receivers.get(channel_name.decode("utf-8", "surrogateescape"))
        if not receivers:
            return  # unsubscribed since Redis sent it
        self.received += 1
        for receiver in tuple(receivers):
            try:
                receiver(message)
            except Exception:
                log.exception("broker: a receiver of %r failed", channel_name)

    async def _write_commands(self, subscriber: AbstractConnection) -> None:
        """Write queued subscription changes in order; a ``PING`` every ``health_s`` keeps the
        reader hearing something on a quiet link."""
        commands = self._commands
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
            # comes as the event is set, and the link would never close
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._health_s):
                    await self._wake_commands.wait()
            self._wake_commands.clear()
            if not commands:
                commands.append(("PING", b"health"))
            batch = [commands.popleft() for _ in range(len(commands))]
            await _write(subscriber, subscriber.pack_commands(batch))
            _raise_if_cancelled()

    async def _send(self, publisher: AbstractConnection) -> None:
        outbox = self._outbox
        while True:
            if not outbox:
                self._wake_sender.clear()
                await self._wake_sender.wait()
                continue
            batch = [outbox.popleft() for _ in range(min(len(outbox), BATCH_LIMIT))]
            try:
                await _write(
                    publisher,
                    publisher.pack_commands(
                        ("PUBLISH", channel, message) for channel, message in batch
                    ),
                )
                _raise_if_cancelled()
                for _ in batch:
                    if await publisher.read_response(timeout=3 * self._health_s) is None:
                        raise _LinkLost("Redis did not answer a publication")
            except BaseException:
                self.dropped += len(batch)  # whether Redis relayed them is unknown
                self._settle(len(batch))
                raise
            self.published += len(batch)
            self._settle(len(batch))

    def _settle(self, count: int) -> None:
        """``count`` more publications are answered or lost: wake the ``flushed`` waiters
        whose publications all are."""
        self._settled += count
        waiters = self._flush_waiters
        while waiters and waiters[0][0] <= self._settled:
            future = waiters.pop(0)[1]
            if not future.done():
                future.set_result(None)


def _pong(response: Any) -> bytes | None:
    """The token of a ``PING`` reply: a list in subscribed mode, a plain string outside it
    (before the first and after the last subscription)."""
    if isinstance(response, bytes):
        return response
    if response[0] == b"pong":
        token: bytes = response[1]
        return token
    return None


def _raise_if_cancelled() -> None:
    """Raise the cancellation redis-py may have swallowed: with a socket timeout it writes
    under ``asyncio.wait_for``, which on Python 3.11 returns normally when the task is
    cancelled just as the write completes. Left swallowed, a link task outlives its link and
    ``close`` (or the reconnection after a lost link) waits for it forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _write(connection: AbstractConnection, packed: list[bytes]) -> None:
    if not connection.is_connected:  # redis-py would open it again on its own
        raise _LinkLost("connection closed")
    await connection.send_packed_command(packed, check_health=False)


async def _disconnect(*connections: AbstractConnection) -> None:
    for connection in connections:
        with contextlib.suppress(Exception):
            await connection.disconnect(nowait=True)
