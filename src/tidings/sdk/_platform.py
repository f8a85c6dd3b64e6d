"""The peer platform: mm-platform's node, with a Tidings server as directory and relay.

An application talks to other nodes through ``Platform.messaging`` (JSON payloads, protocol
``ms``) or ``Platform.torrenting`` (bytes, ``bt``) and listens on the local bus
(``docs/peer.md``). Every remote send is first written to the node's durable outbox; it
leaves the outbox only when the peer (direct link) or the server (sealed relay) acknowledged
it, or when its ``expire_after`` passed. Receivers drop what they already took by (sender
key, message id), so a message re-sent after a crash, or sent both ways, is taken once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import msgspec

from tidings.protocol.e2e import InvalidKey, NodeKeys, box_id_of, decode_key, sign_node_info
from tidings.protocol.lime import InvalidNode, parse_node
from tidings.protocol.peer import ACK_PROTOCOL, PeerMessage

from ._bus import Handler, LocalBus, check_topic
from ._circles import Circles
from ._client import Client
from ._dedupe import SeenMessages
from ._exceptions import (
    ClientClosed,
    PeerSendFailed,
    TidingsClientError,
)
from ._keystore import KeyStore
from ._peer_directory import OwnerLookup, PeerAddress, PeerDirectory, tcp_addresses
from ._peer_links import PeerLink, PeerLinks
from ._peer_outbox import Outgoing, PeerOutbox
from ._types import ReceivedMessage

__all__ = ["PEER_TYPE", "Delivered", "Messaging", "Platform", "Sending"]

logger = logging.getLogger("tidings.sdk.peer")

PEER_TYPE: Final = "application/vnd.tidings.peer+json"
"""The (sealed) content type of a peer message relayed through the server."""
MAX_EXPIRE_MS: Final = 7 * 86400 * 1000
"""mm-platform's ``MAX_EXPIRE_TIME``: the default and the longest ``expire_after``."""
NODE_INFO_LIFETIME_MS: Final = 30 * 86400 * 1000
SEEN_CAPACITY: Final = 100_000
RELAY_WINDOW: Final = 256
"""Sealed relays in flight at once per destination."""
SEND_WINDOW: Final = 4096
"""Messages written to a direct link and not yet acknowledged, per destination."""

Path_ = Literal["local", "direct", "server"]


@dataclass(frozen=True, slots=True)
class Delivered:
    """A send that was acknowledged: by this node's bus (``local``), the peer (``direct``) or
    the server, which stored it for the peer (``server``)."""

    id: str
    destination: str
    path: Path_


@dataclass(eq=False)
class Sending:
    """A message on its way. Await it for its ``Delivered`` (or ``PeerSendFailed``);
    ``stored`` resolves once it is in the durable outbox (at once for local messages)."""

    id: str
    destination: str
    stored: asyncio.Future[None]
    delivered: asyncio.Future[Delivered]
    callback: Callable[[BaseException | None], None] | None = field(default=None, repr=False)

    def __await__(self) -> Generator[Any, None, Delivered]:
        return self.delivered.__await__()

    def done(self) -> bool:
        return self.delivered.done()

    def _settle(self, result: Delivered | BaseException) -> None:
        if self.delivered.done():
            return
        if isinstance(result, BaseException):
            self.delivered.set_exception(result)
            self.delivered.exception()  # a send nobody awaits is not an unretrieved error
        else:
            self.delivered.set_result(result)
        if self.callback is not None:
            try:
                self.callback(None if isinstance(result, Delivered) else result)
            except Exception:
                logger.exception("a send callback raised")


