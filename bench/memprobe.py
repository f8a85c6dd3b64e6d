"""What an idle established connection holds in the server's Python heap (issue 15, target 4).

    .venv/bin/python bench/memprobe.py [--connections 2000] [--src REV] [--frames 8] [--baseline]

Runs ``tidings serve --allow-guests`` (or, with ``--baseline``, bench/bare_echo.py) under
tracemalloc, as bench/idle.py does without it, and establishes ``--connections`` nearly idle
guest LIME sessions with bench/idle.py's generators. The server takes a heap snapshot (and a
census of the objects the garbage collector tracks, by type) on SIGUSR1: once before the
connections, once when they are all established. Prints the difference per connection: by
allocating line (the innermost frame that is not the standard library's asyncio/logging),
by full traceback (``--frames`` deep) and by object type. tracemalloc sees what is allocated
through Python's allocators (objects, PyMem buffers such as picows'), not the kernel's socket
buffers, libuv's own mallocs or allocator slack: compare its total with bench/idle.py's RSS.

    .venv/bin/python bench/memprobe.py serve ...   # the server side (used by the driver)
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent


def _census() -> dict[str, int]:
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return dict(counts)


_SHARED = (type, type(sys), type(_census), type(len))


def _walk(root: object, stop: tuple[object, ...]) -> dict[int, object]:
    seen: dict[int, object] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SHARED) or any(obj is s for s in stop):
            continue
        name = type(obj).__qualname__
        if name.endswith(("Context", "Service", "Router", "Registry", "Presence", "Stats")):
            continue
        logger = name in ("Logger", "RootLogger", "PlaceHolder", "Manager")
        if logger and getattr(obj, "name", "").count(".") < 2:  # picows' per-connection child
            continue
        if sys.getrefcount(obj) > 100:
            continue  # interned names, small ints, singletons
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return seen


def _one_connection() -> list[str]:
    """The objects one established connection holds alone: walked from its picows protocol,
    minus whatever a walk from another connection's protocol reaches too (shared), stopping at
    modules, types, functions, the event loop and the server's services."""
    import asyncio

    roots = [
        o for o in gc.get_objects() if type(o).__name__ in ("_WebSocketProtocol", "WSProtocol")
    ]
    if len(roots) < 2:
        return ["fewer than two connections found"]
    loop = asyncio.get_event_loop_policy().get_event_loop()
    stop = (loop, roots)
    mine = _walk(roots[len(roots) // 2], stop)
    other = _walk(roots[len(roots) // 3], stop)
    alone = [o for k, o in mine.items() if k not in other]
    total = sum(sys.getsizeof(o) for o in alone)
    out = [f"one connection, walked from {type(roots[0]).__qualname__}: {total:,} bytes "]
    out[0] += "(sys.getsizeof: objects only, not the buffers they own outside them)"
    by_type: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for obj in alone:
        kind = type(obj)
        by_type[f"{kind.__module__}.{kind.__qualname__}"] += sys.getsizeof(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    out += [f"  {size:6,}  {counts[name]:3}  {name}" for name, size in by_type.most_common()]
    return out


def _serve(argv: list[str]) -> None:
    """Run the server (``tidings ARGV`` or bench/bare_echo.py) with a snapshot on SIGUSR1."""
    out = os.environ["MEMPROBE_OUT"]
    tracemalloc.start(int(os.environ.get("MEMPROBE_FRAMES", "8")))
    taken = [0]

    def snapshot(_signum: int, _frame: FrameType | None) -> None:
        gc.collect()
        n = taken[0]
        taken[0] += 1
        tracemalloc.take_snapshot().dump(f"{out}.{n}.snap")
        Path(f"{out}.{n}.census").write_text(json.dumps(_census()))
        Path(f"{out}.{n}.walk").write_text("\n".join(_one_connection()))
        Path(f"{out}.{n}.done").touch()

    signal.signal(signal.SIGUSR1, snapshot)
    if argv and argv[0] == "--bare":
        sys.argv = [str(HERE / "bare_echo.py"), *argv[1:]]
        sys.path.insert(0, str(HERE))
        import runpy

        runpy.run_path(str(HERE / "bare_echo.py"), run_name="__main__")
        return
    sys.argv = ["tidings", *argv]
    from tidings.cli.main import main

    main()


def _innermost(trace: tracemalloc.Traceback) -> str:
    """The innermost frame outside asyncio/logging/tracemalloc plumbing."""
    for frame in reversed(trace):  # tracemalloc orders them oldest first
        name = frame.filename
        if "/asyncio/" in name or "/logging/" in name:
            continue
        return f"{_short(name)}:{frame.lineno}"
    return f"{_short(trace[-1].filename)}:{trace[-1].lineno}"


def _short(name: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3.11/", "/bench/"):
        if marker in name:
            return name.split(marker, 1)[1]
    return name


def _report(before: str, after: str, connections: int, top: int) -> None:
    a = tracemalloc.Snapshot.load(before + ".snap")
    b = tracemalloc.Snapshot.load(after + ".snap")
    skip = tracemalloc.Filter(False, tracemalloc.__file__)
    a, b = a.filter_traces([skip]), b.filter_traces([skip])
    total = sum(s.size_diff for s in b.compare_to(a, "filename"))
    print(f"tracemalloc: {total / connections:,.0f} bytes per connection in all\n")
    lines: Counter[str] = Counter()
    for stat in b.compare_to(a, "traceback"):
        lines[_innermost(stat.traceback)] += stat.size_diff
    print("by allocating line (bytes per connection):")
    for where, size in lines.most_common(top):
        print(f"  {size / connections:8,.0f}  {where}")
    print("\nby traceback (bytes per connection, innermost frame first):")
    for stat in b.compare_to(a, "traceback")[:top]:
        if stat.size_diff / connections < 20:
            break
        innermost = list(reversed(stat.traceback))[:6]
        frames = " <- ".join(f"{_short(f.filename)}:{f.lineno}" for f in innermost)
        print(f"  {stat.size_diff / connections:8,.0f}  {frames}")
    ca = json.loads(Path(before + ".census").read_text())
    cb = json.loads(Path(after + ".census").read_text())
    grown = {k: cb[k] - ca.get(k, 0) for k in cb if cb[k] - ca.get(k, 0) >= connections // 2}
    print()
    print(Path(after + ".walk").read_text())
    print("\nobjects tracked by the GC, per connection (types with >= 0.5 per connection):")
    for kind, count in sorted(grown.items(), key=lambda kv: -kv[1]):
        print(f"  {count / connections:6.2f}  {kind}")


def _snapshot(server: object, path: str, n: int) -> str:
    pid = server.pid  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while not os.path.exists(f"{path}.{n}.done"):
        if time.monotonic() > deadline:
            raise RuntimeError("no snapshot within 120 s")
        time.sleep(0.2)
    return f"{path}.{n}"


def main() -> None:
    import harness
    from durable import LIMITS, loadgen_binary
    from idle import idle_generators, open_files, rss_kb

    p = harness.driver_parser(__doc__ or "")
    harness.add_output_options(p)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--per-generator", type=int, default=9000)
    p.add_argument("--idle-rate", type=int, default=50)
    p.add_argument("--hold", type=int, default=60, help="seconds the idle generators run")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--baseline", action="store_true")
    p.add_argument("--loadgen", default="/tmp/loadgen")
    p.add_argument("--report", help="only report on the snapshots of an earlier run (its PATH)")
    args = p.parse_args()
    if args.report:
        _report(f"{args.report}.0", f"{args.report}.1", args.connections, args.top)
        return
    args.loadgen = loadgen_binary(args.loadgen)
    work = tempfile.mkdtemp(prefix="memprobe-")
    path = os.path.join(work, "snap")
    harness.SERVER_ENV["MEMPROBE_OUT"] = path
    harness.SERVER_ENV["MEMPROBE_FRAMES"] = str(args.frames)
    with harness.bench_session(args.src):
        probe = [harness.PY, str(HERE / "memprobe.py"), "serve"]
        if args.baseline:
            server = harness.Server([*probe, "--bare"], r"ready (ws://\S+)")
        else:
            data = tempfile.mkdtemp(prefix="tidings-bench-")
            argv = [*probe, "serve", "--domain", "localhost", "--host", "127.0.0.1"]
            argv += ["--ws-port", "0", "--http-port", "0", "--data-dir", data]
            argv += ["--allow-guests", *LIMITS, "--max-connections", str(args.connections + 1000)]
            server = harness.Server(argv, r"tidings ready (ws://\S+) (http://\S+)", data)
        try:
            time.sleep(1)
            before_rss = rss_kb(server.pid)
            before = _snapshot(server, path, 0)
            generators = idle_generators(server, args)  # type: ignore[arg-type]
            deadline = time.monotonic() + args.hold
            while open_files(server.pid) < args.connections and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(3)
            after_rss = rss_kb(server.pid)
            after = _snapshot(server, path, 1)
            for proc in generators:
                proc.kill()
                proc.wait()
        finally:
            server.stop()
    rss = (after_rss - before_rss) * 1024 / args.connections
    print(f"RSS: {rss:,.0f} bytes per connection (under tracemalloc: larger than without)")
    print(f"snapshots: --report {path}")
    _report(before, after, args.connections, args.top)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        _serve(sys.argv[2:])
    else:
        sys.path.insert(0, str(HERE))
        import harness

        harness.run_driver(main)
