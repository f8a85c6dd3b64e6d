"""What a gateway connection needs from the rest of the server, gathered by ``wiring``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.accounts import AccountService
from ..core.app_requests import AppRequestService
from ..core.authz import Authorizer
from ..core.consent import ConsentService
from ..core.federation_keys import RemoteKeys
from ..core.key_directory import KeyDirectory
from ..core.owner_feeds import OwnerFeeds
from ..core.presence import PresenceService
from ..core.roster import RosterService
from ..core.router import Router
from ..core.session_registry import LiveSession, SessionRegistry
from ..core.session_service import SessionService
from ..protocol.lime import Node


@dataclass(slots=True)
class Stats:
    """Plain counters: cheap to bump on the hot path, read by /metrics at scrape time."""

    connections: int = 0
    envelopes_in: int = 0
    messages_in: int = 0
    notifications_in: int = 0
    commands_in: int = 0
    messages_out: int = 0
    """Envelopes written to clients, by type: one plain increment per write (no labels or
    dict on the hot path); ``envelopes_out`` is their sum."""
    notifications_out: int = 0
    commands_out: int = 0
    sessions_out: int = 0
    sessions_established: int = 0
    sessions_failed: int = 0
    envelopes_rejected: int = 0
    throttled: int = 0
    """Times a connection went over its rate and was paused (not read) for a while."""
    output_stalls: int = 0
    """Times a client fell behind reading by ``max_output_buffer`` and live writes to it
    stopped until it caught up."""
    slow_consumers: int = 0
    """Connections dropped because their unread output passed the hard bound."""
    protocol_errors: int = 0
    """Connections closed for breaking RFC 6455 (reserved bits, fragments, invalid UTF-8)."""
    notification_events: dict[str, int] = field(default_factory=dict)
    """Notifications clients sent, by event (received, consumed, ...)."""

    @property
    def envelopes_out(self) -> int:
        return self.messages_out + self.notifications_out + self.commands_out + self.sessions_out


@dataclass(slots=True)
class LimeContext:
    domain: str
    server_node: Node
    scheme_options: tuple[str, ...]
    max_envelope_size: int
    max_output_buffer: int
    stall_timeout: float
    establish_timeout: float
    rate_limit: float
    rate_burst: int
    router: Router
    registry: SessionRegistry
    accounts: AccountService
    roster: RosterService
    presence: PresenceService
    authz: Authorizer
    sessions: SessionService
    app_requests: AppRequestService
    keys: KeyDirectory
    consent: ConsentService
    capability_url: Callable[[str], str]
    """The absolute HTTP URL of a capability token (the same the HTTP API gives)."""
    owner_feeds: OwnerFeeds | None = None
    remote_keys: RemoteKeys | None = None
    """Other domains' identities' keys, asked of their servers (federation)."""
    stats: Stats = field(default_factory=Stats)
    consent_watches: dict[LiveSession, Callable[[], None]] = field(default_factory=dict)
    """Each session's ``/consent/inbox`` subscription: how to end it."""
    connections: set[Any] = field(default_factory=set)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
