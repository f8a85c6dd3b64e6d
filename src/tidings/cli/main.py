"""The ``tidings`` command: serve, administer accounts, send and listen."""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn, TypeVar, get_type_hints

import typer
import uvloop
from rich.console import Console
from rich.table import Table

from ..config import ConfigError, Settings, setting_help, without_password
from ..core.accounts import AccountService
from ..core.errors import TidingsError
from ..core.ports import Store

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
account_app = typer.Typer(no_args_is_help=True, help="Manage accounts in a data folder.")
app.add_typer(account_app, name="account")
err = Console(stderr=True)
T = TypeVar("T")

Config = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file.", show_default=False)
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder holding the SQLite database (default: the settings', tidings-data).",
        show_default=False,
    ),
]
StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="sqlite, memory or a postgresql:// URL (default: $TIDINGS_STORE, the settings', "
        "sqlite).",
        show_default=False,
    ),
]


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def serve(
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file.")] = None,
    **overrides: Any,
) -> None:
    """Run the server until Ctrl-C (sessions get a reason, pending writes are committed)."""
    from ..wiring import serve as run_server

    try:
        settings = Settings.load(config, **overrides)
        settings.check_serveable()
    except ConfigError as exc:
        _fail(str(exc))
        return

    def ready(server: Any) -> None:
        where = (
            f"data={settings.data_dir}"
            if settings.store == "sqlite"
            else f"store={without_password(settings.store)}"
        )
        cluster = (
            f" broker={without_password(settings.broker)} "
            f"node={settings.resolved_node_id(server.ws_port)}"
            if settings.multi_node
            else ""
        )
        print(
            f"tidings ready ws://{settings.host}:{server.ws_port}/ "
            f"http://{settings.host}:{server.http_port}/ domain={settings.domain} "
            f"{where}{cluster}",
            flush=True,
        )

    try:
        uvloop.run(run_server(settings, ready))
    except ConfigError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot start: {exc}", 1)


