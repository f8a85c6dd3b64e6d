"""Feedme fan-out (issue 3) and persistent-session requests (issue 4) beside same-run baselines.

    .venv/bin/python bench/run_feeds_sessions.py [--reps 3] [--warmup 2] [--duration 5]
        [--modes bare,bare1,bare-cork,fanout,fanout1,acked,persist] [--profile 8]
        [--profile-counts 10,1] [--src HEAD]

Same conventions as bench/run.py (both use bench/harness.py): ``src/`` of a git revision exported
with ``git archive`` (``--src worktree`` for the work tree), every server freshly started and
pinned to core 0 (``taskset -c 0``; Tidings with a new temporary data folder), the generator
pinned to core 1, server CPU from /proc/PID/stat over the measured window, medians of the
repetitions, every server stopped when its run ends.

Fan-out (bench/fanout.py: CLIENTS Feedme clients in PROCS worker processes, one feed, a
controller calling the action ``burst`` {"count": COUNT, "size": SIZE} in a closed loop):

  bare       bench/bare_fanout.py: one picows ``send`` per frame per client (the baseline the
             issue describes: the same pre-encoded frame to every connection, N times)
  bare1      the same with one revelation per action
  bare-cork  bench/bare_fanout.py --cork: a burst's frames joined once, one write per client
  fanout     Tidings, ``tidings serve --app bench.fanout_app:app``, COUNT revelations per action
  fanout1    the same with one revelation per action (COUNT=1: nothing to coalesce per client)

Persistent sessions (same pairs/window/content as bench/run.py's ``acked``):

  acked      bench/loadgen.py acked: the acknowledged routing baseline
  persist    bench/persistgen.py: the same with every sender in a persistent session and every
             message carrying tidings.nonce + tidings.memento (effect + memento, one commit)

``--profile N``: py-spy (``.venv/bin/pip install py-spy``) samples the Tidings server for N
seconds under ``fanout`` load and prints its hottest functions.
"""

from __future__ import annotations

import argparse

import harness
from harness import (
    ROOT,
    Result,
    Results,
    Server,
    fmt,
    latency,
    md_row,
    med,
    percent,
    server_cpu,
    spread,
    table_head,
)

FANOUT_MODES = ("bare", "bare1", "bare-cork", "fanout", "fanout1")
SESSION_GENERATORS = {"acked": ("loadgen.py", "acked"), "persist": ("persistgen.py",)}


def start_fanout_server(mode: str) -> Server:
    """The bare fan-out baseline (corked for ``bare-cork``) or Tidings with the fan-out app."""
    if mode.startswith("bare"):
        return harness.start_script("bare_fanout.py", *(["--cork"] if mode == "bare-cork" else []))
    return harness.start_tidings("--app", "bench.fanout_app:app")


def fanout_generator(
    server: Server, args: argparse.Namespace, count: int, duration: float
) -> list[str]:
    """argv of fanout.py: ``args.clients`` Feedme clients, bursts of ``count`` revelations."""
    clients = ["--clients", str(args.clients), "--procs", str(args.procs)]
    bursts = ["--count", str(count), "--size", str(args.fanout_size)]
    window = ["--window", str(args.burst_window)]
    return harness.generator("fanout.py", server, args.warmup, duration, *clients, *bursts, *window)


def fanout_run(mode: str, args: argparse.Namespace) -> Result:
    count = 1 if mode in ("fanout1", "bare1") else args.count
    server = start_fanout_server(mode)
    argv = fanout_generator(server, args, count, args.duration)
    timeout = args.warmup + args.duration + 200
    result = harness.measure(server, argv, mode, timeout, metered=mode.startswith("fanout"))
    result["mode"] = mode  # fanout.py calls every run "fanout"
    return result


