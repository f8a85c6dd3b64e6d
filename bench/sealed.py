"""Sealed (end-to-end) messages beside plain acknowledged ones of the same wire size (issue 9).

    .venv/bin/python bench/sealed.py [--reps 3] [--count 2000] [--size 300] [--window 100]
        [--src HEAD]

One sender node and DEVICES receiving nodes of one identity (1 and 3), all SDK clients in this
driver process (pinned to core 1); ``tidings serve`` pinned to core 0 with a fresh data folder
per run. Each run sends COUNT messages with at most WINDOW unaccepted (``send_message`` /
``send_sealed`` with ``wait=None``) and ends when every device has taken (and acknowledged)
every message: encrypt, route with receipts, store, deliver, decrypt.

  sealedN   ``send_sealed`` of SIZE characters of text: sealed for N devices, opened by each
  plainN    ``send_message`` of a text whose JSON is as long as the sealed content would be,
            paced at the rate sealedN reached in the same repetition: the server's cost per
            message grows when messages stop arriving in batches (DESIGN.md section 4), so
            sealed and plain are compared at the same offered rate
  fullN     the same plain messages as fast as the window lets (the throughput baseline)

Reported per message: wall rate, the server's CPU (from /proc over the run; the server does no
per-message crypto, so sealed should cost what plain does for the same bytes), and this
process's CPU (the SDK: sealing, opening, and the rest of the client work, for 1 + N nodes).
Medians of the repetitions; modes alternate within each repetition.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import msgspec
from common import CLK_TCK, cpu_ticks
from harness import bench_session, run_driver, start_tidings

from tidings.protocol.e2e import NodeKeys, seal
from tidings.sdk import Client

MODES = ("sealed1", "plain1", "full1", "sealed3", "plain3", "full3")


async def one_run(
    url: str,
    server_pid: int,
    mode: str,
    count: int,
    size: int,
    window: int,
    keys: Path,
    pace: float | None,
) -> Any:
    devices = int(mode[-1])
    sealed = mode.startswith("sealed")
    text = "x" * size
    async with contextlib.AsyncExitStack() as stack:

        def client(name: str, instance: str) -> Client:
            return Client(
                url, f"{name}@localhost", instance=instance, guest=True, key_dir=keys,
                max_in_flight=window, directory_ttl=3600,
            )  # fmt: skip

        receivers = [
            await stack.enter_async_context(client("bob", f"b{n}")) for n in range(devices)
        ]
        sender = await stack.enter_async_context(client("alice", "a1"))
        if not sealed:
            text = "x" * _sealed_length(size, devices)  # the same bytes on the wire
        taken = [0] * devices

        async def drain(n: int, device: Client) -> None:
            async for _ in device.messages():
                taken[n] += 1
                if taken[n] == count:
                    return

        start_server, start_cpu, start = cpu_ticks(server_pid), time.process_time(), time.time()
        readers = [asyncio.create_task(drain(n, d)) for n, d in enumerate(receivers)]
        send = sender.send_sealed if sealed else sender.send_message
        for n in range(count):
            await send("bob@localhost", text, wait=None)
            if pace is not None:  # one message at a time, as sealing spaces them
                await asyncio.sleep(max(0.0, start + (n + 1) / pace - time.time()))
        await asyncio.wait_for(asyncio.gather(*readers), 300)
        elapsed = time.time() - start
        server_s = (cpu_ticks(server_pid) - start_server) / CLK_TCK
        client_s = time.process_time() - start_cpu
    return {
        "mode": mode,
        "rate": count / elapsed,
        "server_us": server_s / count * 1e6,
        "sdk_us": client_s / count * 1e6,
    }


def _sealed_length(size: int, devices: int) -> int:
    """Characters of plain text whose JSON is as long as a sealed content of ``size``."""
    keys = NodeKeys.generate()
    boxes = [NodeKeys.generate().box_id for _ in range(devices)]
    document = seal(
        keys, message_id="00000000-0000-0000-0000-000000000000", sender="alice@localhost/a1",
        to="bob@localhost", content_type="text/plain", content="x" * size, recipients=boxes,
    )  # fmt: skip
    return len(msgspec.json.encode(document)) - 2  # the quotes of a JSON string


def main() -> None:
    p = harness.driver_parser(__doc__ or "")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--size", type=int, default=300)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--modes", default=",".join(MODES))
    harness.add_output_options(p)
    args = p.parse_args()
    modes = args.modes.split(",")
    results: dict[str, list[Any]] = {mode: [] for mode in modes}
    with bench_session(args.src):
        for rep in range(args.reps):
            for mode in modes:
                sealed_runs = results.get("sealed" + mode[-1], [])
                pace = sealed_runs[-1]["rate"] if mode.startswith("plain") and sealed_runs else None
                server = start_tidings("--allow-guests")
                try:
                    with tempfile.TemporaryDirectory() as keys:
                        run = one_run(
                            server.url, server.pid, mode, args.count, args.size, args.window,
                            Path(keys), pace,
                        )  # fmt: skip
                        result = asyncio.run(run)
                finally:
                    server.stop()
                results[mode].append(result)
            brief = {m: round(r[-1]["rate"]) for m, r in results.items() if r}
            print(f"<!-- repetition {rep + 1}/{args.reps}: {brief} -->", flush=True)
    harness.save(results, args.raw)
    print("| mode | messages/s | server CPU µs/msg | SDK CPU µs/msg (all nodes) |")
    print("|---|---:|---:|---:|")
    for mode, runs in results.items():
        cells = [statistics.median(r[k] for r in runs) for k in ("rate", "server_us", "sdk_us")]
        print(f"| {mode} | {cells[0]:,.0f} | {cells[1]:,.1f} | {cells[2]:,.1f} |")
    for devices in ("1", "3"):
        plain, sealed = results.get(f"plain{devices}"), results.get(f"sealed{devices}")
        if plain and sealed:
            ratio = statistics.median(r["server_us"] for r in sealed) / statistics.median(
                r["server_us"] for r in plain
            )
            print(f"\nserver CPU sealed/plain, {devices} device(s): {ratio:.2f}")


if __name__ == "__main__":
    run_driver(main)
