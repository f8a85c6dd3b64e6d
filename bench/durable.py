"""The durable path and latency under load (issue 15), with the C load generator.

    cc -O2 -o /tmp/loadgen /work/shared/tools/loadgen.c     # done by this script when missing
    .venv/bin/python bench/durable.py [--reps 2] [--src REV]
        [--modes acked,paced,one,ff,ffhalf,fanout]
        [--store sqlite,postgresql] [--profile ffhalf,echohalf]

Each repetition runs every mode against a freshly started ``tidings serve --allow-guests`` (rate
limits lifted) pinned to core 0, the generator (shared/tools/loadgen.c) pinned to core 1,
300-byte payloads, once per store of ``--store``, alternating (the stores' order reverses every
other repetition):

  sqlite      the default store, in a new temporary folder
  postgresql  ``--store postgresql://...``: a fresh database per run on one throwaway
              PostgreSQL (its own user and data folder, fsync and synchronous_commit on), pinned
              to core 0 beside the server: "one core" holds the server and its database.
              Its CPU (every process of it) counts over the generator's measured window; the
              database is dropped and a CHECKPOINT taken after each run.

Modes:

  acked   100 guest pairs x 10 in flight; a message counts once delivered AND ``accepted``,
          receivers answer ``received`` (the issue's "acknowledged, fsync'd" row)
  paced   acked, open loop at ``--paced`` (70%) of the rate ``acked`` reached in this repetition
  one     acked with one pair and one message in flight: latency = one commit (+ fsync)
  ff      fire-and-forget (no id), 100 pairs x 10 in flight
  ffhalf  fire-and-forget, open loop at half the rate ``ff`` reached in this repetition
  fanout  Feedme: 1000 subscribers of feed ``bench`` (``--app bench.fanout_app:app``), one
          publisher calling action ``pub`` with 10 in flight: msgs/s are deliveries/s
  echo    the transport's floor: the bare picows echo (bench/bare_echo.py, same uvloop and
          picows as Tidings, no JSON, no routing, no storage), 100 connections x 10 in flight.
          One echo is one frame in and one out, as ``ff`` is (in from the sender, out to the
          receiver); an acknowledged message is two in and three out (message, accepted,
          delivery, received, received forwarded)
  echohalf  the echo, open loop at half the rate ``echo`` reached in this repetition: the
          floor of ``ffhalf``

Reports the median (min-max) over repetitions of: msgs/s, server CPU us per message (loadgen
samples /proc/PID/stat over its measured window), PostgreSQL's CPU us per message over the same
window and the sum, the writer thread's share of the server's CPU
(``store_writer_cpu_seconds_total`` over the process's CPU, whole run), core 0's busy time per
message (loadgen's /proc/stat: everything on the
server's core, interrupts included; a cross-check of the sum), p50/p99 latency (loadgen's: send
-> the later of delivered and accepted), and the writer's operations per commit from the
server's /metrics. Compare revisions by running it once per ``--src`` (alternate them: the
machine is shared).
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
from typing import TYPE_CHECKING

import harness
import psycopg
from harness import GEN_CORE, Result, Results, md_row, spread, table_head

if TYPE_CHECKING:
    from tidings.devcluster.services import Postgres

LOADGEN_C = "/work/shared/tools/loadgen.c"
MODES = ("acked", "paced", "one", "ff", "ffhalf", "fanout", "echo", "echohalf")
ECHO = ("echo", "echohalf")
FANOUT = ("proto=feedme", "scen=fanout", "subs=1000", "window=10")
STORES = ("sqlite", "postgresql")
LIMITS = ("--rate-limit", "10000000", "--rate-burst", "10000000")
ACKED = ("lime_id=1", "lime_receipt=accepted,failed", "lime_received=1", "lime_complete=1")
TROUBLE = ("error", "errors", "lost", "bad_payload", "failed_notifications", "dup_or_reordered")
PG_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "shared_buffers",
    "max_wal_size",
)


def loadgen_binary(path: str) -> str:
    if not os.path.exists(path):
        subprocess.run(["cc", "-O2", "-o", path, LOADGEN_C], check=True)
    return path


def shape(mode: str, rates: dict[str, float], args: argparse.Namespace) -> list[str]:
    """loadgen's options for ``mode``; paced modes need the rate of their closed-loop mode."""
    if mode in ECHO:
        options = ["proto=ws", "scen=echo", "conns=100", "window=10"]
    else:
        pairs = ["pairs=1", "window=1"] if mode == "one" else ["pairs=100", "window=10"]
        acked = ACKED if mode in ("acked", "paced", "one") else ("lime_presence=1",)
        options = ["proto=lime", "scen=p2p", "lime_scheme=guest", *pairs, *acked]
    if mode == "paced":
        options.append(f"rate={int(rates['acked'] * args.paced)}")
    elif mode == "ffhalf":
        options.append(f"rate={int(rates['ff'] / 2)}")
    elif mode == "echohalf":
        options.append(f"rate={int(rates['echo'] / 2)}")
    return options