def _setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` one option per setting (``--queue-limit``, ``--allow-guests/--no-...``),
    derived from ``Settings`` so that a new setting is on the command line without a copy."""
    helps = setting_help()
    signature = inspect.signature(command)
    config = signature.parameters["config"]
    parameters = [config]
    defaults = Settings()
    for setting in fields(Settings):
        kind = type(getattr(defaults, setting.name))
        if kind in (dict, list):
            continue  # tables and lists ([federation] peers, deny): in the TOML file only
        flag = "--" + setting.name.replace("_", "-")
        declaration = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
        option = typer.Option(declaration, help=helps.get(setting.name), show_default=False)
        parameters.append(
            inspect.Parameter(
                setting.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, option],
            )
        )
    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return command


app.command()(_setting_options(serve))


@app.command("migrate")
def migrate_command(
    config: Config = None, store: StoreUrl = None, data_dir: DataDir = None
) -> None:
    """Apply the store's pending schema migrations (each in its own transaction) and say which;
    safe to run while nodes start, and when there is nothing to do.

    In a terminal a progress bar names each step as it starts (drawn at once, so a step that
    takes no time is still seen) and stays, complete, at the end; piped, only the list."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ..store import migrate

    settings = DataOptions(config, store, data_dir).settings()
    where = settings.data_dir if settings.store == "sqlite" else _redacted(settings.store)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("migrating", total=None)

        def advance(name: str, number: int, total: int) -> None:
            bar.update(task, description=name, completed=number - 1, total=total, refresh=True)

        try:
            applied = migrate(settings.store, settings.data_dir, advance)
        except (TidingsError, OSError) as exc:
            bar.stop()
            _fail(exc.message if isinstance(exc, TidingsError) else str(exc), 1)
        steps = bar.tasks[0].total or 0
        bar.update(task, description="migrated", completed=steps, total=steps, refresh=True)
    for name in applied:
        print(f"applied {name}")
    print(f"{len(applied)} migration(s) applied to {where}; the schema is up to date")


def _redacted(url: str) -> str:
    """A database URL without its password (to print)."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}://{credentials.partition(':')[0]}@{host}"


@dataclass(frozen=True, slots=True)
class DataOptions:
    """Where a command that touches data finds it: the options every such command takes, in
    the order of the server's settings (flags beat ``TIDINGS_STORE`` beat the file)."""

    config: Path | None
    store: str | None
    data_dir: Path | None

    def settings(self) -> Settings:
        try:
            return Settings.load(self.config, store=self.store, data_dir=self.data_dir)
        except ConfigError as exc:
            _fail(str(exc))


def _with_store(data: DataOptions, work: Callable[[Store, Settings], Awaitable[T]]) -> T:
    """Run ``work`` with the store the options name (offline: the server's own ``open_store``)."""
    from ..store import open_store

    settings = data.settings()

    async def run() -> T:
        store = open_store(settings)
        store.open(asyncio.get_running_loop())
        try:
            return await work(store, settings)
        finally:
            store.close()

    try:
        return asyncio.run(run())
    except TidingsError as error:
        _fail(error.message, 1)


def _with_accounts(data: DataOptions, work: Callable[[AccountService], Awaitable[T]]) -> T:
    """Run ``work`` with the account service of the store the options name."""

    async def run(store: Store, settings: Settings) -> T:
        return await work(AccountService(settings.domain, store))

    return _with_store(data, run)


@account_app.command("add")
def account_add(
    name: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, help="Password.")],
    config: Config = None,
    store: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Create an account."""
    _with_accounts(DataOptions(config, store, data_dir), lambda s: s.add(name, password))
    print(f"account {name} added")


@account_app.command("list")
def account_list(config: Config = None, store: StoreUrl = None, data_dir: DataDir = None) -> None:
    """List accounts."""
    names = _with_accounts(DataOptions(config, store, data_dir), lambda s: s.names())
    table = Table("account")
    for name in names:
        table.add_row(name)
    if sys.stdout.isatty():
        Console().print(table)
    else:
        for name in names:
            print(name)


@account_app.command("remove")
def account_remove(
    name: str, config: Config = None, store: StoreUrl = None, data_dir: DataDir = None
) -> None:
    """Delete an account (its contacts and delegations go with it)."""
    _with_accounts(DataOptions(config, store, data_dir), lambda s: s.remove(name))
    print(f"account {name} removed")


@account_app.command("key")
def account_key(
    name: str,
    label: Annotated[str, typer.Option(help="What the key is for.")] = "",
    config: Config = None,
    store: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key for the LIME 'key' scheme; it is shown once."""
    print(_with_accounts(DataOptions(config, store, data_dir), lambda s: s.create_key(name, label)))


federation_app = typer.Typer(
    no_args_is_help=True, help="Other domains' servers: this server's key, the peers' status."
)
app.add_typer(federation_app, name="federation")


@federation_app.command("rotate-key")
def federation_rotate_key(
    overlap_s: Annotated[
        float,
        typer.Option(
            "--overlap-s",
            min=0,
            help="Seconds the older keys stay valid (peers that fetch the key document within "
            "them learn the new key from it).",
        ),
    ] = 7 * 24 * 3600.0,
    config: Config = None,
    data_dir: DataDir = None,
) -> None:
    """Add a new server key that signs from the next start; prints its id. The older keys
    expire after the overlap (with no key yet, the first one is made). Run it while the
    server is stopped: a running server keeps the keys it read at its start."""
    import time

    from ..store.server_keys import SERVER_KEYS_FILE, ServerKeys, ServerKeysError

    settings = DataOptions(config, None, data_dir).settings()
    now = time.time()
    first = not (settings.data_dir / SERVER_KEYS_FILE).exists()
    try:
        keys = ServerKeys.load_or_create(settings.data_dir, settings.domain, now)
        # No keys yet: the first one just made is the new key; nothing older to expire.
        new = keys.current if first else keys.rotate(overlap_s=overlap_s, now=now)
    except (ServerKeysError, OSError) as exc:
        _fail(str(exc), 1)
    print(new.key_id)


cluster_app = typer.Typer(
    no_args_is_help=True, help="A local cluster on loopback (development, tests, trials)."
)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
def cluster_up(
    nodes: Annotated[int, typer.Option(help="How many tidings nodes.", min=1, max=32)] = 3,
    ws_port: Annotated[
        int, typer.Option("--ws-port", help="HAProxy's WebSocket port (0: a free one).")
    ] = Settings().ws_port,
    http_port: Annotated[
        int, typer.Option("--http-port", help="HAProxy's HTTP port (0: a free one).")
    ] = Settings().http_port,
    allow_guests: Annotated[
        bool, typer.Option("--allow-guests", help="Offer the LIME guest scheme on every node.")
    ] = False,
    app_spec: Annotated[
        str | None, typer.Option("--app", help="A Tidings app every node loads.")
    ] = None,
    node_store: Annotated[str | None, typer.Option(hidden=True)] = None,
    node_broker: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Start PostgreSQL, Redis, N nodes and HAProxy in front, with throwaway data folders;
    Ctrl-C stops it all and deletes the folders."""
    import signal
    import threading

    from ..devcluster.cluster import LocalCluster
    from ..devcluster.services import ServiceError

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    serve_args = (["--allow-guests"] if allow_guests else []) + (
        ["--app", app_spec] if app_spec else []
    )
    cluster = LocalCluster(
        nodes=nodes,
        ws_port=ws_port,
        http_port=http_port,
        serve_args=serve_args,
        store=node_store,
        broker=node_broker,
    )
    print(f"starting PostgreSQL, Redis, {nodes} nodes and HAProxy ...", flush=True)
    try:
        cluster.start()
        for name, where in cluster.describe():
            print(f"{name:<11} {where}", flush=True)
        print(f"{'folder':<11} {cluster.folder}", flush=True)
        hint = f"TIDINGS_STORE={cluster.node_store} tidings account add NAME"
        print(f"{'accounts':<11} {hint}", flush=True)
        print(
            f"tidings cluster ready {cluster.ws_url} {cluster.http_url}/ nodes={nodes} "
            "(Ctrl-C stops it)",
            flush=True,
        )
        reported: set[str] = set()
        idle = threading.Event()
        while True:
            idle.wait(1.0)
            for node in cluster.members:
                if not node.running and node.node_id not in reported:
                    reported.add(node.node_id)
                    err.print(f"[yellow]{node.node_id} exited[/yellow]: see {node.log}")
    except KeyboardInterrupt:
        pass
    except ServiceError as exc:
        _fail(str(exc), 1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping the cluster ...", flush=True)
        cluster.stop()
        print("tidings cluster stopped", flush=True)


DEFAULT_URL = f"ws://127.0.0.1:{Settings().ws_port}/"
Url = Annotated[str, typer.Option("--url", help="The server's WebSocket URL.")]
As = Annotated[str, typer.Option("--as", help="Account name or identity (name@domain).")]
Password = Annotated[
    str | None, typer.Option(help="Password (plain scheme); or give --key.", show_default=False)
]
Key = Annotated[str | None, typer.Option(help="API key (key scheme).", show_default=False)]
Instance = Annotated[str, typer.Option(help="Session (instance) name.")]
KeyDir = Annotated[
    Path | None,
    typer.Option(
        "--key-dir",
        help="Folder of end-to-end node keys (default: $XDG_DATA_HOME/tidings/keys).",
        show_default=False,
    ),
]


@dataclass(frozen=True, slots=True)
class Login:
    """Who a client command signs in as, and where (the options every one of them takes)."""

    who: str
    password: str | None
    key: str | None
    url: str
    instance: str

    def client(self, *, e2e: bool = False, key_dir: Path | None = None) -> Any:
        from ..sdk import Client

        if (self.password is None) == (self.key is None):
            _fail("give exactly one of --password or --key")
        identity = self.who if "@" in self.who else f"{self.who}@{Settings().domain}"
        return Client(
            self.url,
            identity,
            instance=self.instance,
            password=self.password,
            key=self.key,
            reconnect=False,
            e2e=e2e,
            key_dir=key_dir,
            on_rejected=_print_rejection,
        )


_LOGIN_OPTIONS: Final[list[tuple[str, Any, Any]]] = [
    ("who", As, inspect.Parameter.empty),
    ("password", Password, None),
    ("key", Key, None),
    ("url", Url, DEFAULT_URL),
    ("instance", Instance, "cli"),
]


def _logs_in(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` (which takes ``login: Login``) the sign-in options instead, so that
    each client command declares them once, here."""
    hints = get_type_hints(command, include_extras=True)
    own = [
        parameter.replace(annotation=hints[parameter.name])
        for parameter in inspect.signature(command).parameters.values()
        if parameter.name != "login"
    ]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, kind, default in _LOGIN_OPTIONS
    ]

    @functools.wraps(command)
    def run(**options: Any) -> Any:
        login = Login(**{name: options.pop(name) for name, _, _ in _LOGIN_OPTIONS})
        return command(login=login, **options)

    parameters = own + added
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    del run.__wrapped__  # typer reads the signature above, not the wrapped function's
    return run


def _print_rejection(rejection: Any) -> None:
    err.print(
        f"[yellow]rejected[/yellow] sealed message {rejection.id} from {rejection.sender} "
        f"({rejection.kind}): {rejection.description}"
    )


@app.command()
@_logs_in
def send(
    text: Annotated[str, typer.Argument(help="The message content.")],
    to: Annotated[str, typer.Option(help="Destination: name@domain[/instance].")],
    login: Login,
    content_type: Annotated[str, typer.Option("--type", help="Content type.")] = "text/plain",
    sealed: Annotated[
        bool,
        typer.Option(
            "--sealed",
            help="Seal end to end for the recipient's devices (it must have connected once "
            "with keys, e.g. 'tidings listen').",
        ),
    ] = False,
    key_dir: KeyDir = None,
) -> None:
    """Send one message and wait until the server has stored it (accepted)."""
    from ..sdk import TidingsClientError

    async def run() -> str:
        client = login.client(e2e=sealed, key_dir=key_dir)
        async with client:
            content: Any = text
            if content_type == "application/json" or content_type.endswith("+json"):
                import json

                content = json.loads(text)
            send = client.send_sealed if sealed else client.send_message
            message_id: str = await send(to, content, content_type)
            return message_id

    try:
        print(asyncio.run(run()))
    except (TidingsClientError, OSError, ValueError) as exc:
        _fail(str(exc), 1)


@app.command()
@_logs_in
def listen(
    login: Login,
    count: Annotated[int, typer.Option(help="Exit after this many messages (0: never).")] = 0,
    key_dir: KeyDir = None,
) -> None:
    """Print each received message as one JSON envelope per line (and acknowledge it).

    The node has end-to-end keys (published when it connects): sealed messages are printed
    opened, with the sender node their signature proves as "verifiedSender"; one that does
    not verify is reported on stderr and not printed."""
    from ..protocol.lime import encode_envelope
    from ..sdk import TidingsClientError

    async def run() -> None:
        async with login.client(e2e=True, key_dir=key_dir) as client:
            taken = 0
            async for message in client.messages():
                sys.stdout.write(encode_envelope(message.envelope).decode() + "\n")
                sys.stdout.flush()
                taken += 1
                if count and taken >= count:
                    return

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except (TidingsClientError, OSError) as exc:
        _fail(str(exc), 1)


invite_app = typer.Typer(
    no_args_is_help=True, help="Consent invites: ask another account for access (over LIME)."
)
app.add_typer(invite_app, name="invite")


def _print_json(document: Any) -> None:
    import json

    sys.stdout.write(json.dumps(document, ensure_ascii=False, sort_keys=True) + "\n")


def _consent_call(login: Login, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(client.consent)`` in a client session; a refusal prints its error id and
    exits 1."""
    from ..sdk import ConsentError, TidingsClientError

    async def run() -> T:
        async with login.client() as client:
            return await work(client.consent)

    try:
        return asyncio.run(run())
    except ConsentError as exc:
        _fail(f"{exc.error_id or int(exc.code)}: {exc.description}", 1)
    except (TidingsClientError, OSError, ValueError) as exc:
        _fail(str(exc), 1)


