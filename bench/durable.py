"""The durable path and latency under load (issue 15), with the C load generator.

    cc -O2 -o /tmp/loadgen /work/shared/tools/loadgen.c     # done by this script when missing
    .venv/bin/python bench/durable.py [--reps 2] [--src REV] [--modes acked,paced,one,ff,ffhalf]

Each repetition runs every mode against a freshly started ``tidings serve --allow-guests`` (SQLite
in a new temporary folder, rate limits lifted) pinned to core 0, the generator
(shared/tools/loadgen.c) pinned to core 1, 300-byte payloads:

  acked   100 guest pairs x 10 in flight; a message counts once delivered AND ``accepted``,
          receivers answer ``received`` (the issue's "acknowledged, fsync'd" row)
  paced   acked, open loop at ``--paced`` (70%) of the rate ``acked`` reached in this repetition
  one     acked with one pair and one message in flight: latency = one commit (+ fsync)
  ff      fire-and-forget (no id), 100 pairs x 10 in flight
  ffhalf  fire-and-forget, open loop at half the rate ``ff`` reached in this repetition
  fanout  Feedme: 1000 subscribers of feed ``bench`` (``--app bench.fanout_app:app``), one
          publisher calling action ``pub`` with 10 in flight: msgs/s are deliveries/s

Reports the median over repetitions of: msgs/s, server CPU us per message (loadgen samples
/proc/PID/stat over its measured window), the writer thread's share of the server's CPU
(``store_writer_cpu_seconds_total`` over the process's CPU, whole run), p50/p99 latency
(loadgen's: send -> the later of delivered and accepted), and the writer's operations per
commit from the server's /metrics.
Compare revisions by running it once per ``--src`` (alternate them: the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess

import harness
from harness import GEN_CORE, Result, Results, fmt, md_row, med, table_head

LOADGEN_C = "/work/shared/tools/loadgen.c"
MODES = ("acked", "paced", "one", "ff", "ffhalf", "fanout")
FANOUT = ("proto=feedme", "scen=fanout", "subs=1000", "window=10")
LIMITS = ("--rate-limit", "10000000", "--rate-burst", "10000000")
ACKED = ("lime_id=1", "lime_receipt=accepted,failed", "lime_received=1", "lime_complete=1")


def loadgen_binary(path: str) -> str:
    if not os.path.exists(path):
        subprocess.run(["cc", "-O2", "-o", path, LOADGEN_C], check=True)
    return path


def shape(mode: str, rates: dict[str, float], args: argparse.Namespace) -> list[str]:
    """loadgen's options for ``mode``; paced modes need the rate of their closed-loop mode."""
    pairs = ["pairs=1", "window=1"] if mode == "one" else ["pairs=100", "window=10"]
    options = [*pairs, *(ACKED if mode in ("acked", "paced", "one") else ("lime_presence=1",))]
    if mode == "paced":
        options.append(f"rate={int(rates['acked'] * args.paced)}")
    elif mode == "ffhalf":
        options.append(f"rate={int(rates['ff'] / 2)}")
    return options


def one_run(mode: str, rates: dict[str, float], args: argparse.Namespace) -> Result:
    app = ("--app", "bench.fanout_app:app") if mode == "fanout" else ()
    server = harness.start_tidings("--allow-guests", *LIMITS, *app, *args.serve.split())
    port = server.url.rsplit(":", 1)[1].split("/")[0]
    argv = ["taskset", "-c", GEN_CORE, args.loadgen]
    if mode == "fanout":
        argv += FANOUT
    else:
        argv += ["proto=lime", "scen=p2p", "lime_scheme=guest", *shape(mode, rates, args)]
    argv += [f"port={port}", "payload=300", f"spid={server.pid}"]
    argv += [f"seconds={args.duration}", f"warmup={args.warmup}"]
    result = harness.measure(server, argv, mode, args.warmup + args.duration + 60, metered=True)
    result["mode"] = mode
    return result


def ops_per_commit(run: Result) -> float | None:
    metrics = run.get("server_metrics") or {}
    commits = metrics.get("store_commits_total")
    return metrics["store_operations_total"] / commits if commits else None


def writer_share(run: Result) -> float | None:
    """The writer thread's part of the server's CPU over the whole run (warm-up included)."""
    writer = (run.get("server_metrics") or {}).get("store_writer_cpu_seconds_total")
    total = run.get("server_cpu_s")
    return writer / total if writer is not None and total else None


def ms(runs: list[Result], key: str) -> float | None:
    """The median of a latency loadgen reports in us, in ms."""
    value = med(runs, key)
    return None if value is None else value / 1000


def report(results: Results) -> str:
    lines = table_head(
        "mode",
        "msgs/s",
        "server CPU us/msg",
        "writer thread",
        "p50 / p99 ms",
        "ops per commit",
        "errors",
    )
    for mode, runs in results.items():
        ops = [v for r in runs if (v := ops_per_commit(r)) is not None]
        shares = [v for r in runs if (v := writer_share(r)) is not None]
        errors = sum(1 for r in runs if r.get("error") or r.get("errors") or r.get("lost"))
        lines.append(
            md_row(
                mode,
                fmt(med(runs, "rate")),
                fmt(med(runs, "us_per_msg"), 1),
                f"{statistics.median(shares):.0%}" if shares else "-",
                f"{fmt(ms(runs, 'lat_p50_us'), 2)} / {fmt(ms(runs, 'lat_p99_us'), 2)}",
                fmt(statistics.median(ops), 1) if ops else "-",
                str(errors),
            )
        )
    return "\n".join(lines)


def main() -> None:
    p = harness.driver_parser(__doc__ or "")
    harness.add_output_options(p)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--paced", type=float, default=0.7, help="paced rate / acked rate")
    p.add_argument("--loadgen", default="/tmp/loadgen")
    p.add_argument("--serve", default="", help="more options for tidings serve")
    args = p.parse_args()
    args.loadgen = loadgen_binary(args.loadgen)
    modes = args.modes.split(",")
    results: Results = {mode: [] for mode in modes}
    with harness.bench_session(args.src):
        harness.add_server_path(harness.ROOT)  # bench.fanout_app, after the exported src/
        for rep in range(args.reps):
            rates: dict[str, float] = {}
            for mode in modes:
                run = one_run(mode, rates, args)
                rates[mode] = float(run.get("rate") or 0)
                results[mode].append(run)
            harness.progress(rep, args.reps, results, ("rate",))
    harness.save(results, args.raw)
    print(report(results))


if __name__ == "__main__":
    harness.run_driver(main)
