"""Several nodes: acknowledged messages and feed deliveries on 1, 2 and 3 Tidings nodes on
PostgreSQL + Redis behind HAProxy, beside one SQLite node, in one run, with every component's CPU.

    cc -O2 -o /tmp/loadgen /work/shared/tools/loadgen.c     # done by this script when missing
    .venv/bin/python bench/cluster.py [--reps 3] [--warmup 2] [--duration 4] [--raw FILE]

Configurations, each repetition in this order:

- ``sqlite``: ``tidings serve`` on SQLite as bench/harness.py starts it (a fresh data folder
  per run; not pinned, like the cluster's processes), the generator connecting to it directly;
- ``pg1``, ``pg2``, ``pg3``: ``LocalCluster`` (PostgreSQL, Redis, N nodes, HAProxy in TCP mode
  with round robin; nothing pinned), a fresh cluster per repetition, the generator connecting
  to HAProxy's WebSocket port.

Every node runs ``--allow-guests``, rate limits lifted, ``--app bench.fanout_app:app``. Loads
(shared/tools/loadgen.c, pinned to core 1), fan-out first, then the messages (PostgreSQL's
statistics of the messages are read after the nodes stop, which flushes them):

- ``fanout``: ``proto=feedme scen=fanout``, ``--subs`` subscribers of feed ``bench``, one
  publisher calling action ``pub`` (revealed once with its args), ``--fan-window`` revelations
  in flight. Rate = revelations received by all subscribers per second.
- ``p2p``: ``proto=lime scen=p2p lime_id=1 lime_receipt=accepted,failed lime_received=1
  lime_complete=1``, ``--pairs`` guest pairs, ``--window`` messages in flight per pair; a
  message counts once delivered and accepted. With round robin, subscriber k lands on node
  k mod N and publisher k on node (pairs + k) mod N: an odd number of pairs not divisible by 3
  (101) puts the two ends of every pair on different nodes with 2 and 3 nodes.

The measured window is loadgen's: it prints a trace line every second (``trace=1``), and at the
one that ends the warmup this script reads every component's CPU (utime+stime of
/proc/PID/stat: each node, the postmaster and its children, Redis, HAProxy), the nodes'
/metrics and Redis ``INFO``; again when loadgen exits (it exits as its window ends). The
generator's own CPU is loadgen's ``client_cpu_s``. PostgreSQL's ``pg_stat_database`` is read
before the messages and after the nodes stopped, over the whole p2p run (warmup and set-up
included), and related to the messages of that whole run (half the envelopes the nodes
received: each message is one message plus one ``received`` notification).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import psycopg
import redis
from common import CLK_TCK, cpu_ticks
from harness import GEN_CORE, ROOT, Result, fmt, md_row, table_head
from pg_driver import postgres_cpu_s

from tidings.devcluster.cluster import LocalCluster

LOADGEN_C = Path("/work/shared/tools/loadgen.c")
CONFIGS = ("sqlite", "pg1", "pg2", "pg3")
LOADS = ("fanout", "p2p")
LIMITS = ["--rate-limit", "10000000", "--rate-burst", "10000000"]
SERVE = ["--allow-guests", *LIMITS, "--app", "bench.fanout_app:app"]
PG_STATS = ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched")


def loadgen_binary(path: str) -> str:
    """loadgen.c built once, outside the project tree."""
    if not os.path.exists(path):
        subprocess.run(["cc", "-O2", "-o", path, str(LOADGEN_C)], check=True)
    return path


# -- what a load is aimed at -----------------------------------------------------------------------


@dataclass
class Target:
    """A configuration under load: the port the generator connects to, how to read each
    component's CPU seconds so far, the nodes' HTTP APIs and pids, Redis, PostgreSQL."""

    port: int
    cpu: dict[str, Callable[[], float]]
    nodes: dict[str, tuple[str, int]]  # node name -> (HTTP URL, pid)
    redis: redis.Redis | None = None
    pg_port: int = 0
    redis_port: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def process_cpu(pid: int) -> Callable[[], float]:
    return lambda: cpu_ticks(pid) / CLK_TCK


def sqlite_target(server: harness.Server) -> Target:
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    http = server.match.group(2)
    return Target(port, {"node1": process_cpu(server.pid)}, {"node1": (http, server.pid)})


def cluster_target(cluster: LocalCluster) -> Target:
    assert cluster.postgres and cluster.redis and cluster.haproxy
    assert cluster.redis.process and cluster.haproxy.process
    cpu: dict[str, Callable[[], float]] = {}
    nodes = {}
    for node in cluster.members:
        assert node.process is not None
        cpu[node.node_id] = process_cpu(node.process.pid)
        nodes[node.node_id] = (node.http_url, node.process.pid)
    postgres = cluster.postgres
    cpu["postgres"] = lambda: postgres_cpu_s(postgres)
    cpu["redis"] = process_cpu(cluster.redis.process.pid)
    cpu["haproxy"] = process_cpu(cluster.haproxy.process.pid)
    return Target(
        cluster.haproxy.ws_port,
        cpu,
        nodes,
        redis.Redis(port=cluster.redis.port),
        pg_port=postgres.port,
        redis_port=cluster.redis.port,
    )


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to ``port`` on loopback."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] == "01" and int(cols[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            count += 1
    return count


def snapshot(target: Target, full: bool) -> dict[str, Any]:
    """CPU seconds of every component now; with ``full`` also the nodes' counters, Redis's
    and the connections each node holds to PostgreSQL and Redis."""
    snap: dict[str, Any] = {"t": time.monotonic()}
    snap["cpu"] = {name: read() for name, read in target.cpu.items()}
    if not full:
        return snap
    snap["metrics"] = {name: harness.metrics_at(url) for name, (url, _) in target.nodes.items()}
    if target.redis is not None:
        info = target.redis.info("stats") | target.redis.info("commandstats")
        snap["redis"] = {
            "commands": info["total_commands_processed"],
            "publish": info.get("cmdstat_publish", {}).get("calls", 0),
            "out_bytes": info["total_net_output_bytes"],
        }
        snap["pg_conns"] = {
            n: connections_to(pid, target.pg_port) for n, (_, pid) in target.nodes.items()
        }
        snap["redis_conns"] = {
            n: connections_to(pid, target.redis_port) for n, (_, pid) in target.nodes.items()
        }
    return snap


def pg_stats(url: str) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            f"SELECT {', '.join(PG_STATS)} FROM pg_stat_database WHERE datname = current_database()"  # type: ignore[arg-type]
        ).fetchone()
    assert row is not None
    return dict(zip(PG_STATS, (float(v) for v in row), strict=True))


# -- one load --------------------------------------------------------------------------------------


def loadgen_argv(load: str, args: argparse.Namespace, port: int) -> list[str]:
    common = [f"port={port}", f"seconds={args.duration:g}", f"warmup={args.warmup:g}", "trace=1"]
    if load == "p2p":
        shape = [
            "proto=lime", "scen=p2p", f"pairs={args.pairs}", f"window={args.window}",
            "lime_scheme=guest", "lime_id=1", "lime_receipt=accepted,failed", "lime_received=1",
            "lime_complete=1",
        ]  # fmt: skip
    else:
        shape = ["proto=feedme", "scen=fanout", f"subs={args.subs}", f"window={args.fan_window}"]
    return ["taskset", "-c", GEN_CORE, args.loadgen, *shape, f"payload={args.payload}", *common]


def run_load(target: Target, load: str, args: argparse.Namespace) -> Result:
    """One loadgen run; its result with every component's CPU over its measured window."""
    proc = subprocess.Popen(
        loadgen_argv(load, args, target.port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    harness._live.append(proc)
    start = None
    notes = []
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        if line.startswith("t=") and start is None and float(line[2:].split()[0]) >= args.warmup:
            start = snapshot(target, full=True)
        elif not line.startswith("t="):
            notes.append(line.strip())
    end = snapshot(target, full=False)
    out = proc.stdout.read()
    proc.wait()
    harness._live.remove(proc)
    end |= {k: v for k, v in snapshot(target, full=True).items() if k not in ("t", "cpu")}
    result = harness.last_json(out) or {"error": f"rc={proc.returncode} {notes[-5:]}"}
    result["load"] = load
    if notes:
        result["stderr"] = notes[:5]
    if start is None or "rate" not in result:
        result.setdefault("error", "no measured window")
        return result
    wall = end["t"] - start["t"]
    result["wall_s"] = wall
    result["cpu_s"] = {n: end["cpu"][n] - start["cpu"][n] for n in start["cpu"]}
    result["cpu_s"]["generator"] = result["client_cpu_s"] * wall / result["seconds"]
    result["metrics_start"], result["metrics_end"] = start["metrics"], end["metrics"]
    for key in ("redis", "pg_conns", "redis_conns"):
        if key in start:
            result[f"{key}_start"], result[f"{key}_end"] = start[key], end[key]
    return result


# -- one configuration -----------------------------------------------------------------------------


def run_config(config: str, args: argparse.Namespace) -> dict[str, Result]:
    """Both loads against a fresh SQLite node (one per load) or a fresh cluster of N nodes."""
    with open("/proc/loadavg") as f:
        load_avg = " ".join(f.read().split()[:3])
    out: dict[str, Result] = {}
    if config == "sqlite":
        for load in LOADS:
            server = harness.start_tidings(*SERVE)
            try:
                out[load] = run_load(sqlite_target(server), load, args)
            finally:
                server.stop()
            out[load]["server_log"] = server.errors()
    else:
        cluster = LocalCluster(nodes=int(config[2:]), serve_args=SERVE)
        cluster.start()
        try:
            target = cluster_target(cluster)
            out["fanout"] = run_load(target, "fanout", args)
            before = pg_stats(cluster.postgres_url)
            out["p2p"] = run_load(target, "p2p", args)
            for i in range(len(cluster.members)):
                cluster.stop_node(i)  # a backend flushes its statistics as it exits
            after = pg_stats(cluster.postgres_url)
            out["p2p"]["pg_stats"] = {k: after[k] - before[k] for k in PG_STATS}
            logs = [harness_errors(node.log) for node in cluster.members]
        finally:
            cluster.stop()
        for result in out.values():
            result["server_log"] = [line for log in logs for line in log][:10]
    for result in out.values():
        result["load_avg"] = load_avg
    return out


def harness_errors(log: Path) -> list[str]:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return [f"{log}: missing"]
    return [f"{log.stem}: {ln}" for ln in lines if harness._TROUBLE.search(ln)][:10]


# -- report ----------------------------------------------------------------------------------------

COMPONENTS = ("nodes", "postgres", "redis", "haproxy", "generator")


def derive(r: Result) -> None:
    """Per-message figures of one run: CPU us per message per component, cores used, rates."""
    if "cpu_s" not in r:
        return
    cpu = r["cpu_s"]
    nodes = sum(v for k, v in cpu.items() if k.startswith("node"))
    parts = {"nodes": nodes, **{c: cpu.get(c, 0.0) for c in COMPONENTS[1:]}}
    work = r["rate"] * r["wall_s"]
    for c, v in parts.items():
        r[f"us_{c}"] = 1e6 * v / work if work else None
        r[f"cores_{c}"] = v / r["wall_s"]
    total = sum(parts.values())
    r["us_total"] = 1e6 * total / work if work else None
    r["cores_total"] = total / r["wall_s"]
    r["per_cpu_s"] = work / total if total else None
    r["per_cpu_s_servers"] = work / (total - parts["generator"]) if total else None
    r["p50_ms"] = r["lat_p50_us"] / 1e3
    r["p99_ms"] = r["lat_p99_us"] / 1e3
    r["machine_busy"] = r.get("cpu0_busy", 0) + r.get("cpu1_busy", 0)
    r["others_cores"] = r["machine_busy"] - r["cores_total"]
    m0, m1 = r["metrics_start"], r["metrics_end"]
    seconds = r["wall_s"]
    for key in ("store_commits_total", "store_operations_total", "envelopes_received_total"):
        r[f"{key}_per_s"] = sum(m1[n].get(key, 0) - m0[n].get(key, 0) for n in m0) / seconds
    if "redis_start" in r:
        for key in ("commands", "publish", "out_bytes"):
            r[f"redis_{key}_per_s"] = (r["redis_end"][key] - r["redis_start"][key]) / seconds
    if "pg_stats" in r:
        msgs = sum(m.get("envelopes_received_total", 0) for m in m1.values()) / 2
        r["pg_per_msg"] = {k: v / msgs for k, v in r["pg_stats"].items()} if msgs else {}


def med(runs: list[Result], key: str) -> float | None:
    return harness.med(runs, key)


def per_k(runs: list[Result], key: str) -> str:
    """``key`` (a rate per second) per 1,000 of the load's unit per second, median."""
    values = [1000 * r[key] / r["rate"] for r in runs if r.get(key) is not None and r.get("rate")]
    return fmt(statistics.median(values)) if values else "-"


def report(results: dict[str, dict[str, list[Result]]], args: argparse.Namespace) -> str:
    for by_load in results.values():
        for runs in by_load.values():
            for r in runs:
                derive(r)
    lines = []
    for load, unit, units in (("p2p", "msg", "msgs"), ("fanout", "delivery", "deliveries")):
        title = (
            f"Acknowledged messages ({args.pairs} pairs, window {args.window}, "
            f"{args.payload}-byte payload)"
            if load == "p2p"
            else f"Feed deliveries ({args.subs} subscribers, {args.fan_window} revelations in "
            f"flight, {args.payload}-byte payload)"
        )
        lines += [f"**{title}**, medians of {args.reps} (min-max):", ""]
        lines += table_head(
            "config",
            f"{unit}/s",
            "p50 / p99 ms",
            *(f"{c} µs/{unit}" for c in COMPONENTS),
            f"all µs/{unit}",
            f"{units} per CPU-s (all)",
            f"{units} per CPU-s (without generator)",
            "cores: nodes / pg / redis / haproxy / gen",
            "machine busy (others)",
            "load avg at start",
        )
        for config in results:
            runs = [r for r in results[config][load] if "us_total" in r]
            if not runs:
                lines.append(md_row(config, "failed", *["-"] * 13))
                continue
            lines.append(
                md_row(
                    config,
                    harness.spread(runs, "rate"),
                    harness.latency(runs),
                    *(fmt(med(runs, f"us_{c}"), 1) for c in COMPONENTS),
                    fmt(med(runs, "us_total"), 1),
                    fmt(med(runs, "per_cpu_s")),
                    fmt(med(runs, "per_cpu_s_servers")),
                    " / ".join(fmt(med(runs, f"cores_{c}"), 2) for c in COMPONENTS),
                    f"{fmt(med(runs, 'machine_busy'), 2)} ({fmt(med(runs, 'others_cores'), 2)})",
                    ", ".join(r["load_avg"].split()[0] for r in results[config][load]),
                )
            )
        lines.append("")
    lines += model(results)
    lines += spread_lines(results, args)
    lines += anomalies(results)
    return "\n".join(lines) + "\n"


def model(results: dict[str, dict[str, list[Result]]]) -> list[str]:
    lines = [
        "**Per 1,000 acknowledged msg/s** (medians; store commits/operations from the nodes' "
        "/metrics over the window, PostgreSQL rows per message over the whole p2p run):",
        "",
        *table_head(
            "config",
            "node store commits/s",
            "node store operations/s",
            "pg xact_commit per msg",
            "pg rows inserted / updated / deleted per msg",
            "Redis commands/s",
            "Redis PUBLISH/s",
            "Redis out kB/s",
            "PostgreSQL conns per node",
            "Redis conns per node",
        ),
    ]
    for config, by_load in results.items():
        runs = [r for r in by_load["p2p"] if "us_total" in r]
        if not runs:
            continue
        pg = [r["pg_per_msg"] for r in runs if r.get("pg_per_msg")]

        def pgm(key: str, pg: list[dict[str, float]] = pg) -> str:
            return fmt(statistics.median(p[key] for p in pg), 2) if pg else "-"

        conns = runs[0].get("pg_conns_start")
        rconns = runs[0].get("redis_conns_start")
        lines.append(
            md_row(
                config,
                per_k(runs, "store_commits_total_per_s"),
                per_k(runs, "store_operations_total_per_s"),
                pgm("xact_commit"),
                " / ".join(pgm(k) for k in ("tup_inserted", "tup_updated", "tup_deleted")),
                per_k(runs, "redis_commands_per_s"),
                per_k(runs, "redis_publish_per_s"),
                fmt(
                    statistics.median(r["redis_out_bytes_per_s"] / r["rate"] for r in runs)
                    if runs[0].get("redis_out_bytes_per_s") is not None
                    else None,
                    1,
                ),
                ", ".join(str(v) for v in conns.values()) if conns else "-",
                ", ".join(str(v) for v in rconns.values()) if rconns else "-",
            )
        )
    fan = [
        (config, [r for r in by_load["fanout"] if r.get("redis_publish_per_s") is not None])
        for config, by_load in results.items()
    ]
    lines += ["", "Fan-out through Redis, per 1,000 deliveries/s (medians):", ""]
    for config, runs in fan:
        if runs:
            lines.append(
                f"- {config}: Redis PUBLISH/s {per_k(runs, 'redis_publish_per_s')}, "
                f"commands/s {per_k(runs, 'redis_commands_per_s')}, out kB/s "
                f"{fmt(statistics.median(r['redis_out_bytes_per_s'] / r['rate'] for r in runs), 1)}"
            )
    return [*lines, ""]


def spread_lines(
    results: dict[str, dict[str, list[Result]]], args: argparse.Namespace
) -> list[str]:
    """How HAProxy spread the connections: LIME and Feedme connections open on each node at the
    start of the window (first repetition)."""
    lines = ["Connections open per node at the start of the window (first repetition):", ""]
    for config, by_load in results.items():
        for load, key in (("p2p", "connections_open"), ("fanout", "feedme_connections_open")):
            runs = [r for r in by_load[load] if r.get("metrics_start")]
            if runs:
                counts = {n: int(m.get(key, 0)) for n, m in runs[0]["metrics_start"].items()}
                lines.append(f"- {config} {load}: {counts}")
    return [*lines, ""]


def anomalies(results: dict[str, dict[str, list[Result]]]) -> list[str]:
    keys = ("error", "errors", "lost", "failed_notifications", "dup_or_reordered", "bad_payload")
    lines = []
    for config, by_load in results.items():
        for load, runs in by_load.items():
            for i, r in enumerate(runs):
                bad = {k: r[k] for k in keys if r.get(k)}
                for k in ("stderr", "server_log"):
                    if r.get(k):
                        bad[k] = r[k][:3]
                if bad:
                    lines.append(f"- {config} {load} run {i + 1}: {bad}")
    return ["Anomalies: " + ("none" if not lines else ""), *lines]


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="whole seconds (loadgen's trace)")
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--pairs", type=int, default=101)
    p.add_argument("--window", type=int, default=8, help="p2p: messages in flight per pair")
    p.add_argument("--subs", type=int, default=1000)
    p.add_argument("--fan-window", type=int, default=10, help="revelations in flight")
    p.add_argument("--payload", type=int, default=300)
    p.add_argument("--loadgen", default="/tmp/loadgen")
    harness.add_output_options(p)
    args = p.parse_args()
    args.loadgen = loadgen_binary(args.loadgen)
    configs = args.configs.split(",")
    results: dict[str, dict[str, list[Result]]] = {c: {ld: [] for ld in LOADS} for c in configs}
    started = time.monotonic()
    with harness.bench_session(args.src):
        harness.SERVER_CORE = "0,1"  # the SQLite node floats over both cores, as the clusters do
        harness.add_server_path(ROOT)  # bench.fanout_app
        os.environ["PYTHONPATH"] = harness.SERVER_ENV["PYTHONPATH"]  # LocalCluster's nodes
        for rep in range(args.reps):
            for config in configs:
                for load, result in run_config(config, args).items():
                    results[config][load].append(result)
                brief = {ld: round(results[config][ld][-1].get("rate", 0)) for ld in LOADS}
                print(f"<!-- rep {rep + 1} {config}: {brief} -->", flush=True)
        harness.save(results, args.raw)
        print(report(results, args))
        print(f"<!-- whole bench {time.monotonic() - started:.0f} s -->")


if __name__ == "__main__":
    harness.run_driver(main)
