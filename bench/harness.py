"""What the drivers (run.py, run_feeds_sessions.py) share, so that every run is set up,
measured and reported alike: the server code under test, servers pinned to core 0 and load
generators to core 1, py-spy profiles, and the helpers of their markdown reports.
"""

from __future__ import annotations

import argparse
import bisect
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
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import CLK_TCK, Result, add_phases, cpu_ticks, parser

if TYPE_CHECKING:
    from tidings.devcluster.services import Postgres

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
TIDINGS = str(Path(PY).with_name("tidings"))
SERVER_CORE = "0"
GEN_CORE = "1"

Results = dict[str, list[Result]]

# -- the code under test and the processes ---------------------------------------------------------

SERVER_ENV = dict(os.environ)
_live: list[subprocess.Popen[str]] = []
_TROUBLE = re.compile(r"Traceback|Error|error|WARN|exception")


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


def add_server_path(path: Path) -> None:
    """Let servers import from ``path`` too, after the exported code (which must win)."""
    paths = [SERVER_ENV.get("PYTHONPATH", ""), str(path)]
    SERVER_ENV["PYTHONPATH"] = os.pathsep.join(x for x in paths if x)


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


def machine() -> str:
    """When and on what the numbers were taken: CPU, cores, Python, load at the start."""
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


@contextmanager
def bench_session(rev: str) -> Iterator[None]:
    """Pin this driver off the server's core, export the server code of ``rev`` and print what
    the numbers depend on (machine, code, fsync latency); remove the export at the end."""
    os.sched_setaffinity(0, {int(GEN_CORE)})  # the driver mostly sleeps; keep it off core 0
    folder, source = snapshot_source(rev)
    try:
        print(f"<!-- {machine()} -->", flush=True)
        print(f"<!-- server code: {source} -->", flush=True)
        fs50, fs99 = fsync_probe()
        print(
            f"<!-- fsync of a 4 KiB append in {tempfile.gettempdir()}: p50 {fs50:.2f} ms, "
            f"p99 {fs99:.2f} ms -->",
            flush=True,
        )
        yield
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def run_driver(main: Callable[[], None]) -> None:
    """Run a driver so that no server or generator it started outlives it, even on SIGTERM."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        main()
    finally:
        _kill_live()


def _kill_live() -> None:
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()


def _exit_on_sigterm(*_: Any) -> None:
    _kill_live()
    sys.exit(1)


class Server:
    """A server process pinned to the server core; ``match`` is its parsed readiness line."""

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

    @property
    def url(self) -> str:
        """The WebSocket URL the server listens on."""
        return self.match.group(1)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s; keep the rest of its output; remove its data folder."""
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            self.output += proc.stdout.read().splitlines()
        if proc in _live:
            _live.remove(proc)
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def errors(self) -> list[str]:
        """The first lines of its output that look like trouble."""
        return [ln for ln in self.output if _TROUBLE.search(ln)][:20]


def start_script(script: str, *options: str) -> Server:
    """A bare baseline server of bench/ (its ready line names its WebSocket URL)."""
    return Server([PY, str(HERE / script), *options], r"ready (ws://\S+)")


def start_tidings(*options: str) -> Server:
    """``tidings serve`` on free ports with a new temporary data folder."""
    data = tempfile.mkdtemp(prefix="tidings-bench-")
    argv = [TIDINGS, "serve", "--domain", "localhost", "--host", "127.0.0.1"]
    argv += ["--ws-port", "0", "--http-port", "0", "--data-dir", data, *options]
    return Server(argv, r"tidings ready (ws://\S+) (http://\S+)", data)


def metrics(server: Server) -> dict[str, float]:
    """The Tidings server's counters from /metrics, without the ``tidings_`` prefix."""
    return metrics_at(server.match.group(2))


def metrics_at(http_url: str) -> dict[str, float]:
    """The counters of the Tidings node whose HTTP API is at ``http_url``."""
    try:
        url = http_url.rstrip("/") + "/metrics"
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


