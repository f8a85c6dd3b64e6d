"""Composition root: builds the store, the core services and the listeners from ``Settings``.

The dependency graph of the server can be read off ``TidingsServer.start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .api.admin import AdminSources, Connection
from .api.app import (
    METRICS_MEDIA_TYPE,
    Histograms,
    Labelled,
    create_app,
    health,
    metrics_page,
)
from .api.console import Console
from .api.federation import FederationEndpoint, Query, federation_status
from .broker.inprocess import InProcessBroker
from .config import ConfigError, Settings
from .core.account_messages import AccountMessages
from .core.accounts import SERVER_NAME, AccountService
from .core.address import parse_identity as parse_address_identity
from .core.app_requests import AppRequestService
from .core.apps import App
from .core.authz import Authorizer, GrantChecker
from .core.cluster import ClusterNode
from .core.consent import ConsentService
from .core.consent_federation import ConsentFederation
from .core.errors import LimitExceeded, Unavailable
from .core.federation import Federation, PeerRefusal, PeerUnreachable
from .core.federation_keys import KeyExports, KeyLookups, RemoteKeys
from .core.federation_peers import PeerDirectory
from .core.federation_presence import PeerPresence, PresenceExports
from .core.federation_trust import PeerKeys
from .core.feeds import FeedHub, ServerState
from .core.grants import Grants
from .core.histogram import DEPTHS, Histogram
from .core.key_directory import KeyDirectory
from .core.login_throttle import LoginRule, source_key
from .core.model import OverflowPolicy
from .core.owner_feeds import OwnerFeeds
from .core.ports import Broker, Store
from .core.presence import PresenceService
from .core.roster import RosterService
from .core.router import QueueLimits, Router
from .core.session_registry import SessionRegistry
from .core.session_service import SessionGcLimits, SessionService
from .core.trust import TrustCircles
from .gateway.admission import (
    Budget,
    Listener,
    ProtocolFactory,
    Slot,
    http_response,
    listening_socket,
    websocket_connect,
    websocket_protocols,
)
from .gateway.context import LimeContext
from .gateway.federation import PeerEnvelopes, presence_observe, presence_pushes
from .gateway.feedme import FeedmeConnection, FeedmeContext
from .gateway.lime import LimeConnection
from .gateway.lime_commands import parse_identity
from .gateway.lime_consent import ChatRelay
from .gateway.lime_sessions import LimeNotices
from .gateway.listener import Refused, make_router
from .logs import RequestIds, configure_logging
from .net.federation_client import FederationClient
from .protocol.lime import Node, stamp_scope
from .store import open_store
from .store.server_keys import ServerKeys

log = logging.getLogger("tidings")

SERVER_INSTANCE = "server"
PRUNE_EVERY_S = 1.0
"""How often the dedupe window is pruned when the last pass found nothing more to forget."""
PRUNE_CHUNK = 1000
"""Dedupe keys forgotten per write operation: a chunk adds about a millisecond to the one
group commit it rides (measured in BENCHMARKS.md, "Duplicate detection in bounded space")."""
FILES_RESERVED = 256
"""Open files besides connections: the database, its WAL, listening sockets, logs."""


def open_broker(settings: Settings, node_id: str | None = None) -> Broker:
    """The broker the settings name: in-process (one node) or Redis at a ``redis://`` URL,
    whose node id is ``node_id`` or, by default, the settings' (``Settings.resolved_node_id``
    on the configured WebSocket port)."""
    if not settings.multi_node:
        return InProcessBroker()
    settings.check_serveable()
    from .broker.redis import RedisBroker  # imported here: a single node never loads redis-py

    return RedisBroker(settings.broker, node_id or settings.resolved_node_id(settings.ws_port))


@dataclass(slots=True)
class Services:
    """The core services and the gateways' contexts, built in one pass from the settings."""

    accounts: AccountService
    authz: Authorizer
    trust: TrustCircles
    router: Router
    sessions: SessionService
    hub: FeedHub
    owner_feeds: OwnerFeeds
    app: App
    lime: LimeContext
    feedme: FeedmeContext
    consent: ConsentService
    grants: Grants
    cluster: ClusterNode
    """This node's side of the deployment (started and stopped by ``TidingsServer``)."""
    federation: Federation
    """Other domains' servers: the outboxes and their relays (started by ``TidingsServer``)."""
    peer_envelopes: PeerEnvelopes
    """What other servers relay here."""
    server_keys: ServerKeys
    federation_client: FederationClient
    peer_directory: PeerDirectory
    queries: dict[str, Query]
    """What other domains' servers may ask here (presence, keys, consent), by kind."""
    consent_federation: ConsentFederation
    """Consent with other servers' users (its query kinds, its hook for their operations)."""