def _permission(text: str) -> dict[str, str]:
    resource, _, level = text.rpartition("=")
    if not resource:
        raise typer.BadParameter(f"{text!r}: expected RESOURCE=LEVEL, e.g. 'feed:hr*=read'")
    return {"resource": resource, "level": level}


def _language_map(texts: list[str]) -> dict[str, str]:
    """``LANG=TEXT`` entries; a text without ``LANG=`` is English."""
    found: dict[str, str] = {}
    for text in texts:
        language, sep, rest = text.partition("=")
        if sep and language.isalpha() and language.islower() and 2 <= len(language) <= 3:
            found[language] = rest
        else:
            found["en"] = text
    return found


@invite_app.command("create")
@_logs_in
def invite_create(
    login: Login,
    app_code: Annotated[str, typer.Option("--app-code", help="Your application's code.")],
    display_name: Annotated[str, typer.Option("--display-name", help="Shown to the accepter.")],
    consent: Annotated[
        list[str], typer.Option("--consent", help="Consent text, 'LANG=TEXT' (repeatable).")
    ],
    permission: Annotated[
        list[str],
        typer.Option(
            "--permission",
            help="RESOURCE=LEVEL asked for, e.g. 'feed:heart-rate*=read', 'presence=read', "
            "'messages=contribute' (repeatable).",
        ),
    ],
    mode: Annotated[str, typer.Option(help="single-use or open-link.")] = "single-use",
    chat: Annotated[bool, typer.Option("--chat/--no-chat", help="Allow chat.")] = True,
    system_messaging: Annotated[
        bool,
        typer.Option("--system-messaging/--no-system-messaging", help="Allow system alerts."),
    ] = True,
    expires_in: Annotated[
        int | None,
        typer.Option(help="Seconds until the link expires (60 to 2592000; default 7 days)."),
    ] = None,
    grant_expires_in: Annotated[
        int | None,
        typer.Option(
            help="Seconds until the relationship made by accepting ends (up to 31536000; "
            "default: until revoked)."
        ),
    ] = None,
) -> None:
    """Create an invite; prints it as JSON, with its capabilityUrl to give to the accepter."""
    import time

    permissions = [_permission(p) for p in permission]
    expires_at = time.time() + expires_in if expires_in is not None else None
    grant_expires_at = time.time() + grant_expires_in if grant_expires_in is not None else None
    _print_json(
        _consent_call(
            login,
            lambda c: c.create_invite(
                app_code=app_code,
                display_name=display_name,
                consent=_language_map(consent),
                permissions=permissions,
                mode=mode,
                features={"chat": chat, "systemMessaging": system_messaging},
                expires_at=expires_at,
                grant_expires_at=grant_expires_at,
            ),
        )
    )


