"""Run the Tidings benchmarks beside a bare picows echo baseline and print a markdown table.

    .venv/bin/python bench/run.py [--reps 3] [--warmup 2] [--duration 5] [--profile 8]

Each repetition runs, in this order, each against a freshly started server pinned to core 0
(``taskset -c 0``; Tidings gets a fresh temporary data folder every time) with the load
generator (bench/loadgen.py) pinned to core 1:

  1. echo   bare picows echo (bench/bare_echo.py): frames/s, the same-run baseline
  2. ff     Tidings, fire-and-forget messages (no id), 100 pairs, 300-byte content
  3. acked  Tidings, messages with an id, receipt [accepted], receivers send ``received``
  4. paced  Tidings, as ``acked`` at 70% of the rate ``acked`` reached in this repetition

The table reports the median of the repetitions. ``--profile N`` additionally samples the
server with py-spy (``pip install py-spy`` into the venv) for N seconds under fire-and-forget
load and prints its hottest functions. ``--raw FILE`` writes every run's full result as JSON.
Every server is stopped (SIGTERM, then SIGKILL) when its run ends, and on any error.
"""

from __future__ import annotations

import argparse

import harness
from harness import (
    Result,
    Results,
    fmt,
    latency,
    md_row,
    med,
    percent,
    server_cpu,
    spread,
    table_head,
)


def one_run(mode: str, args: argparse.Namespace, options: list[str]) -> Result:
    """One loadgen run of ``mode`` against a fresh server (bare echo for ``echo``)."""
    if mode == "echo":
        server = harness.start_script("bare_echo.py")
    else:
        server = harness.start_tidings("--allow-guests")
    argv = harness.pairs_generator("loadgen.py", server, args, mode, *options)
    timeout = args.warmup + args.duration + 90
    return harness.measure(server, argv, mode, timeout, metered=mode != "echo")


def profile(args: argparse.Namespace, mode: str) -> str:
    """py-spy's view of a Tidings server under ``mode`` load (ff or acked)."""
    window = args.window if mode == "ff" else args.acked_window
    duration = args.profile + 3
    return harness.profile(
        lambda: harness.start_tidings("--allow-guests"),
        lambda server: harness.pairs_generator(
            "loadgen.py", server, args, mode, "--window", str(window), duration=duration
        ),
        label=mode,
        settle=args.warmup + 2,
        seconds=args.profile,
        gen_timeout=duration + 90,
        native=args.native,
        describe=lambda r: (
            f"{r['msgs_per_s']:,.0f} {mode} msg/s",
            f"{r['server_cpu_us_per_msg']:.1f} us/msg",
        ),
    )


# -- report --------------------------------------------------------------------------------------

ANOMALY_COUNTS = (*harness.ANOMALY_COUNTS, "skipped_at_cap")
NO_ANOMALIES = (
    "none (no failed notifications, disconnects, rejected envelopes, lost or stalled messages)"
)


def add_per_cpu(results: Results) -> None:
    """Add what the server would do with a whole core to itself (CPU-normalised rates)."""
    for runs in results.values():
        for r in runs:
            cpu = r.get("server_cpu_pct")
            if cpu:
                r["frames_per_cpu_s"] = r["frames_per_s"] * 100 / cpu
                r["msgs_per_cpu_s"] = r["msgs_per_s"] * 100 / cpu
                r["cpu_us_per_frame"] = 1e6 / r["frames_per_cpu_s"]


