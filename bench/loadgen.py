"""Load generator for the Tidings benchmarks (Python + picows + uvloop, meant for its own core).

Modes (one per process run; results are one JSON line on stdout):

  echo   2*PAIRS connections to a bare echo server (bench/bare_echo.py); each keeps WINDOW
         frames in flight and sends the same frame the ``ff`` senders send.
  ff     PAIRS guest sender/receiver LIME sessions; senders send messages without an id
         (fire-and-forget); each pair keeps WINDOW messages in flight: a message received by
         the receiver lets its sender send the next one (closed loop, pipelined).
  acked  as ``ff`` but messages carry an id; senders set /receipt to [accepted]; receivers
         answer every message with a ``received`` notification. A message is complete when its
         sender saw both ``accepted`` and the forwarded ``received``; each pair keeps WINDOW
         incomplete messages in flight. Latency is send -> ``accepted``.
  paced  ``acked`` at a fixed total RATE (messages/s, spread round-robin over the senders by a
         1 ms ticker) instead of a window; reports latency at that offered load.

Every run: connect and establish, WARMUP seconds of load, DURATION seconds measured, then the
senders stop and the generator waits up to DRAIN seconds for what is still in flight (anything
left is reported as outstanding). Sending stops for good after MAX_MESSAGES messages, and the
process exits by itself past a hard deadline. If --server-pid is given, the server's CPU time
(utime+stime of /proc/PID/stat, all threads) is read at the start and the end of the measured
window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import common
import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TEXT = WSMsgType.TEXT
now_ns = time.perf_counter_ns


class Envelope(msgspec.Struct):
    """The few fields the generator looks at; everything else in a frame is skipped."""

    id: str = ""
    from_: str = msgspec.field(default="", name="from")
    event: str = ""
    state: str = ""
    status: str = ""
    content: str = ""


decode = msgspec.json.Decoder(Envelope).decode


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


class Gen:
    """Counters and run state shared by every connection."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode = args.mode
        self.sending = False
        self.measuring = False
        self.sent = 0
        self.max_messages = args.max_messages
        self.completed = 0
        self.frames_in = 0
        self.frames_out = 0
        self.latencies: list[int] = []
        self.failed = 0
        self.unexpected = 0
        self.samples: list[str] = []
        self.disconnects = 0
        self.stopping = False
        self.last_done = 0.0
        self.max_stall = 0.0
        self.content = ("x" * args.size).encode()

    def take(self) -> bool:
        """Whether a sender may send one more message (then counted as sent): the run is still
        sending and under its cap."""
        if self.sending and self.sent < self.max_messages:
            self.sent += 1
            self.frames_out += 1
            return True
        return False

    def done(self) -> None:
        """One more message completed: count it, track the longest gap between completions."""
        self.completed += 1
        if self.measuring:
            t = time.perf_counter()
            if t - self.last_done > self.max_stall:
                self.max_stall = t - self.last_done
            self.last_done = t

    def anomaly(self, what: str, payload: bytes | str = b"") -> None:
        self.unexpected += 1
        if len(self.samples) < 8:
            text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
            self.samples.append(f"{what}: {text[:300]}")


