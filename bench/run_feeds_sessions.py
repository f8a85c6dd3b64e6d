"""Feedme fan-out (issue 3) and persistent-session requests (issue 4) beside same-run baselines.

    .venv/bin/python bench/run_feeds_sessions.py [--reps 3] [--warmup 2] [--duration 5]
        [--modes bare,bare1,bare-cork,fanout,fanout1,acked,persist] [--profile 8]
        [--profile-counts 10,1] [--src HEAD]

Same conventions as bench/run.py (whose helpers it uses): ``src/`` of a git revision exported
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
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base
from run import GEN_CORE, HERE, PY, ROOT, TIDINGS, Server, fmt, med

FANOUT_MODES = ("bare", "bare1", "bare-cork", "fanout", "fanout1")


def start_fanout_server(mode: str) -> Server:
    if mode in ("bare", "bare1"):
        return Server([PY, str(HERE / "bare_fanout.py")], r"ready (ws://\S+)")
    if mode == "bare-cork":
        return Server([PY, str(HERE / "bare_fanout.py"), "--cork"], r"ready (ws://\S+)")
    data = tempfile.mkdtemp(prefix="tidings-bench-")
    return Server(
        [
            TIDINGS,
            "serve",
            "--domain",
            "localhost",
            "--host",
            "127.0.0.1",
            "--ws-port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            data,
            "--app",
            "bench.fanout_app:app",
        ],
        r"tidings ready (ws://\S+) (http://\S+)",
        data,
    )


def fanout_argv(server: Server, args: argparse.Namespace, count: int, duration: float) -> list[str]:
    return [
        "taskset",
        "-c",
        GEN_CORE,
        PY,
        str(HERE / "fanout.py"),
        "--url",
        server.match.group(1),
        "--server-pid",
        str(server.pid),
        "--clients",
        str(args.clients),
        "--procs",
        str(args.procs),
        "--count",
        str(count),
        "--size",
        str(args.fanout_size),
        "--window",
        str(args.burst_window),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(duration),
    ]


def _json_line(done: subprocess.CompletedProcess[str], mode: str) -> dict[str, Any]:
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"mode": mode, "error": f"rc={done.returncode} {done.stderr[-2000:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def server_errors(server: Server, tail: str) -> list[str]:
    import re

    return [
        ln
        for ln in (server.output + tail.splitlines())
        if re.search(r"Traceback|Error|error|WARN|exception", ln)
    ][:20]


def fanout_run(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    count = 1 if mode in ("fanout1", "bare1") else args.count
    server = start_fanout_server(mode)
    try:
        done = subprocess.run(
            fanout_argv(server, args, count, args.duration),
            capture_output=True,
            text=True,
            timeout=args.warmup + args.duration + 200,
            cwd=ROOT,
        )
        result = _json_line(done, mode)
        if mode.startswith("fanout"):
            result["server_metrics"] = base.metrics(server)
    finally:
        tail = server.stop()
    result["mode"] = mode
    errors = server_errors(server, tail)
    if errors:
        result["server_log"] = errors
    return result


def persist_run(args: argparse.Namespace) -> dict[str, Any]:
    server = base.start_tidings()
    try:
        done = subprocess.run(
            [
                "taskset",
                "-c",
                GEN_CORE,
                PY,
                str(HERE / "persistgen.py"),
                "--url",
                server.match.group(1),
                "--server-pid",
                str(server.pid),
                "--pairs",
                str(args.pairs),
                "--size",
                str(args.size),
                "--window",
                str(args.acked_window),
                "--warmup",
                str(args.warmup),
                "--duration",
                str(args.duration),
            ],
            capture_output=True,
            text=True,
            timeout=args.warmup + args.duration + 120,
            cwd=ROOT,
        )
        result = _json_line(done, "persist")
        result["server_metrics"] = base.metrics(server)
    finally:
        tail = server.stop()
    errors = server_errors(server, tail)
    if errors:
        result["server_log"] = errors
    return result


# -- profile -------------------------------------------------------------------------------------


def profile_fanout(args: argparse.Namespace, count: int) -> str:
    import shutil

    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy is None:
        return "py-spy not found: `.venv/bin/pip install py-spy` to profile\n"
    server = start_fanout_server("fanout")
    raw = tempfile.mktemp(prefix="tidings-pyspy-", suffix=".txt")
    try:
        gen = subprocess.Popen(
            fanout_argv(server, args, count, args.profile + 4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        base._live.append(gen)
        time.sleep(args.warmup + 4)  # connecting 1,000 clients takes a moment
        subprocess.run(
            [
                "taskset",
                "-c",
                GEN_CORE,
                spy,
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(int(args.profile)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--threads",
                "--nonblocking",
                "-o",
                raw,
            ],
            capture_output=True,
            text=True,
            timeout=args.profile + 60,
        )
        out, _ = gen.communicate(timeout=args.warmup + args.profile + 200)
        base._live.remove(gen)
    finally:
        server.stop()
    try:
        lines = Path(raw).read_text().splitlines()
    except OSError:
        return "py-spy produced no output (ptrace permitted?)\n"
    finally:
        Path(raw).unlink(missing_ok=True)
    text = base.summarize_profile(lines, "", f"fanout ({count} revelations per action)")
    try:
        r = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
        text += (
            f"\nLoad during the profile: {r['deliveries_per_s']:,.0f} deliveries/s, server CPU "
            f"{r['server_cpu_pct']:.0f}% of a core, {r['server_cpu_us_per_delivery']:.2f} us per "
            "delivery (py-spy sampling included).\n"
        )
    except Exception:
        pass
    return text


# -- report --------------------------------------------------------------------------------------


def spread(runs: list[dict[str, Any]], key: str, digits: int = 0) -> str:
    return base.spread(runs, key, digits)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    out: list[str] = []
    n = max((len(v) for v in results.values()), default=0)
    for runs in results.values():
        for r in runs:
            cpu = r.get("server_cpu_pct")
            rate = r.get("deliveries_per_s") or r.get("msgs_per_s")
            if cpu and rate:
                r["per_cpu_s"] = rate * 100 / cpu  # units per server CPU-second
    fan = {m: results.get(m, []) for m in FANOUT_MODES if results.get(m)}
    if fan:
        bare = med(fan.get("bare", []), "deliveries_per_s")
        bare_cpu = med(fan.get("bare", []), "per_cpu_s")
        cork_cpu = med(fan.get("bare-cork", []), "per_cpu_s")
        out += [
            f"Fan-out: {args.clients} Feedme clients on one feed in {args.procs} generator "
            f"processes; bursts of {args.count} revelations per action (fanout1: 1), "
            f"{args.fanout_size} bytes of padding; at most {args.burst_window} bursts' deliveries "
            f"unreceived; medians of {n} (min-max); {args.warmup:g} s warmup + "
            f"{args.duration:g} s measured.",
            "",
            "| run | deliveries/s | vs bare | server CPU % (waiting %) | server CPU us/delivery "
            "| deliveries per server CPU-s | per CPU-s vs bare | per CPU-s vs bare-cork "
            "| generator CPU % (us/delivery) | longest gap (ms) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        labels = {
            "bare": "bare picows fan-out (send per frame)",
            "bare1": "bare picows fan-out (send per frame), 1 revelation per action",
            "bare-cork": "bare picows fan-out, corked (one write per client per burst)",
            "fanout": f"Tidings, {args.count} revelations per action",
            "fanout1": "Tidings, 1 revelation per action",
        }
        for mode, runs in fan.items():
            rate = med(runs, "deliveries_per_s")
            per = med(runs, "per_cpu_s")
            out.append(
                f"| {labels[mode]} | {spread(runs, 'deliveries_per_s')} | "
                f"{f'{100 * rate / bare:.0f}%' if rate and bare else '-'} | "
                f"{fmt(med(runs, 'server_cpu_pct'))} ({fmt(med(runs, 'server_wait_pct'))}) | "
                f"{fmt(med(runs, 'server_cpu_us_per_delivery'), 2)} | {fmt(per)} | "
                f"{f'{100 * per / bare_cpu:.0f}%' if per and bare_cpu else '-'} | "
                f"{f'{100 * per / cork_cpu:.0f}%' if per and cork_cpu else '-'} | "
                f"{fmt(med(runs, 'gen_cpu_pct'))} "
                f"({fmt(med(runs, 'gen_cpu_us_per_delivery'), 2)}) | "
                f"{fmt(med(runs, 'max_gap_ms'))} |"
            )
        out.append("")
    ses = {m: results.get(m, []) for m in ("acked", "persist") if results.get(m)}
    if ses:
        acked = med(ses.get("acked", []), "msgs_per_s")
        acked_cpu = med(ses.get("acked", []), "per_cpu_s")
        out += [
            f"Persistent sessions: {args.pairs} sender/receiver pairs, {args.size}-byte content, "
            f"{args.acked_window} incomplete requests in flight per sender; a request completes "
            "when its sender saw `accepted` and the forwarded `received`; medians of "
            f"{n} (min-max).",
            "",
            "| run | requests/s | vs acked | server CPU % (waiting %) | server CPU us/request "
            "| requests per server CPU-s | per CPU-s vs acked | p50 / p99 send->accepted (ms) "
            "| generator CPU % | ops per commit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        session_labels = {
            "acked": "acknowledged routing (loadgen acked)",
            "persist": "persistent-session requests",
        }
        for mode, runs in ses.items():
            rate = med(runs, "msgs_per_s")
            per = med(runs, "per_cpu_s")
            ms = [r.get("server_metrics") or {} for r in runs]
            opc = [
                m["store_operations_total"] / m["store_commits_total"]
                for m in ms
                if m.get("store_commits_total")
            ]
            out.append(
                f"| {session_labels[mode]} | "
                f"{spread(runs, 'msgs_per_s')} | "
                f"{f'{100 * rate / acked:.0f}%' if rate and acked else '-'} | "
                f"{fmt(med(runs, 'server_cpu_pct'))} ({fmt(med(runs, 'server_wait_pct'))}) | "
                f"{fmt(med(runs, 'server_cpu_us_per_msg'), 1)} | {fmt(per)} | "
                f"{f'{100 * per / acked_cpu:.0f}%' if per and acked_cpu else '-'} | "
                f"{fmt(med(runs, 'p50_ms'), 1)} / {fmt(med(runs, 'p99_ms'), 1)} | "
                f"{fmt(med(runs, 'gen_cpu_pct'))} | "
                f"{fmt(statistics.median(opc)) if opc else '-'} |"
            )
        out.append("")
    problems = []
    keys = (
        "error",
        "failed_notifications",
        "anomalies",
        "disconnects",
        "outstanding_after_drain",
        "zero_buckets",
        "bad_frames",
        "clients_not_at_final_seq",
        "short_bursts",
        "worker_errors",
        "failures",
        "memento_mismatches",
    )
    for mode, runs in results.items():
        for i, r in enumerate(runs):
            bad = {k: r.get(k) for k in keys if r.get(k)}
            m = r.get("server_metrics") or {}
            for k in ("envelopes_rejected_total", "sessions_failed_total"):
                if m.get(k):
                    bad[k] = m[k]
            for k in ("server_log", "samples", "anomaly_samples", "memento_samples"):
                if r.get(k):
                    bad[k] = r[k][:3]
            if bad:
                problems.append(f"- {mode} run {i + 1}: {json.dumps(bad)[:1500]}")
    out.append("Anomalies: " + ("none" if not problems else ""))
    out.extend(problems)
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=5.0)
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
    p.add_argument("--raw", help="write all results as JSON here")
    p.add_argument("--src", default="HEAD", help="git revision whose src/ runs, or 'worktree'")
    args = p.parse_args()
    args.window = args.acked_window  # what run.one_run reads for loadgen
    modes = [m for m in args.modes.split(",") if m]

    os.sched_setaffinity(0, {int(GEN_CORE)})
    folder, source = base.snapshot_source(args.src)
    # bench.fanout_app must import: the repository root goes after the exported src
    paths = [base.SERVER_ENV.get("PYTHONPATH", ""), str(ROOT)]
    base.SERVER_ENV["PYTHONPATH"] = os.pathsep.join(x for x in paths if x)
    print(f"<!-- {base.machine()} -->", flush=True)
    print(f"<!-- server code: {source} -->", flush=True)
    fs50, fs99 = base.fsync_probe()
    print(f"<!-- fsync of a 4 KiB append: p50 {fs50:.2f} ms, p99 {fs99:.2f} ms -->", flush=True)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for rep in range(args.reps):
        for mode in modes:
            if mode in FANOUT_MODES:
                results[mode].append(fanout_run(mode, args))
            elif mode == "acked":
                results[mode].append(
                    base.one_run("acked", args, ["--window", str(args.acked_window)])
                )
            elif mode == "persist":
                results[mode].append(persist_run(args))
            else:
                raise SystemExit(f"unknown mode {mode!r}")
        brief = {
            m: round(r[-1].get("deliveries_per_s") or r[-1].get("msgs_per_s") or 0)
            for m, r in results.items()
            if r
        }
        print(f"<!-- repetition {rep + 1}/{args.reps}: {brief} -->", flush=True)
    if args.raw:
        Path(args.raw).write_text(json.dumps(results, indent=1))
    print(report(results, args))
    if args.profile:
        for count in args.profile_counts.split(","):
            print(profile_fanout(args, int(count)))
    if folder:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, base._cleanup)
    try:
        main()
    finally:
        for proc in list(base._live):
            if proc.poll() is None:
                proc.kill()