def report(results: Results, args: argparse.Namespace) -> str:
    add_per_cpu(results)
    echo = results.get("echo", [])
    echo_fps = med(echo, "frames_per_s")
    echo_fpc = med(echo, "frames_per_cpu_s")

    def row(label: str, runs: list[Result]) -> str:
        return md_row(
            label,
            spread(runs, "msgs_per_s"),
            fmt(med(runs, "frames_per_s")),
            percent(med(runs, "frames_per_s"), echo_fps),
            server_cpu(runs),
            fmt(med(runs, "server_cpu_us_per_msg"), 1),
            fmt(med(runs, "msgs_per_cpu_s")),
            percent(med(runs, "frames_per_cpu_s"), echo_fpc),
            latency(runs),
            fmt(med(runs, "gen_cpu_pct")),
        )

    n = max((len(v) for v in results.values()), default=0)
    lines = [
        f"Medians of {n} repetitions (min-max in brackets); {args.pairs} pairs, "
        f"{args.size}-byte content, window {args.window} (ff) / {args.acked_window} (acked) "
        f"messages in flight per pair, {args.warmup:g} s warmup + {args.duration:g} s measured.",
        "",
        *table_head(
            "run",
            "msg/s",
            "frames/s (in+out)",
            "frames/s vs bare echo",
            "server CPU % (waiting for CPU %)",
            "server CPU us/msg",
            "msg/s per server CPU-s",
            "frames per CPU-s vs echo",
            "p50 / p99 send->accepted (ms)",
            "generator CPU %",
        ),
        md_row(
            "bare picows echo",
            "-",
            spread(echo, "frames_per_s"),
            "100%",
            server_cpu(echo),
            f"{fmt(med(echo, 'cpu_us_per_frame'), 2)} per frame",
            "-",
            "100%",
            "-",
            fmt(med(echo, "gen_cpu_pct")),
        ),
        row("fire-and-forget", results.get("ff", [])),
        row("acknowledged (max)", results.get("acked", [])),
    ]
    paced = results.get("paced", [])
    if paced:
        offered = f"({fmt(med(paced, 'rate'))}/s offered)"
        lines.append(
            row(f"acknowledged, paced at {int(100 * args.paced_fraction)}% of max {offered}", paced)
        )
    lines.append("")
    stall = {m: fmt(med(r, "max_stall_ms"), 1) for m, r in results.items() if r}
    lines.append(f"Longest gap between two completions in the measured window, median ms: {stall}")
    for mode in ("acked", "paced"):
        per = harness.ops_per_commit(results.get(mode, []))
        if per is not None:
            lines.append(
                f"Store, {mode}: median {per:.0f} writer operations per commit over the whole run."
            )
    lines.append("")
    samples = {"server_log": "server_log", "anomaly_samples": "samples"}
    problems = harness.problems(results, ANOMALY_COUNTS, samples)
    lines.append("Anomalies: " + ("" if problems else NO_ANOMALIES))
    lines.extend(problems)
    return "\n".join(lines) + "\n"


def repetition(results: Results, args: argparse.Namespace) -> None:
    """One run of each mode asked for, always in the order echo, ff, acked, paced (paced needs
    this repetition's acked rate)."""
    window = ["--window", str(args.window)]
    for mode in ("echo", "ff"):
        if mode in results:
            results[mode].append(one_run(mode, args, window))
    if "acked" in results:
        results["acked"].append(one_run("acked", args, ["--window", str(args.acked_window)]))
    if "paced" in results:
        base = results["acked"][-1].get("msgs_per_s") if results.get("acked") else None
        if base:
            rate = max(100.0, args.paced_fraction * base)
            results["paced"].append(one_run("paced", args, ["--rate", f"{rate:.0f}"]))


def main() -> None:
    p = harness.driver_parser(__doc__)
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--size", type=int, default=300, help="bytes of message content")
    p.add_argument("--window", type=int, default=8, help="ff and echo: in flight per pair")
    p.add_argument("--acked-window", type=int, default=8, help="acked: in flight per pair")
    p.add_argument("--paced-fraction", type=float, default=0.7)
    p.add_argument("--modes", default="echo,ff,acked,paced")
    p.add_argument("--profile", type=float, default=0, help="py-spy seconds under load")
    p.add_argument("--profile-modes", default="ff", help="comma-separated: ff,acked")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    harness.add_output_options(p)
    args = p.parse_args()

    with harness.bench_session(args.src):
        results: Results = {m: [] for m in args.modes.split(",")}
        for rep in range(args.reps):
            repetition(results, args)
            harness.progress(rep, args.reps, results, ("msgs_per_s", "frames_per_s"))
        harness.save(results, args.raw)
        print(report(results, args))
        if args.profile:
            for mode in args.profile_modes.split(","):
                print(profile(args, mode))


if __name__ == "__main__":
    harness.run_driver(main)
