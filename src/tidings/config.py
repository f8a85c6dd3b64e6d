"""Server settings: one typed object, from defaults, a TOML file, the environment, then
command-line flags (each beats the ones before it)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .core.federation_peers import check_domain, check_peers


class ConfigError(ValueError):
    """A setting that is unknown, of the wrong type or out of range; the message names it."""


ENVIRONMENT = {"store": "TIDINGS_STORE", "broker": "TIDINGS_BROKER", "node_id": "TIDINGS_NODE_ID"}
"""Settings also read from environment variables (between the TOML file and the flags)."""
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""How a ``store`` setting names a PostgreSQL database (libpq's URL forms)."""
REDIS_SCHEMES = ("redis://", "rediss://")
SECRET_SETTINGS = frozenset({"api_token", "admin_token"})
"""Settings never shown (``Settings.redacted``): only whether they are set."""
URL_SETTINGS = frozenset({"store", "broker", "public_url"})
"""Settings that may be URLs with a password in them (shown without it)."""
REDACTED = "***"
MIN_DEDUPE_WINDOW_S = 150.0
"""The shortest duplicate window allowed: above the SDK's default resend horizon (120 s), so
that a default client never resends past what the server remembers."""


@dataclass(frozen=True, slots=True)
class Settings:
    domain: str = "localhost"
    """The domain served; identities of other domains are not found here."""
    host: str = "127.0.0.1"
    """Listen address of both ports."""
    ws_port: int = 8765
    """WebSocket port (subprotocols lime and feedme); 0 picks a free port."""
    http_port: int = 8766
    """HTTP API port; 0 picks a free port."""
    public_url: str = ""
    """The HTTP API's address as others reach it (``https://chat.example.com``), used in the
    capability URLs of consent invites; empty: ``http://{host}:{http_port}``."""
    data_dir: Path = Path("tidings-data")
    """Folder holding the SQLite database."""
    store: str = "sqlite"
    """Where durable state lives: ``sqlite`` (in ``data_dir``), ``memory`` (lost at exit: for
    tests and trials) or a ``postgresql://`` URL (shared by the nodes of a deployment); also
    ``TIDINGS_STORE``."""
    broker: str = "in-process"
    """How the nodes of a deployment hear each other: ``in-process`` (a single node) or a
    ``redis://`` / ``rediss://`` URL (several nodes, which need a PostgreSQL store); also
    ``TIDINGS_BROKER``."""
    node_id: str = ""
    """This node's name among the nodes sharing a broker, unique to each; empty:
    ``{host}:{ws_port}`` (the host name instead of a wildcard address); also
    ``TIDINGS_NODE_ID``."""
    cluster_heartbeat_s: float = 2.0
    """How often a node says it lives to the others (several nodes); one silent for three of
    these is taken for dead and its sessions for gone."""
    migrate_on_start: bool = True
    """Apply the store's pending schema migrations when the server starts; false leaves them to
    ``tidings migrate`` (an operator who upgrades the schema once, before the nodes)."""
    allow_guests: bool = False
    """Offer the LIME guest scheme."""
    max_envelope_size: int = 64 * 1024
    """Largest envelope (bytes of one text frame) a client may send."""
    max_output_buffer: int = 1024 * 1024
    """Bytes written to one connection that its client has not read yet, beyond which nothing
    more is written to it live (LIME: it catches up from its queue; Feedme: disconnected)."""
    stall_timeout_s: float = 60.0
    """How long a LIME client may stay over ``max_output_buffer`` without reading enough to
    get below it; then it is dropped as a slow consumer (its queue keeps what it had not
    acknowledged), so that it cannot hold a connection slot for good."""
    queue_limit: int = 10_000
    """Default number of envelopes a session's queue holds before new ones are refused."""
    commit_window_ms: float = 1.0
    """How long a writer that found several writes waiting waits for company when its batch is
    small (a lone write, and whatever an idle writer gets, commits at once)."""
    rate_limit: float = 5_000.0
    """WebSocket messages per second one connection (LIME or Feedme) may send, sustained;
    beyond it (and ``rate_burst``) the connection is not read for a while (backpressure)."""
    rate_burst: int = 10_000
    """Messages one connection may send in a burst above ``rate_limit``."""
    establish_timeout_s: float = 30.0
    """Time a connection has to establish its session."""
    message_id_retention_s: float = 300.0
    """The duplicate window: how long a (sender, id) is remembered, so that a resend of a
    stored message is acknowledged again and not stored twice (150 s .. 7 days). The SDK
    resends only within ``resend_horizon`` (120 s) of a message's first transmission; the
    rest of the window is margin (clock steps, slow commits). The table holds about
    rate x window keys (about 85 bytes each on SQLite with short ids)."""
    message_ttl_s: float = 7 * 24 * 3600.0
    """How long a message that gives no ``tidings.expireAfter`` may wait for its recipient;
    then it is removed and its sender gets ``failed`` 123 (1 s .. 7 days)."""
    expiry_sweep_interval_s: float = 5.0
    """How often expired queued messages are removed and their senders told (a message is
    never delivered after its expiry, whether the sweep has run or not)."""
    queue_policy: str = "reject-new"
    """Overflow policy of sessions that set none: ``reject-new`` (121) or ``drop-oldest`` (122)."""
    session_idle_s: float = 30 * 24 * 3600.0
    """Offline sessions idle this long are garbage-collected (senders of queued messages get
    124); 0 disables idle collection."""
    max_sessions_per_identity: int = 1000
    """Most named sessions (durable queues) one identity may have; a new one beyond it is
    refused (quota, 34), since anyone who can address a node would otherwise create queues."""
    sessions_per_identity: int = 0
    """Most offline sessions kept per identity (least recently seen go first); 0: no bound."""
    session_gc_interval_s: float = 3600.0
    """How often session garbage collection runs."""
    app: str = ""
    """A Tidings app to load, ``package.module:attribute`` (Feedme actions and feeds)."""
    api_token: str = ""
    """Bearer token for the HTTP API's write routes; they are refused while it is empty."""
    admin_token: str = ""
    """Bearer token for the HTTP API's admin routes (``/admin/...``); they are refused while it
    is empty. It must differ from ``api_token``: the two never stand for each other."""
    feed_termination_window_s: float = 30.0
    """How long a terminated feed accepts the client's late FeedOpen/FeedClose."""
    max_connections: int = 10_000
    """Open TCP connections on both ports together (WebSocket, upgraded or not, and HTTP);
    beyond it a connection is refused (503, or reset once ``connection_reserve`` is full)."""
    http_max_connections: int = 1000
    """Of ``max_connections``, at most this many may be HTTP connections."""
    connection_reserve: int = 64
    """Connections beyond ``max_connections`` still read briefly: ``/healthz`` and ``/metrics``
    are answered, anything else gets 503; beyond these, connections are reset at once."""
    header_timeout_s: float = 10.0
    """Time a connection has to send its request head (an HTTP request, a WebSocket upgrade)."""
    http_keep_alive_s: float = 5.0
    """How long an idle HTTP keep-alive connection is kept open between requests."""
    http_max_body: int = 1024 * 1024
    """Largest HTTP request body, bytes; larger ones get 413 before they are read further."""
    login_failures_free: int = 5
    """Failed logins (passwords) one identity may make before it must wait between attempts."""
    login_failures_free_per_address: int = 20
    """Failed logins (passwords and keys, any names) one client address (an IPv6 /64) may make
    before it must wait; more than per identity, as many users may share one address (NAT)."""
    login_backoff_base_s: float = 1.0
    """The first wait after the free failures; it doubles with each further failure."""
    login_backoff_max_s: float = 60.0
    """The longest wait, after the last failure: the longest a guesser can lock the owner out."""
    federation_peers: dict[str, str] = dataclasses.field(default_factory=dict)
    """Other servers' domains and the base URLs of their HTTP APIs
    (``[federation.peers] "beta.test" = "https://beta.test:8766"``); messages to other domains
    go only to these (and to those found through SRV records when ``federation_srv``)."""
    federation_keys: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Pinned public keys of peers (``[federation.keys] "beta.test" = ["<base64>"]``): a peer
    not listed has its keys learned on first contact and pinned from then on."""
    federation_srv: bool = False
    """Find peers not in ``federation_peers`` through ``_tidings._tcp.<domain>`` SRV records."""
    federation_dns_server: str = ""
    """``host:port`` of the DNS server asked for SRV records; empty: the system's resolver."""
    federation_deny: list[str] = dataclasses.field(default_factory=list)
    """Domains refused both ways (their requests get 403, messages to them ``failed``)."""
    federation_clock_skew_s: float = 60.0
    """How far a signed request's ``created`` time may be from this server's clock."""
    federation_retry_max_s: float = 60.0
    """The longest wait between two attempts to deliver to a peer that does not answer."""
    federation_retry_bound_s: float = 0.0
    """How long an envelope may wait for its peer before its sender gets ``failed``; 0: as
    long as the message may wait anywhere (``message_ttl_s`` or its ``expireAfter``)."""
    federation_outbox_limit: int = 100_000
    """Envelopes one peer's outbox holds before new ones are refused (121)."""
    federation_max_batch: int = 500
    """Envelopes sent to a peer in one request."""
    federation_rate_limit: float = 200.0
    """Requests per second one peer may make, sustained (beyond: 429 with Retry-After)."""
    federation_rate_burst: int = 400
    """Requests one peer may make in a burst above ``federation_rate_limit``."""

    log_format: str = "text"
    """Server log lines on stderr: ``text`` (time, level, logger, ids, message) or ``json``
    (one JSON object a line: ``time``, ``level``, ``logger``, ``message``, and ``session`` (a
    LIME session's id) or ``request`` (an HTTP request's ``X-Request-ID``) when known)."""
    log_level: str = "warning"
    """Least severe log records written: ``debug``, ``info`` (adds sessions established and
    ended, HTTP requests), ``warning`` or ``error``."""

    def __post_init__(self) -> None:
        self._check_federation()
        _check(self.log_format in ("text", "json"), "log_format", "must be 'text' or 'json'")
        _check(
            self.log_level in ("debug", "info", "warning", "error"),
            "log_level",
            "must be 'debug', 'info', 'warning' or 'error'",
        )
        _check(
            bool(self.domain) and "@" not in self.domain and "/" not in self.domain,
            "domain",
            "must be a non-empty name without '@' or '/'",
        )
        for name in ("ws_port", "http_port"):
            _check(0 <= getattr(self, name) <= 65535, name, "must be 0-65535")
        _check(
            not self.public_url
            or (
                self.public_url.startswith(("http://", "https://"))
                and len(self.public_url) <= 2048
                and not any(c in self.public_url for c in " ?#")
            ),
            "public_url",
            "must be empty or an http(s):// URL without query or fragment",
        )
        _check(
            1024 <= self.max_envelope_size <= 8 * 1024 * 1024,
            "max_envelope_size",
            "must be 1024 .. 8388608 bytes",
        )
        _check(1 <= self.queue_limit <= 10_000_000, "queue_limit", "must be 1 .. 10000000")
        _check(0 <= self.commit_window_ms <= 100, "commit_window_ms", "must be 0 .. 100")
        _check(self.rate_limit > 0 and self.rate_burst >= 1, "rate_limit", "must be positive")
        _check(self.establish_timeout_s > 0, "establish_timeout_s", "must be positive")
        _check(
            MIN_DEDUPE_WINDOW_S <= self.message_id_retention_s <= 7 * 24 * 3600,
            "message_id_retention_s",
            f"must be {MIN_DEDUPE_WINDOW_S:g} .. 604800 s (the SDK resends for up to 120 s)",
        )
        _check(
            self.queue_policy in ("reject-new", "drop-oldest"),
            "queue_policy",
            "must be 'reject-new' or 'drop-oldest'",
        )
        _check(
            1 <= self.message_ttl_s <= 7 * 24 * 3600,
            "message_ttl_s",
            "must be 1 .. 604800 seconds (7 days)",
        )
        _check(
            0 < self.expiry_sweep_interval_s <= 7 * 24 * 3600,
            "expiry_sweep_interval_s",
            "must be > 0 and <= 604800 seconds",
        )
        _check(self.session_idle_s >= 0, "session_idle_s", "must be >= 0")
        _check(self.sessions_per_identity >= 0, "sessions_per_identity", "must be >= 0")
        _check(
            1 <= self.max_sessions_per_identity <= 1_000_000,
            "max_sessions_per_identity",
            "must be 1 .. 1000000",
        )
        _check(
            64 * 1024 <= self.max_output_buffer <= 1024 * 1024 * 1024,
            "max_output_buffer",
            "must be 65536 .. 1073741824 bytes",
        )
        _check(0 < self.stall_timeout_s <= 86400, "stall_timeout_s", "must be > 0 and <= 86400")
        _check(
            self.store in ("sqlite", "memory") or _is_url(self.store, POSTGRES_SCHEMES),
            "store",
            "must be 'sqlite', 'memory' or a postgresql://user@host:port/database URL",
        )
        _check(
            self.broker == "in-process" or _is_url(self.broker, REDIS_SCHEMES),
            "broker",
            "must be 'in-process' or a redis://host:port/db (or rediss://) URL",
        )
        _check(
            len(self.node_id) <= 200
            and all(c.isprintable() and not c.isspace() for c in self.node_id),
            "node_id",
            "must be at most 200 printable characters without spaces",
        )
        _check(0.1 <= self.cluster_heartbeat_s <= 60, "cluster_heartbeat_s", "must be 0.1 .. 60")
        _check(self.session_gc_interval_s > 0, "session_gc_interval_s", "must be positive")
        _check(1 <= self.max_connections <= 1_000_000, "max_connections", "must be 1 .. 1000000")
        _check(
            1 <= self.http_max_connections <= 1_000_000,
            "http_max_connections",
            "must be 1 .. 1000000",
        )
        _check(0 <= self.connection_reserve <= 100_000, "connection_reserve", "must be 0 .. 100000")
        _check(0 < self.header_timeout_s <= 3600, "header_timeout_s", "must be > 0 and <= 3600")
        _check(0 < self.http_keep_alive_s <= 3600, "http_keep_alive_s", "must be > 0 and <= 3600")
        _check(
            1024 <= self.http_max_body <= 64 * 1024 * 1024,
            "http_max_body",
            "must be 1024 .. 67108864 bytes",
        )
        _check(
            not self.admin_token or self.admin_token != self.api_token,
            "admin_token",
            "must differ from api_token",
        )
        _check(0 <= self.login_failures_free <= 1000, "login_failures_free", "must be 0 .. 1000")
        _check(
            0 <= self.login_failures_free_per_address <= 100_000,
            "login_failures_free_per_address",
            "must be 0 .. 100000",
        )
        _check(
            0 < self.login_backoff_max_s <= 3600,
            "login_backoff_max_s",
            "must be positive and at most 3600",
        )
        _check(
            0 < self.login_backoff_base_s <= self.login_backoff_max_s,
            "login_backoff_base_s",
            "must be positive and at most login_backoff_max_s",
        )

    def _check_federation(self) -> None:
        peers = self.federation_peers
        try:
            check_peers(peers)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"setting 'federation_peers': {exc}") from None
        _check(self.domain not in peers, "federation_peers", "must not name this server's domain")
        keys = self.federation_keys
        _check(
            isinstance(keys, dict)
            and all(
                _is_domain(d) and isinstance(k, list) and all(isinstance(x, str) for x in k)
                for d, k in keys.items()
            ),
            "federation_keys",
            "must map domain names to lists of base64 public keys",
        )
        _check(
            isinstance(self.federation_deny, list)
            and all(isinstance(d, str) and _is_domain(d) for d in self.federation_deny),
            "federation_deny",
            "must be a list of domain names",
        )
        server = self.federation_dns_server
        _check(
            not server or (server.rpartition(":")[2].isdigit() and ":" in server),
            "federation_dns_server",
            "must be empty or host:port",
        )
        _check(
            0 < self.federation_clock_skew_s <= 3600,
            "federation_clock_skew_s",
            "must be > 0 and <= 3600",
        )
        _check(
            0.1 <= self.federation_retry_max_s <= 3600,
            "federation_retry_max_s",
            "must be 0.1 .. 3600",
        )
        _check(
            0 <= self.federation_retry_bound_s <= 7 * 24 * 3600,
            "federation_retry_bound_s",
            "must be 0 .. 604800",
        )
        _check(
            1 <= self.federation_outbox_limit <= 10_000_000,
            "federation_outbox_limit",
            "must be 1 .. 10000000",
        )
        _check(
            1 <= self.federation_max_batch <= 10_000, "federation_max_batch", "must be 1 .. 10000"
        )
        _check(
            self.federation_rate_limit > 0 and self.federation_rate_burst >= 1,
            "federation_rate_limit",
            "must be positive",
        )

    @property
    def multi_node(self) -> bool:
        """Whether other nodes may share this deployment (a broker that crosses processes)."""
        return self.broker != "in-process"

    def resolved_node_id(self, ws_port: int) -> str:
        """``node_id``, or ``{host}:{ws_port}`` when empty; a wildcard host is replaced by this
        machine's name, which other machines do not share, and a port picked at random (0) by
        the process id, since every such node would otherwise be ``host:0``."""
        if self.node_id:
            return self.node_id
        host = self.host if self.host not in ("", "0.0.0.0", "::") else socket.gethostname()
        return f"{host}:{ws_port}" if ws_port else f"{host}:pid{os.getpid()}"

    def check_serveable(self) -> None:
        """Refuse what a node cannot serve: several nodes each with its own SQLite file (or
        memory) would each hold a part of the truth."""
        if self.multi_node and not _is_url(self.store, POSTGRES_SCHEMES):
            raise ConfigError(
                f"setting 'broker' is a Redis URL, which means several nodes, but setting "
                f"'store' is {self.store!r}: each node would keep its own data. Several nodes "
                f"share one PostgreSQL store (store = 'postgresql://...'); a single node uses "
                f"broker = 'in-process'"
            )

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Defaults, then the TOML file, then the environment (``ENVIRONMENT``; ``environ``,
        by default ``os.environ``), then ``overrides`` (flags; ``None`` values are ignored)."""
        values: dict[str, Any] = {}
        if config_file is not None:
            try:
                values.update(_flatten(tomllib.loads(Path(config_file).read_text())))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read {config_file}: {exc}") from exc
        environ = os.environ if environ is None else environ
        from_environment: dict[str, str] = {}
        for name, variable in ENVIRONMENT.items():
            if environ.get(variable):
                values.pop(name.replace("_", "-"), None)
                values[name] = environ[variable]
                from_environment[name] = variable
        for name, value in overrides.items():
            if value is not None:
                values.pop(name.replace("_", "-"), None)
                values[name] = value
                from_environment.pop(name, None)
        try:
            return cls.from_mapping(values)
        except ConfigError as exc:
            told = [v for name, v in from_environment.items() if f"setting {name!r}" in str(exc)]
            if told:
                raise ConfigError(f"{exc} (from the environment variable {told[0]})") from None
            raise

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Settings:
        known = {f.name: f for f in fields(cls)}
        converted: dict[str, Any] = {}
        for key, value in _flatten(values).items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown setting {key!r}")
            default = getattr(cls(), name)
            converted[name] = _convert(name, value, default)
        return cls(**converted)

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON values, with the tokens and the passwords in URLs hidden."""
        values: dict[str, Any] = {}
        for setting in fields(self):
            value = getattr(self, setting.name)
            if setting.name in SECRET_SETTINGS:
                value = REDACTED if value else ""
            elif setting.name in URL_SETTINGS:
                value = _shown(value)
            elif isinstance(value, Path):
                value = str(value)
            values[setting.name] = value
        return values

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def setting_help() -> dict[str, str]:
    """Each setting's docstring (the string under its field), for the command line's help."""
    try:
        tree = ast.parse(inspect.getsource(Settings))
    except (OSError, TypeError):
        return {}  # no source shipped (a frozen build): options without help text
    body = tree.body[0].body  # type: ignore[attr-defined]
    found: dict[str, str] = {}
    for field_node, doc_node in itertools.pairwise(body):
        if (
            isinstance(field_node, ast.AnnAssign)
            and isinstance(field_node.target, ast.Name)
            and isinstance(doc_node, ast.Expr)
            and isinstance(doc_node.value, ast.Constant)
            and isinstance(doc_node.value.value, str)
        ):
            found[field_node.target.id] = " ".join(doc_node.value.value.split())
    return found