class Conn(WSListener):
    def __init__(self, gen: Gen, name: str) -> None:
        super().__init__()
        self.gen = gen
        self.name = name
        self.node = f"{name}@localhost/b"
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.handler = self._establishing
        self.peer: Conn | None = None
        # sender state
        self.inflight = 0
        self.seq = 0
        self.pending: dict[str, list[int]] = {}
        self.head = b""
        self.tail = b""

    # picows callbacks
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.gen.mode == "echo":
            self.ready.set_result(None)
        else:
            transport.send(TEXT, b'{"state":"new"}')

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.gen.stopping:
            self.gen.disconnects += 1
            self.gen.anomaly(f"{self.name} disconnected")
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.name} disconnected"))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not TEXT:
            self.gen.anomaly(
                f"{self.name} got {frame.msg_type.name} frame", frame.get_payload_as_bytes()
            )
            return
        self.handler(frame.get_payload_as_bytes())

    # session establishment and /receipt
    def _establishing(self, data: bytes) -> None:
        env = json.loads(data)
        state = env.get("state")
        assert self.transport is not None
        if state == "authenticating" and "schemeOptions" in env:
            auth = {
                "id": env["id"],
                "state": "authenticating",
                "from": self.node,
                "scheme": "guest",
                "authentication": {"scheme": "guest"},
            }
            self.transport.send(TEXT, json.dumps(auth).encode())
        elif state == "established":
            self.handler = self._idle
            self.ready.set_result(None)
        else:
            self.ready.set_exception(RuntimeError(f"{self.name}: {data[:300]!r}"))

    def set_receipt(self) -> None:
        assert self.transport is not None
        self.ready = asyncio.get_running_loop().create_future()
        self.handler = self._receipt
        self.transport.send(
            TEXT,
            b'{"id":"r","method":"set","uri":"/receipt",'
            b'"type":"application/vnd.lime.receipt+json","resource":{"events":["accepted"]}}',
        )

    def _receipt(self, data: bytes) -> None:
        env = decode(data)
        if env.id == "r" and env.status:
            self.handler = self._idle
            if env.status == "success":
                self.ready.set_result(None)
            else:
                self.ready.set_exception(RuntimeError(f"/receipt: {data[:300]!r}"))

    def _idle(self, data: bytes) -> None:
        self.gen.frames_in += 1
        self.gen.anomaly(f"{self.name} unexpected", data)

    # echo and fire-and-forget: the same frame again and again, WINDOW of them in flight
    def _send_window(self, frame: bytes) -> None:
        self.frame = frame
        for _ in range(self.gen.args.window):
            self._send_frame()

    def _send_frame(self) -> None:
        if self.gen.take():
            self.inflight += 1
            self.transport.send(TEXT, self.frame)  # type: ignore[union-attr]

    def echo_start(self, frame: bytes) -> None:
        self.handler = self._echo
        self._send_window(frame)

    def _echo(self, data: bytes) -> None:
        gen = self.gen
        gen.frames_in += 1
        gen.done()
        self.inflight -= 1
        self._send_frame()

    # fire-and-forget (self is the sender; peer the receiver)
    def ff_start(self) -> None:
        peer = self.peer
        assert peer is not None
        peer.handler = peer._ff_received
        self._send_window(
            b'{"to":"'
            + peer.node.encode()
            + b'","type":"text/plain","content":"'
            + self.gen.content
            + b'"}'
        )

    def _ff_received(self, data: bytes) -> None:  # runs on the receiver
        gen = self.gen
        gen.frames_in += 1
        sender = self.peer
        assert sender is not None
        if b'"content"' not in data:
            gen.anomaly(f"{self.name} unexpected", data)
            return
        gen.done()
        sender.inflight -= 1
        sender._send_frame()

    # acknowledged (self is the sender; peer the receiver)
    def acked_start(self, paced: bool) -> None:
        peer = self.peer
        assert peer is not None
        self.head = b'{"id":"'
        self.tail = (
            b'","to":"'
            + peer.node.encode()
            + b'","type":"text/plain","content":"'
            + self.gen.content
            + b'"}'
        )
        self.prefix = self.name + "-"
        self.handler = self._acked_notified
        self.paced = paced
        peer.handler = peer._acked_received
        if not paced:
            for _ in range(self.gen.args.window):
                self.acked_send()

    def acked_send(self) -> None:
        if self.gen.take():
            self.seq += 1
            mid = self.prefix + str(self.seq)
            self.inflight += 1
            self.pending[mid] = [now_ns(), 0]
            self.transport.send(TEXT, self.message(mid))  # type: ignore[union-attr]

    def message(self, mid: str) -> bytes:
        """The frame of message ``mid`` to the peer."""
        return self.head + mid.encode() + self.tail

    def _acked_notified(self, data: bytes) -> None:  # sender side
        gen = self.gen
        gen.frames_in += 1
        env = decode(data)
        rec = self.pending.get(env.id)
        if rec is None:
            gen.anomaly(f"{self.name} notification for unknown id", data)
            return
        event = env.event
        if event == "accepted":
            if rec[1] & 1:
                gen.anomaly(f"{self.name} duplicate accepted", data)
                return
            rec[1] |= 1
            if gen.measuring:
                gen.latencies.append(now_ns() - rec[0])
        elif event == "received":
            if rec[1] & 2:
                gen.anomaly(f"{self.name} duplicate received", data)
                return
            rec[1] |= 2
        elif event == "failed":
            gen.failed += 1
            gen.anomaly(f"{self.name} failed", data)
            rec[1] = 3
        else:
            gen.anomaly(f"{self.name} unexpected", data)
            return
        if rec[1] == 3:
            del self.pending[env.id]
            self.inflight -= 1
            gen.done()
            if not self.paced:
                self.acked_send()

    def _acked_received(self, data: bytes) -> None:  # receiver side
        gen = self.gen
        gen.frames_in += 1
        env = decode(data)
        if not env.id or not env.content:
            gen.anomaly(f"{self.name} unexpected", data)
            return
        gen.frames_out += 1
        self.transport.send(  # type: ignore[union-attr]
            TEXT,
            b'{"id":"'
            + env.id.encode()
            + b'","to":"'
            + env.from_.encode()
            + b'","event":"received"}',
        )