@invite_app.command("list")
@_logs_in
def invite_list(
    login: Login,
) -> None:
    """Your invites, one JSON document per line."""
    for invite in _consent_call(login, lambda c: c.list_invites()):
        _print_json(invite)


@invite_app.command("show")
@_logs_in
def invite_show(
    invite_id: Annotated[str, typer.Argument(help="The invite's id.")],
    login: Login,
) -> None:
    """One invite and its status (pending, accepted by whom and when, refused, ...)."""
    _print_json(_consent_call(login, lambda c: c.get_invite_status(invite_id)))


@invite_app.command("invalidate")
@_logs_in
def invite_invalidate(
    invite_id: Annotated[str, typer.Argument(help="The invite's id.")],
    login: Login,
    reason: Annotated[str | None, typer.Option(help="Why (kept with the invite).")] = None,
) -> None:
    """Close the invite's link: nobody can accept it any more (relationships made stay)."""
    _print_json(
        _consent_call(
            login,
            lambda c: c.invalidate_capability(invite_id, reason=reason),
        )
    )


@invite_app.command("accept")
@_logs_in
def invite_accept(
    capability_url: Annotated[str, typer.Argument(help="The capability URL you were given.")],
    login: Login,
) -> None:
    """Accept an invite as yourself; prints the relationship it made as JSON."""
    _print_json(_consent_call(login, lambda c: c.accept_invite(capability_url)))