def session_run(mode: str, args: argparse.Namespace) -> Result:
    """``acked`` (loadgen) or ``persist`` (persistgen): the same pairs, content and window."""
    script, *options = SESSION_GENERATORS[mode]
    server = harness.start_tidings("--allow-guests")
    window = ("--window", str(args.acked_window))
    argv = harness.pairs_generator(script, server, args, *options, *window)
    return harness.measure(server, argv, mode, args.warmup + args.duration + 120, metered=True)


def profile_fanout(args: argparse.Namespace, count: int) -> str:
    """py-spy's view of a Tidings server under ``fanout`` load."""
    return harness.profile(
        lambda: start_fanout_server("fanout"),
        lambda server: fanout_generator(server, args, count, args.profile + 4),
        label=f"fanout ({count} revelations per action)",
        settle=args.warmup + 4,  # connecting 1,000 clients takes a moment
        seconds=args.profile,
        gen_timeout=args.warmup + args.profile + 200,
        describe=lambda r: (
            f"{r['deliveries_per_s']:,.0f} deliveries/s",
            f"{r['server_cpu_us_per_delivery']:.2f} us per delivery",
        ),
    )


# -- report --------------------------------------------------------------------------------------

ANOMALY_COUNTS = (
    *harness.ANOMALY_COUNTS,
    "bad_frames",
    "clients_not_at_final_seq",
    "short_bursts",
    "worker_errors",
    "failures",
    "memento_mismatches",
)
SAMPLES = ("server_log", "samples", "anomaly_samples", "memento_samples")


def add_per_cpu(results: Results) -> None:
    """Add deliveries or requests per server CPU-second (what a whole core would do)."""
    for runs in results.values():
        for r in runs:
            cpu = r.get("server_cpu_pct")
            rate = r.get("deliveries_per_s") or r.get("msgs_per_s")
            if cpu and rate:
                r["per_cpu_s"] = rate * 100 / cpu


def fanout_table(fan: Results, args: argparse.Namespace, n: int) -> list[str]:
    bare = med(fan.get("bare", []), "deliveries_per_s")
    bare_cpu = med(fan.get("bare", []), "per_cpu_s")
    cork_cpu = med(fan.get("bare-cork", []), "per_cpu_s")
    out = [
        f"Fan-out: {args.clients} Feedme clients on one feed in {args.procs} generator "
        f"processes; bursts of {args.count} revelations per action (fanout1: 1), "
        f"{args.fanout_size} bytes of padding; at most {args.burst_window} bursts' deliveries "
        f"unreceived; medians of {n} (min-max); {args.warmup:g} s warmup + "
        f"{args.duration:g} s measured.",
        "",
        *table_head(
            "run",
            "deliveries/s",
            "vs bare",
            "server CPU % (waiting %)",
            "server CPU us/delivery",
            "deliveries per server CPU-s",
            "per CPU-s vs bare",
            "per CPU-s vs bare-cork",
            "generator CPU % (us/delivery)",
            "longest gap (ms)",
        ),
    ]
    labels = {
        "bare": "bare picows fan-out (send per frame)",
        "bare1": "bare picows fan-out (send per frame), 1 revelation per action",
        "bare-cork": "bare picows fan-out, corked (one write per client per burst)",
        "fanout": f"Tidings, {args.count} revelations per action",
        "fanout1": "Tidings, 1 revelation per action",
    }
    for mode, runs in fan.items():
        per = med(runs, "per_cpu_s")
        gen_cost = fmt(med(runs, "gen_cpu_us_per_delivery"), 2)
        out.append(
            md_row(
                labels[mode],
                spread(runs, "deliveries_per_s"),
                percent(med(runs, "deliveries_per_s"), bare),
                server_cpu(runs),
                fmt(med(runs, "server_cpu_us_per_delivery"), 2),
                fmt(per),
                percent(per, bare_cpu),
                percent(per, cork_cpu),
                f"{fmt(med(runs, 'gen_cpu_pct'))} ({gen_cost})",
                fmt(med(runs, "max_gap_ms")),
            )
        )
    return [*out, ""]


