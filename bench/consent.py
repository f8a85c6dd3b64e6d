"""Consent (issue 10): invite-to-accepted latency, accepts per second, and chat inside a
relationship beside plain LIME messages.

    .venv/bin/python bench/consent.py [--reps 3] [--invites 300] [--accepters 100]
        [--chats 2000] [--concurrency 20] [--src HEAD]

``tidings serve`` pinned to core 0 with a fresh data folder per run; this driver (httpx and the
SDK, pinned to core 1) is the load. Accounts and their API keys are written into the server's
data folder while it runs (as ``tidings account add`` / ``account key`` would).

  distinct   INVITES single-use invites, each created by the requester and accepted by one
             accepter, CONCURRENCY flows at a time: the latency from POST /consent/invites to
             the accept's answer, and accepts per second
  open-link  one open-link invite accepted by ACCEPTERS accounts, CONCURRENCY at a time
  chat       CHATS messages POSTed to /consent/relationships/{id}/chat, CONCURRENCY in flight
  lime       the same number of plain acknowledged LIME messages between the same two
             accounts through the SDK (the baseline a chat is compared with)

Reported: operations per second, latency p50/p99 (distinct), and the server's CPU per
operation (from /proc over the run). Medians of the repetitions.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import harness
import httpx
from common import CLK_TCK, cpu_ticks
from harness import bench_session, run_driver, start_tidings

from tidings.core.accounts import AccountService
from tidings.sdk import Client
from tidings.store.sqlite import SqliteStore

MODES = ("distinct", "open-link", "chat", "lime")
PERMISSIONS = [{"resource": "feed:heart-rate*", "level": "read"}]


async def make_accounts(data_dir: str, names: list[str]) -> dict[str, str]:
    """Each account's API key (a low-cost password: the bench measures consent, not argon2)."""
    store = SqliteStore(Path(data_dir))
    store.open(asyncio.get_running_loop())
    try:
        accounts = AccountService("localhost", store)
        keys = {}
        for name in names:
            await accounts.add(name, "bench-password")
            keys[name] = await accounts.create_key(name, "bench")
        return keys
    finally:
        store.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_invite(http: httpx.AsyncClient, key: str, mode: str) -> str:
    answer = await http.post(
        "/consent/invites",
        headers=bearer(key),
        json={
            "appCode": "bench",
            "displayName": "Bench study",
            "consent": {"en": "Share your heart rate"},
            "requestedPermissions": PERMISSIONS,
            "mode": mode,
        },
    )
    answer.raise_for_status()
    url: str = answer.json()["capabilityUrl"]
    return url


async def accept(http: httpx.AsyncClient, key: str, capability_url: str) -> dict[str, Any]:
    answer = await http.post(capability_url + "/accept", headers=bearer(key), json={})
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


async def bounded(concurrency: int, jobs: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(run(job) for job in jobs))