def one_run(
    store: str, mode: str, rates: dict[str, float], args: argparse.Namespace, pg: Postgres | None
) -> Result:
    if mode in ECHO:
        return echo_run(mode, rates, args)
    options = tidings_options(mode, args)
    beside = None
    if store == "postgresql":
        assert pg is not None and pg.process is not None
        options += ["--store", harness.fresh_database(pg, "durable")]
        beside = functools.partial(harness.tree_cpu_s, pg.process.pid)
    server = harness.start_tidings(*options)
    argv = generator(mode, rates, args, server)
    timeout = args.warmup + args.duration + 60
    try:
        result = harness.measure(server, argv, mode, timeout, metered=True, beside=beside)
    finally:
        if pg is not None and store == "postgresql":
            settle(pg)
    result["mode"], result["store"] = mode, store
    derive(result)
    return result


def tidings_options(mode: str, args: argparse.Namespace) -> list[str]:
    options = ["--allow-guests", *LIMITS, *args.serve.split()]
    if mode == "fanout":
        options += ["--app", "bench.fanout_app:app"]
    return options


def echo_run(mode: str, rates: dict[str, float], args: argparse.Namespace) -> Result:
    """The bare echo under the same generator: the store plays no part in it."""
    server = harness.start_script("bare_echo.py")
    argv = generator(mode, rates, args, server)
    result = harness.measure(server, argv, mode, args.warmup + args.duration + 60, metered=False)
    result["mode"], result["store"] = mode, "-"
    derive(result)
    return result


def generator(
    mode: str,
    rates: dict[str, float],
    args: argparse.Namespace,
    server: harness.Server,
    seconds: float | None = None,
) -> list[str]:
    """loadgen's command line for ``mode`` against ``server``, pinned to the generator's core."""
    port = server.url.rsplit(":", 1)[1].split("/")[0]
    timing = [f"seconds={seconds or args.duration}", f"warmup={args.warmup}"]
    argv = ["taskset", "-c", GEN_CORE, args.loadgen]
    argv += FANOUT if mode == "fanout" else shape(mode, rates, args)
    return [*argv, f"port={port}", "payload=300", f"spid={server.pid}", *timing]


def profile(mode: str, rates: dict[str, float], args: argparse.Namespace) -> str:
    """py-spy's view of the server (SQLite) or the bare echo under ``mode``."""
    if mode in ECHO:
        start = functools.partial(harness.start_script, "bare_echo.py")
    else:
        start = functools.partial(harness.start_tidings, *tidings_options(mode, args))
    settle = args.warmup + 2
    seconds = settle + args.profile_seconds + 3
    return harness.profile(
        start,
        lambda server: generator(mode, rates, args, server, seconds),
        label=mode,
        settle=settle,
        seconds=args.profile_seconds,
        gen_timeout=seconds + 60,
        describe=lambda r: (f"{r['rate']:,.0f} {mode} msgs/s", f"{r['us_per_msg']:.1f} us/msg"),
    )


def settle(pg: Postgres) -> None:
    """After a PostgreSQL run: drop its database and checkpoint, so that no later run (of either
    store) pays for its writes."""
    with psycopg.connect(pg.url, autocommit=True) as admin:
        admin.execute('DROP DATABASE IF EXISTS "durable" WITH (FORCE)')
        admin.execute("CHECKPOINT")


def postgres_settings(pg: Postgres) -> str:
    """The settings PostgreSQL's figures depend on, as it reports them."""
    shown = []
    with psycopg.connect(pg.url, autocommit=True) as admin:
        for name in PG_SETTINGS:
            row = admin.execute(f"SHOW {name}").fetchone()  # type: ignore[arg-type]
            shown.append(f"{name} {row[0] if row else '?'}")
    return "PostgreSQL: " + ", ".join(shown) + f"; pinned to core {harness.SERVER_CORE}"


