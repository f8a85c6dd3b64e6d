"""PostgreSQL: psycopg 3 against asyncpg on batched inserts, and a Tidings node's acknowledged
messages on SQLite against PostgreSQL.

    .venv/bin/pip install asyncpg==0.32.0     # or: pip install -e '.[bench]'
    .venv/bin/python bench/pg_driver.py [--reps 3] [--seconds 3] [--node]

Drivers: one throwaway PostgreSQL (``devcluster.services.Postgres``, fsync on), one table of
100-byte rows; for each transaction size (1, 32, 256 rows) each way of inserting runs for
``--seconds`` and reports rows/s and the client's own CPU per row (this process, so the
driver's cost; the server's is the same SQL for every way). Ways:

- ``psycopg execute``: one ``execute`` per row in the transaction (what the store's
  operations do: each needs its own answer, a sequence number or a row count),
- ``psycopg executemany``: one ``executemany`` per transaction (pipelined by psycopg),
- ``asyncpg execute`` / ``asyncpg executemany``: the same with asyncpg.

``--node``: the ``acked`` load of bench/run.py against ``tidings serve`` on SQLite and on
PostgreSQL (a fresh database per run), one after the other in each repetition; PostgreSQL's
CPU (all its processes) is read over the generator's whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import harness
import psycopg

from tidings.devcluster.services import Postgres

SIZES = (1, 32, 256)
PAYLOAD = os.urandom(100)
TABLE = "CREATE TABLE IF NOT EXISTS rows (id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)"
INSERT_PG = "INSERT INTO rows (payload) VALUES (%s)"
INSERT_APG = "INSERT INTO rows (payload) VALUES ($1)"


def timed(seconds: float, batch: Callable[[], None], size: int) -> tuple[float, float]:
    """(rows/s, client CPU us per row) of calling ``batch`` for ``seconds``."""
    rows = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch()
        rows += size
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return rows / elapsed, cpu / rows * 1e6


def psycopg_ways(url: str, size: int, seconds: float) -> dict[str, tuple[float, float]]:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(TABLE)
        rows = [(PAYLOAD,)] * size

        def each() -> None:
            with connection.transaction():
                for row in rows:
                    connection.execute(INSERT_PG, row)

        def many() -> None:
            with connection.transaction(), connection.cursor() as cursor:
                cursor.executemany(INSERT_PG, rows)

        return {
            "psycopg execute": timed(seconds, each, size),
            "psycopg executemany": timed(seconds, many, size),
        }


async def asyncpg_ways(url: str, size: int, seconds: float) -> dict[str, tuple[float, float]]:
    import asyncpg  # the bench extra only

    connection = await asyncpg.connect(url)
    rows = [(PAYLOAD,)] * size
    out: dict[str, tuple[float, float]] = {}
    try:
        for name, many in (("asyncpg execute", False), ("asyncpg executemany", True)):
            done = 0
            cpu0, t0 = time.process_time(), time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                async with connection.transaction():
                    if many:
                        await connection.executemany(INSERT_APG, rows)
                    else:
                        for row in rows:
                            await connection.execute(INSERT_APG, *row)
                done += size
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            out[name] = (done / elapsed, cpu / done * 1e6)
    finally:
        await connection.close()
    return out


def drivers(server: Postgres, reps: int, seconds: float) -> str:
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for rep in range(reps):
        for size in SIZES:
            url = harness.fresh_database(server, f"drivers_{rep}_{size}")
            for way, figures in {
                **psycopg_ways(url, size, seconds),
                **asyncio.run(asyncpg_ways(url, size, seconds)),
            }.items():
                results.setdefault((way, size), []).append(figures)
        print(f"<!-- drivers, repetition {rep + 1}/{reps} done -->", flush=True)
    lines = [
        f"Rows of 100 bytes inserted per second (client CPU us per row), medians of {reps}:",
        "",
        "| way | " + " | ".join(f"{size} row(s) per transaction" for size in SIZES) + " |",
        "|---|" + "---:|" * len(SIZES),
    ]
    ways = sorted({way for way, _ in results}, key=lambda w: (w.split()[1], w))
    for way in ways:
        cells = []
        for size in SIZES:
            runs = results[(way, size)]
            rate = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            cells.append(f"{rate:,.0f} ({cpu:.1f})")
        lines.append(f"| {way} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def node(server: Postgres, args: argparse.Namespace) -> str:
    results: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgresql": []}
    pg_share: list[float] = []
    assert server.process is not None
    postmaster = server.process.pid
    for rep in range(args.reps):
        for store in results:
            options = ["--allow-guests"]
            if store == "postgresql":
                options += ["--store", harness.fresh_database(server, f"node_{rep}")]
            tidings = harness.start_tidings(*options)
            argv = harness.pairs_generator(
                "loadgen.py", tidings, args, "acked", "--window", str(args.acked_window)
            )
            cpu0, t0 = harness.tree_cpu_s(postmaster), time.perf_counter()
            result = harness.measure(tidings, argv, "acked", args.warmup + args.duration + 90, True)
            if store == "postgresql":
                cpu = harness.tree_cpu_s(postmaster) - cpu0
                pg_share.append(100 * cpu / (time.perf_counter() - t0))
            results[store].append(result)
        print(f"<!-- node, repetition {rep + 1}/{args.reps} done -->", flush=True)
    lines = [
        f"Acknowledged messages, {args.pairs} pairs, {args.size}-byte content, window "
        f"{args.acked_window}, {args.warmup:g} s warmup + {args.duration:g} s measured; medians "
        f"of {args.reps} (min-max):",
        "",
        *harness.table_head(
            "store",
            "msg/s",
            "server CPU % (waiting %)",
            "server CPU us/msg",
            "msg/s per server CPU-s",
            "p50 / p99 send->accepted (ms)",
            "ops per commit",
            "PostgreSQL CPU % (whole run)",
        ),
    ]
    for store, runs in results.items():
        per = harness.ops_per_commit(runs)
        lines.append(
            harness.md_row(
                store,
                harness.spread(runs, "msgs_per_s"),
                harness.server_cpu(runs),
                harness.fmt(harness.med(runs, "server_cpu_us_per_msg"), 1),
                harness.fmt(
                    1e6 / us if (us := harness.med(runs, "server_cpu_us_per_msg")) else None
                ),
                harness.latency(runs),
                "-" if per is None else f"{per:.0f}",
                f"{statistics.median(pg_share):.0f}" if store == "postgresql" and pg_share else "-",
            )
        )
    problems = harness.problems(results, harness.ANOMALY_COUNTS, {"server_log": "server_log"})
    lines += ["", "Anomalies: " + ("; ".join(problems) if problems else "none")]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = harness.driver_parser(__doc__)
    p.add_argument("--seconds", type=float, default=3.0, help="drivers: seconds per way")
    p.add_argument("--node", action="store_true", help="also the Tidings node comparison")
    p.add_argument("--no-drivers", action="store_true", help="skip the driver comparison")
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--size", type=int, default=300, help="bytes of message content")
    p.add_argument("--acked-window", type=int, default=8)
    harness.add_output_options(p)
    args = p.parse_args()
    server = Postgres().start()
    try:
        with harness.bench_session(args.src):
            if not args.no_drivers:
                print(drivers(server, args.reps, args.seconds))
            if args.node:
                print(node(server, args))
    finally:
        server.stop()


if __name__ == "__main__":
    harness.run_driver(main)
