"""Peer messages: direct node-to-node links beside the same traffic relayed through the server
as sealed messages (issue 12).

    .venv/bin/python bench/peer.py [--reps 3] [--count 2000] [--latency-count 300] [--size 1024]
        [--src HEAD]

Two ``Platform`` nodes (alice sends, bob receives), both in this driver process (pinned to
core 1); ``tidings serve`` pinned to core 0 with a fresh data folder per run, used by both
modes as key directory (and by ``server`` as relay). Payloads are ``bt`` bytes of SIZE.

  direct   bob listens on loopback: the messages go over the Noise link
  server   bob does not listen: the messages are sealed for bob's key and relayed

Each run measures two things:
  rate     COUNT messages sent at once; until bob took them all and alice's outbox is empty
           (every message durably in the outbox, acknowledged, removed) -> messages/s
  latency  LATENCY_COUNT messages one at a time: send -> published on bob's bus, p50 / p99
Medians of the repetitions; modes alternate within each repetition.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from harness import bench_session, run_driver, start_tidings

from tidings.sdk import Platform

MODES = ("direct", "server")


def node(url: str, folder: Path, name: str, *, listen: bool) -> Platform:
    return Platform(
        f"{name}@localhost",
        instance="bench",
        data_dir=folder / name,
        key_dir=folder / "keys",
        server=url,
        guest=True,
        listen=("127.0.0.1", 0) if listen else None,
        seed_circles=False,
        client_options={"directory_ttl": 3600, "max_in_flight": 4096},
    )


async def one_run(url: str, mode: str, count: int, latency_count: int, size: int) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        async with (
            node(url, Path(folder), "bob", listen=mode == "direct") as bob,
            node(url, Path(folder), "alice", listen=False) as alice,
        ):
            arrived: dict[int, float] = {}
            everything = asyncio.Event()
            wanted = [count]

            def take(topic: str, sender: str, payload: bytes) -> None:
                arrived[int.from_bytes(payload[:8], "big")] = time.perf_counter()
                if len(arrived) >= wanted[0]:
                    everything.set()

            bob.torrenting.on("*.b", take)
            filler = b"x" * (size - 8)
            warm = await alice.torrenting.send(
                "b", bob.sign_id, (10**9).to_bytes(8, "big") + filler
            )
            assert warm.path == mode, f"{mode}: went {warm.path}"
            arrived.clear()

            start = time.perf_counter()
            for n in range(count):
                alice.torrenting.send("b", bob.sign_id, n.to_bytes(8, "big") + filler)
            await asyncio.wait_for(everything.wait(), 300)
            await alice.wait_sent()
            rate = count / (time.perf_counter() - start)

            arrived.clear()
            everything.clear()
            latencies = []
            for n in range(latency_count):
                wanted[0] = n + 1
                sent = time.perf_counter()
                alice.torrenting.send("b", bob.sign_id, n.to_bytes(8, "big") + filler)
                await asyncio.wait_for(everything.wait(), 30)
                everything.clear()
                latencies.append((arrived[n] - sent) * 1000)
            await alice.wait_sent()
    latencies.sort()
    return {
        "mode": mode,
        "rate": rate,
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def main() -> None:
    p = harness.driver_parser(__doc__ or "")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--latency-count", type=int, default=300)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--modes", default=",".join(MODES))
    harness.add_output_options(p)
    args = p.parse_args()
    modes = args.modes.split(",")
    results: dict[str, list[Any]] = {mode: [] for mode in modes}
    with bench_session(args.src):
        for rep in range(args.reps):
            for mode in modes:
                server = start_tidings("--allow-guests")
                try:
                    run = one_run(server.url, mode, args.count, args.latency_count, args.size)
                    results[mode].append(asyncio.run(run))
                finally:
                    server.stop()
            brief = {m: round(r[-1]["rate"]) for m, r in results.items() if r}
            print(f"<!-- repetition {rep + 1}/{args.reps}: {brief} -->", flush=True)
    harness.save(results, args.raw)
    print("| path | messages/s | latency p50 ms | latency p99 ms |")
    print("|---|---:|---:|---:|")
    for mode, runs in results.items():
        cells = [statistics.median(r[k] for r in runs) for k in ("rate", "p50_ms", "p99_ms")]
        print(f"| {mode} | {cells[0]:,.0f} | {cells[1]:.2f} | {cells[2]:.2f} |")
    if "direct" in results and "server" in results:
        ratio = statistics.median(r["rate"] for r in results["direct"]) / statistics.median(
            r["rate"] for r in results["server"]
        )
        print(f"\ndirect/server rate: {ratio:.2f}")


if __name__ == "__main__":
    run_driver(main)
