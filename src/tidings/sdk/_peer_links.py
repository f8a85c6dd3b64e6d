"""Direct links between nodes: TCP connections carrying the Noise channel of
``tidings.protocol.peer`` (``docs/peer.md``).

A link is usable once the handshake has proved the peer's key: a dialled peer must prove the
key the caller expects (its ``signId``'s box key), or the link is refused before any message
is written. Incoming links prove whatever key they hold; the platform names them by it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from tidings.protocol.e2e import NodeInfo, NodeKeys
from tidings.protocol.peer import (
    AcksReceived,
    Established,
    MessageDropped,
    MessageReceived,
    PeerError,
    PeerMessage,
    ReplayDropped,
    SecureChannel,
)

__all__ = ["LinkEvents", "PeerLink", "PeerLinks"]

logger = logging.getLogger("tidings.sdk.peer")

MAX_MESSAGE: Final = 8 * 2**20
"""The largest peer message (as the largest LIME envelope a Tidings session takes)."""
WRITE_HIGH_WATER: Final = 1 * 2**20


class LinkEvents(Protocol):
    """What the platform hears from its links."""

    def link_up(self, link: PeerLink) -> None: ...

    def link_down(self, link: PeerLink) -> None: ...

    def message(self, link: PeerLink, message: PeerMessage) -> None: ...

    def acks(self, link: PeerLink, ids: list[str]) -> None: ...


class PeerLink(asyncio.Protocol):
    """One TCP connection and its secure channel."""

    def __init__(self, channel: SecureChannel, events: LinkEvents, *, outgoing: bool) -> None:
        self._channel = channel
        self._events = events
        self.outgoing = outgoing
        self.peer: NodeInfo | None = None
        loop = asyncio.get_running_loop()
        self.established: asyncio.Future[NodeInfo] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.replays_dropped = 0
        """Records dropped because their counter was not new (a replay)."""
        self.messages_dropped = 0
        self._transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._pending_acks: list[str] = []

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._channel.receive_data(data)
        except PeerError as error:
            self._refuse(error)
            return
        for event in events:
            if isinstance(event, MessageReceived):
                self._events.message(self, event.message)
            elif isinstance(event, AcksReceived):
                self._events.acks(self, event.ids)
            elif isinstance(event, Established):
                self._on_established(event.peer)
            elif isinstance(event, ReplayDropped):
                self.replays_dropped += 1
                logger.warning("%s: dropped a replayed record (%d)", self.name, event.counter)
            elif isinstance(event, MessageDropped):
                self.messages_dropped += 1
                logger.warning("%s: dropped a malformed message: %s", self.name, event.error)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()
        if not self.established.done():
            self.established.set_exception(
                ConnectionError(f"the connection closed during the handshake: {exc or 'EOF'}")
            )
        if not self.closed.done():
            self.closed.set_result(None)
        if self.peer is not None:
            self._events.link_down(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- the platform's side -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.peer.node if self.peer is not None else "a peer in handshake"

    @property
    def usable(self) -> bool:
        return self.peer is not None and not self.closed.done()

    def send(self, message: PeerMessage) -> None:
        self._channel.send(message)
        self._flush()

    def ack(self, message_id: str) -> None:
        """Acknowledge a message; the acks of one loop turn travel in one record."""
        if not self._pending_acks:
            asyncio.get_running_loop().call_soon(self._send_acks)
        self._pending_acks.append(message_id)

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark."""
        await self._writable.wait()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        elif not self.closed.done():  # never connected: nothing to wait for
            self.closed.set_result(None)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        elif not self.closed.done():
            self.closed.set_result(None)

    def _send_acks(self) -> None:
        ids, self._pending_acks = self._pending_acks, []
        if ids and self.usable:
            self._channel.send_acks(ids)
            self._flush()

    def _flush(self) -> None:
        data = self._channel.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _on_established(self, peer: NodeInfo) -> None:
        self.peer = peer
        if not self.established.done():
            self.established.set_result(peer)
        self._events.link_up(self)

    def _refuse(self, error: PeerError) -> None:
        logger.warning("%s: closing the link: %s (%s)", self.name, error, error.kind)
        if not self.established.done():
            self.established.set_exception(error)
        self.abort()


class PeerLinks:
    """The node's direct links: its listener, and the links it dialled or accepted."""

    def __init__(
        self,
        keys: NodeKeys,
        node_info: Callable[[], dict[str, Any]],
        events: LinkEvents,
        *,
        handshake_timeout: float = 10.0,
        max_links: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._node_info = node_info
        self._events = events
        self._handshake_timeout = handshake_timeout
        self._max_links = max_links
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._links: set[PeerLink] = set()

    @property
    def links(self) -> list[PeerLink]:
        return list(self._links)

    def get(self, sign_id: str) -> PeerLink | None:
        """An established link to ``sign_id``, if any (called per delivery attempt, not per
        message: a scan of the links is cheap enough)."""
        return next(
            (
                link
                for link in self._links
                if link.usable and link.peer is not None and link.peer.sign_id == sign_id
            ),
            None,
        )

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Take direct connections on ``host:port`` (0: any free port); the bound address."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, host, port)
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def dial(
        self, addresses: Sequence[tuple[str, int]], expected_box_id: str, timeout: float
    ) -> PeerLink:
        """A link to the node whose box key is ``expected_box_id``, trying each address in
        turn; ``ConnectionError`` (or ``PeerError``) from the last one when none works."""
        error: Exception = ConnectionError("no address to dial")
        for host, port in addresses:
            try:
                async with asyncio.timeout(timeout):
                    return await self._dial_one(host, port, expected_box_id)
            except TimeoutError:
                error = ConnectionError(f"{host}:{port}: no handshake within {timeout} s")
            except (OSError, PeerError, ConnectionError) as failure:
                error = failure
        raise error

    async def _dial_one(self, host: str, port: int, expected_box_id: str) -> PeerLink:
        loop = asyncio.get_running_loop()
        channel = SecureChannel.initiator(
            self._keys,
            self._node_info(),
            now_ms=int(self._clock() * 1000),
            expected_box_id=expected_box_id,
            max_message=MAX_MESSAGE,
        )
        link = PeerLink(channel, self._events, outgoing=True)
        self._links.add(link)
        link.closed.add_done_callback(lambda _: self._links.discard(link))
        try:
            await loop.create_connection(lambda: link, host, port)
            await link.established
        except BaseException:
            link.abort()
            raise
        return link

    def _accept(self) -> PeerLink:
        channel = SecureChannel.responder(
            self._keys, self._node_info(), now_ms=int(self._clock() * 1000), max_message=MAX_MESSAGE
        )
        link = PeerLink(channel, self._events, outgoing=False)
        if len(self._links) >= self._max_links:
            logger.warning("refusing a direct connection: %d links open", len(self._links))
            asyncio.get_running_loop().call_soon(link.abort)
        self._links.add(link)
        link.closed.add_done_callback(lambda _: self._links.discard(link))
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self._handshake_timeout, _abort_unless_established, link)
        link.closed.add_done_callback(lambda _: timer.cancel())
        return link

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        links = list(self._links)
        for link in links:
            link.close()
        if links:
            await asyncio.wait([link.closed for link in links], timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()


def _abort_unless_established(link: PeerLink) -> None:
    if link.peer is None:
        logger.warning("closing a direct connection that did not finish its handshake")
        link.abort()
