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
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
TIDINGS = str(Path(PY).with_name("tidings"))
SERVER_CORE = "0"
GEN_CORE = "1"

_live: list[subprocess.Popen[str]] = []
SERVER_ENV = dict(os.environ)


def snapshot_source(rev: str) -> tuple[str, str]:
    """Export ``src/`` of a git revision to a temp folder (the work tree may be mid-edit by
    others); the servers import tidings from there. Returns (folder, description)."""
    if rev == "worktree":
        return "", "the work tree as it is (editable install)"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    folder = tempfile.mkdtemp(prefix="tidings-bench-src-")
    archive = subprocess.run(
        ["git", "archive", rev, "src"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    SERVER_ENV["PYTHONPATH"] = os.path.join(folder, "src")
    return folder, f"commit {commit} (src/ exported with git archive)"


class Server:
    """A server process pinned to the server core; ``ready`` is its parsed readiness line."""

    def __init__(self, argv: list[str], pattern: str, data_dir: str | None = None) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=SERVER_ENV,
        )
        _live.append(self.proc)
        self.output: list[str] = []
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited before it was ready: {''.join(self.output)}")
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                self.match = match
                break
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready within 30 s")
        self.pid = self.proc.pid  # taskset execs the server: same pid

    def stop(self) -> str:
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        rest = proc.stdout.read() if proc.stdout else ""
        if proc in _live:
            _live.remove(proc)
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return rest


def start_echo() -> Server:
    return Server([PY, str(HERE / "bare_echo.py")], r"ready (ws://\S+)")


def start_tidings() -> Server:
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
            "--allow-guests",
        ],
        r"tidings ready (ws://\S+) (http://\S+)",
        data,
    )


def metrics(server: Server) -> dict[str, float]:
    try:
        url = server.match.group(2).rstrip("/") + "/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except Exception as exc:
        return {"error": str(exc)}  # type: ignore[dict-item]
    out = {}
    for line in text.splitlines():
        if line.startswith("tidings_"):
            name, value = line.rsplit(" ", 1)
            out[name.removeprefix("tidings_")] = float(value)
    return out


def loadgen(
    mode: str, server: Server, args: argparse.Namespace, extra: list[str]
) -> dict[str, Any]:
    argv = [
        "taskset",
        "-c",
        GEN_CORE,
        PY,
        str(HERE / "loadgen.py"),
        mode,
        "--url",
        server.match.group(1),
        "--server-pid",
        str(server.pid),
        "--pairs",
        str(args.pairs),
        "--size",
        str(args.size),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
        *extra,
    ]
    timeout = args.warmup + args.duration + 90
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"mode": mode, "error": f"rc={done.returncode} {done.stderr[-2000:]}"}
    return json.loads(lines[-1])


