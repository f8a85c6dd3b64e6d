"""What the processes under load share: the load generators and the bare baseline servers.

- measuring a process: its CPU ticks and CPU wait from /proc (generators read the server's);
- every script: a parser whose help is the script's docstring;
- load generators: the options they all take, a hard deadline, the one JSON result line;
- bare baseline servers: the subprotocol answer and the ``ready`` line the drivers wait for.

The drivers' side (servers, generators, profiles, reports) is bench/harness.py. Both are
imported by sibling name (``import common``): the scripts run as ``python bench/NAME.py``, which
puts bench/ on ``sys.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

import uvloop
from picows import (
    WSListener,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")

Result = dict[str, Any]

# -- measuring a process ---------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def sched_wait_ns(pid: int) -> int:
    """Time the process's threads spent runnable but waiting for a CPU (/proc schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[1])
        except OSError:
            pass
    return total


def server_sample(pid: int | None) -> dict[str, int]:
    """The server's CPU ticks and CPU wait so far (zeros without a pid): one end of a window."""
    return {
        "server_ticks": cpu_ticks(pid) if pid else 0,
        "server_wait_ns": sched_wait_ns(pid) if pid else 0,
    }


def server_load(
    a: dict[str, Any], b: dict[str, Any], wall: float, pid: int | None, work: int, unit: str
) -> dict[str, float | None]:
    """The server's CPU between two samples: % of a core, us per unit of work, % waiting for a
    CPU (None without a pid)."""
    cpu = (b["server_ticks"] - a["server_ticks"]) / CLK_TCK
    return {
        "server_cpu_pct": 100 * cpu / wall if pid else None,
        f"server_cpu_us_per_{unit}": 1e6 * cpu / work if pid and work else None,
        "server_wait_pct": (b["server_wait_ns"] - a["server_wait_ns"]) / wall / 1e7
        if pid
        else None,
    }


# -- every script ----------------------------------------------------------------------------------


def parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose ``--help`` is the script's docstring, line breaks kept."""
    return argparse.ArgumentParser(
        description=doc.splitlines()[0],
        epilog=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_phases(p: argparse.ArgumentParser) -> None:
    """--warmup and --duration: load before the measured window, and the window itself."""
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=5.0)


# -- load generators -------------------------------------------------------------------------------


def generator_parser(doc: str) -> argparse.ArgumentParser:
    """The options every load generator takes: the server, its pid (for its CPU), the phases."""
    p = parser(doc)
    p.add_argument("--url", required=True)
    p.add_argument("--server-pid", type=int, default=None)
    add_phases(p)
    p.add_argument("--drain", type=float, default=5.0)
    return p


def run_bounded(work: Coroutine[Any, Any, Result], mode: str, seconds: float) -> Result:
    """Run a generator on uvloop; past ``seconds`` print an error result and exit 3, so that a
    stuck generator never hangs its driver."""

    def overdue() -> None:
        print(json.dumps({"mode": mode, "error": "hard deadline passed"}), flush=True)
        os._exit(3)

    async def guarded() -> Result:
        asyncio.get_running_loop().call_later(seconds, overdue)
        return await work

    return uvloop.run(guarded())


def print_result(result: Result) -> NoReturn:
    """Print the generator's one JSON line and exit without closing hundreds of connections."""
    print(json.dumps(result), flush=True)
    os._exit(0)


# -- bare baseline servers -------------------------------------------------------------------------


def server_parser(doc: str) -> argparse.ArgumentParser:
    """--host and --port (0: any free port, reported on the ready line)."""
    p = parser(doc)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    return p


def accept_as(
    protocol: str, listener: Callable[[], WSListener]
) -> Callable[[WSUpgradeRequest], WSUpgradeResponseWithListener]:
    """An upgrade handler that agrees to ``protocol`` when offered (as Tidings does, so clients
    connect alike) and serves each connection with a new ``listener()``."""

    def accept(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        offered = ",".join(request.headers.getall("Sec-WebSocket-Protocol", []))
        headers = {"Sec-WebSocket-Protocol": protocol} if protocol in offered else {}
        response = WSUpgradeResponse.create_101_response(extra_headers=headers)
        return WSUpgradeResponseWithListener(response, listener())

    return accept


async def serve(
    accept: Callable[[WSUpgradeRequest], WSUpgradeResponseWithListener],
    host: str,
    port: int,
    name: str,
) -> None:
    """Listen, print ``NAME ready ws://HOST:PORT/`` (what a driver waits for), serve until
    SIGTERM/SIGINT."""
    server = await ws_create_server(accept, host, port)
    bound = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"{name} ready ws://{host}:{bound}/", flush=True)
    await stop.wait()
    server.close()