async def build(
    settings: Settings,
    store: Store,
    broker: Broker,
    app: App,
    grant_checker: GrantChecker | None = None,
    capability_url: Callable[[str], str] | None = None,
    *,
    heartbeat_s: float | None = None,
    cluster_clock: Callable[[], float] = time.monotonic,
) -> Services:
    """Every service, each given what it needs when it is made: read the graph off here.

    ``grant_checker``: what authorization asks about grants, instead of the consent service's
    ``Grants`` (tests that grant by hand). ``capability_url`` makes a capability token's
    absolute URL (default: on the configured host and HTTP port; the server passes one that
    reads the port it listens on). The broker names this node (``broker.node_id``); the
    cluster's heartbeat and clock are for tests."""
    if capability_url is None:
        capability_url = offer_url(lambda: http_base(settings, settings.http_port))
    registry = SessionRegistry(settings.max_sessions_per_identity)
    registry.load(await store.load_sessions())
    trust = TrustCircles(store, store, consent=store, federated=_reachable(settings))
    cluster: ClusterNode | None = None

    def forget_trust(identity: str) -> None:
        """Trust circles (and account names) forgotten here and on the other nodes."""
        if cluster is not None:
            cluster.forget_trust(identity)
        else:
            trust.forget(identity)

    def forget_all_trust() -> None:
        if cluster is not None:
            cluster.forget_all_trust()
        else:
            trust.forget_all()

    grants = Grants(store)
    grants.listen(lambda owner, requester: trust.forget(owner))  # a messages grant changed
    accounts = AccountService(
        settings.domain,
        store,
        allow_guests=settings.allow_guests,
        login=LoginRule(
            settings.login_failures_free,
            settings.login_failures_free_per_address,
            settings.login_backoff_base_s,
            settings.login_backoff_max_s,
        ),
        changed=forget_trust,
        created_or_removed=forget_all_trust,
    )
    await accounts.load()
    roster = RosterService(
        store, lambda text: parse_identity(text, settings.domain), changed=forget_trust
    )
    authz = Authorizer(
        roster,
        trust,
        settings.api_token or None,
        grant_checker if grant_checker is not None else grants,
        admin_token=settings.admin_token or None,
    )
    server = Node(SERVER_NAME, settings.domain, SERVER_INSTANCE)
    notices = LimeNotices(server.text)
    router = Router(
        settings.domain,
        store,
        registry,
        accounts.exists,
        QueueLimits(
            default_limit=settings.queue_limit,
            default_policy=OverflowPolicy(settings.queue_policy),
            message_ttl=settings.message_ttl_s,
        ),
        notices=notices,
        server_node=server.text,
        trust=trust,
        stamp=stamp_scope,
    )
    sessions = SessionService(router, registry, store, notices, server.text, max_limit=10_000_000)
    consent = ConsentService(
        store, events=ChatRelay(sessions), grants=grants, domain=settings.domain
    )
    hub = FeedHub(store, broker)

    async def account_exists(identity: str) -> bool:
        return await accounts.exists(parse_address_identity(identity))

    owner_feeds = OwnerFeeds(hub, authz, settings.domain, account_exists)
    owner_feeds.start()
    presence = PresenceService(registry, authz, store, router)
    keys = KeyDirectory(store, authz)
    cluster = ClusterNode(
        broker,
        store,
        registry,
        router,
        presence,
        hub,
        trust=trust,
        grants=grants,
        keys=keys,
        consent=consent,
        forget_account=accounts.forget,
        heartbeat_s=heartbeat_s if heartbeat_s is not None else settings.cluster_heartbeat_s,
        clock=cluster_clock,
    )
    server_keys = ServerKeys.load_or_create(settings.data_dir, settings.domain, time.time())
    srv = None
    if settings.federation_srv:
        from .net.dns_srv import DnsSrv  # dnspython: 0.1 s of every start-up, else unused

        srv = DnsSrv(settings.federation_dns_server)
    peer_directory = PeerDirectory(settings.federation_peers, settings.federation_deny, srv)
    federation_client = FederationClient(
        settings.domain, lambda: server_keys.current, peer_directory.base_url
    )
    federation = Federation(
        settings.domain,
        store,
        registry,
        router.ledger,
        notices,
        server.text,
        federation_client,
        reachable=_reachable(settings),
        outbox_limit=settings.federation_outbox_limit,
        retry_bound_s=settings.federation_retry_bound_s,
        retry_max_s=settings.federation_retry_max_s,
        max_batch=settings.federation_max_batch,
    )
    router.federation = federation
    federation.on_notices = router.deliver_notices
    consent_federation = ConsentFederation(
        consent, federation, settings.federation_peers, server.text
    )
    consent.outbound = consent.remote = consent_federation
    peer_envelopes = PeerEnvelopes(
        settings.domain,
        router,
        registry,
        store,
        federation,
        notices,
        server.text,
        max_envelope_size=settings.max_envelope_size,
        consent=consent_federation.received,
    )
    peer_presence = PeerPresence(settings.domain, federation)
    presence.remote = peer_presence
    presence_exports = PresenceExports(
        settings.domain, presence_observe(server.text), presence, authz, federation
    )
    presence.on_changed = presence_exports.changed
    federation.on_stop += [presence_exports.stop, peer_presence.stop]
    peer_envelopes.observe = presence_pushes(presence.observed)
    federation.on_hello = lambda domain: peer_presence.resubscribe(
        domain, presence.followed(), presence.observed
    )
    lime = LimeContext(
        domain=settings.domain,
        server_node=server,
        scheme_options=("plain", "key", *(("guest",) if settings.allow_guests else ())),
        max_envelope_size=settings.max_envelope_size,
        max_output_buffer=settings.max_output_buffer,
        stall_timeout=settings.stall_timeout_s,
        establish_timeout=settings.establish_timeout_s,
        rate_limit=settings.rate_limit,
        rate_burst=settings.rate_burst,
        router=router,
        registry=registry,
        accounts=accounts,
        roster=roster,
        presence=presence,
        authz=authz,
        sessions=sessions,
        app_requests=AppRequestService(store, app.requests),
        keys=keys,
        owner_feeds=owner_feeds,
        consent=consent,
        capability_url=capability_url,
        remote_keys=RemoteKeys(settings.domain, federation),
    )
    feedme = FeedmeContext(
        app=app,
        authz=authz,
        hub=hub,
        owner_feeds=owner_feeds,
        max_message_size=settings.max_envelope_size,
        termination_window=settings.feed_termination_window_s,
        rate_limit=settings.rate_limit,
        rate_burst=settings.rate_burst,
        max_output_buffer=settings.max_output_buffer,
    )
    return Services(
        accounts,
        authz,
        trust,
        router,
        sessions,
        hub,
        owner_feeds,
        app,
        lime,
        feedme,
        consent,
        grants,
        cluster,
        federation,
        peer_envelopes,
        server_keys,
        federation_client,
        peer_directory,
        {
            **presence_exports.queries(),
            **KeyExports(settings.domain, keys).queries(),
            **consent_federation.queries(),
        },
        consent_federation,
    )