def one_run(mode: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    server = start_echo() if mode == "echo" else start_tidings()
    try:
        result = loadgen(mode, server, args, extra)
        if mode != "echo":
            result["server_metrics"] = metrics(server)
    finally:
        tail = server.stop()
    errors = [
        ln
        for ln in (server.output + tail.splitlines())
        if re.search(r"Traceback|Error|error|WARN|exception", ln)
    ]
    if errors:
        result["server_log"] = errors[:20]
    return result


def fsync_probe(n: int = 100) -> tuple[float, float]:
    """fsync latency (p50, p99 in ms) of 4 KiB appends in the temp folder (the data folder)."""
    folder = tempfile.mkdtemp(prefix="tidings-bench-fsync-")
    fd = os.open(os.path.join(folder, "probe"), os.O_WRONLY | os.O_CREAT)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
    times.sort()
    return times[n // 2] * 1e3, times[int(n * 0.99) - 1] * 1e3


# -- profile -------------------------------------------------------------------------------------


def profile(args: argparse.Namespace, mode: str) -> str:
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy is None:
        return "py-spy not found: `.venv/bin/pip install py-spy` to profile\n"
    server = start_tidings()
    raw = tempfile.mktemp(prefix="tidings-pyspy-", suffix=".txt")
    try:
        gen_args = argparse.Namespace(**{**vars(args), "duration": args.profile + 3})
        gen = subprocess.Popen(
            [
                "taskset",
                "-c",
                GEN_CORE,
                PY,
                str(HERE / "loadgen.py"),
                mode,
                "--url",
                server.match.group(1),
                "--server-pid",
                str(server.pid),
                "--pairs",
                str(args.pairs),
                "--size",
                str(args.size),
                "--window",
                str(args.window if mode == "ff" else args.acked_window),
                "--warmup",
                str(args.warmup),
                "--duration",
                str(gen_args.duration),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        _live.append(gen)
        time.sleep(args.warmup + 2)
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
                *(["--native"] if args.native else ["--nonblocking"]),
                "-o",
                raw,
            ],
            capture_output=True,
            text=True,
            timeout=args.profile + 60,
        )
        out, _ = gen.communicate(timeout=gen_args.duration + 90)
        _live.remove(gen)
    finally:
        server.stop()
    try:
        lines = Path(raw).read_text().splitlines()
    except OSError:
        return "py-spy produced no output (ptrace permitted?)\n"
    finally:
        Path(raw).unlink(missing_ok=True)
    return summarize_profile(lines, out, mode)


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({file})"


def summarize_profile(lines: list[str], gen_out: str, mode: str) -> str:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        frames = [f for f in frames if not f.startswith(("thread (", "process "))]
        total += n
        threads[thread] += n
        names = [_short(f) for f in frames]
        if names:
            own[names[-1]] += n
        for name in set(names):
            incl[name] += n
    if not total:
        return "py-spy collected no samples\n"
    out = [
        f"py-spy, {mode} load: {total} non-idle samples at 250 Hz; % of the server's busy samples\n"
    ]
    out.append("| thread | % |\n|---|---:|")
    for thread, n in threads.most_common(6):
        out.append(f"| {thread} | {100 * n / total:.1f} |")
    out.append("\nTop functions by own time (the sampled Python frame was this one):\n")
    out.append("| function (file) | own % |\n|---|---:|")
    for name, n in own.most_common(20):
        out.append(f"| `{name}` | {100 * n / total:.1f} |")
    out.append("\nTop functions by inclusive time:\n")
    out.append("| function (file) | incl % |\n|---|---:|")
    chain = (
        "typer/",
        "asyncio/runners.py",
        "uvloop/__init__.py",
        "threading.py",
        "tidings/cli/main.py",
        "<module>",
    )
    for name, n in [
        (k, v) for k, v in incl.most_common() if v < 0.98 * total and not any(c in k for c in chain)
    ][:25]:
        out.append(f"| `{name}` | {100 * n / total:.1f} |")
    try:
        result = json.loads([ln for ln in gen_out.splitlines() if ln.startswith("{")][-1])
        out.append(
            f"\nLoad during the profile: {result['msgs_per_s']:,.0f} {mode} msg/s, "
            f"server CPU {result['server_cpu_pct']:.0f}% of a core, "
            f"{result['server_cpu_us_per_msg']:.1f} us/msg (py-spy sampling included)."
        )
    except Exception:
        pass
    return "\n".join(out) + "\n"


# -- report --------------------------------------------------------------------------------------


def med(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def spread(runs: list[dict[str, Any]], key: str, digits: int = 0) -> str:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "-"
    low, high = fmt(min(values), digits), fmt(max(values), digits)
    return f"{fmt(statistics.median(values), digits)} ({low}-{high})"


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    echo, ff, acked, paced = (results.get(k, []) for k in ("echo", "ff", "acked", "paced"))
    for runs in results.values():
        for r in runs:
            cpu = r.get("server_cpu_pct")
            if cpu:
                # what the server would do with a whole core to itself (CPU-normalised)
                r["frames_per_cpu_s"] = r["frames_per_s"] * 100 / cpu
                r["msgs_per_cpu_s"] = r["msgs_per_s"] * 100 / cpu
                r["cpu_us_per_frame"] = 1e6 / r["frames_per_cpu_s"]
    echo_fps = med(echo, "frames_per_s")
    echo_fpc = med(echo, "frames_per_cpu_s")

    def ratio(runs: list[dict[str, Any]], key: str, base: float | None) -> str:
        value = med(runs, key)
        return f"{100 * value / base:.0f}%" if value and base else "-"

    def cpu(runs: list[dict[str, Any]]) -> str:
        return f"{fmt(med(runs, 'server_cpu_pct'))} ({fmt(med(runs, 'server_wait_pct'))})"

    n = max((len(v) for v in results.values()), default=0)
    lines = [
        f"Medians of {n} repetitions (min-max in brackets); {args.pairs} pairs, "
        f"{args.size}-byte content, window {args.window} (ff) / {args.acked_window} (acked) "
        f"messages in flight per pair, {args.warmup:g} s warmup + {args.duration:g} s measured.",
        "",
        "| run | msg/s | frames/s (in+out) | frames/s vs bare echo | "
        "server CPU % (waiting for CPU %) | "
        "server CPU us/msg | msg/s per server CPU-s | frames per CPU-s vs echo | "
        "p50 / p99 send->accepted (ms) | generator CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| bare picows echo | - | {spread(echo, 'frames_per_s')} | 100% | "
        f"{cpu(echo)} | {fmt(med(echo, 'cpu_us_per_frame'), 2)} per frame | - | 100% | - | "
        f"{fmt(med(echo, 'gen_cpu_pct'))} |",
    ]
    for label, runs in (("fire-and-forget", ff), ("acknowledged (max)", acked)):
        lat = "-"
        if med(runs, "p50_ms") is not None:
            lat = f"{fmt(med(runs, 'p50_ms'), 1)} / {fmt(med(runs, 'p99_ms'), 1)}"
        lines.append(
            f"| {label} | {spread(runs, 'msgs_per_s')} | {fmt(med(runs, 'frames_per_s'))} | "
            f"{ratio(runs, 'frames_per_s', echo_fps)} | {cpu(runs)} | "
            f"{fmt(med(runs, 'server_cpu_us_per_msg'), 1)} | {fmt(med(runs, 'msgs_per_cpu_s'))} | "
            f"{ratio(runs, 'frames_per_cpu_s', echo_fpc)} | {lat} | "
            f"{fmt(med(runs, 'gen_cpu_pct'))} |"
        )
    if paced:
        lines.append(
            f"| acknowledged, paced at {int(100 * args.paced_fraction)}% of max "
            f"({fmt(med(paced, 'rate'))}/s offered) | {spread(paced, 'msgs_per_s')} | "
            f"{fmt(med(paced, 'frames_per_s'))} | {ratio(paced, 'frames_per_s', echo_fps)} | "
            f"{cpu(paced)} | {fmt(med(paced, 'server_cpu_us_per_msg'), 1)} | "
            f"{fmt(med(paced, 'msgs_per_cpu_s'))} | {ratio(paced, 'frames_per_cpu_s', echo_fpc)} | "
            f"{fmt(med(paced, 'p50_ms'), 1)} / {fmt(med(paced, 'p99_ms'), 1)} | "
            f"{fmt(med(paced, 'gen_cpu_pct'))} |"
        )
    lines.append("")
    stall = {m: fmt(med(r, "max_stall_ms"), 1) for m, r in results.items() if r}
    lines.append(f"Longest gap between two completions in the measured window, median ms: {stall}")
    for mode in ("acked", "paced"):
        ms = [r.get("server_metrics") or {} for r in results.get(mode, [])]
        per = [
            m["store_operations_total"] / m["store_commits_total"]
            for m in ms
            if m.get("store_commits_total")
        ]
        if per:
            lines.append(
                f"Store, {mode}: median {statistics.median(per):.0f} writer operations "
                f"per commit over the whole run."
            )
    lines.append("")
    problems = []
    for mode, runs in results.items():
        for i, r in enumerate(runs):
            bad = {
                k: r.get(k)
                for k in (
                    "error",
                    "failed_notifications",
                    "anomalies",
                    "disconnects",
                    "outstanding_after_drain",
                    "zero_buckets",
                    "skipped_at_cap",
                )
                if r.get(k)
            }
            m = r.get("server_metrics") or {}
            for k in ("envelopes_rejected_total", "sessions_failed_total"):
                if m.get(k):
                    bad[k] = m[k]
            if r.get("server_log"):
                bad["server_log"] = r["server_log"][:3]
            if r.get("anomaly_samples"):
                bad["samples"] = r["anomaly_samples"][:3]
            if bad:
                problems.append(f"- {mode} run {i + 1}: {json.dumps(bad)}")
    lines.append(
        "Anomalies: "
        + (
            "none (no failed notifications, disconnects, rejected "
            "envelopes, lost or stalled messages)"
            if not problems
            else ""
        )
    )
    lines.extend(problems)
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; nproc {os.cpu_count()}; "
        f"CPU {model}; Python {platform.python_version()}; load average at start {load}"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--size", type=int, default=300, help="bytes of message content")
    p.add_argument("--window", type=int, default=8, help="ff and echo: in flight per pair")
    p.add_argument("--acked-window", type=int, default=8, help="acked: in flight per pair")
    p.add_argument("--paced-fraction", type=float, default=0.7)
    p.add_argument("--modes", default="echo,ff,acked,paced")
    p.add_argument("--profile", type=float, default=0, help="py-spy seconds under load")
    p.add_argument("--profile-modes", default="ff", help="comma-separated: ff,acked")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument("--raw", help="write all results as JSON here")
    p.add_argument(
        "--src", default="HEAD", help="git revision whose src/ the server runs, or 'worktree'"
    )
    args = p.parse_args()
    modes = args.modes.split(",")

    os.sched_setaffinity(0, {int(GEN_CORE)})  # this driver mostly sleeps; keep it off core 0
    folder, source = snapshot_source(args.src)
    print(f"<!-- {machine()} -->", flush=True)
    print(f"<!-- server code: {source} -->", flush=True)
    fs50, fs99 = fsync_probe()
    print(
        f"<!-- fsync of a 4 KiB append in {tempfile.gettempdir()}: p50 {fs50:.2f} ms, "
        f"p99 {fs99:.2f} ms -->",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for rep in range(args.reps):
        if "echo" in modes:
            results["echo"].append(one_run("echo", args, ["--window", str(args.window)]))
        if "ff" in modes:
            results["ff"].append(one_run("ff", args, ["--window", str(args.window)]))
        if "acked" in modes:
            results["acked"].append(one_run("acked", args, ["--window", str(args.acked_window)]))
        if "paced" in modes:
            base = results["acked"][-1].get("msgs_per_s") if results.get("acked") else None
            if base:
                rate = max(100.0, args.paced_fraction * base)
                results["paced"].append(one_run("paced", args, ["--rate", f"{rate:.0f}"]))
        brief = {
            m: round(r[-1].get("msgs_per_s") or r[-1].get("frames_per_s") or 0)
            for m, r in results.items()
            if r
        }
        print(f"<!-- repetition {rep + 1}/{args.reps}: {brief} -->", flush=True)
    if args.raw:
        Path(args.raw).write_text(json.dumps(results, indent=1))
    print(report(results, args))
    if args.profile:
        for mode in args.profile_modes.split(","):
            print(profile(args, mode))
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _cleanup(*_: Any) -> None:
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()
    sys.exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _cleanup)
    try:
        main()
    finally:
        for proc in list(_live):
            if proc.poll() is None:
                proc.kill()