def derive(run: Result) -> None:
    """Per-run figures from loadgen's and the server's: us per message of PostgreSQL, of both,
    of core 0; latency in ms; operations per commit."""
    delivered = run.get("delivered")
    if not delivered:
        return
    if run.get("beside_cpu_s") is not None and run.get("us_per_msg", -1) >= 0:
        run["pg_us_per_msg"] = 1e6 * run["beside_cpu_s"] / delivered
        run["total_us_per_msg"] = run["us_per_msg"] + run["pg_us_per_msg"]
    run["core0_us_per_msg"] = 1e6 * run["cpu0_busy"] * run["seconds"] / delivered
    run["p50_ms"], run["p99_ms"] = run["lat_p50_us"] / 1000, run["lat_p99_us"] / 1000
    metrics = run.get("server_metrics") or {}
    if metrics.get("store_commits_total"):
        run["ops_per_commit"] = metrics["store_operations_total"] / metrics["store_commits_total"]
    writer, total = metrics.get("store_writer_cpu_seconds_total"), run.get("server_cpu_s")
    if writer is not None and total:
        run["writer_share"] = 100 * writer / total  # whole run, warm-up included


def report(results: Results) -> str:
    lines = table_head(
        "store, mode",
        "msgs/s",
        "server us/msg",
        "PostgreSQL us/msg",
        "server + PostgreSQL us/msg",
        "writer thread %",
        "core 0 busy us/msg",
        "p50 ms",
        "p99 ms",
        "ops per commit",
        "runs with errors",
    )
    for key, runs in results.items():
        pg = key.startswith("postgresql")
        lines.append(
            md_row(
                key,
                spread(runs, "rate"),
                spread(runs, "us_per_msg", 1),
                spread(runs, "pg_us_per_msg", 1) if pg else "-",
                spread(runs, "total_us_per_msg", 1) if pg else "-",
                spread(runs, "writer_share"),
                spread(runs, "core0_us_per_msg", 1),
                spread(runs, "p50_ms", 2),
                spread(runs, "p99_ms", 2),
                spread(runs, "ops_per_commit", 1),
                str(sum(1 for r in runs if any(r.get(k) for k in TROUBLE))),
            )
        )
    problems = harness.problems(results, TROUBLE, {"server_log": "server_log"}, 600)
    lines += ["", "Anomalies: " + ("\n" + "\n".join(problems) if problems else "none")]
    return "\n".join(lines)


def main() -> None:
    p = harness.driver_parser(__doc__ or "")
    harness.add_output_options(p)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--store", default="sqlite", help="stores, comma-separated: sqlite,postgresql")
    p.add_argument("--paced", type=float, default=0.7, help="paced rate / acked rate")
    p.add_argument("--loadgen", default="/tmp/loadgen")
    p.add_argument("--serve", default="", help="more options for tidings serve")
    p.add_argument(
        "--profile",
        default="",
        help="modes to profile with py-spy after the runs (SQLite), comma-separated",
    )
    p.add_argument("--profile-seconds", type=float, default=5.0)
    args = p.parse_args()
    args.loadgen = loadgen_binary(args.loadgen)
    modes, stores = args.modes.split(","), args.store.split(",")
    if unknown := set(stores) - set(STORES):
        p.error(f"unknown store(s): {', '.join(sorted(unknown))}")
    results: Results = {f"{store} {mode}": [] for store in stores for mode in modes}
    with harness.bench_session(args.src):
        harness.add_server_path(harness.ROOT)  # bench.fanout_app, after the exported src/
        pg = harness.start_postgres() if "postgresql" in stores else None
        try:
            if pg is not None:
                print(f"<!-- {postgres_settings(pg)} -->", flush=True)
            for rep in range(args.reps):
                for store in stores if rep % 2 == 0 else stores[::-1]:
                    rates: dict[str, float] = {}
                    for mode in modes:
                        run = one_run(store, mode, rates, args, pg)
                        rates[mode] = float(run.get("rate") or 0)
                        results[f"{store} {mode}"].append(run)
                harness.progress(rep, args.reps, results, ("rate",))
            profiles = [profile(m, rates, args) for m in args.profile.split(",") if m]
        finally:
            if pg is not None:
                pg.stop()
    harness.save(results, args.raw)
    print(report(results))
    for text in profiles:
        print(text)


if __name__ == "__main__":
    harness.run_driver(main)
