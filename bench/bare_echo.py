"""A bare picows WebSocket echo server: the same-run baseline for the Tidings benchmarks.

It accepts the ``lime`` subprotocol (so the load generator connects to it exactly as it does
to Tidings), echoes every text/binary frame back as it came, and does nothing else: no JSON,
no routing, no storage. Whatever Tidings does per frame on top of this is the cost of its work.

    python bench/bare_echo.py [--host 127.0.0.1] [--port 0]

Prints ``bare-echo ready ws://HOST:PORT/`` once it listens; runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import common
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            transport.send(kind, frame.get_payload_as_memoryview())
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


if __name__ == "__main__":
    args = common.server_parser(__doc__).parse_args()
    uvloop.run(common.serve(common.accept_as("lime", Echo), args.host, args.port, "bare-echo"))