def open_connections(services: Services) -> list[Connection]:
    """The open LIME and Feedme connections, as the admin API shows them."""
    found = []
    for connection in list(services.lime.connections):
        live = connection.live
        found.append(
            Connection(
                protocol="lime",
                identity=live.identity if live is not None else None,
                instance=live.instance if live is not None else None,
                since=connection.connected_at,
                remote=_remote(connection.transport),
            )
        )
    for feed_client in list(services.feedme.connections):
        found.append(
            Connection(
                protocol="feedme",
                identity=feed_client.identity,
                instance=None,
                since=feed_client.connected_at,
                remote=_remote(feed_client.transport),
            )
        )
    return found


def _remote(transport: Any) -> str | None:
    """``host:port`` of a WebSocket transport's peer, if it has one."""
    if transport is None:
        return None
    peer = transport.underlying_transport.get_extra_info("peername")
    if not isinstance(peer, tuple) or len(peer) < 2:
        return None
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _reachable(settings: Settings) -> Callable[[str], bool]:
    """Whether messages to a domain may be queued: a configured peer, or any domain when
    SRV records find peers; never a denied one."""
    peers, deny, srv = (
        settings.federation_peers,
        set(settings.federation_deny),
        settings.federation_srv,
    )

    def reachable(domain: str) -> bool:
        return domain not in deny and (domain in peers or srv)

    return reachable


