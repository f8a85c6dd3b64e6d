"""Several Tidings nodes as one service: what a node tells the others, and what it does with
what they tell it (DESIGN.md section 5).

The store is the truth; the broker carries announcements that something changed there, so a
lost announcement delays a live delivery and never loses anything:

- **directory** (``cluster_directory.SessionDirectory``): which node holds each live session,
  from ``Attached`` / ``Detached`` / ``PresenceChanged`` broadcasts and the answers to ``Hello``;
  a node silent for three heartbeats is dead and its sessions leave it;
- **routing**: a row stored for a session live on another node makes a ``Wake`` for that node
  (it reads its queue past the connection's cursor: ``Router.woken``); what is not stored (a
  forwarded notification or command, a ``dispatched`` receipt to a sender on another node)
  goes as ``Deliver``; a session attaching here while another node holds it makes that node end
  its connection (``TakeOver``);
- **caches**: session records (``RecordChanged``: re-read from the store), trust circles,
  grants, key-directory and consent-inbox subscribers, account names (``Forget``);
- **reconnect**: after the broker comes back, ``Hello`` and this node's sessions again, every
  record re-read, and every live session caught up from the store.

On the in-process broker a node alone (no other node heard) sends nothing but heartbeats and
``Hello``: the router's ``peers`` and the hub's ``shared`` are set only once another node is
heard, so single-node routing does no encoding and no broker call. On a broker that reaches
other processes (Redis) they are set at start: another node may hold a session before its
first word arrives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import msgspec

from .cluster_directory import Holes, SessionDirectory
from .cluster_messages import (
    ALL,
    Attached,
    Bye,
    ClusterMessage,
    ClusterMessageError,
    Deliver,
    Detached,
    Forget,
    Heartbeat,
    Hello,
    LiveEntry,
    PresenceChanged,
    RecordChanged,
    Sessions,
    TakeOver,
    Wake,
    decode,
    encode,
    node_channel,
)
from .consent import ConsentService
from .consent_model import InboxEvent, InboxKind
from .errors import Conflict, ErrorId, Unavailable
from .feeds import FeedHub
from .grants import Grants
from .key_directory import KeyDirectory
from .model import EnvelopeKind, SessionRecord
from .ports import Broker, MessageStore
from .presence import PresenceService
from .router import BACKLOG_PAGE, Router
from .session_registry import DeliveryEvent, LiveSession, SessionRegistry
from .trust import TrustCircles

__all__ = ["DEFAULT_HEARTBEAT_S", "ClusterNode"]

log = logging.getLogger("tidings.cluster")

DEFAULT_HEARTBEAT_S = 2.0
MISSED_HEARTBEATS = 3
RECENT_LIMIT = 10_000
"""Sessions remembered as "a row was stored for it here lately" (see ``stored``)."""
RECENT_SEQS = 16
"""The latest rows remembered per such session: a woken node reads past its cursor anyway;
these name the older ones that may lie below it (``Holes``)."""


class ClusterNode:
    """This node's side of the cluster protocol: built by ``wiring.build``, started and
    stopped with the server (``start`` / ``stop``)."""

    def __init__(
        self,
        broker: Broker,
        store: MessageStore,
        registry: SessionRegistry,
        router: Router,
        presence: PresenceService,
        hub: FeedHub,
        *,
        trust: TrustCircles | None = None,
        grants: Grants | None = None,
        keys: KeyDirectory | None = None,
        consent: ConsentService | None = None,
        forget_account: Callable[[str], None] | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = broker.node_id
        """Read again from the broker at ``start`` (it may be named once the port is known)."""
        self._broker = broker
        self._store = store
        self._registry = registry
        self._router = router
        self._presence = presence
        self._hub = hub
        self._trust = trust
        self._grants = grants
        self._keys = keys
        self._consent = consent
        self._forget_account = forget_account
        self.heartbeat_s = heartbeat_s
        self._clock = clock
        self.directory = SessionDirectory(self.node_id, heartbeat_s, MISSED_HEARTBEATS)
        self.shared = False
        """Another node was heard: announce, route and fan out through the broker."""
        self.undecodable = 0
        self._channel = node_channel(self.node_id)
        self._unsubscribe: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._wakes: dict[LiveSession, list[int]] = {}
        self._accepting: dict[str, list[Callable[[], None]]] = {}  # id -> receipts held
        self._outgoing: dict[tuple[str, str, str], list[int]] = {}
        self._recent: dict[tuple[str, str], list[int]] = {}
        self._stale: set[tuple[str, str]] | None = None
        self._applying = False
        """Applying another node's change: local hooks must not announce it again."""
        if grants is not None:
            grants.listen(self._grant_changed)
        if keys is not None:
            keys.announce = self._keys_changed
        if consent is not None:
            consent.announce = self._inbox_event
        presence.directory = self.directory
        presence.announce = self._presence_changed

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, say hello (every node answers with its sessions), and beat."""
        broker = self._broker
        self.node_id = self.directory.self_id = broker.node_id
        if "\n" in self.node_id or not self.node_id:
            raise ValueError(f"a node id is non-empty and has no line break: {self.node_id!r}")
        self._channel = node_channel(self.node_id)
        self._unsubscribe = [
            broker.subscribe(ALL, self._receive),
            broker.subscribe(self._channel, self._receive),
        ]
        broker.on_reconnect(self._reconnected)
        if broker.distributed:
            # a node of a deployment: the others may be up already, unheard yet (a message
            # stored for one of their sessions before that must still wake it)
            self._became_shared()
        self._send(ALL, Hello(self.node_id))
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def stop(self) -> None:
        """Say goodbye (the others drop this node's sessions at once), stop listening."""
        with contextlib.suppress(Exception):
            self._send(ALL, Bye(self.node_id))
        self.halt()

    def halt(self) -> None:
        """Stop at once without a word (what a crash looks like to the others)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        for task in list(self._tasks):
            task.cancel()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self.tick()

    def tick(self) -> None:
        """A heartbeat: say this node lives, and drop the nodes silent for too long."""
        count = sum(1 for _ in self._registry.all_live())
        self._send(ALL, Heartbeat(self.node_id, count))
        for identity in set(self.directory.expire(self._clock())):
            self._presence.changed(identity)

    # -- sending ------------------------------------------------------------------------------

    def _send(self, channel: str, message: ClusterMessage) -> None:
        self._broker.publish(channel, encode(message))

    def _broadcast(self, message: ClusterMessage) -> None:
        if self.shared:
            self._send(ALL, message)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, Unavailable):
            log.error("a cluster task failed", exc_info=error)

    def _became_shared(self) -> None:
        if self.shared:
            return
        self.shared = True
        self._router.peers = self
        self._hub.shared = True
        for live in self._registry.all_live():
            if live.holes is None:
                live.holes = Holes()

    # -- the router's hooks (``router.Peers``) --------------------------------------------------

    def stored(self, record: SessionRecord, seq: int) -> None:
        """Wake the node that holds the session, and remember the session for a while: if it
        attaches on another node (its Attached not heard yet when the row was stored: its
        replay may have read the queue before the row committed, and the wake went to its old
        node, perhaps a dead one), that node is woken when the news comes (``_known``)."""
        key = (record.identity, record.instance)
        recent = self._recent
        seqs = recent.pop(key, None)
        if seqs is None:
            if len(recent) >= RECENT_LIMIT:
                del recent[next(iter(recent))]  # the oldest: its attach was heard long ago
            seqs = []
        elif len(seqs) >= RECENT_SEQS:
            del seqs[0]
        seqs.append(seq)
        recent[key] = seqs  # last in the dict's order: the newest
        instances = self.directory.sessions.get(record.identity)
        found = instances.get(record.instance) if instances else None
        if found is None:
            return  # live nowhere known: its next connection reads the queue
        outgoing = self._outgoing
        if not outgoing:
            asyncio.get_running_loop().call_soon(self._flush_wakes)
        outgoing.setdefault((found.node, *key), []).append(seq)

    def _flush_wakes(self) -> None:
        """One ``Wake`` per session per loop turn, whatever the rows stored for it."""
        outgoing, self._outgoing = self._outgoing, {}
        for (node, identity, instance), seqs in outgoing.items():
            self._send(node_channel(node), Wake(self.node_id, identity, instance, seqs))

    def waking(self) -> bool:
        return bool(self._outgoing)

    async def announced(self) -> None:
        self._flush_wakes()
        await self._broker.flushed()

    def once_announced(self, then: Callable[[], None], message_id: str) -> None:
        self._flush_wakes()  # now, not at the end of the loop turn: the sooner they are out
        self._accepting.setdefault(message_id, [])
        self._spawn(self._after_flush(then, message_id))

    async def _after_flush(self, then: Callable[[], None], message_id: str) -> None:
        await self._broker.flushed()
        then()
        # the node that took a wake may answer (dispatched, received) before our flush
        # completed: those receipts waited here, after "accepted" (ids of other senders that
        # collide only wait as long)
        for receipt in self._accepting.pop(message_id, []):
            receipt()

    def held_back(self, message_id: str, then: Callable[[], None]) -> bool:
        held = self._accepting.get(message_id)
        if held is None:
            return False
        held.append(then)
        return True

    def forward(
        self, identity: str, instance: str, payload: bytes, *, command: bool, about: str = ""
    ) -> bool:
        node = self.directory.owner(identity, instance)
        if node is None:
            return False
        self._send(
            node_channel(node),
            Deliver(self.node_id, identity, instance, payload, about, command=command),
        )
        return True

    def receipt(self, identity: str, instance: str, message_id: str, event: DeliveryEvent) -> None:
        node = self.directory.owner(identity, instance)
        if node is not None:
            self._send(
                node_channel(node),
                Deliver(self.node_id, identity, instance, message_id=message_id, event=event.value),
            )

    def attaching(self, live: LiveSession) -> None:
        live.holes = Holes()
        previous = self.directory.taken_here(live.identity, live.instance)
        if previous is not None:
            self._send(node_channel(previous), TakeOver(self.node_id, live.identity, live.instance))
            self._presence.changed(live.identity)
        self._send(ALL, Attached(self.node_id, live.identity, live.instance, live.presence))

    def detached(self, live: LiveSession) -> None:
        self._send(ALL, Detached(self.node_id, live.identity, live.instance))

    def held_elsewhere(self) -> dict[str, dict[str, Any]]:
        return self.directory.sessions

    def record_changed(self, identity: str, instance: str) -> None:
        """A session record changed here (saved or deleted): the others read it again."""
        self._broadcast(RecordChanged(self.node_id, identity, instance))

    async def refresh(self) -> None:
        """Read every session record again from the store (before decisions that depend on
        what other nodes changed: session collection)."""
        await self._reload(None)

    # -- invalidations ------------------------------------------------------------------------

    def forget_trust(self, identity: str) -> None:
        """``TrustCircles.forget`` here and on every node (contacts or an account changed);
        the other nodes forget the account's name too (this one changed it itself)."""
        if self._trust is not None:
            self._trust.forget(identity)
        self._broadcast(Forget(self.node_id, "trust", identity))

    def forget_all_trust(self) -> None:
        if self._trust is not None:
            self._trust.forget_all()
        self._broadcast(Forget(self.node_id, "trust-all"))

    def _grant_changed(self, owner: str, requester: str) -> None:
        if not self._applying:
            self._broadcast(Forget(self.node_id, "grant", owner, requester.encode()))

    def _keys_changed(self, identity: str, document: dict[str, Any]) -> None:
        self._broadcast(Forget(self.node_id, "keys", identity, json.dumps(document).encode()))

    def _inbox_event(self, event: InboxEvent) -> None:
        data = msgspec.msgpack.encode([event.seq, event.kind.value, event.data, event.at])
        self._broadcast(Forget(self.node_id, "inbox", event.identity, data))

    def _presence_changed(self, live: LiveSession) -> None:
        self._broadcast(PresenceChanged(self.node_id, live.identity, live.instance, live.presence))

    # -- receiving ----------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        try:
            message = decode(data)
        except ClusterMessageError as error:
            self.undecodable += 1
            log.warning("dropped a broker message: %s", error)
            return
        origin = message.origin
        if origin == self.node_id:
            return  # acted on where it happened
        if self.directory.heard(origin, self._clock()):
            self._became_shared()
            if not isinstance(message, Hello | Sessions | Bye):
                # met for the first time (or again after taking it for dead): trade sessions
                self._answer(origin, ask=True)
        try:
            self._dispatch(message)
        except Exception:
            log.exception("handling %s from %s failed", type(message).__name__, origin)

    def _dispatch(self, message: ClusterMessage) -> None:
        directory = self.directory
        origin = message.origin
        changed: set[str] = set()
        match message:
            case Heartbeat():
                pass
            case Hello():
                # it (re)started or reconnected: what it held is what it says next
                changed = set(directory.replace(origin, [], self._clock()))
                self._answer(origin)
            case Sessions(sessions=sessions, ask=ask):
                entries = [(s.identity, s.instance, s.presence) for s in sessions]
                changed = directory.replace(origin, entries, self._clock())
                for identity, instance, _ in entries:
                    self._known(identity, instance, origin)
                if ask:
                    self._answer(origin)
            case Attached(identity=identity, instance=instance, presence=presence):
                directory.attached(origin, identity, instance, presence, self._clock())
                self._known(identity, instance, origin)
                changed.add(identity)
            case Detached(identity=identity, instance=instance):
                if directory.detached(origin, identity, instance):
                    changed.add(identity)
            case PresenceChanged(identity=identity, instance=instance, presence=presence):
                if directory.presence_changed(origin, identity, instance, presence):
                    changed.add(identity)
            case Wake(identity=identity, instance=instance, seqs=seqs):
                self._woken(identity, instance, seqs)
            case Deliver():
                self._deliver(message)
            case TakeOver(identity=identity, instance=instance):
                live = self._registry.live(identity, instance)
                if live is not None:
                    live.outlet.end(
                        Conflict(
                            ErrorId.SESSION_TAKEN_OVER,
                            "The session was taken over by a connection to another node",
                        )
                    )
                    # out of the registry now, as a local displacement is: what is stored
                    # for it from here on wakes its new node, not this closing connection
                    if self._router.detach(live):
                        self._presence.forget(live)
            case RecordChanged(identity=identity, instance=instance):
                self._stale_record(identity, instance)
            case Forget():
                self._forget(message)
            case Bye():
                changed = set(directory.drop(origin))
        for identity in changed:
            self._presence.changed(identity)

    def _answer(self, asker: str, *, ask: bool = False) -> None:
        sessions = [
            LiveEntry(live.identity, live.instance, live.presence)
            for live in self._registry.all_live()
        ]
        self._send(node_channel(asker), Sessions(self.node_id, sessions, ask))

    def _known(self, identity: str, instance: str, node: str) -> None:
        """A session live on ``node``: its record exists here (a new one has the defaults, as
        where it was made: a rule or limit set later comes with ``RecordChanged``), and rows
        stored for it while its attach was not heard yet wake it now."""
        if instance not in self._registry.records_of(identity):
            self._registry.record(identity, instance)
        seqs = self._recent.pop((identity, instance), None)
        if seqs is not None:
            self._send(node_channel(node), Wake(self.node_id, identity, instance, seqs))

    def _woken(self, identity: str, instance: str, seqs: list[int]) -> None:
        live = self._registry.live(identity, instance)
        if live is None:
            return  # gone meanwhile: the rows wait in its queue for its next connection
        if not seqs:
            seqs = [live.cursor + 1]  # "read your queue": past the cursor
        pending = self._wakes.get(live)
        if pending is not None:
            pending.extend(seqs)
            return
        self._wakes[live] = list(seqs)
        self._spawn(self._waking(live))

    async def _waking(self, live: LiveSession) -> None:
        """One session's wakes, one after the other, so that its rows are written in order."""
        try:
            while True:
                seqs = self._wakes[live]
                if not seqs:
                    return
                self._wakes[live] = []
                await self._router.woken(live, sorted(set(seqs)))
        finally:
            self._wakes.pop(live, None)

    def _deliver(self, message: Deliver) -> None:
        live = self._registry.live(message.identity, message.instance)
        if message.event:
            event = DeliveryEvent(message.event)
            if live is not None and live.wants(event):
                tell = partial(live.outlet.notify, message.message_id, event)
                if not self.held_back(message.message_id, tell):  # else after its "accepted"
                    tell()
            return
        if message.command:
            # as ``Router.forward_command``: to a live session now, even while it replays
            if live is not None and live.available:
                live.outlet.deliver(message.payload, EnvelopeKind.COMMAND)
            return
        # a forwarded notification (messages come through the queue: ``Wake``): one that
        # overtook the "accepted" of the message it is about waits for it
        if message.message_id and self.held_back(
            message.message_id,
            partial(self._deliver, msgspec.structs.replace(message, message_id="")),
        ):
            return
        if (
            live is not None
            and not live.replaying
            and live.outlet.deliver(message.payload, EnvelopeKind.NOTIFICATION)
        ):
            return
        record = self._registry.record(message.identity, message.instance)
        self._router.keep_notification(record, message.payload)

    def _forget(self, message: Forget) -> None:
        kind, key, data = message.kind, message.key, message.data
        self._applying = True
        try:
            if kind == "trust":
                if self._trust is not None:
                    self._trust.forget(key)
                if self._forget_account is not None:
                    self._forget_account(key)
            elif kind == "trust-all":
                if self._trust is not None:
                    self._trust.forget_all()
            elif kind == "grant":
                if self._grants is not None:
                    self._grants.changed(key, data.decode())
            elif kind == "keys":
                if self._keys is not None:
                    self._spawn(self._keys.tell(key, json.loads(data)))
            elif kind == "inbox":
                if self._consent is not None:
                    seq, event_kind, event_data, at = msgspec.msgpack.decode(data)
                    self._consent.tell(InboxEvent(seq, key, InboxKind(event_kind), event_data, at))
            else:
                log.warning("an unknown invalidation %r was ignored", kind)
        finally:
            self._applying = False

    # -- session records ----------------------------------------------------------------------

    def _stale_record(self, identity: str, instance: str) -> None:
        """Read the record again soon (the records changed in one loop turn, in one read)."""
        if self._stale is None:
            self._stale = set()
            self._spawn(self._reload_soon())
        self._stale.add((identity, instance))

    async def _reload_soon(self) -> None:
        await asyncio.sleep(0)
        stale, self._stale = self._stale, None
        await self._reload(stale)

    async def _reload(self, keys: set[tuple[str, str]] | None) -> None:
        """Re-read session records (``keys``, or all) from the store: a record this node does
        not know is added, one deleted goes (unless live here), the others take the stored
        rule, limits and last-seen time. The depth of a record not live here is the store's."""
        records = {(r.identity, r.instance): r for r in await self._store.load_sessions()}
        registry = self._registry
        wanted = (
            keys
            if keys is not None
            else set(records) | {(r.identity, r.instance) for r in registry.all_records()}
        )
        for identity, instance in wanted:
            stored = records.get((identity, instance))
            if stored is not None:
                self._adopt(stored)
                continue
            known = registry.records_of(identity).get(instance)
            if (
                known is not None
                and known.depth == 0
                and registry.live(identity, instance) is None
                and self.directory.owner(identity, instance) is None
            ):
                registry.forget(identity, instance)  # deleted by another node

    async def look_up(self, identity: str, instance: str) -> None:
        """A session another node made may be unheard of here (its Attached on the way):
        its stored record, if there is one, is taken now."""
        stored = await self._store.load_session(identity, instance)
        if stored is not None:
            self._adopt(stored)

    def _adopt(self, stored: SessionRecord) -> None:
        """The stored rule, limits and last-seen time; the store's depth unless live here."""
        record = self._registry.record(stored.identity, stored.instance)
        record.routing_rule = stored.routing_rule
        record.queue_limit = stored.queue_limit
        record.policy = stored.policy
        record.last_seen = max(record.last_seen, stored.last_seen)
        if self._registry.live(stored.identity, stored.instance) is None:
            record.depth = stored.depth

    # -- broker reconnect ---------------------------------------------------------------------

    def _reconnected(self) -> None:
        """The broker came back: what was announced meanwhile is lost. Announce again, read
        the records again, and catch every live session up from the store."""
        self._send(ALL, Hello(self.node_id))
        sessions = [
            LiveEntry(live.identity, live.instance, live.presence)
            for live in self._registry.all_live()
        ]
        self._send(ALL, Sessions(self.node_id, sessions))
        self._spawn(self._catch_up_all())

    async def _catch_up_all(self) -> None:
        await self._reload(None)
        for live in list(self._registry.all_live()):
            seqs = [live.cursor + 1]
            holes = live.holes
            lowest, jumps = holes.all() if holes is not None else (0, [])
            while jumps:  # the rows its live writes jumped over may have been announced
                rows = await self._store.backlog(live.identity, live.instance, lowest, BACKLOG_PAGE)
                seqs.extend(e.seq for e in rows if e.seq <= live.cursor)
                if len(rows) < BACKLOG_PAGE or rows[-1].seq >= live.cursor:
                    break
                lowest = rows[-1].seq
            self._woken(live.identity, live.instance, seqs)
