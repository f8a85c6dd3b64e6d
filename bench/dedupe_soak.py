"""Duplicate detection in bounded space (issue 15): the database after a soak of acknowledged
messages, with the C load generator.

    .venv/bin/python bench/dedupe_soak.py --src main --seconds 240 [--serve "..."]
    .venv/bin/python bench/dedupe_soak.py --src HEAD --seconds 240 \\
        --serve "--message-id-retention-s 150"

One ``tidings serve --allow-guests`` (SQLite in a new temporary folder, rate limits lifted) on
core 0, the generator (shared/tools/loadgen.c) on core 1: 100 guest pairs x 10 in flight,
300-byte payloads, every message with an id, counted once delivered AND ``accepted``,
receivers answering ``received`` (bench/durable.py's ``acked`` mode), for ``--seconds``.
Every ``--every`` seconds the driver samples the database's size on disk (main file + WAL);
at the end, before the server stops, it reads the page usage per table and index (SQLite's
``dbstat``) and the rows of the dedupe table, over a read-only connection.

Prints one JSON line: messages acknowledged, msgs/s, lost, the samples, the file size at the
end, the bytes the dedupe table and its index take and per message, and the growth over the
last third of the run (MB per million messages): a table bounded by its window stops growing
once the window is full, one kept for days grows with every message.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import harness
from common import parser
from durable import ACKED, LIMITS, loadgen_binary
from harness import GEN_CORE

DEDUPE_TABLES = ("message_ids", "message_ids_by_age", "message_keys", "message_keys_by_age")


def disk_bytes(data_dir: str) -> int:
    """The database's size on disk: main file and WAL (what a soak leaves behind)."""
    folder = Path(data_dir)
    return sum(
        (folder / name).stat().st_size
        for name in ("tidings.db", "tidings.db-wal")
        if (folder / name).exists()
    )


def page_usage(data_dir: str) -> dict[str, int]:
    """Bytes of pages per table and index, and the rows of the dedupe table (read-only)."""
    uri = f"file:{Path(data_dir) / 'tidings.db'}?mode=ro"
    connection = sqlite3.connect(uri, uri=True)
    try:
        pages = dict(connection.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
        freelist = connection.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        table = "message_keys" if "message_keys" in pages else "message_ids"  # before 0009
        rows = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        connection.close()
    return {
        "dedupe_rows": rows,
        "dedupe_bytes": sum(pages.get(name, 0) for name in DEDUPE_TABLES),
        "queue_bytes": sum(v for k, v in pages.items() if k.startswith("queue")),
        "free_bytes": freelist * page_size,
    }


def main() -> None:
    p = parser(__doc__ or "")
    harness.add_output_options(p)
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--every", type=float, default=10.0)
    p.add_argument("--loadgen", default="/tmp/loadgen")
    p.add_argument("--serve", default="", help="more options for tidings serve")
    args = p.parse_args()
    args.loadgen = loadgen_binary(args.loadgen)
    with harness.bench_session(args.src):
        server = harness.start_tidings("--allow-guests", *LIMITS, *args.serve.split())
        data_dir = server.data_dir
        assert data_dir is not None
        port = server.url.rsplit(":", 1)[1].split("/")[0]
        argv = ["taskset", "-c", GEN_CORE, args.loadgen, "proto=lime", "scen=p2p"]
        argv += [f"port={port}", "lime_scheme=guest", "payload=300", f"spid={server.pid}"]
        argv += [f"seconds={args.seconds}", "warmup=0", "pairs=100", "window=10", *ACKED]
        samples: list[tuple[float, int]] = []
        started = time.monotonic()
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(args.every):
                samples.append((round(time.monotonic() - started, 1), disk_bytes(data_dir)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=args.seconds + 120)
            stop.set()
            sampler.join()
            result = harness.last_json(done.stdout) or {"error": done.stderr[-2000:]}
            metrics = harness.metrics(server)
            usage = page_usage(data_dir)
            size = disk_bytes(data_dir)
        finally:
            server.stop()
    acked = float(result.get("delivered") or result.get("count") or 0)
    rate = float(result.get("rate") or 0)
    messages = acked or rate * args.seconds
    third = [s for s in samples if s[0] >= args.seconds * 2 / 3]
    growth = None
    if len(third) >= 2 and rate:
        (t0, b0), (t1, b1) = third[0], third[-1]
        growth = (b1 - b0) / 1e6 / ((t1 - t0) * rate / 1e6)
    dedupe_bytes = usage["dedupe_bytes"]
    print(
        json.dumps(
            {
                "src": args.src,
                "serve": args.serve,
                "seconds": args.seconds,
                "rate": rate,
                "messages": messages,
                "lost": result.get("lost"),
                "errors": result.get("errors"),
                "db_mb": round(size / 1e6, 1),
                "db_bytes_per_message": round(size / messages, 1) if messages else None,
                "dedupe_mb": round(dedupe_bytes / 1e6, 1),
                "dedupe_rows": usage["dedupe_rows"],
                "dedupe_bytes_per_row": round(dedupe_bytes / max(1, usage["dedupe_rows"])),
                "queue_mb": round(usage["queue_bytes"] / 1e6, 1),
                "free_mb": round(usage["free_bytes"] / 1e6, 1),
                "growth_mb_per_million_last_third": None if growth is None else round(growth, 1),
                "samples_mb": [(t, round(b / 1e6, 1)) for t, b in samples],
                "ops_per_commit": (
                    metrics["store_operations_total"] / metrics["store_commits_total"]
                    if metrics.get("store_commits_total")
                    else None
                ),
                "loadgen": {k: v for k, v in result.items() if not isinstance(v, (list, dict))},
                "pid": os.getpid(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    harness.run_driver(main)