async def distinct(http: httpx.AsyncClient, keys: dict[str, str], args: Any) -> dict[str, Any]:
    accepters = [name for name in keys if name != "req"]
    latencies: list[float] = []

    async def flow(n: int) -> None:
        started = time.perf_counter()
        url = await create_invite(http, keys["req"], "single-use")
        await accept(http, keys[accepters[n % len(accepters)]], url)
        latencies.append(time.perf_counter() - started)

    begun = time.perf_counter()
    await bounded(args.concurrency, [flow(n) for n in range(args.invites)])
    elapsed = time.perf_counter() - begun
    latencies.sort()
    return {
        "ops": args.invites,
        "rate": args.invites / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


async def open_link(http: httpx.AsyncClient, keys: dict[str, str], args: Any) -> dict[str, Any]:
    url = await create_invite(http, keys["req"], "open-link")
    accepters = [name for name in keys if name != "req"]
    begun = time.perf_counter()
    await bounded(args.concurrency, [accept(http, keys[name], url) for name in accepters])
    elapsed = time.perf_counter() - begun
    return {"ops": len(accepters), "rate": len(accepters) / elapsed}


async def chat(http: httpx.AsyncClient, keys: dict[str, str], args: Any) -> dict[str, Any]:
    relationship = await accept(
        http, keys["a1"], await create_invite(http, keys["req"], "open-link")
    )
    path = f"/consent/relationships/{relationship_id(relationship)}/chat"

    async def say(n: int) -> None:
        answer = await http.post(path, headers=bearer(keys["req"]), json={"text": f"chat {n}"})
        answer.raise_for_status()

    begun = time.perf_counter()
    await bounded(args.concurrency, [say(n) for n in range(args.chats)])
    elapsed = time.perf_counter() - begun
    return {"ops": args.chats, "rate": args.chats / elapsed}


def relationship_id(answer: dict[str, Any]) -> str:
    for key in ("relationshipId", "id"):
        if isinstance(answer.get(key), str):
            return str(answer[key])
    relationship = answer.get("relationship")
    assert isinstance(relationship, dict), answer
    return str(relationship["id"])


async def lime(url: str, server_pid: int, args: Any) -> dict[str, Any]:
    """Measured once both clients are signed in (a sign-in costs an argon2 verify)."""
    async with (
        Client(url, "req@localhost", instance="r", password="bench-password") as sender,
        Client(url, "a1@localhost", instance="a", password="bench-password") as receiver,
    ):
        taken = 0

        async def drain() -> None:
            nonlocal taken
            async for _ in receiver.messages():
                taken += 1
                if taken == args.chats:
                    return

        reader = asyncio.create_task(drain())
        start_cpu = cpu_ticks(server_pid)
        begun = time.perf_counter()
        for n in range(args.chats):
            await sender.send_message("a1@localhost", f"chat {n}", wait=None)
        await asyncio.wait_for(reader, 120)
        elapsed = time.perf_counter() - begun
        server_s = (cpu_ticks(server_pid) - start_cpu) / CLK_TCK
    return {"ops": args.chats, "rate": args.chats / elapsed, "server_s": server_s}


async def one_run(server: harness.Server, mode: str, args: Any) -> dict[str, Any]:
    assert server.data_dir is not None
    names = ["req", *[f"a{n}" for n in range(1, args.accepters + 1)]]
    keys = await make_accounts(server.data_dir, names)
    base = server.match.group(2).rstrip("/")
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        start_cpu = cpu_ticks(server.pid)
        if mode == "distinct":
            result = await distinct(http, keys, args)
        elif mode == "open-link":
            result = await open_link(http, keys, args)
        elif mode == "chat":
            result = await chat(http, keys, args)
        else:
            result = await lime(server.url, server.pid, args)
        server_s = result.pop("server_s", None) or (cpu_ticks(server.pid) - start_cpu) / CLK_TCK
    result["server_us"] = server_s / result["ops"] * 1e6
    result["mode"] = mode
    return result


def main() -> None:
    p = harness.driver_parser(__doc__ or "")
    p.add_argument("--invites", type=int, default=300)
    p.add_argument("--accepters", type=int, default=100)
    p.add_argument("--chats", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--modes", default=",".join(MODES))
    harness.add_output_options(p)
    args = p.parse_args()
    modes = args.modes.split(",")
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    with bench_session(args.src):
        for rep in range(args.reps):
            for mode in modes:
                server = start_tidings()
                try:
                    results[mode].append(asyncio.run(one_run(server, mode, args)))
                finally:
                    server.stop()
            brief = {m: round(r[-1]["rate"]) for m, r in results.items() if r}
            print(f"<!-- repetition {rep + 1}/{args.reps}: {brief} -->", flush=True)
    harness.save(results, args.raw)
    print("| mode | operations/s | p50 / p99 ms | server CPU µs/op |")
    print("|---|---:|---:|---:|")
    for mode, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        cpu = statistics.median(r["server_us"] for r in runs)
        latency = "-"
        if "p50_ms" in runs[0]:
            p50 = statistics.median(r["p50_ms"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            latency = f"{p50:.1f} / {p99:.1f}"
        print(f"| {mode} | {rate:,.0f} | {latency} | {cpu:,.0f} |")


if __name__ == "__main__":
    run_driver(main)