def http_base(settings: Settings, port: int) -> str:
    """The HTTP API's address in links the server gives out: ``public_url`` when set."""
    return settings.public_url or f"http://{settings.host}:{port}"


def offer_url(http_base: Callable[[], str]) -> Callable[[str], str]:
    """Capability URLs: ``{http_base}/consent/offers/{token}``, the base read when a URL is
    made (the HTTP port is known only once the server listens)."""

    def url(token: str) -> str:
        return f"{http_base().rstrip('/')}/consent/offers/{token}"

    return url


async def forget_expired_ids(
    store: Store, cutoff: Callable[[], float], chunk: int = PRUNE_CHUNK
) -> int:
    """One pruning pass over the dedupe window: chunks of at most ``chunk`` keys stored before
    ``cutoff()`` (asked anew for each chunk), one after another while they come back full, so
    that deletion keeps up with any insert rate while no batch carries more than one chunk.
    How many keys were forgotten."""
    total = 0
    while True:
        forgotten = await store.forget_message_ids(cutoff(), chunk)
        total += forgotten
        if forgotten < chunk:
            return total


class TidingsServer:
    def __init__(
        self,
        settings: Settings,
        grant_checker: GrantChecker | None = None,
        *,
        store: Store | None = None,
        broker: Broker | None = None,
        cluster_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``store`` and ``broker`` replace the ones the settings name (tests that run several
        nodes in one process on one store and one in-process broker)."""
        self.settings = settings
        self._grant_checker = grant_checker
        self.store = store if store is not None else open_store(settings)
        self._own_store = store is None
        self.broker = broker
        self._cluster_clock = cluster_clock
        self.app = load_app(settings.app)
        self.ws_port = settings.ws_port
        self.http_port = settings.http_port
        self.budget = Budget(settings.max_connections, settings.connection_reserve)
        self.services: Services | None = None
        self._ws_listener: Listener | None = None
        self._http_listener: Listener | None = None
        self._http: _HttpServer | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._prune_task: asyncio.Task[None] | None = None
        self._endpoint: FederationEndpoint | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        if self._own_store:
            self.store.open(loop)
        if self.broker is None:
            self.broker = open_broker(settings)
        await self.broker.start()
        services = self.services = await build(
            settings,
            self.store,
            self.broker,
            self.app,
            self._grant_checker,
            offer_url(lambda: http_base(settings, self.http_port)),
            cluster_clock=self._cluster_clock,
        )
        await services.cluster.start()
        lime, feedme = services.lime, services.feedme
        lime.spawn(
            services.sessions.collect_forever(
                SessionGcLimits(settings.session_idle_s, settings.sessions_per_identity),
                settings.session_gc_interval_s,
            )
        )
        lime.spawn(services.router.sweep_forever(settings.expiry_sweep_interval_s))
        # relationships whose grantExpiresAt fell while the server was down expire now, the
        # others at their time (cancelled with the other tasks in ``stop``)
        lime.spawn(services.consent.expire_forever())
        self.app.bind(services.hub, services.sessions)
        self.app.set_state(ServerState.STARTING)
        await self.app.emit("starting")
        accounts = services.accounts

        def feedme_listener(request: Any, peer: object) -> FeedmeConnection:
            return FeedmeConnection(feedme, self._token_identity(request, peer, accounts))

        self._ws_listener = Listener(
            "WebSocket",
            listening_socket(settings.host, settings.ws_port),
            self.budget,
            websocket_protocols(
                make_router(
                    {"lime": lambda request, peer: LimeConnection(lime), "feedme": feedme_listener}
                ),
                handshake_timeout=settings.header_timeout_s,
                max_frame_size=4 * settings.max_envelope_size,
            ),
            refusal=http_response(
                503,
                "Service Unavailable",
                self._at_limit().encode() + b"\n",
                headers={"Retry-After": "5"},
            ),
            header_timeout=settings.header_timeout_s,
            connect=websocket_connect,
        )
        self._ws_listener.start()
        self.ws_port = self._ws_listener.port
        await self._start_http(services)
        services.federation.start(list(settings.federation_peers))
        lime.spawn(self._say_hello(services))
        self._prune_task = loop.create_task(self._prune_message_ids())
        self.app.set_state(ServerState.STARTED)
        await self.app.emit("start")

    def _at_limit(self) -> str:
        return f"The server is at its limit of {self.settings.max_connections} connections"

    @staticmethod
    def _token_identity(request: Any, peer: object, accounts: AccountService) -> str | None:
        """The identity of a Feedme connection's ``?token=`` (an API key), if it has one;
        failures count against the client's address like failed logins (429 once throttled)."""
        query = request.path.decode("latin-1").partition("?")[2]
        tokens = parse_qs(query).get("token")
        if not tokens:
            return None
        try:
            identity = accounts.identity_for_key(tokens[0], source_key(peer))
        except LimitExceeded as throttled:
            raise Refused(429, throttled.message) from None
        if identity is None:
            raise Refused(401, "The token is not a valid API key")
        return identity

    async def _start_http(self, services: Services) -> None:
        endpoint = await self._federation_endpoint(services)
        app = create_app(
            self._metrics,
            services.hub,
            services.authz,
            services.sessions,
            max_body=self.settings.http_max_body,
            owner_feeds=services.owner_feeds,
            identify=services.accounts.identity_for_key,
            consent=services.consent,
            capability_url=services.lime.capability_url,
            federation=endpoint,
            labelled_metrics=self._peer_metrics,
            histograms=self._histograms,
            admin=AdminSources(
                connections=lambda: open_connections(services),
                registry=services.lime.registry,
                sessions=services.sessions,
                accounts=services.accounts,
                settings=self.settings.redacted,
                federation=lambda: federation_status(endpoint),
            ),
            console=Console(self.settings.domain, self.settings.host, lambda: self.ws_port),
            messages=AccountMessages(
                services.router,
                LimeNotices(services.lime.server_node.text),
                self.settings.max_envelope_size,
            ),
            keys=KeyLookups(services.lime.keys, services.lime.remote_keys),
        )
        settings = self.settings
        config = uvicorn.Config(
            RequestIds(app),
            loop="none",
            lifespan="off",
            http="h11",
            ws="none",
            log_level="warning",
            log_config=None,  # its records go to the server's handler (logs.configure_logging)
            access_log=False,
            timeout_keep_alive=settings.http_keep_alive_s,  # type: ignore[arg-type]
        )
        render_metrics = metrics_page(self._metrics)
        problem = {
            "type": "urn:tidings:error:connection-limit",
            "title": "connection-limit",
            "status": 503,
            "detail": self._at_limit(),
            "error_id": "connection-limit",
        }

        def exempt(request_line: bytes) -> bytes | None:
            """Beyond the limit, health and metrics are still answered (from the reserve)."""
            method, _, rest = request_line.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method != b"GET":
                return None
            if path == b"/healthz":
                return http_response(200, "OK", json.dumps(health()).encode(), "application/json")
            if path == b"/metrics":
                return http_response(200, "OK", render_metrics(), METRICS_MEDIA_TYPE)
            return None

        def listener(protocols: ProtocolFactory) -> Listener:
            return Listener(
                "HTTP",
                listening_socket(settings.host, settings.http_port),
                self.budget,
                protocols,
                limit=min(settings.http_max_connections, settings.max_connections),
                refusal=http_response(
                    503,
                    "Service Unavailable",
                    json.dumps(problem).encode(),
                    "application/problem+json",
                    headers={"Retry-After": "5"},
                ),
                exempt=exempt,
                header_timeout=settings.header_timeout_s,
            )

        self._http = _HttpServer(config, listener, settings.header_timeout_s)
        self._http_listener = self._http.listener
        self.http_port = self._http_listener.port
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve())
        started = asyncio.ensure_future(self._http.ready.wait())
        await asyncio.wait({started, self._http_task}, return_when=asyncio.FIRST_COMPLETED)
        if self._http_task.done():
            started.cancel()
            self._http_task.result()

    def _histograms(self) -> Histograms:
        services = self.services
        if services is None:
            return {}
        depths = Histogram(DEPTHS)
        for record in services.lime.registry.all_records():
            depths.observe(record.depth)
        found: Histograms = {
            "send_to_accepted_seconds": ("histogram", services.router.accept_seconds),
            "queue_depth": ("gaugehistogram", depths),
        }
        commits = self.store.commit_histograms()
        if commits is not None:
            found["commit_batch_operations"] = ("histogram", commits[0])
            found["commit_seconds"] = ("histogram", commits[1])
        return found

    def _peer_metrics(self) -> Labelled:
        services = self.services
        if services is None:
            return {}
        stats = services.lime.stats
        federation = services.federation
        peers = federation.peers
        depth = {domain: float(federation.depth(domain)) for domain in peers}
        refused = self._endpoint.refused if self._endpoint is not None else {}
        return {
            "envelopes_in_by_type_total": (
                "counter",
                "type",
                {
                    "message": stats.messages_in,
                    "notification": stats.notifications_in,
                    "command": stats.commands_in,
                },
            ),
            "envelopes_out_by_type_total": (
                "counter",
                "type",
                {
                    "message": stats.messages_out,
                    "notification": stats.notifications_out,
                    "command": stats.commands_out,
                    "session": stats.sessions_out,
                },
            ),
            "notifications_in_total": (
                "counter",
                "event",
                {str(k): float(v) for k, v in stats.notification_events.items()},
            ),
            "federation_outbox_depth": ("gauge", "peer", depth),
            "federation_sent_total": ("counter", "peer", {d: s.sent for d, s in peers.items()}),
            "federation_received_total": (
                "counter",
                "peer",
                {d: s.received for d, s in peers.items()},
            ),
            "federation_failures_total": (
                "counter",
                "peer",
                {d: s.failures for d, s in peers.items()},
            ),
            "federation_retries_total": (
                "counter",
                "peer",
                {d: s.retries for d, s in peers.items()},
            ),
            "federation_refused_batches_total": (
                "counter",
                "peer",
                {d: s.refused for d, s in peers.items()},
            ),
            "federation_dropped_total": (
                "counter",
                "peer",
                {d: s.dropped for d, s in peers.items()},
            ),
            "federation_requests_refused_total": (
                "counter",
                "reason",
                {k: float(v) for k, v in refused.items()},
            ),
        }

    async def _federation_endpoint(self, services: Services) -> FederationEndpoint:
        settings = self.settings
        peer_keys = PeerKeys(
            settings.federation_keys, self.store, services.federation_client.document
        )
        await peer_keys.load()
        self._endpoint = FederationEndpoint(
            domain=settings.domain,
            keys=services.server_keys.published,
            peer_keys=peer_keys,
            federation=services.federation,
            envelopes=services.peer_envelopes.receive,
            public_url=settings.public_url,
            deny=frozenset(settings.federation_deny),
            reachable=_reachable(settings),
            max_skew_s=settings.federation_clock_skew_s,
            rate_limit=settings.federation_rate_limit,
            rate_burst=settings.federation_rate_burst,
            queries=dict(services.queries),
        )
        return self._endpoint

    def _metrics(self) -> dict[str, tuple[str, float]]:
        services = self.services
        if services is None:
            return {}
        lime, feedme = services.lime, services.feedme
        stats = lime.stats
        writes = self.store.write_counts()
        return {
            "connections_total": ("counter", stats.connections),
            "connections_open": ("gauge", len(lime.connections)),
            "sessions_established_total": ("counter", stats.sessions_established),
            "sessions_failed_total": ("counter", stats.sessions_failed),
            "envelopes_received_total": ("counter", stats.envelopes_in),
            "envelopes_sent_total": ("counter", stats.envelopes_out),
            "envelopes_rejected_total": ("counter", stats.envelopes_rejected),
            "connections_throttled_total": ("counter", stats.throttled + feedme.throttled),
            "connections_refused_total": ("counter", self.budget.refused),
            "tcp_connections_open": ("gauge", self.budget.open),
            "http_connections_open": (
                "gauge",
                self._http_listener.open if self._http_listener is not None else 0,
            ),
            "reserve_connections_open": ("gauge", self.budget.waiting),
            "accept_backoffs_total": ("counter", self.budget.backoffs),
            "messages_routed_total": ("counter", lime.router.delivered),
            "messages_expired_total": ("counter", lime.router.expired),
            "messages_refused_queue_full_total": ("counter", lime.router.refused_full),
            "messages_dropped_queue_full_total": ("counter", lime.router.ledger.dropped),
            "fanout_deliveries_total": ("counter", lime.router.fanout_deliveries),
            "feed_deliveries_total": ("counter", feedme.hub.deliveries),
            "feedme_connections_open": ("gauge", len(feedme.connections)),
            "output_stalls_total": ("counter", stats.output_stalls),
            "slow_consumers_total": ("counter", stats.slow_consumers),
            "feedme_slow_consumers_total": ("counter", feedme.slow_consumers),
            "protocol_errors_total": (
                "counter",
                stats.protocol_errors + feedme.protocol_errors,
            ),
            "store_commits_total": ("counter", writes.commits),
            "store_operations_total": ("counter", writes.operations),
            "store_writer_cpu_seconds_total": ("counter", writes.cpu_seconds),
            "store_runs_failed_total": ("counter", writes.runs_failed),
            "cluster_nodes_known": ("gauge", len(services.cluster.directory.nodes)),
            "cluster_sessions_elsewhere": (
                "gauge",
                sum(len(sessions) for sessions in services.cluster.directory.sessions.values()),
            ),
            "cluster_messages_undecodable_total": ("counter", services.cluster.undecodable),
            # the Redis broker's counters (the in-process one has none: zeros)
            "broker_published_total": ("counter", getattr(self.broker, "published", 0)),
            "broker_dropped_total": ("counter", getattr(self.broker, "dropped", 0)),
            "broker_reconnects_total": ("counter", getattr(self.broker, "reconnects", 0)),
            "uptime_seconds": ("gauge", time.time() - self.started_at),
        }

    async def _say_hello(self, services: Services) -> None:
        """Tell the configured peers this server is up: what waits for it goes now, not at
        the end of their backoff (best effort: a peer down now is told by the relay later)."""
        for domain in self.settings.federation_peers:
            with contextlib.suppress(PeerUnreachable, PeerRefusal):
                await services.federation_client.post(domain, "hello", b"{}")

    async def _prune_message_ids(self) -> None:
        """Keep the dedupe table at about rate x ``message_id_retention_s``: forget expired
        keys continuously, in chunks of ``PRUNE_CHUNK`` that each ride a group commit, one
        chunk after another while they come back full (so deletion keeps up with any insert
        rate), then once a second. Never one large delete: that would hold the writer, and
        every sender's ``accepted``, for as long as it takes. A failed chunk (the store is
        closing, a disk error) is tried again a second later."""
        while True:
            try:
                await forget_expired_ids(
                    self.store, lambda: time.time() - self.settings.message_id_retention_s
                )
            except Exception as exc:  # the only thing keeping the table bounded: say so
                log.warning("forgetting expired message ids failed (tried again): %s", exc)
            await asyncio.sleep(PRUNE_EVERY_S)

    async def stop(self) -> None:
        """Fail every session with a reason, stop listening, commit what is pending."""
        if self._prune_task is not None:
            self._prune_task.cancel()
        services = self.services
        if self.app.state is ServerState.STARTED and services is not None:
            self.app.set_state(ServerState.STOPPING)
            for feed_client in list(services.feedme.connections):
                feed_client.disconnect()
            await self.app.emit("stopping")
        if self._ws_listener is not None:
            self._ws_listener.close()
        if services is not None:
            services.owner_feeds.stop()
            lime = services.lime
            for connection in list(lime.connections):
                connection.shut_down()
            for connection in list(lime.connections):
                if connection.transport is not None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(connection.transport.wait_disconnected(), 2)
            for task in list(lime.tasks):
                task.cancel()
        if self._http is not None:
            self._http.should_exit = True
            if self._http_task is not None:
                with contextlib.suppress(Exception):
                    await self._http_task
        await self._drain()  # receipts for senders on other nodes go while the broker is up
        if services is not None:
            await services.federation.stop()
            await services.federation_client.close()
            await services.cluster.stop()
        if self.broker is not None:
            await self.broker.close()
        if self._own_store:
            await self._drain()
            self.store.close()
        if self.app.state is ServerState.STOPPING:
            self.app.set_state(ServerState.STOPPED)
            await self.app.emit("stop")

    async def _drain(self) -> None:
        """Commit what the last writes' completions write in turn (``Store.drain``)."""
        try:
            await self.store.drain()
        except Unavailable as exc:  # the database is gone: nothing more can be committed
            log.error("the last writes were not committed: %s", exc)