def generator(
    script: str, server: Server, warmup: float, duration: float, *options: str
) -> list[str]:
    """argv of a bench/ load generator pinned to the generator core, aimed at ``server`` and
    reading its CPU."""
    pinned = ["taskset", "-c", GEN_CORE, PY, str(HERE / script), *options]
    target = ["--url", server.url, "--server-pid", str(server.pid)]
    return [*pinned, *target, "--warmup", str(warmup), "--duration", str(duration)]


def pairs_generator(
    script: str,
    server: Server,
    args: argparse.Namespace,
    *options: str,
    duration: float | None = None,
) -> list[str]:
    """argv of loadgen.py or persistgen.py: ``args.pairs`` sender/receiver pairs exchanging
    ``args.size``-byte messages for ``duration`` (default ``args.duration``) seconds."""
    seconds = args.duration if duration is None else duration
    pairs = ("--pairs", str(args.pairs), "--size", str(args.size))
    return generator(script, server, args.warmup, seconds, *options, *pairs)


def last_json(stdout: str) -> Result | None:
    """A generator's result: the last JSON line it printed."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def measure(
    server: Server,
    argv: list[str],
    mode: str,
    timeout: float,
    metered: bool,
    beside: Callable[[], float] | None = None,
) -> Result:
    """Run one generator against a fresh server, then stop the server. Its JSON result, plus the
    server's /metrics when ``metered`` and any lines of trouble in the server's output.

    ``beside``: the CPU seconds so far of processes working for the server that the generator
    does not read (its database: ``tree_cpu_s``), reported as ``beside_cpu_s`` over the
    generator's measured window. That needs a generator which reports its window's length as
    ``seconds`` and exits as soon as the window ends (the C loadgen does both)."""
    trail = CpuTrail(beside) if beside else None
    try:
        with trail or nullcontext():
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            if trail:
                trail.sample()  # the window's end: the generator exits as it ends
        result = last_json(done.stdout)
        if done.returncode != 0 or result is None:
            result = {"mode": mode, "error": f"rc={done.returncode} {done.stderr[-2000:]}"}
        elif trail and result.get("seconds"):
            end = trail.samples[-1][0]
            result["beside_cpu_s"] = trail.at(end) - trail.at(end - result["seconds"])
        if metered:
            result["server_metrics"] = metrics(server)
            result["server_cpu_s"] = cpu_ticks(server.pid) / CLK_TCK  # the whole run's
    finally:
        server.stop()
    errors = server.errors()
    if errors:
        result["server_log"] = errors
    return result


class CpuTrail:
    """Samples ``read`` (CPU seconds so far of some processes) every ``period`` seconds on a
    thread while in use, so that their CPU over a window known only afterwards (a generator's
    measured window, which it reports when done) can be read off by interpolation."""

    def __init__(self, read: Callable[[], float], period: float = 0.1) -> None:
        self.read, self.period = read, period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuTrail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.period):
                return

    def sample(self) -> None:
        self.samples.append((time.monotonic(), self.read()))

    def at(self, when: float) -> float:
        """The CPU seconds at monotonic time ``when``, between the samples around it."""
        samples = sorted(self.samples)
        i = bisect.bisect_left(samples, (when, -1.0))
        if i == 0 or i == len(samples):
            return samples[min(i, len(samples) - 1)][1]
        (t0, v0), (t1, v1) = samples[i - 1], samples[i]
        return v0 + (v1 - v0) * (when - t0) / (t1 - t0) if t1 > t0 else v1


# -- PostgreSQL beside the server ------------------------------------------------------------------


def start_postgres() -> Postgres:
    """A throwaway PostgreSQL (``devcluster.services.Postgres``: its own user, a new data folder,
    fsync on, synchronous_commit at its default, on) pinned to the server's core, so that the
    server's "one core" holds the server and its database."""
    from tidings.devcluster.services import Postgres

    server = Postgres().start()
    assert server.process is not None
    pin_tree(server.process.pid, SERVER_CORE)
    return server


def pin_tree(root: int, core: str) -> None:
    """Move a process and the processes it started to ``core``; those it starts later (a
    postmaster's backends) inherit it."""
    for pid in [root, *children(root)]:
        with suppress(ProcessLookupError):
            os.sched_setaffinity(pid, {int(core)})


def _processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command) of every process still there."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue


def children(root: int) -> list[int]:
    """The processes ``root`` started (its direct children)."""
    return [pid for pid, fields in _processes() if int(fields[1]) == root]


def tree_cpu_s(root: int) -> float:
    """CPU seconds of a process and every process it started, live (utime+stime) or ended (the
    root's cutime+cstime: e.g. a postmaster's backends whose clients left)."""
    total = 0
    for pid, fields in _processes():
        if pid == root:
            total += sum(int(f) for f in fields[11:15])
        elif int(fields[1]) == root:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def fresh_database(server: Postgres, name: str) -> str:
    """The URL of a new, empty database ``name`` on ``server`` (dropped first if it exists)."""
    import psycopg

    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')  # type: ignore[arg-type]
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return server.url.rsplit("/", 1)[0] + "/" + name


def progress(rep: int, reps: int, results: Results, keys: tuple[str, ...]) -> None:
    """One line per repetition with each mode's rate (the first of ``keys`` it reports)."""
    brief = {
        mode: round(next((v for k in keys if (v := runs[-1].get(k))), 0))
        for mode, runs in results.items()
        if runs
    }
    print(f"<!-- repetition {rep + 1}/{reps}: {brief} -->", flush=True)


def save(results: Results, path: str | None) -> None:
    """Every run's full result as JSON, when asked for (--raw)."""
    if path:
        Path(path).write_text(json.dumps(results, indent=1))


def driver_parser(doc: str) -> argparse.ArgumentParser:
    """A driver's options: repetitions and the phases of each run."""
    p = parser(doc)
    p.add_argument("--reps", type=int, default=3)
    add_phases(p)
    return p


def add_output_options(p: argparse.ArgumentParser) -> None:
    """--raw (all results as JSON) and --src (the code the servers run)."""
    p.add_argument("--raw", help="write all results as JSON here")
    p.add_argument(
        "--src", default="HEAD", help="git revision whose src/ the server runs, or 'worktree'"
    )


# -- profiles --------------------------------------------------------------------------------------


def profile(
    start: Callable[[], Server],
    load: Callable[[Server], list[str]],
    *,
    label: str,
    settle: float,
    seconds: float,
    gen_timeout: float,
    native: bool = False,
    describe: Callable[[Result], tuple[str, str]],
) -> str:
    """The server's hottest functions: py-spy samples it for ``seconds`` once the generator's
    load has settled. ``describe`` gives the load's rate and its server CPU cost, as text."""
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy is None:
        return "py-spy not found: `.venv/bin/pip install py-spy` to profile\n"
    server = start()
    raw = tempfile.mktemp(prefix="tidings-pyspy-", suffix=".txt")
    try:
        gen = subprocess.Popen(
            load(server),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        _live.append(gen)
        time.sleep(settle)
        _record(spy, server.pid, seconds, native, raw)
        out, _ = gen.communicate(timeout=gen_timeout)
        _live.remove(gen)
    finally:
        server.stop()
    try:
        lines = Path(raw).read_text().splitlines()
    except OSError:
        return "py-spy produced no output (ptrace permitted?)\n"
    finally:
        Path(raw).unlink(missing_ok=True)
    return summarize_profile(lines, label) + _load_note(out, describe)


def _record(spy: str, pid: int, seconds: float, native: bool, raw: str) -> None:
    """py-spy's raw samples of every thread, at 250 Hz, from the generator core."""
    pinned = ["taskset", "-c", GEN_CORE, spy, "record", "--pid", str(pid)]
    sampling = ["--duration", str(int(seconds)), "--rate", "250", "--format", "raw", "--threads"]
    subprocess.run(
        [*pinned, *sampling, "--native" if native else "--nonblocking", "-o", raw],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )


def _load_note(gen_out: str, describe: Callable[[Result], tuple[str, str]]) -> str:
    """The load the profile was taken under (py-spy slows the server), '' if unknown."""
    try:
        result = last_json(gen_out) or {}
        rate, cost = describe(result)
        return (
            f"\nLoad during the profile: {rate}, server CPU {result['server_cpu_pct']:.0f}% of a "
            f"core, {cost} (py-spy sampling included).\n"
        )
    except (KeyError, TypeError, ValueError):
        return ""


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")
_CHAIN = (  # the entry chain every sample goes through: 100% inclusive, says nothing
    "typer/",
    "asyncio/runners.py",
    "uvloop/__init__.py",
    "threading.py",
    "tidings/cli/main.py",
    "<module>",
)


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


def summarize_profile(lines: list[str], label: str) -> str:
    """Markdown tables of py-spy raw samples: busy time per thread, top functions by own and by
    inclusive time."""
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
        f"py-spy, {label} load: {total} non-idle samples at 250 Hz; "
        "% of the server's busy samples\n",
        *table_head("thread", "%"),
    ]
    for thread, n in threads.most_common(6):
        out.append(f"| {thread} | {100 * n / total:.1f} |")
    out.append("\nTop functions by own time (the sampled Python frame was this one):\n")
    out += table_head("function (file)", "own %")
    for name, n in own.most_common(20):
        out.append(f"| `{name}` | {100 * n / total:.1f} |")
    out.append("\nTop functions by inclusive time:\n")
    out += table_head("function (file)", "incl %")
    for name, n in [
        (k, v)
        for k, v in incl.most_common()
        if v < 0.98 * total and not any(c in k for c in _CHAIN)
    ][:25]:
        out.append(f"| `{name}` | {100 * n / total:.1f} |")
    return "\n".join(out) + "\n"


