"""A bare picows WebSocket echo server: the same-run baseline for the Tidings benchmarks.

It accepts the ``lime`` subprotocol (so the load generator connects to it exactly as it does
to Tidings), echoes every text/binary frame back as it came, and does nothing else: no JSON,
no routing, no storage. Whatever Tidings does per frame on top of this is the cost of its work.

    python bench/bare_echo.py [--host 127.0.0.1] [--port 0]

Prints ``bare-echo ready ws://HOST:PORT/`` once it listens; runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            transport.send(kind, frame.get_payload_as_memoryview())
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


def accept(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
    offered = ",".join(request.headers.getall("Sec-WebSocket-Protocol", []))
    headers = {"Sec-WebSocket-Protocol": "lime"} if "lime" in offered else {}
    response = WSUpgradeResponse.create_101_response(extra_headers=headers)
    return WSUpgradeResponseWithListener(response, Echo())


async def main(host: str, port: int) -> None:
    server = await ws_create_server(accept, host, port)
    bound = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"bare-echo ready ws://{host}:{bound}/", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port))