@invite_app.command("refuse")
@_logs_in
def invite_refuse(
    capability_url: Annotated[str, typer.Argument(help="The capability URL you were given.")],
    login: Login,
    reason: Annotated[str | None, typer.Option(help="Told to the requester.")] = None,
) -> None:
    """Refuse an invite; the requester is told."""
    _consent_call(
        login,
        lambda c: c.refuse_invite(capability_url, reason=reason),
    )
    print("refused")


@app.command()
@_logs_in
def relationships(
    login: Login,
) -> None:
    """Your consent relationships (either side), one JSON document per line."""
    for relationship in _consent_call(login, lambda c: c.list_relationships()):
        _print_json(relationship)


@app.command()
@_logs_in
def chat(
    relationship: Annotated[str, typer.Argument(help="The relationship's id.")],
    text: Annotated[str, typer.Argument(help="The message (1 to 10240 characters).")],
    login: Login,
) -> None:
    """Send a chat message in a relationship; prints it as JSON (with its seq)."""
    _print_json(_consent_call(login, lambda c: c.send_chat(relationship, text)))


def main() -> None:
    app()


@federation_app.command("status")
def federation_status(
    config: Config = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="The server's HTTP API (default: host and http_port)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="TIDINGS_API_TOKEN", help="The api_token (default: the config's)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Each peer of the running server: outbox depth, oldest waiting envelope, last error."""
    import httpx

    try:
        settings = Settings.load(config)
    except ConfigError as exc:
        _fail(str(exc))
    base = url or f"http://{settings.host}:{settings.http_port}"
    bearer = token or settings.api_token
    if not bearer:
        _fail("the status needs the server's api_token (--token, TIDINGS_API_TOKEN or the config)")
    try:
        answer = httpx.get(
            f"{base.rstrip('/')}/federation/status",
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {base}: {exc}", 1)
    if answer.status_code != 200:
        _fail(f"{base} answered {answer.status_code}: {answer.text[:300]}", 1)
    status = answer.json()
    if as_json:
        _print_json(status)
        return
    from rich.table import Table

    table = Table(title=f"{status['domain']} (key {status['keyId']})")
    for column in (
        "peer",
        "outbox",
        "oldest waiting",
        "sent",
        "received",
        "failures",
        "dropped",
        "last error",
    ):
        table.add_column(column)
    for peer in status["peers"]:
        oldest = peer["oldestWaitingS"]
        table.add_row(
            peer["domain"],
            str(peer["outbox"]),
            "-" if oldest is None else f"{oldest:.1f} s",
            str(peer["sent"]),
            str(peer["received"]),
            str(peer["failures"]),
            str(peer["dropped"]),
            peer["lastError"] or "-",
        )
    Console().print(table)


from . import ops  # noqa: E402, F401  (registers the operators' commands on ``app``)
