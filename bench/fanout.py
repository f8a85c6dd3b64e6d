"""Fan-out load generator: CLIENTS Feedme clients on one feed, a controller triggering bursts.

    python bench/fanout.py --url ws://127.0.0.1:PORT/ [--server-pid PID] [--clients 1000]
        [--procs 2] [--count 10] [--size 100] [--window 2] [--warmup 2] [--duration 5]

Works against Tidings running bench/fanout_app.py and against bench/bare_fanout.py (both speak
the same Feedme subset). The clients are split over PROCS forked worker processes (each its own
uvloop; all of them on whatever cores this process is pinned to). Every client performs the
Feedme handshake and opens feed ``bench``, then counts the ``ActionRevelation`` frames it gets
and checks their ``seq`` runs 1, 2, 3, ... from the feed's opening data (no gap, duplicate,
reordering or other frame). The parent holds one extra control connection (handshake only, no
feed) that calls the action ``burst`` {"count": COUNT, "size": SIZE} in a closed loop: one
action in flight, and a new one only while at most WINDOW bursts' worth of deliveries are
still unreceived across all clients (so the server never buffers more than that).

Every run: connect, WARMUP seconds of bursts, DURATION seconds measured, stop triggering, then
wait up to DRAIN seconds until every client has every revelation the server reported delivered
(anything missing is reported). Bounded: at most MAX_BURSTS actions, and a hard deadline.
Deliveries/s = revelation frames received by all clients per second of the measured window;
server CPU is utime+stime of /proc/PID/stat over that window (as in bench/loadgen.py). One JSON
line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import time
from typing import Any

import common
import msgspec
import uvloop
from common import CLK_TCK, cpu_ticks
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TEXT = WSMsgType.TEXT
PROTOCOL = {"Sec-WebSocket-Protocol": "feedme"}
HANDSHAKE = b'{"MessageType":"Handshake","Versions":["0.1"]}'
FEED_OPEN = b'{"MessageType":"FeedOpen","FeedName":"bench","FeedArgs":{}}'

# shared counters, one row of SLOTS per worker
RECEIVED, BAD, READY, DISCONNECTS, SLOTS = 0, 1, 2, 3, 4


class _Data(msgspec.Struct):
    seq: int = -1


class _Frame(msgspec.Struct):
    MessageType: str = ""
    ActionData: _Data | None = None
    FeedData: _Data | None = None
    Success: bool = True


decode = msgspec.json.Decoder(_Frame).decode


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


# -- workers: the subscribed clients ---------------------------------------------------------


class Worker:
    def __init__(self, index: int, shared: Any, stop: Any) -> None:
        self.index = index
        self.base = index * SLOTS
        self.shared = shared
        self.stop = stop
        self.received = 0
        self.bad = 0
        self.samples: list[str] = []
        self.clients: list[Client] = []

    def anomaly(self, what: str) -> None:
        self.bad += 1
        self.shared[self.base + BAD] = self.bad
        if len(self.samples) < 5:
            self.samples.append(what[:300])


class Client(WSListener):
    def __init__(self, worker: Worker, name: str) -> None:
        super().__init__()
        self.worker = worker
        self.name = name
        self.seq = -1
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stopping = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        transport.send(TEXT, HANDSHAKE)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.stopping:
            w = self.worker
            w.shared[w.base + DISCONNECTS] += 1
            w.anomaly(f"{self.name} disconnected")
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.name} disconnected"))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        data = frame.get_payload_as_bytes()
        w = self.worker
        if self.seq >= 0:  # the feed is open: only revelations are expected
            try:
                seq = decode(data).ActionData.seq  # type: ignore[union-attr]
            except Exception:
                w.anomaly(f"{self.name} unexpected frame: {data[:200]!r}")
                return
            w.received += 1
            w.shared[w.base + RECEIVED] = w.received
            if seq != self.seq + 1:
                w.anomaly(f"{self.name} seq {seq} after {self.seq}")
            self.seq = seq
            return
        message = decode(data)
        if message.MessageType == "HandshakeResponse" and message.Success:
            transport.send(TEXT, FEED_OPEN)
        elif message.MessageType == "FeedOpenResponse" and message.Success and message.FeedData:
            self.seq = message.FeedData.seq
            self.ready.set_result(None)
        elif not self.ready.done():
            self.ready.set_exception(RuntimeError(f"{self.name}: {data[:300]!r}"))


async def worker_main(worker: Worker, url: str, names: list[str], out: Any) -> None:
    async def connect(name: str) -> Client:
        _, client = await ws_connect(
            lambda: Client(worker, name),
            url,
            extra_headers=PROTOCOL,
            websocket_handshake_timeout=20,
        )
        await asyncio.wait_for(client.ready, 20)
        return client

    try:
        for i in range(0, len(names), 100):  # batches: the listen backlog is finite
            worker.clients.extend(await asyncio.gather(*(connect(n) for n in names[i : i + 100])))
    except Exception as exc:
        out.send({"error": f"worker {worker.index}: {type(exc).__name__}: {exc}"})
        return
    worker.shared[worker.base + READY] = len(worker.clients)
    while not worker.stop.value:
        await asyncio.sleep(0.05)
    for c in worker.clients:
        c.stopping = True
    final = worker.stop.value  # the last seq the server reported
    behind = [c.seq for c in worker.clients if c.seq != final]
    out.send(
        {
            "received": worker.received,
            "bad": worker.bad,
            "samples": worker.samples,
            "clients_not_at_final_seq": len(behind),
            "example_behind": behind[:5],
        }
    )


def worker_process(
    index: int, url: str, names: list[str], shared: Any, stop: Any, out: Any
) -> None:
    raise_nofile(len(names) + 200)
    worker = Worker(index, shared, stop)
    uvloop.run(worker_main(worker, url, names, out))
    out.close()
    os._exit(0)


# -- the controller (parent) ---------------------------------------------------------------------


class Control(WSListener):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.waiter: asyncio.Future[Any] = self.loop.create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        transport.send(TEXT, HANDSHAKE)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if not self.waiter.done():
            self.waiter.set_result(json.loads(frame.get_payload_as_bytes()))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(ConnectionError("control connection lost"))

    async def next(self, timeout: float) -> Any:
        message = await asyncio.wait_for(self.waiter, timeout)
        self.waiter = self.loop.create_future()
        return message


def gen_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_ticks(pid)
    return total / CLK_TCK


def spawn_workers(args: argparse.Namespace) -> tuple[Any, list[Any], list[Any]]:
    """Fork the worker processes before any event loop exists in this process."""
    nproc = args.procs
    shared = mp.RawArray("q", nproc * SLOTS)
    args.stop = mp.RawValue("q", 0)
    ctx = mp.get_context("fork")
    names = [f"f{i}" for i in range(args.clients)]
    pipes, procs = [], []
    for w in range(nproc):
        parent_end, child_end = ctx.Pipe(duplex=False)
        p = ctx.Process(
            target=worker_process,
            args=(w, args.url, names[w::nproc], shared, args.stop, child_end),
            daemon=True,
        )
        p.start()
        child_end.close()
        pipes.append(parent_end)
        procs.append(p)
    return shared, pipes, procs


async def control_main(
    args: argparse.Namespace, shared: Any, pipes: list[Any], procs: list[Any]
) -> dict[str, Any]:
    nproc = args.procs
    stop = args.stop

    def total(slot: int) -> int:
        return sum(shared[w * SLOTS + slot] for w in range(nproc))

    t0 = time.perf_counter()
    while total(READY) < args.clients:
        await asyncio.sleep(0.05)
        for w, p in enumerate(procs):
            if not p.is_alive() and shared[w * SLOTS + READY] == 0:
                message = pipes[w].recv() if pipes[w].poll() else {}
                raise RuntimeError(message.get("error", f"worker {w} died"))
        if time.perf_counter() - t0 > 60:
            raise RuntimeError(f"only {total(READY)} of {args.clients} clients ready in 60 s")
    connect_s = time.perf_counter() - t0

    _, control = await ws_connect(Control, args.url, extra_headers=PROTOCOL)
    hello = await control.next(10)
    if not hello.get("Success"):
        raise RuntimeError(f"control handshake: {hello}")

    issued = 0  # deliveries the server reported for the bursts answered so far
    bursts = 0
    last_seq = 0
    short_bursts = 0
    failures: list[Any] = []
    per_burst = args.count * args.clients
    limit = args.window * per_burst
    sending = True
    callback = 0

    async def trigger() -> None:
        nonlocal issued, bursts, last_seq, short_bursts, callback
        while sending and bursts < args.max_bursts:
            while issued - total(RECEIVED) > limit - per_burst:  # window full: wait
                await asyncio.sleep(0.0005)
                if not sending:
                    return
            callback += 1
            action = {
                "MessageType": "Action",
                "ActionName": "burst",
                "ActionArgs": {"count": args.count, "size": args.size},
                "CallbackId": str(callback),
            }
            control.transport.send(TEXT, json.dumps(action).encode())
            reply = await control.next(30)
            if reply.get("MessageType") != "ActionResponse" or not reply.get("Success"):
                failures.append(reply)
                return
            data = reply["ActionData"]
            issued += data["delivered"]
            last_seq = data["seq"]
            bursts += 1
            if data["delivered"] != per_burst:
                short_bursts += 1

    pids = [os.getpid(), *(p.pid for p in procs)]  # type: ignore[misc]
    task = asyncio.get_running_loop().create_task(trigger())
    await asyncio.sleep(args.warmup)

    def snap() -> dict[str, Any]:
        return {
            "t": time.perf_counter(),
            "received": total(RECEIVED),
            **common.server_sample(args.server_pid),
            "gen_cpu": gen_cpu(pids),
            "bursts": bursts,
        }

    # longest gap without any delivery, in 10 ms steps, over the measured window
    a = snap()
    max_gap = 0.0
    last_count, last_change = a["received"], a["t"]
    end = a["t"] + args.duration
    while (now := time.perf_counter()) < end:
        count = total(RECEIVED)
        if count != last_count:
            max_gap = max(max_gap, now - last_change)
            last_count, last_change = count, now
        await asyncio.sleep(0.01)
    b = snap()
    max_gap = max(max_gap, time.perf_counter() - last_change)
    sending = False
    try:
        await asyncio.wait_for(task, 30)
    except TimeoutError:
        failures.append("the last burst got no ActionResponse within 30 s")
    drain_until = time.perf_counter() + args.drain
    while total(RECEIVED) < issued and time.perf_counter() < drain_until:
        await asyncio.sleep(0.02)
    outstanding = issued - total(RECEIVED)

    stop.value = last_seq if last_seq else -1
    reports = []
    for w, pipe in enumerate(pipes):
        if pipe.poll(15):
            reports.append(pipe.recv())
        else:
            reports.append({"error": f"worker {w} did not report"})
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()

    wall = b["t"] - a["t"]
    delivered = b["received"] - a["received"]
    gen_cpu_s = b["gen_cpu"] - a["gen_cpu"]
    samples = [s for r in reports for s in r.get("samples", [])][:5]
    return {
        "mode": "fanout",
        "clients": args.clients,
        "procs": nproc,
        "count": args.count,
        "size": args.size,
        "window": args.window,
        "seconds": round(wall, 3),
        "connect_s": round(connect_s, 2),
        "deliveries_per_s": delivered / wall,
        "bursts_per_s": (b["bursts"] - a["bursts"]) / wall,
        **common.server_load(a, b, wall, args.server_pid, delivered, "delivery"),
        "gen_cpu_pct": 100 * gen_cpu_s / wall,
        "gen_cpu_us_per_delivery": 1e6 * gen_cpu_s / delivered if delivered else None,
        "max_gap_ms": max_gap * 1e3,
        "total_bursts": bursts,
        "total_deliveries_reported": issued,
        "short_bursts": short_bursts,
        "outstanding_after_drain": outstanding,
        "bad_frames": sum(r.get("bad", 0) for r in reports),
        "clients_not_at_final_seq": sum(r.get("clients_not_at_final_seq", 0) for r in reports),
        "disconnects": total(DISCONNECTS),
        "worker_errors": [r["error"] for r in reports if "error" in r],
        "failures": failures[:3],
        "samples": samples,
    }


def main() -> None:
    p = common.generator_parser(__doc__)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--procs", type=int, default=2, help="worker processes for the clients")
    p.add_argument("--count", type=int, default=10, help="revelations per burst action")
    p.add_argument("--size", type=int, default=100, help="bytes of padding per revelation")
    p.add_argument("--window", type=int, default=2, help="bursts' deliveries outstanding, max")
    p.add_argument("--max-bursts", type=int, default=200_000)
    args = p.parse_args()
    raise_nofile(args.clients + 200)
    deadline = args.warmup + args.duration + args.drain + 120
    shared, pipes, procs = spawn_workers(args)
    try:
        work = control_main(args, shared, pipes, procs)
        result = common.run_bounded(work, "fanout", deadline)
    except Exception as exc:
        result = {"mode": "fanout", "error": f"{type(exc).__name__}: {exc}"}
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    common.print_result(result)


if __name__ == "__main__":
    main()