class Messaging:
    """One application protocol on the platform (mm-platform's API object): ``send`` encodes
    payloads with ``serialize``; received messages of this protocol are decoded with
    ``deserialize`` and published on the bus as ``<scope>.<topic>``."""

    def __init__(
        self,
        platform: Platform,
        protocol: str,
        serialize: Callable[[Any], bytes],
        deserialize: Callable[[bytes], Any],
    ) -> None:
        self._platform = platform
        self.protocol = protocol
        self.serialize = serialize
        self.deserialize = deserialize

    def on(self, pattern: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(topic, sender, payload)`` for every bus event matching ``pattern``
        (``.`` separates segments, ``*`` is a wildcard); returns the function that stops it."""
        return self._platform.bus.on(pattern, handler)

    def once(self, pattern: str, handler: Handler) -> Callable[[], None]:
        return self._platform.bus.once(pattern, handler)

    def off(self, pattern: str, handler: Handler) -> None:
        self._platform.bus.off(pattern, handler)

    def send(
        self,
        topic: str,
        destination: str,
        payload: Any,
        *,
        realtime: bool = True,
        expire_after: int | None = None,
        callback: Callable[[BaseException | None], None] | None = None,
        id: str | None = None,
    ) -> Sending:
        """Send ``payload`` on ``topic`` to ``destination``: ``"local"`` or this node's
        ``signId`` (the bus, scope ``self``, next loop turn), a node's ``signId``, a Tidings
        node ``name@domain/instance`` or identity ``name@domain`` (relayed to its devices).

        ``realtime`` (default) tries now; ``False`` waits for the next flush tick.
        ``expire_after`` (ms, default and maximum 7 days) bounds the retries: then the send
        fails with ``PeerSendFailed(kind="timeout")`` and ``transports.failed`` is published.
        """
        return self._platform._send(
            self, topic, destination, payload, realtime, expire_after, callback, id
        )


class Platform:
    """A peer node: local bus, direct links, durable outbox, and a Tidings server (optional)
    as key directory and relay.

    ``data_dir`` holds the outbox (``outbox.sqlite3``) and the record of messages taken
    (``seen.log``); keys live in ``key_dir`` (as for ``Client``). ``listen=(host, port)``
    takes direct connections (off by default) and publishes ``tcp://<advertise or
    host>:<port>`` as the node's ``connectionInfo``. With ``server``, the node signs in with
    one of ``password``, ``key`` or ``guest`` (``client_options`` go to its ``Client``).
    The timing constants are mm-platform's; tests make them short.
    """

    def __init__(
        self,
        identity: str,
        *,
        instance: str,
        data_dir: str | os.PathLike[str],
        server: str | None = None,
        password: str | None = None,
        key: str | bytes | None = None,
        guest: bool = False,
        key_dir: str | os.PathLike[str] | None = None,
        listen: tuple[str, int] | None = None,
        advertise: str | None = None,
        flush_interval: float = 10.0,
        lookup_timeout: float = 10.0,
        republish_interval: float = 300.0,
        connect_timeout: float = 10.0,
        max_connection_attempts: int = 5,
        relay_timeout: float = 30.0,
        seed_circles: bool = True,
        on_message: Callable[[ReceivedMessage], Awaitable[None] | None] | None = None,
        client_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            self.node = parse_node(identity).with_instance(instance).text
        except InvalidNode as error:
            raise ValueError(f"not a node: {identity!r}/{instance!r}: {error}") from None
        for name, value in (
            ("flush_interval", flush_interval),
            ("lookup_timeout", lookup_timeout),
            ("republish_interval", republish_interval),
            ("connect_timeout", connect_timeout),
            ("relay_timeout", relay_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive")
        if max_connection_attempts < 1:
            raise ValueError("max_connection_attempts must be at least 1")
        self._identity = identity
        self._instance = instance
        self._data_dir = Path(data_dir)
        self._server_url = server
        self._credentials: dict[str, Any] = {"password": password, "key": key, "guest": guest}
        self._key_dir = key_dir
        self._listen = listen
        self._advertise = advertise
        self.flush_interval = flush_interval
        self._republish_interval = republish_interval
        self._connect_timeout = connect_timeout
        self._max_attempts = max_connection_attempts
        self._relay_timeout = relay_timeout
        self._seed_circles = seed_circles
        self._on_message = on_message
        self._client_options = dict(client_options or {})
        self._clock = clock
        self.bus = LocalBus()
        """The local bus: platform events (``self.transports.*``) and received messages."""
        self._circles: Circles | None = None
        self.directory = PeerDirectory(
            self.bus, lookup_timeout=lookup_timeout, server=self._owner_lookup, clock=clock
        )
        self._protocols: dict[str, Messaging] = {}
        self.messaging = self.protocol("ms", _json_encode, msgspec.json.decode)
        """JSON payloads (mm-platform's ``ms``)."""
        self.torrenting = self.protocol("bt", bytes, bytes)
        """Binary payloads (mm-platform's ``bt``)."""
        self.client: Client | None = None
        self.address: tuple[str, int] | None = None
        """Where direct connections are taken (``listen``), once started."""
        self._keys: NodeKeys | None = None
        self._links: PeerLinks | None = None
        self._outbox: PeerOutbox | None = None
        self._seen: SeenMessages | None = None
        self._node_info: dict[str, Any] | None = None
        self._sendings: dict[str, Sending] = {}
        self._in_flight: dict[str, PeerLink | None] = {}  # id -> its link (None: relaying)
        self._flushing: dict[str, asyncio.Task[None]] = {}
        self._attempts: dict[str, int] = {}  # consecutive failed dials, per signId
        self._unreached: set[str] = set()  # destinations told as failed, until delivered to
        self._online: dict[str, int] = {}  # links up, per peer signId
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outbox_changed = asyncio.Event()
        self._started = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Platform:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Load the keys and the outbox, listen, sign in to the server, resume the outbox."""
        if self._started:
            raise RuntimeError("the platform is already started")
        self._started = True
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._circles = Circles(self.bus)
        self._keys = KeyStore(self._key_dir).keys_of(self.node)[0]
        self._outbox = PeerOutbox(self._data_dir / "outbox.sqlite3", clock=self._clock)
        self._seen = SeenMessages(SEEN_CAPACITY, self._data_dir / "seen.log")
        self._links = PeerLinks(
            self._keys,
            self._current_node_info,
            _Events(self),
            handshake_timeout=self._connect_timeout,
            clock=self._clock,
        )
        connection_info = None
        if self._listen is not None:
            self.address = await self._links.listen(*self._listen)
            host = self._advertise or self.address[0]
            if ":" in host:
                host = f"[{host}]"
            connection_info = [{"url": f"tcp://{host}:{self.address[1]}"}]
        self._connection_info = connection_info
        self._sign_node_info()
        if self._server_url is not None:
            self.client = Client(
                self._server_url,
                self._identity,
                instance=self._instance,
                key_dir=self._key_dir,
                connection_info=connection_info,
                **{k: v for k, v in self._credentials.items() if v not in (None, False)},
                **self._client_options,
            )
            await self.client.connect()
            self._spawn(self._receive_relayed(self.client))
            if self._seed_circles:
                try:
                    await self._seed_from_server(self.client)
                except TidingsClientError as error:  # the circles stay empty until the next
                    logger.warning("%s: circles not seeded: %s", self.node, error)
        self.bus.on("self.transports.requestMyNodeInfo", self._on_request_my_node_info)
        self._spawn(self._tick())
        self._spawn(self._republish())
        self._publish_my_node_info()
        for destination in self._outbox.destinations():
            self._kick(destination)

    async def close(self) -> None:
        """Stop: close the links and the server session; the outbox stays on disk."""
        if self._closed:
            return
        self._closed = True
        for task in (*self._tasks, *self._flushing.values()):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._flushing.values(), return_exceptions=True)
        if self._links is not None:
            await self._links.close()
        if self.client is not None:
            await self.client.close()
        await self.bus.drained()
        if self._outbox is not None:
            await self._outbox.close()
        if self._seen is not None:
            self._seen.close()
        closed = ClientClosed("the platform closed before the message was delivered")
        for sending in list(self._sendings.values()):
            if not sending.stored.done():
                sending.stored.set_exception(closed)
                sending.stored.exception()
            sending._settle(closed)
        self._sendings.clear()

    # -- identity ------------------------------------------------------------------------------

    @property
    def keys(self) -> NodeKeys:
        if self._keys is None:
            raise RuntimeError("the platform is not started")
        return self._keys

    @property
    def sign_id(self) -> str:
        return self.keys.sign_id

    @property
    def box_id(self) -> str:
        return self.keys.box_id

    @property
    def circles(self) -> Circles:
        """The ``devices`` and ``friends`` circles that decide the scope of what arrives."""
        if self._circles is None:
            raise RuntimeError("the platform is not started")
        return self._circles

    @property
    def outbox(self) -> PeerOutbox:
        if self._outbox is None:
            raise RuntimeError("the platform is not started")
        return self._outbox

    @property
    def links(self) -> list[PeerLink]:
        """The established direct links."""
        return [link for link in self._links.links if link.usable] if self._links else []

    async def wait_sent(self) -> None:
        """Wait until the outbox is empty: every message acknowledged or expired."""
        while len(self.outbox):
            self._outbox_changed.clear()
            await self._outbox_changed.wait()

    def protocol(
        self, name: str, serialize: Callable[[Any], bytes], deserialize: Callable[[bytes], Any]
    ) -> Messaging:
        """Register another application protocol (mm-platform's protocols other than
        ``ms`` and ``bt``)."""
        if not name or len(name) > 64 or name == ACK_PROTOCOL or name in self._protocols:
            raise ValueError(f"cannot register the protocol {name!r}")
        messaging = Messaging(self, name, serialize, deserialize)
        self._protocols[name] = messaging
        return messaging

    def _current_node_info(self) -> dict[str, Any]:
        assert self._node_info is not None
        return self._node_info

    def _sign_node_info(self) -> None:
        now = int(self._clock() * 1000)
        identity, _, instance = self.node.partition("/")
        self._node_info = sign_node_info(
            self.keys,
            identity,
            instance,
            published=now,
            expires=now + NODE_INFO_LIFETIME_MS,
            connection_info=self._connection_info,
        )

    def _publish_my_node_info(self) -> None:
        """``transports.myNodeInfo`` on the bus, valid twice the republish interval (10 min
        for mm-platform's 5)."""
        expire = int(self._clock() * 1000 + 2 * self._republish_interval * 1000)
        self.bus.emit(
            "self.transports.myNodeInfo",
            "local",
            {
                "boxId": self.box_id,
                "signId": self.sign_id,
                "connectionInfo": list(self._connection_info or []),
                "expireTime": expire,
            },
        )

    def _on_request_my_node_info(self, topic: str, sender: Any, payload: Any) -> None:
        self._publish_my_node_info()

    async def _republish(self) -> None:
        while True:
            await asyncio.sleep(self._republish_interval)
            self.directory.clear()
            self._attempts.clear()  # try the direct paths again with fresh addresses
            self._sign_node_info()
            self._publish_my_node_info()
            if self.client is not None:
                with contextlib.suppress(TidingsClientError):
                    await self.client.publish_keys()
                if self._seed_circles:
                    with contextlib.suppress(TidingsClientError):
                        await self._seed_from_server(self.client)

    async def _seed_from_server(self, client: Client) -> None:
        """The circles as the server sees them: our identity's devices, and the devices of
        our accepted contacts (so that a direct message gets the scope the server would
        stamp on a relayed one)."""
        identity = parse_node(self.node).identity
        devices = [info["boxId"] for info in await client.devices(identity)]
        contacts = await client.command("get", "/contacts")
        items = contacts.resource.get("items", []) if isinstance(contacts.resource, dict) else []
        friends: list[str] = []
        for contact in items:
            if not isinstance(contact, dict) or contact.get("isPending"):
                continue
            other = contact.get("identity")
            if isinstance(other, str):
                with contextlib.suppress(TidingsClientError, InvalidNode):
                    friends += [info["boxId"] for info in await client.devices(other)]
        self.circles.devices.replace(devices)
        self.circles.friends.replace(friends)

    def _owner_lookup(self) -> OwnerLookup | None:
        client = self.client
        if client is None or not client.connected:
            return None
        return client.key_owner

    # -- sending -------------------------------------------------------------------------------

    def _send(
        self,
        messaging: Messaging,
        topic: str,
        destination: str,
        payload: Any,
        realtime: bool,
        expire_after: int | None,
        callback: Callable[[BaseException | None], None] | None,
        message_id: str | None,
    ) -> Sending:
        if not self._started or self._closed:
            raise ClientClosed("the platform is not running")
        _check_topic(topic)
        if expire_after is None:
            expire_after = MAX_EXPIRE_MS
        if not isinstance(expire_after, int) or not 1 <= expire_after <= MAX_EXPIRE_MS:
            raise ValueError(f"expire_after is 1 to {MAX_EXPIRE_MS} ms")
        loop = asyncio.get_running_loop()
        sending = Sending(
            message_id or str(uuid.uuid4()),
            destination,
            loop.create_future(),
            loop.create_future(),
            callback,
        )
        if destination == "local" or destination == self.sign_id:
            sending.stored.set_result(None)
            self.bus.emit("self." + topic, destination, payload)
            loop.call_soon(sending._settle, Delivered(sending.id, destination, "local"))
            return sending
        _check_destination(destination)
        if len(sending.id) > 256 or "\n" in sending.id or not sending.id:
            raise ValueError("a message id is 1 to 256 characters, without a line break")
        if sending.id in self._sendings or sending.id in self.outbox:
            raise ValueError(f"a message with id {sending.id!r} is still being sent")
        now = int(self._clock() * 1000)
        item = Outgoing(
            id=sending.id,
            destination=destination,
            topic=topic,
            protocol=messaging.protocol,
            payload=messaging.serialize(payload),
            created_ms=now,
            expires_ms=now + expire_after,
            realtime=realtime,
        )
        self._sendings[sending.id] = sending
        self._spawn(self._store(item, sending))
        return sending

    async def _store(self, item: Outgoing, sending: Sending) -> None:
        try:
            await self.outbox.add(item)
        except Exception as error:  # OutboxFull, a disk error: the send did not happen
            self._sendings.pop(item.id, None)
            sending.stored.set_exception(error)
            sending.stored.exception()  # the same error is the send's: retrieved there
            sending._settle(error)
            return
        sending.stored.set_result(None)
        if item.realtime:
            self._kick(item.destination)

    def _kick(self, destination: str) -> None:
        """Deliver what waits for ``destination`` now (one flusher per destination keeps
        its messages in order)."""
        if self._closed or destination in self._flushing:
            return
        task = asyncio.get_running_loop().create_task(self._flush(destination))
        self._flushing[destination] = task
        task.add_done_callback(lambda _: self._flushing.pop(destination, None))

    async def _tick(self) -> None:
        """mm-platform's 10 s flush: expire, then retry every destination with messages."""
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self._expire()
            except Exception:  # a disk error: the expired ones go at a later tick
                logger.exception("%s: expiring outbox messages failed", self.node)
            for destination in self.outbox.destinations():
                self._kick(destination)

    async def _expire(self) -> None:
        now = int(self._clock() * 1000)
        expired = [item for item in self.outbox.expired(now) if item.id not in self._in_flight]
        if not expired:
            return
        await self.outbox.remove(item.id for item in expired)
        self._outbox_changed.set()
        for item in expired:
            failure = PeerSendFailed("Timeout", kind="timeout", destination=item.destination)
            self._settle(item.id, failure)
            self._failed(item.destination)

    def _failed(self, destination: str) -> None:
        self.bus.emit("self.transports.failed", "local", destination)

    def _settle(self, message_id: str, result: Delivered | BaseException) -> None:
        sending = self._sendings.pop(message_id, None)
        if sending is not None:
            sending._settle(result)

    async def _flush(self, destination: str) -> None:
        try:
            while True:
                waiting = [
                    item
                    for item in self.outbox.pending(destination)
                    if item.id not in self._in_flight
                ]
                now = int(self._clock() * 1000)
                items = [item for item in waiting if item.expires_ms > now]
                if len(items) < len(waiting):
                    await self._expire()
                if not items:
                    return
                if not await self._deliver(destination, items):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: delivering to %s failed", self.node, destination)

    async def _deliver(self, destination: str, items: list[Outgoing]) -> bool:
        """Send ``items`` by the best path there is now; False when there is none (they wait
        for the next tick)."""
        try:
            address = await self._resolve(destination)
        except TidingsClientError as failure:  # no answer, or the server's lookup failed
            logger.info("%s: %s: %s", self.node, destination, failure)
            self._unreachable(destination)
            return False
        if address is not None:
            link = await self._direct(address)
            if link is not None:
                self._reachable(destination)
                await self._send_direct(link, items[:SEND_WINDOW])
                return True
        relay = self._relay_target(destination, address)
        if relay is not None:
            await self._send_relayed(relay, items)
            return False  # relays settle by themselves; new items wait for a kick or a tick
        if address is None or self._attempts.get(address.sign_id, 0) >= self._max_attempts:
            self._unreachable(destination)
        return False

    def _unreachable(self, destination: str) -> None:
        """``transports.failed`` once each time a destination becomes unreachable (no
        answer from the directory, no direct link after the attempts, no relay)."""
        if destination not in self._unreached:
            self._unreached.add(destination)
            self._failed(destination)

    def _reachable(self, destination: str) -> None:
        self._unreached.discard(destination)

    async def _resolve(self, destination: str) -> PeerAddress | None:
        """The peer a destination names (None for a whole identity: relayed)."""
        if "@" not in destination:
            return await self.directory.lookup(destination)
        node = parse_node(destination)
        if node.instance is None:
            return None
        client = self.client
        if client is None:
            raise PeerSendFailed(
                f"{destination} is a Tidings node and this platform has no server",
                kind="lookup-timeout",
                destination=destination,
            )
        devices = await client.devices(node.identity)
        mine = [info for info in devices if info["instance"] == node.instance]
        if not mine:
            raise PeerSendFailed(
                f"{destination} has published no keys",
                kind="lookup-timeout",
                destination=destination,
            )
        latest = max(mine, key=lambda info: info["published"])
        address = PeerAddress(
            sign_id=latest["signId"],
            box_id=latest["boxId"],
            node=destination,
            connection_info=tuple(latest.get("connectionInfo") or ()),
            expires_ms=latest["expires"],
        )
        self.directory.learn(address)
        return address

    async def _direct(self, address: PeerAddress) -> PeerLink | None:
        """An established link to the peer, dialling it if it offers an address."""
        assert self._links is not None
        link = self._links.get(address.sign_id)
        if link is not None:
            return link
        addresses = tcp_addresses(address.connection_info)
        if not addresses or self._attempts.get(address.sign_id, 0) >= self._max_attempts:
            return None
        try:
            return await self._links.dial(addresses, address.box_id, self._connect_timeout)
        except Exception as error:
            attempts = self._attempts.get(address.sign_id, 0) + 1
            self._attempts[address.sign_id] = attempts
            logger.info(
                "%s: no direct link to %s (attempt %d): %s",
                self.node,
                address.sign_id,
                attempts,
                error,
            )
            return None

    async def _send_direct(self, link: PeerLink, items: list[Outgoing]) -> None:
        for item in items:
            self._in_flight[item.id] = link
            link.send(PeerMessage(item.topic, item.protocol, item.payload, item.id))
            await link.drain()

    def _relay_target(
        self, destination: str, address: PeerAddress | None
    ) -> tuple[str, list[str] | None] | None:
        """Whom to relay to through the server: (LIME address, boxIds to seal for)."""
        client = self.client
        if client is None:
            return None
        if address is None:
            return destination, None
        if address.node is None:
            return None
        return address.node, [address.box_id]

    async def _send_relayed(
        self, target: tuple[str, list[str] | None], items: list[Outgoing]
    ) -> None:
        window = asyncio.Semaphore(RELAY_WINDOW)
        for item in items:
            self._in_flight[item.id] = None
            await window.acquire()
            task = self._spawn(self._relay_one(target, item))
            task.add_done_callback(lambda _: window.release())

    async def _relay_one(self, target: tuple[str, list[str] | None], item: Outgoing) -> None:
        """Seal one message for the peer and have the server store it; on any failure it
        stays in the outbox (out of flight) for a later tick."""
        client = self.client
        assert client is not None
        to, for_keys = target
        content = {
            "topic": item.topic,
            "protocol": item.protocol,
            "payload": base64.b64encode(item.payload).decode(),
        }
        try:
            if for_keys is None:  # a whole identity: every device it has now
                identity = parse_node(to).identity
                for_keys = [info["boxId"] for info in await client.devices(identity)] or None
            await client.send_sealed(
                to,
                content,
                PEER_TYPE,
                id=item.id,
                wait="accepted",
                timeout=self._relay_timeout,
                for_keys=for_keys,
            )
        except TidingsClientError as error:
            logger.info("%s: relaying %s to %s failed: %s", self.node, item.id, to, error)
            self._in_flight.pop(item.id, None)
            self._unreachable(item.destination)
            return
        except BaseException:
            self._in_flight.pop(item.id, None)
            raise
        self._reachable(item.destination)
        await self._acknowledged([item.id], "server")

    async def _acknowledged(self, ids: list[str], path: Path_) -> None:
        try:
            await self.outbox.remove(ids)
        finally:
            for message_id in ids:
                self._in_flight.pop(message_id, None)
            self._outbox_changed.set()
        for message_id in ids:
            sending = self._sendings.get(message_id)
            destination = sending.destination if sending is not None else ""
            self._settle(message_id, Delivered(message_id, destination, path))

    # -- receiving -----------------------------------------------------------------------------

    def _take(self, received: list[tuple[str, PeerMessage]]) -> None:
        """Publish messages received from peers (``(signId, message)``) on the bus, each
        once: a copy of one already taken is dropped. What is taken is first recorded,
        durably, with one write for the batch."""
        assert self._seen is not None
        fresh: list[tuple[str, PeerMessage]] = []
        keys: dict[tuple[str, str], None] = {}  # ordered, and a copy in one batch is found fast
        for sign_id, message in received:
            if message.id is not None:
                key = (sign_id, message.id)
                if self._seen.check(key) or key in keys:
                    continue
                keys[key] = None
            fresh.append((sign_id, message))
        self._seen.add_many(keys)
        for sign_id, message in fresh:
            self._publish(sign_id, message)

    def _publish(self, sign_id: str, message: PeerMessage) -> None:
        messaging = self._protocols.get(message.protocol)
        if messaging is None:
            logger.warning(
                "%s: no protocol %r here: dropping message %s from %s",
                self.node,
                message.protocol,
                message.id,
                sign_id,
            )
            return
        try:
            payload = messaging.deserialize(message.payload)
        except Exception as error:
            logger.warning(
                "%s: undecodable %s payload from %s: %s",
                self.node,
                message.protocol,
                sign_id,
                error,
            )
            return
        try:
            _check_topic(message.topic)
        except ValueError as error:  # another implementation may send what we never would
            logger.warning(
                "%s: dropping message %s from %s: %s", self.node, message.id, sign_id, error
            )
            return
        scope = self.circles.scope_of(sign_id)
        self.bus.emit(f"{scope}.{message.topic}", sign_id, payload)

    async def _receive_relayed(self, client: Client) -> None:
        async for received in client.messages():
            if received.type == PEER_TYPE and received.verified_sign_id is not None:
                message = _relayed_message(received)
                if message is None:
                    logger.warning(
                        "%s: malformed relayed peer message %s from %s",
                        self.node,
                        received.id,
                        received.sender,
                    )
                    continue
                self._take([(received.verified_sign_id, message)])
            elif self._on_message is not None:
                result = self._on_message(received)
                if result is not None:
                    await result
            else:
                logger.warning(
                    "%s: a %s message from %s, not for the platform (give on_message=)",
                    self.node,
                    received.type,
                    received.sender,
                )

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class _Events:
    """The platform's side of its links."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._received: list[tuple[PeerLink, PeerMessage]] = []

    def link_up(self, link: PeerLink) -> None:
        platform = self._platform
        assert link.peer is not None
        sign_id = link.peer.sign_id
        platform._attempts.pop(sign_id, None)
        platform.directory.learn_node_info(link.peer)
        platform._online[sign_id] = platform._online.get(sign_id, 0) + 1
        if platform._online[sign_id] == 1:
            platform.bus.emit("self.transports.online", "local", sign_id)
        for destination in platform.outbox.destinations():
            if destination == sign_id or destination == link.peer.node:
                platform._kick(destination)

    def link_down(self, link: PeerLink) -> None:
        platform = self._platform
        assert link.peer is not None
        sign_id = link.peer.sign_id
        platform._online[sign_id] -= 1
        if platform._online[sign_id] == 0:
            del platform._online[sign_id]
            if not platform._closed:
                platform.bus.emit("self.transports.offline", "local", sign_id)
        lost = [i for i, carrier in platform._in_flight.items() if carrier is link]
        for message_id in lost:
            del platform._in_flight[message_id]
        if lost and not platform._closed:
            for destination in platform.outbox.destinations():
                platform._kick(destination)

    def message(self, link: PeerLink, message: PeerMessage) -> None:
        """Taken in batches, one per loop turn: one fsync of the seen record for them all,
        then the acknowledgements."""
        if not self._received:
            asyncio.get_running_loop().call_soon(self._take_received)
        self._received.append((link, message))

    def _take_received(self) -> None:
        received, self._received = self._received, []
        self._platform._take([(link.peer.sign_id, m) for link, m in received if link.peer])
        for link, message in received:
            if message.id is not None:
                link.ack(message.id)

    def acks(self, link: PeerLink, ids: list[str]) -> None:
        platform = self._platform
        mine = [i for i in ids if platform._in_flight.get(i) is link]
        if mine:
            platform._spawn(platform._acknowledged(mine, "direct"))


def _relayed_message(received: ReceivedMessage) -> PeerMessage | None:
    content = received.content
    if not isinstance(content, dict) or received.id is None:
        return None
    topic, protocol, payload = content.get("topic"), content.get("protocol"), content.get("payload")
    if not (isinstance(topic, str) and isinstance(protocol, str) and isinstance(payload, str)):
        return None
    try:
        _check_topic(topic)
        data = base64.b64decode(payload, validate=True)
    except (ValueError, binascii.Error):
        return None
    return PeerMessage(topic, protocol, data, received.id)


def _check_topic(topic: str) -> None:
    """A topic every receiver can publish as ``<scope>.<topic>`` (the longest scope is
    ``friends``)."""
    if not isinstance(topic, str):
        raise ValueError("a topic is a string")
    check_topic(f"friends.{topic}")


def _check_destination(destination: str) -> None:
    if "@" in destination:
        try:
            parse_node(destination)
        except InvalidNode as error:
            raise ValueError(f"not a destination: {destination!r}: {error}") from None
        return
    try:
        decode_key(destination, "destination")
        box_id_of(destination)
    except InvalidKey as error:
        raise ValueError(
            f"a destination is 'local', a signId, or a Tidings node or identity: {error}"
        ) from None


def _json_encode(value: Any) -> bytes:
    return msgspec.json.encode(value)