NESTED_TABLES = ("federation",)
"""TOML tables whose keys are settings prefixed with the table's name (``[federation]``
``peers`` is ``federation_peers``)."""


def _flatten(values: dict[str, Any]) -> dict[str, Any]:
    flat = dict(values)
    for table in NESTED_TABLES:
        nested = flat.pop(table, None)
        if nested is None:
            continue
        if not isinstance(nested, dict):
            raise ConfigError(f"setting {table!r} must be a table ([{table}])")
        for key, value in nested.items():
            flat[f"{table}_{key.replace('-', '_')}"] = value
    return flat


def _is_domain(value: Any) -> bool:
    try:
        return isinstance(value, str) and check_domain(value) == value
    except ValueError:
        return False


def _convert(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"setting {name!r} must be a table")
        return dict(value)
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"setting {name!r} must be a list")
        return list(value)
    if isinstance(default, Path):
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"setting {name!r} must be a path")
        return Path(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"setting {name!r} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"setting {name!r} must be an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"setting {name!r} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"setting {name!r} must be a string")
    return value


def without_password(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def _shown(url: str) -> str:
    """``without_password``, or only ``***`` for a URL too broken to take apart."""
    try:
        return without_password(url)
    except ValueError:
        return REDACTED


def _is_url(value: str, schemes: tuple[str, ...]) -> bool:
    """``value`` starts with one of ``schemes`` and has something after it, without spaces."""
    return (
        value.startswith(schemes)
        and value.partition("://")[2] != ""
        and not any(c.isspace() for c in value)
    )


def _check(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise ConfigError(f"setting {name!r} {rule}")
