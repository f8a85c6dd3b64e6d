"""Commands for operators: bulk account import, queues and sessions read from the store, and
a live view of a running server's ``/metrics``."""

from __future__ import annotations

import asyncio
import csv
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ..config import ConfigError, Settings
from ..core.accounts import AccountService, check_account_name
from ..core.errors import Conflict, TidingsError
from ..core.model import UNCLAIMED, SessionRecord
from ..core.ports import Store
from .main import (
    Config,
    DataDir,
    DataOptions,
    StoreUrl,
    _fail,
    _print_json,
    _with_accounts,
    _with_store,
    account_app,
    app,
)

T = TypeVar("T")
MAX_IMPORT_ROWS: Final = 100_000
IMPORT_CONCURRENCY: Final = 8
"""Rows hashed at once (password hashing runs in threads and is most of the work)."""

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


# -- account import -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportRow:
    number: int
    """The row's line in the file (the header is line 1)."""
    name: str
    password: str


def _read_rows(path: Path) -> tuple[list[ImportRow], list[tuple[int, str]]]:
    """The file's rows, and the rows refused before any is imported (line, reason); exits 2
    when the file cannot be read, has no ``name,password`` header or has too many rows."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {path}: {exc}")
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or [c.strip().lower() for c in header] != ["name", "password"]:
        _fail(f"{path}: the first line must be the header 'name,password'")
    rows: list[ImportRow] = []
    refused: list[tuple[int, str]] = []
    for line, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue  # blank lines are not rows
        if len(rows) + len(refused) >= MAX_IMPORT_ROWS:
            _fail(f"{path}: more than {MAX_IMPORT_ROWS} rows; split the file")
        if len(cells) != 2:
            refused.append((line, f"expected 2 columns (name,password), found {len(cells)}"))
            continue
        name, password = cells[0].strip(), cells[1]
        try:
            check_account_name(name)
        except TidingsError as error:
            refused.append((line, error.message))
            continue
        rows.append(ImportRow(line, name, password))
    return rows, refused


@account_app.command("import")
def account_import(
    file: Annotated[
        Path, typer.Argument(help="CSV file with a 'name,password' header, one account a row.")
    ],
    config: Config = None,
    store: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Create accounts from a CSV file (at most 100000 rows). Rows that fail are reported with
    their line number and the others imported; names that exist are reported and left as they
    are. Exits 1 when any row failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    rows, refused = _read_rows(file)
    outcome: dict[int, str] = {line: f"error: {reason}" for line, reason in refused}
    seen: set[str] = set()
    unique: list[ImportRow] = []
    for row in rows:
        if row.name in seen:
            outcome[row.number] = f"error: {row.name!r} appears on an earlier line"
        else:
            seen.add(row.name)
            unique.append(row)

    async def work(service: AccountService) -> None:
        pending = iter(unique)
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("import", total=len(unique))

            async def worker() -> None:
                for row in pending:
                    try:
                        await service.add(row.name, row.password)
                        outcome[row.number] = "added"
                    except Conflict:
                        outcome[row.number] = "exists"
                    except TidingsError as error:
                        outcome[row.number] = f"error: {error.message}"
                    except Exception as error:  # the store failed: the report still comes
                        outcome[row.number] = f"error: {error}"
                    bar.advance(task)

            await asyncio.gather(*(worker() for _ in range(IMPORT_CONCURRENCY)))

    _with_accounts(DataOptions(config, store, data_dir), work)
    names = {row.number: row.name for row in rows}
    counts = {"added": 0, "exists": 0, "error": 0}
    for line in sorted(outcome):
        result = outcome[line]
        kind = result.partition(":")[0]
        counts[kind] += 1
        if kind == "error":
            print(f"line {line}: {result[len('error: ') :]}", file=sys.stderr)
        elif kind == "exists":
            print(f"line {line}: {names[line]} exists (left as it is)", file=sys.stderr)
    print(f"{counts['added']} added, {counts['exists']} existed, {counts['error']} failed")
    if counts["error"]:
        raise typer.Exit(1)


# -- queues and sessions (offline, from the store) ----------------------------------------------


def _when(at: float) -> str:
    if not at:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _session_document(record: SessionRecord, persistence: Any = None) -> dict[str, Any]:
    unclaimed = record.instance == UNCLAIMED
    return {
        "identity": record.identity,
        "instance": None if unclaimed else record.instance,
        "depth": record.depth,
        "limit": record.queue_limit,
        "policy": record.policy.value if record.policy is not None else None,
        "routingRule": record.routing_rule.value,
        "lastSeen": record.last_seen or None,
        "persistence": (
            "begun" if persistence is not None and persistence.nonce is not None else "none"
        ),
    }


@app.command("queues")
def queues_command(
    top: Annotated[int, typer.Option("--top", min=1, max=10_000, help="How many.")] = 20,
    as_json: Json = False,
    config: Config = None,
    store: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """The sessions with the deepest queues, read from the store (run it on the data folder of
    a stopped server, or on a running one's for a moment's picture); '(unclaimed)' is an
    identity's inbox for messages no session has taken yet."""

    async def work(opened: Store, settings: Settings) -> list[SessionRecord]:
        return await opened.load_sessions()

    records = _with_store(DataOptions(config, store, data_dir), work)
    deepest = sorted(
        (r for r in records if r.depth > 0),
        key=lambda r: (-r.depth, r.identity, r.instance),
    )[:top]
    documents = [_session_document(r) for r in deepest]
    for document in documents:
        del document["persistence"]  # not read for a whole store
    if as_json:
        _print_json(documents)
        return
    table = Table("depth", "identity", "instance", "limit", "last seen", title="deepest queues")
    for document in documents:
        table.add_row(
            str(document["depth"]),
            document["identity"],
            document["instance"] or "(unclaimed)",
            "-" if document["limit"] is None else str(document["limit"]),
            _when(document["lastSeen"] or 0.0),
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


@app.command("sessions")
def sessions_command(
    identity: Annotated[str, typer.Argument(help="name@domain, or an account name.")],
    as_json: Json = False,
    config: Config = None,
    store: StoreUrl = None,
    data_dir: DataDir = None,
) -> None:
    """An identity's named sessions, read from the store: instance, queue depth, last seen,
    routing rule, persistence (begun: a persistent session began and has not ended)."""

    async def work(opened: Store, settings: Settings) -> list[dict[str, Any]]:
        who = identity if "@" in identity else f"{identity}@{settings.domain}"
        records = [r for r in await opened.load_sessions() if r.identity == who]
        persistence = await opened.persistence_of(who)
        return [
            _session_document(r, persistence.get(r.instance))
            for r in sorted(records, key=lambda r: r.instance)
        ]

    documents = _with_store(DataOptions(config, store, data_dir), work)
    if as_json:
        _print_json(documents)
        return
    if not documents:
        print(f"{identity}: no sessions", file=sys.stderr)
        return
    table = Table("instance", "depth", "last seen", "routing rule", "persistence", "limit")
    for document in documents:
        table.add_row(
            document["instance"] or "(unclaimed)",
            str(document["depth"]),
            _when(document["lastSeen"] or 0.0),
            document["routingRule"],
            document["persistence"],
            "-" if document["limit"] is None else str(document["limit"]),
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


# -- status: a live view of /metrics -------------------------------------------------------------

SAMPLE: Final = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text format: {name: {labels: value}} (labels as sorted pairs)."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        pairs = tuple(sorted(LABEL.findall(labels or "")))
        try:
            found.setdefault(name, {})[pairs] = float(value)
        except ValueError:
            continue
    return found


def _one(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> float:
    return metrics.get(f"tidings_{name}", {}).get((), 0.0)


@dataclass(frozen=True, slots=True)
class Reading:
    at: float
    metrics: dict[str, dict[tuple[tuple[str, str], ...], float]]


def figures(before: Reading | None, now: Reading) -> dict[str, Any]:
    """The status figures from a reading (rates from the one before it, when there is one)."""
    metrics = now.metrics
    routed = _one(metrics, "messages_routed_total")
    rate: float | None = None
    if before is not None and now.at > before.at:
        rate = max(0.0, routed - _one(before.metrics, "messages_routed_total")) / (
            now.at - before.at
        )
    outbox = {
        dict(labels).get("peer", ""): value
        for labels, value in metrics.get("tidings_federation_outbox_depth", {}).items()
    }
    return {
        "connectionsOpen": int(_one(metrics, "connections_open")),
        "messagesRoutedPerSecond": rate,
        "messagesRouted": int(routed),
        "sessionsEstablished": int(_one(metrics, "sessions_established_total")),
        "envelopesRejected": int(_one(metrics, "envelopes_rejected_total")),
        "storeCommits": int(_one(metrics, "store_commits_total")),
        "federationOutbox": {peer: int(depth) for peer, depth in sorted(outbox.items())},
        "uptimeSeconds": _one(metrics, "uptime_seconds"),
    }


def _status_table(base: str, shown: dict[str, Any]) -> Table:
    table = Table("figure", "value", title=f"tidings at {base}")
    rate = shown["messagesRoutedPerSecond"]
    table.add_row("connections open", str(shown["connectionsOpen"]))
    table.add_row("messages routed/s", "-" if rate is None else f"{rate:.1f}")
    table.add_row("messages routed", str(shown["messagesRouted"]))
    table.add_row("sessions established", str(shown["sessionsEstablished"]))
    table.add_row("envelopes rejected", str(shown["envelopesRejected"]))
    table.add_row("store commits", str(shown["storeCommits"]))
    table.add_row("uptime", f"{shown['uptimeSeconds']:.0f} s")
    if not shown["federationOutbox"]:
        table.add_row("federation outbox", "no peers")
    for peer, depth in shown["federationOutbox"].items():
        table.add_row(f"outbox to {peer}", str(depth))
    return table


@app.command("status")
def status_command(
    config: Config = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="The server's HTTP address (default: host and http_port)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="A bearer token for a proxy in front of /metrics (the server asks none; "
            "default: none, so no secret is sent).",
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Print one snapshot (two readings 1 s apart), exit.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --once: print the figures as JSON.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, max=60, help="Seconds between readings.")
    ] = 1.0,
) -> None:
    """A live view of the running server's figures from its /metrics (Ctrl-C quits):
    connections, messages routed per second, sessions, rejections, store commits, federation
    outbox depth per peer."""
    import httpx
    from rich.live import Live

    try:
        settings = Settings.load(config)
    except ConfigError as exc:
        _fail(str(exc))
    base = (url or f"http://{settings.host}:{settings.http_port}").rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def readings(client: httpx.Client) -> Iterator[Reading]:
        while True:
            try:
                answer = client.get(f"{base}/metrics", headers=headers)
            except httpx.HTTPError as exc:
                _fail(f"cannot reach {base}: {exc}", 1)
            if answer.status_code != 200:
                _fail(f"{base}/metrics answered {answer.status_code}: {answer.text[:300]}", 1)
            yield Reading(time.monotonic(), parse_metrics(answer.text))

    with httpx.Client(timeout=10) as client:
        stream = readings(client)
        before = next(stream)
        if once:
            time.sleep(interval)  # the measurement interval of the rate, not a synchronization
            shown = figures(before, next(stream))
            if as_json:
                _print_json(shown)
            else:
                Console(width=200 if not sys.stdout.isatty() else None).print(
                    _status_table(base, shown)
                )
            return
        try:
            with Live(
                _status_table(base, figures(None, before)), refresh_per_second=4, screen=False
            ) as live:
                while True:
                    time.sleep(interval)
                    now = next(stream)
                    live.update(_status_table(base, figures(before, now)))
                    before = now
        except KeyboardInterrupt:
            pass