def snapshot(gen: Gen, pid: int | None) -> dict[str, Any]:
    return {
        "t": time.perf_counter(),
        "completed": gen.completed,
        "sent": gen.sent,
        "frames_in": gen.frames_in,
        "frames_out": gen.frames_out,
        **common.server_sample(pid),
        "own_cpu": own_cpu(),
        "own_wait_ns": common.sched_wait_ns(os.getpid()),
    }


def pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))] / 1e6  # ms


async def run(args: argparse.Namespace, conn_class: type[Conn] = Conn) -> dict[str, Any]:
    """One run of ``args.mode``, every connection a ``conn_class``; the result line's fields."""
    loop = asyncio.get_running_loop()
    gen = Gen(args)
    mode = args.mode

    async def connect(name: str) -> Conn:
        _, conn = await ws_connect(
            lambda: conn_class(gen, name),
            args.url,
            extra_headers={"Sec-WebSocket-Protocol": "lime"},
            websocket_handshake_timeout=10,
        )
        await asyncio.wait_for(conn.ready, 10)
        return conn

    if mode == "echo":
        conns = await asyncio.gather(*(connect(f"e{i}") for i in range(2 * args.pairs)))
        senders: list[Conn] = list(conns)
    else:
        receivers = await asyncio.gather(*(connect(f"r{i}") for i in range(args.pairs)))
        senders = await asyncio.gather(*(connect(f"s{i}") for i in range(args.pairs)))
        for s, r in zip(senders, receivers, strict=False):
            s.peer, r.peer = r, s
        if mode in ("acked", "paced"):
            for s in senders:
                s.set_receipt()
            await asyncio.wait_for(asyncio.gather(*(s.ready for s in senders)), 10)

    # per-100 ms completion counts, to spot stalls
    buckets: list[int] = []
    last = [0]

    def bucket() -> None:
        if gen.measuring:
            buckets.append(gen.completed - last[0])
        last[0] = gen.completed
        if not gen.stopping:
            loop.call_later(0.1, bucket)

    gen.sending = True
    start = time.perf_counter()
    if mode == "echo":
        frame = b'{"to":"r0@localhost/b","type":"text/plain","content":"' + gen.content + b'"}'
        for c in senders:
            c.echo_start(frame)
    elif mode == "ff":
        for s in senders:
            s.ff_start()
    else:
        for s in senders:
            s.acked_start(paced=mode == "paced")

    if mode == "paced":
        rate = args.rate
        cap = args.window_cap
        state = {"rr": 0, "skipped": 0, "offered": 0}

        def tick() -> None:
            if not gen.sending:
                return
            due = int((time.perf_counter() - start) * rate) - state["offered"]
            n = len(senders)
            for _ in range(due):
                s = senders[state["rr"]]
                state["rr"] = (state["rr"] + 1) % n
                state["offered"] += 1
                if s.inflight >= cap:
                    state["skipped"] += 1
                else:
                    s.acked_send()
            loop.call_later(0.001, tick)

        tick()

    await asyncio.sleep(args.warmup)
    gen.latencies.clear()
    a = snapshot(gen, args.server_pid)
    gen.measuring = True
    gen.last_done = a["t"]
    last[0] = gen.completed
    loop.call_later(0.1, bucket)
    await asyncio.sleep(args.duration)
    b = snapshot(gen, args.server_pid)
    gen.measuring = False
    gen.sending = False

    # drain: everything in flight should still complete
    drain_until = time.perf_counter() + args.drain
    while time.perf_counter() < drain_until:
        inflight = sum(s.inflight for s in senders)
        if inflight == 0:
            break
        await asyncio.sleep(0.02)
    outstanding = sum(s.inflight for s in senders)
    gen.stopping = True

    wall = b["t"] - a["t"]
    done = b["completed"] - a["completed"]
    frames = (b["frames_in"] - a["frames_in"]) + (b["frames_out"] - a["frames_out"])
    result: dict[str, Any] = {
        "mode": mode,
        "pairs": args.pairs,
        "window": args.window if mode != "paced" else None,
        "size": args.size,
        "seconds": round(wall, 3),
        "msgs_per_s": done / wall,
        "frames_per_s": frames / wall,
        "sent_per_s": (b["sent"] - a["sent"]) / wall,
        **common.server_load(a, b, wall, args.server_pid, done, "msg"),
        "gen_cpu_pct": 100 * (b["own_cpu"] - a["own_cpu"]) / wall,
        "gen_wait_pct": (b["own_wait_ns"] - a["own_wait_ns"]) / wall / 1e7,
        "max_stall_ms": gen.max_stall * 1e3,
        "p50_ms": pct(gen.latencies, 0.50),
        "p99_ms": pct(gen.latencies, 0.99),
        "latency_samples": len(gen.latencies),
        "min_100ms_bucket_per_s": 10 * min(buckets) if buckets else None,
        "zero_buckets": sum(1 for x in buckets if x == 0),
        "failed_notifications": gen.failed,
        "anomalies": gen.unexpected,
        "anomaly_samples": gen.samples,
        "disconnects": gen.disconnects,
        "outstanding_after_drain": outstanding,
        "total_sent": gen.sent,
    }
    if mode == "paced":
        result["rate"] = args.rate
        result["skipped_at_cap"] = state["skipped"]
    return result


def pairs_parser(doc: str, window_help: str) -> argparse.ArgumentParser:
    """The options of the generators of sender/receiver pairs (this one and persistgen.py)."""
    p = common.generator_parser(doc)
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--size", type=int, default=300, help="bytes of message content")
    p.add_argument("--window", type=int, default=8, help=window_help)
    p.add_argument("--max-messages", type=int, default=10_000_000)
    return p


def main() -> None:
    p = pairs_parser(__doc__, "messages in flight per pair")
    p.add_argument("mode", choices=["echo", "ff", "acked", "paced"])
    p.add_argument("--rate", type=float, default=0.0, help="paced: total messages/s")
    p.add_argument("--window-cap", type=int, default=1000, help="paced: per-pair in-flight cap")
    args = p.parse_args()
    if args.mode == "paced" and args.rate <= 0:
        p.error("paced needs --rate")
    deadline = args.warmup + args.duration + args.drain + 40
    common.print_result(common.run_bounded(run(args), args.mode, deadline))


if __name__ == "__main__":
    main()
