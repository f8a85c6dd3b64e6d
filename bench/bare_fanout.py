"""A bare picows fan-out server: the same-run baseline for the Tidings fan-out benchmark.

It speaks just enough Feedme (subprotocol ``feedme``) for bench/fanout.py to treat it exactly
like Tidings: canned ``HandshakeResponse`` and ``FeedOpenResponse`` (feed ``bench``), and the
action ``burst`` ``{"count": N, "size": BYTES}``, which sends N revelation frames to every
connection that opened the feed and answers like bench/fanout_app.py does. Each frame has the
same bytes Tidings sends for that revelation (compared by hand against a Tidings capture); it
is built once per revelation (two byte concatenations around the sequence number) and the same
bytes object goes to every connection. No protocol state, no validation, no hub, no app.

    python bench/bare_fanout.py [--host 127.0.0.1] [--port 0] [--cork]

``--cork``: instead of one ``send`` per frame, a burst's N frames (headers included) are joined
once and written to each connection in one ``write`` (what Tidings' corked writer achieves
when one loop iteration reveals N times; here the joined bytes are shared by all connections).

Prints ``bare-fanout ready ws://HOST:PORT/`` once it listens; runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import json

import common
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport

TEXT = WSMsgType.TEXT
subscribers: list[WSTransport] = []
state = {"seq": 0}
CORK = {"on": False}


def text_frame_header(length: int) -> bytes:
    """An unmasked, final text frame's header (RFC 6455 section 5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


def revelation_parts(size: int) -> tuple[bytes, bytes, bytes]:
    """(head, middle, tail): frame = head + seq + middle + seq + tail, as Tidings encodes it."""
    head = (
        b'{"MessageType":"ActionRevelation","FeedName":"bench","FeedArgs":{},'
        b'"ActionName":"tick","ActionData":{"seq":'
    )
    middle = (
        b',"pad":"' + b"x" * size + b'"},"FeedDeltas":[{"Operation":"Set","Path":["seq"],"Value":'
    )
    tail = b"}]}"
    return head, middle, tail


class Fanout(WSListener):
    def __init__(self) -> None:
        super().__init__()
        self.transport: WSTransport | None = None
        self.subscribed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.subscribed:
            self.subscribed = False
            subscribers.remove(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if kind is not TEXT:
            return
        message = json.loads(frame.get_payload_as_bytes())
        kind_name = message.get("MessageType")
        if kind_name == "Handshake":
            transport.send(
                TEXT, b'{"MessageType":"HandshakeResponse","Success":true,"Version":"0.1"}'
            )
        elif kind_name == "FeedOpen":
            transport.send(
                TEXT,
                b'{"MessageType":"FeedOpenResponse","FeedName":"bench","FeedArgs":{},'
                b'"Success":true,"FeedData":{"seq":' + str(state["seq"]).encode() + b"}}",
            )
            if not self.subscribed:
                self.subscribed = True
                subscribers.append(transport)
        elif kind_name == "Action":
            args = message.get("ActionArgs", {})
            count = int(args.get("count", 1))
            head, middle, tail = revelation_parts(int(args.get("size", 0)))
            seq = state["seq"]
            delivered = 0
            targets = list(subscribers)
            if CORK["on"]:  # the burst's frames, headers included, in one write per client
                frames = []
                for _ in range(count):
                    seq += 1
                    n = str(seq).encode()
                    payload = head + n + middle + n + tail
                    frames.append(text_frame_header(len(payload)))
                    frames.append(payload)
                data = b"".join(frames)
                for target in targets:
                    target.underlying_transport.write(data)
                delivered += count * len(targets)
            else:
                for _ in range(count):
                    seq += 1
                    n = str(seq).encode()
                    payload = head + n + middle + n + tail  # once per revelation, not per client
                    for target in targets:
                        target.send(TEXT, payload)
                    delivered += len(targets)
            state["seq"] = seq
            reply = {
                "MessageType": "ActionResponse",
                "CallbackId": message["CallbackId"],
                "Success": True,
                "ActionData": {"seq": seq, "delivered": delivered},
            }
            transport.send(TEXT, json.dumps(reply, separators=(",", ":")).encode())


if __name__ == "__main__":
    parser = common.server_parser(__doc__)
    parser.add_argument("--cork", action="store_true", help="one write per client per burst")
    args = parser.parse_args()
    CORK["on"] = args.cork
    accept = common.accept_as("feedme", Fanout)
    uvloop.run(common.serve(accept, args.host, args.port, "bare-fanout"))
