"""Feeds: the feeds apps define, the authoritative published documents, and fan-out.

A ``FeedHub`` knows every connected Feedme client (through the small ``FeedClient`` port the
gateway implements) and which feeds each has open. A revelation is serialized once per feed
and the same bytes go to every client whose feed is open. Apps talk to the hub through
``tidings.app.App``; published feeds (HTTP) keep their document here, validated and stored.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

from ..protocol.feedme import (
    ActionRevelation,
    Delta,
    DeltaError,
    DeltaOperation,
    FeedKey,
    LocalProtocolError,
    PreparedRevelation,
    RemoteProtocolError,
    apply_deltas,
    check_deltas,
    decode_server_message,
    feed_md5,
    prepare_revelation,
)
from .errors import Conflict, ErrorId, Invalid
from .ports import Broker, FeedClient, FeedStore

log = logging.getLogger("tidings.feeds")

INTERNAL_ERROR = "INTERNAL_ERROR"


class ServerState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class Revealed:
    feed: FeedKey
    delivered: int
    feed_md5: str | None


def feed_channel(feed: FeedKey) -> str:
    """The broker channel of a feed (``tidings:feed:...``): its name and its arguments, in a
    stable order."""
    return "tidings:feed:" + msgspec.json.encode([feed.name, sorted(feed.args)]).decode()


@dataclass(slots=True)
class FeedHub:
    """Fan-out of revelations to the Feedme clients of this node and, through the broker, of
    the others.

    A revelation is serialized once: this node's clients get the prepared revelation at once;
    when other nodes share the broker (``shared``, set by ``core.cluster``) and someone may
    listen on the feed's channel, the same bytes are published once, prefixed with this node's
    id. Each other node with the feed open decodes them once and delivers to its own clients;
    a node skips what it published itself. Single node: no broker call, no extra encoding."""

    store: FeedStore
    broker: Broker
    clients: dict[str, FeedClient] = field(default_factory=dict)
    _open: dict[FeedKey, set[str]] = field(default_factory=dict)
    _unsubscribe: dict[FeedKey, Callable[[], None]] = field(default_factory=dict)
    _locks: dict[FeedKey, asyncio.Lock] = field(default_factory=dict)
    deliveries: int = 0
    shared: bool = False
    """Other nodes share the broker: publish revelations for their clients."""
    undecodable: int = 0
    """Revelations heard from other nodes that did not decode (logged, dropped)."""

    # -- clients and their feeds ----------------------------------------------------------

    def connected(self, client: FeedClient) -> None:
        self.clients[client.client_id] = client

    def disconnected(self, client_id: str) -> None:
        self.clients.pop(client_id, None)
        for feed in [feed for feed, ids in self._open.items() if client_id in ids]:
            self.feed_closed(client_id, feed)

    def feed_opened(self, client_id: str, feed: FeedKey) -> None:
        subscribers = self._open.get(feed)
        if subscribers is None:
            subscribers = self._open[feed] = set()
            self._unsubscribe[feed] = self.broker.subscribe(
                feed_channel(feed), lambda message: self._heard(feed, message)
            )
        subscribers.add(client_id)

    def feed_closed(self, client_id: str, feed: FeedKey) -> None:
        subscribers = self._open.get(feed)
        if subscribers is not None:
            subscribers.discard(client_id)
            if not subscribers:
                del self._open[feed]
                self._unsubscribe.pop(feed)()

    def subscribers(self, feed: FeedKey) -> int:
        return len(self._open.get(feed, ()))

    def is_open(self, feed: FeedKey, client_id: str) -> bool:
        return client_id in self._open.get(feed, ())

    def open_feeds(self, prefix: str, identity: str) -> list[tuple[FeedKey, str]]:
        """(feed, client id) of the feeds named ``prefix...`` that clients of ``identity``
        have open (a scan of the open feeds: called on grant changes, not per revelation)."""
        clients = self.clients
        found = []
        for feed, ids in self._open.items():
            if feed.name.startswith(prefix):
                for client_id in ids:
                    client = clients.get(client_id)
                    if client is not None and client.identity == identity:
                        found.append((feed, client_id))
        return found

    # -- revelations ------------------------------------------------------------------------

    def reveal(
        self,
        feed: FeedKey,
        action_name: str,
        action_data: dict[str, Any],
        deltas: list[Delta],
        md5: str | None = None,
    ) -> int:
        """Serialize once and deliver to every client with the feed open, on every node;
        returns the deliveries made (or, with other nodes, due) on this node.

        With other nodes, this node's own clients get the revelation back from the broker as
        the others do, so that every subscriber everywhere sees one order: the broker's.
        While the broker is unreachable they get it at once (the others cannot)."""
        local = feed in self._open
        channel = feed_channel(feed)
        broker = self.broker
        remote = self.shared and broker.listening(channel)
        if not local and not remote:
            return 0
        prepared = prepare_revelation(
            ActionRevelation.of(feed, action_name, action_data, deltas, md5)
        )
        if not remote or not broker.connected:
            return self._deliver(feed, prepared) if local else 0
        broker.publish(channel, prepared.payload)
        return len(self._open.get(feed, ()))

    async def revealed(self) -> None:
        """Return once this node's revelations so far are out to every node: an action's
        answer waits for it, so that an action its client starts afterwards, on any node, is
        revealed after (one order for everyone)."""
        if self.shared:
            await self.broker.flushed()

    def _heard(self, feed: FeedKey, message: bytes) -> None:
        """A revelation published on the feed's channel, by any node (this one included):
        decoded once and delivered to this node's clients."""
        try:
            decoded = decode_server_message(message, max_size=len(message) + 1)
        except (RemoteProtocolError, LocalProtocolError):
            self.undecodable += 1
            log.warning("an undecodable revelation on %s was dropped", feed_channel(feed))
            return
        if not isinstance(decoded, ActionRevelation):
            self.undecodable += 1
            return
        self._deliver(feed, PreparedRevelation(decoded, feed, message))

    def _deliver(self, feed: FeedKey, revelation: PreparedRevelation) -> int:
        """A revelation for this node's clients: to each one with the feed open."""
        delivered = 0
        clients = self.clients
        for client_id in list(self._open.get(feed, ())):
            client = clients.get(client_id)
            if client is not None and client.reveal(revelation):
                delivered += 1
        self.deliveries += delivered
        return delivered

    def terminate(
        self,
        *,
        feed: FeedKey | None = None,
        client_id: str | None = None,
        error_code: str,
        error_data: dict[str, Any] | None = None,
    ) -> None:
        """The seed's three usages: one client's feed, a feed for all, all feeds of a client."""
        data = error_data or {}
        if feed is not None and client_id is not None:
            client = self.clients.get(client_id)
            if client is not None:
                client.terminate(feed, error_code, data)
            self.feed_closed(client_id, feed)
        elif feed is not None:
            for cid in list(self._open.get(feed, ())):
                client = self.clients.get(cid)
                if client is not None:
                    client.terminate(feed, error_code, data)
                self.feed_closed(cid, feed)
        elif client_id is not None:
            client = self.clients.get(client_id)
            if client is not None:
                client.terminate_all(error_code, data)
            for open_feed in [f for f, ids in self._open.items() if client_id in ids]:
                self.feed_closed(client_id, open_feed)
        else:
            raise Invalid(ErrorId.INVALID_ARGUMENT, "terminate needs a feed, a client or both")

    def disconnect(self, client_id: str) -> None:
        client = self.clients.get(client_id)
        if client is not None:
            client.disconnect()

    # -- published feeds (HTTP) ---------------------------------------------------------------

    async def document(self, feed: FeedKey) -> dict[str, Any] | None:
        return await self.store.feed_document(feed.name, feed.args_dict())

    async def publish(
        self,
        feed: FeedKey,
        action_name: str,
        action_data: dict[str, Any],
        *,
        deltas: list[Delta] | None = None,
        feed_data: dict[str, Any] | None = None,
    ) -> Revealed:
        """Apply deltas (or replace the document), store it, then reveal it with its MD5."""
        if (deltas is None) == (feed_data is None):
            raise Invalid(ErrorId.INVALID_ARGUMENT, "give either deltas or feed_data")
        lock = self._locks.setdefault(feed, asyncio.Lock())
        async with lock:
            current = await self.store.feed_document(feed.name, feed.args_dict())
            if deltas is not None:
                if current is None:
                    current = {}
                problem: DeltaError | None = check_deltas(current, deltas)
                if problem is not None:
                    raise Conflict(
                        ErrorId.INVALID_DELTA,
                        f"The deltas do not apply to the current feed data: {problem}",
                    )
                document = apply_deltas(current, deltas)
            else:
                assert feed_data is not None
                document = feed_data
                deltas = [Delta(operation=DeltaOperation.SET, path=(), value=document)]
            md5 = feed_md5(document)
            await self.store.save_feed_document(feed.name, feed.args_dict(), document)
            delivered = self.reveal(feed, action_name, action_data, deltas, md5)
        return Revealed(feed, delivered, md5)


Handler = Callable[..., Awaitable[None] | None]


async def call_handler(handler: Handler, *args: Any) -> None:
    """Run a sync or async app handler."""
    result = handler(*args)
    if inspect.isawaitable(result):
        await result
