"""Memory per idle established connection, and a light load's latency beside many of them
(issue 15, target 4), with the C load generator.

    cc -O2 -o /tmp/loadgen /work/shared/tools/loadgen.c     # done by this script when missing
    .venv/bin/python bench/idle.py [--connections 5000] [--src REV] [--baseline]

One ``tidings serve --allow-guests`` (SQLite, fresh folder, rate limits lifted) pinned to core 0.
The idle generators (shared/tools/loadgen.c on core 1, at most ``--per-generator`` connections
each: every process has its own file limit) establish ``--connections`` guest LIME sessions with
presence, in pairs named ``i<generator>x<n>``, and keep them nearly idle: ``--idle-rate``
300-byte messages per second between all of them together. Once all are established the
server's RSS is read again: (RSS then - RSS before) / connections is the memory per connection.
A light acknowledged load (``--light-pairs`` pairs, one message in flight each, at
``--light-rate`` msgs/s, as bench/durable.py's ``acked``) runs against the empty server first
and again beside the idle connections: both p99s come from one run. ``--baseline`` measures a
bare picows echo server (bench/bare_echo.py) instead: what picows and the event loop cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import harness
from durable import ACKED, LIMITS, loadgen_binary
from harness import GEN_CORE, Server


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def port_of(server: Server) -> str:
    return server.url.rsplit(":", 1)[1].split("/")[0]


def idle_generators(server: Server, args: argparse.Namespace) -> list[subprocess.Popen[str]]:
    """Generators holding ``args.connections`` connections open for ``args.hold`` seconds."""
    procs = []
    left = args.connections
    while left > 0:
        prefix = f"prefix=i{len(procs)}x"
        conns = min(left, args.per_generator)
        left -= conns
        shape = (
            ["proto=ws", "scen=echo", f"conns={conns}"]
            if args.baseline
            else ["proto=lime", "scen=p2p", f"pairs={conns // 2}", "lime_scheme=guest", prefix]
        )
        argv = ["taskset", "-c", GEN_CORE, args.loadgen, *shape, f"port={port_of(server)}"]
        argv += ["window=1", f"rate={args.idle_rate}", "payload=300", "warmup=1"]
        argv += [f"seconds={args.hold}", "lime_presence=1"]
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        harness._live.append(procs[-1])  # type: ignore[arg-type]
    return procs


def light_load(server: Server, args: argparse.Namespace, prefix: str) -> dict[str, float]:
    """Latency of a light acknowledged load; each run needs its own ``prefix`` (names): the
    generator numbers its message ids from 0, and a second sender of the same name would be
    taken for a resend (and deduplicated)."""
    argv = ["taskset", "-c", GEN_CORE, args.loadgen, "proto=lime", "scen=p2p"]
    argv += [f"port={port_of(server)}", "lime_scheme=guest", "payload=300", f"spid={server.pid}"]
    argv += [f"pairs={args.light_pairs}", "window=1", f"rate={args.light_rate}", *ACKED]
    argv += [f"prefix={prefix}", "seconds=5", "warmup=1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    result = harness.last_json(done.stdout) or {}
    if not result:
        return {"error": f"rc={done.returncode} {done.stderr[-500:]}"}  # type: ignore[dict-item]
    return {k: result.get(k, -1) for k in ("rate", "lat_p50_us", "lat_p99_us", "errors", "lost")}


def main() -> None:
    p = harness.driver_parser(__doc__ or "")
    harness.add_output_options(p)
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--per-generator", type=int, default=9000)
    p.add_argument("--idle-rate", type=int, default=50)
    p.add_argument("--hold", type=int, default=40, help="seconds the idle generators run")
    p.add_argument("--light-pairs", type=int, default=10)
    p.add_argument("--light-rate", type=int, default=1000)
    p.add_argument("--baseline", action="store_true")
    p.add_argument("--loadgen", default="/tmp/loadgen")
    args = p.parse_args()
    args.loadgen = loadgen_binary(args.loadgen)
    with harness.bench_session(args.src):
        if args.baseline:
            server = harness.start_script("bare_echo.py")
        else:
            options = ("--max-connections", str(args.connections + 1000))
            server = harness.start_tidings("--allow-guests", *LIMITS, *options)
        try:
            alone = None if args.baseline else light_load(server, args, "alone")
            before = rss_kb(server.pid)
            generators = idle_generators(server, args)
            deadline = time.monotonic() + args.hold
            while open_files(server.pid) < args.connections and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)  # the last sessions' establishment settles
            held, after = open_files(server.pid), rss_kb(server.pid)
            beside = None if args.baseline else light_load(server, args, "beside")
            for proc in generators:
                proc.kill()
                proc.wait()
        finally:
            server.stop()
    print(
        json.dumps(
            {
                "server": "bare picows echo" if args.baseline else "tidings",
                "connections": args.connections,
                "open_files": held,
                "rss_before_kb": before,
                "rss_after_kb": after,
                "bytes_per_connection": round((after - before) * 1024 / args.connections),
                "light_alone": alone,
                "light_beside": beside,
            }
        )
    )


if __name__ == "__main__":
    harness.run_driver(main)