def session_table(ses: Results, args: argparse.Namespace, n: int) -> list[str]:
    acked = med(ses.get("acked", []), "msgs_per_s")
    acked_cpu = med(ses.get("acked", []), "per_cpu_s")
    out = [
        f"Persistent sessions: {args.pairs} sender/receiver pairs, {args.size}-byte content, "
        f"{args.acked_window} incomplete requests in flight per sender; a request completes "
        "when its sender saw `accepted` and the forwarded `received`; medians of "
        f"{n} (min-max).",
        "",
        *table_head(
            "run",
            "requests/s",
            "vs acked",
            "server CPU % (waiting %)",
            "server CPU us/request",
            "requests per server CPU-s",
            "per CPU-s vs acked",
            "p50 / p99 send->accepted (ms)",
            "generator CPU %",
            "ops per commit",
        ),
    ]
    labels = {
        "acked": "acknowledged routing (loadgen acked)",
        "persist": "persistent-session requests",
    }
    for mode, runs in ses.items():
        per = med(runs, "per_cpu_s")
        out.append(
            md_row(
                labels[mode],
                spread(runs, "msgs_per_s"),
                percent(med(runs, "msgs_per_s"), acked),
                server_cpu(runs),
                fmt(med(runs, "server_cpu_us_per_msg"), 1),
                fmt(per),
                percent(per, acked_cpu),
                latency(runs),
                fmt(med(runs, "gen_cpu_pct")),
                fmt(harness.ops_per_commit(runs)),
            )
        )
    return [*out, ""]


def report(results: Results, args: argparse.Namespace) -> str:
    add_per_cpu(results)
    n = max((len(v) for v in results.values()), default=0)
    out: list[str] = []
    fan = {m: results[m] for m in FANOUT_MODES if results.get(m)}
    if fan:
        out += fanout_table(fan, args, n)
    ses = {m: results[m] for m in SESSION_GENERATORS if results.get(m)}
    if ses:
        out += session_table(ses, args, n)
    problems = harness.problems(results, ANOMALY_COUNTS, {k: k for k in SAMPLES}, width=1500)
    out.append("Anomalies: " + ("" if problems else "none"))
    out.extend(problems)
    return "\n".join(out) + "\n"


def main() -> None:
    p = harness.driver_parser(__doc__)
    p.add_argument("--modes", default="bare,bare1,bare-cork,fanout,fanout1,acked,persist")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--procs", type=int, default=2, help="fan-out generator processes")
    p.add_argument("--count", type=int, default=10, help="revelations per burst action")
    p.add_argument("--fanout-size", type=int, default=100, help="padding bytes per revelation")
    p.add_argument("--burst-window", type=int, default=2)
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--size", type=int, default=300, help="message content bytes (acked, persist)")
    p.add_argument("--acked-window", type=int, default=8)
    p.add_argument("--profile", type=float, default=0, help="py-spy seconds under fanout")
    p.add_argument(
        "--profile-counts", default="10", help="revelations per action of the profiled runs"
    )
    harness.add_output_options(p)
    args = p.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - {*FANOUT_MODES, *SESSION_GENERATORS}
    if unknown:
        p.error(f"unknown modes {sorted(unknown)}")

    with harness.bench_session(args.src):
        harness.add_server_path(ROOT)  # for bench.fanout_app, after the exported src/
        results: Results = {m: [] for m in modes}
        for rep in range(args.reps):
            for mode in modes:
                run = fanout_run if mode in FANOUT_MODES else session_run
                results[mode].append(run(mode, args))
            harness.progress(rep, args.reps, results, ("deliveries_per_s", "msgs_per_s"))
        harness.save(results, args.raw)
        print(report(results, args))
        if args.profile:
            for count in args.profile_counts.split(","):
                print(profile_fanout(args, int(count)))


if __name__ == "__main__":
    harness.run_driver(main)