# -- reports ---------------------------------------------------------------------------------------

SERVER_REJECTIONS = ("envelopes_rejected_total", "sessions_failed_total")
ANOMALY_COUNTS = (  # what any generator reports when something went wrong
    "error",
    "failed_notifications",
    "anomalies",
    "disconnects",
    "outstanding_after_drain",
    "zero_buckets",
)


def med(runs: list[Result], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def spread(runs: list[Result], key: str, digits: int = 0) -> str:
    """Median (min-max) of the runs: how far repetitions of one run agree."""
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "-"
    low, high = fmt(min(values), digits), fmt(max(values), digits)
    return f"{fmt(statistics.median(values), digits)} ({low}-{high})"


def md_row(*cells: str) -> str:
    return f"| {' | '.join(cells)} |"


def table_head(*columns: str) -> list[str]:
    """A markdown table's header and separator: the first column left, the numbers right."""
    return [md_row(*columns), "|---|" + "---:|" * (len(columns) - 1)]


def latency(runs: list[Result]) -> str:
    """Median p50 / p99 latency in ms, '-' for runs that measured none."""
    if med(runs, "p50_ms") is None:
        return "-"
    return f"{fmt(med(runs, 'p50_ms'), 1)} / {fmt(med(runs, 'p99_ms'), 1)}"


def percent(value: float | None, base: float | None) -> str:
    """``value`` as a whole percentage of ``base``; '-' without both."""
    return f"{100 * value / base:.0f}%" if value and base else "-"


def server_cpu(runs: list[Result]) -> str:
    """Median server CPU % of a core, and (in brackets) % of time it waited for one."""
    return f"{fmt(med(runs, 'server_cpu_pct'))} ({fmt(med(runs, 'server_wait_pct'))})"


def ops_per_commit(runs: list[Result]) -> float | None:
    """Median store writer operations per commit over whole runs: how well commits batch."""
    per = [
        m["store_operations_total"] / m["store_commits_total"]
        for r in runs
        if (m := r.get("server_metrics") or {}).get("store_commits_total")
    ]
    return statistics.median(per) if per else None


def problems(
    results: Results, counts: tuple[str, ...], samples: dict[str, str], width: int | None = None
) -> list[str]:
    """One line per run that saw anything wrong: its nonzero ``counts``, the server's rejections,
    and the first three of each of its ``samples`` (result key -> key shown)."""
    lines = []
    for mode, runs in results.items():
        for i, r in enumerate(runs):
            bad = {k: r.get(k) for k in counts if r.get(k)}
            m = r.get("server_metrics") or {}
            bad |= {k: m[k] for k in SERVER_REJECTIONS if m.get(k)}
            bad |= {shown: r[k][:3] for k, shown in samples.items() if r.get(k)}
            if bad:
                lines.append(f"- {mode} run {i + 1}: {json.dumps(bad)[:width]}")
    return lines