class _HttpProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, counted against the budget, with a deadline for heads.

    uvicorn closes a keep-alive connection idle for ``timeout_keep_alive`` but waits for a
    request head without end; here a connection whose head is not complete ``header_timeout``
    after it was accepted, or after the last response, is closed.
    """

    slot: Slot
    header_timeout: float
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        try:
            super().connection_lost(exc)
        finally:
            self.slot.release()

    def _should_upgrade(self) -> bool:
        return False  # WebSockets are the other port's: here an upgrade is a plain request

    def _await_head(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_overdue)

    def _head_overdue(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # no request under way, and its head has not come


class _HttpServer(uvicorn.Server):
    """uvicorn's server on our ``Listener`` instead of ``loop.create_server``'s accept loop.

    ``listener`` makes the listener from this server's protocol factory; ``ready`` is set once
    it accepts."""

    def __init__(
        self,
        config: uvicorn.Config,
        listener: Callable[[ProtocolFactory], Listener],
        header_timeout: float,
    ) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self.listener = listener(self._protocols(header_timeout))

    def _protocols(self, header_timeout: float) -> ProtocolFactory:
        config = self.config

        def make(slot: Slot) -> asyncio.BaseProtocol:
            protocol = _HttpProtocol(config=config, server_state=self.server_state, app_state={})
            protocol.slot = slot
            protocol.header_timeout = header_timeout
            return protocol

        return make

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        self.listener.start()
        self.servers = [self.listener]  # type: ignore[list-item]  # close, wait_closed: enough
        self.started = True
        self.ready.set()


def load_app(spec: str) -> App:
    """Import ``package.module:attribute``; an empty spec gives an app with no handlers."""
    if not spec:
        return App()
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        app = getattr(module, attribute or "app")
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"setting 'app': cannot load {spec!r}: {exc}") from exc
    if not isinstance(app, App):
        raise ConfigError(f"setting 'app': {spec!r} is not a tidings.app.App")
    return app


def _raise_file_limit(connections: int) -> None:
    """Each connection is a file: lift the soft limit toward what ``connections`` need
    (``max_connections`` plus ``connection_reserve``)."""
    wanted = connections + FILES_RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "max_connections + connection_reserve = %d connections need about %d open files "
            "but this process may open %d; beyond that, accepting pauses until files are free",
            connections,
            wanted,
            soft,
        )


async def serve(settings: Settings, ready: Any = None) -> None:
    """Run until SIGINT/SIGTERM; ``ready`` is called with the server once it listens."""
    import signal

    configure_logging(settings.log_format, settings.log_level)
    _raise_file_limit(settings.max_connections + settings.connection_reserve)
    server = TidingsServer(settings)
    await server.start()
    # Everything built so far lives as long as the server: keep it out of the collector's
    # scans, and collect the young generation less often (full collections cost ~90 ms).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready(server)
    try:
        await stop.wait()
    finally:
        await server.stop()
