"""Input one client could use to hurt another: text that is not UTF-8, frames that break RFC 6455,
envelopes nested past the decoder's bound. Each is refused where it arrives, with the RFC's close
code or a LIME reason, and nothing of it is stored or relayed."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from tests.lime_wire import WireClient
from tests.raw_ws import BINARY, CLOSE, CONTINUATION, TEXT, Frame, RawWebSocket
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

BAD_UTF8 = b'{"id":"p1","to":"%s","type":"text/plain","content":"bad \xff\xfe"}'


def fresh() -> str:
    return f"guest-{uuid.uuid4().hex[:10]}@localhost"


async def raw_lime(server: ServerProcess, node: str) -> RawWebSocket:
    """A raw connection with an established guest session as ``node``."""
    ws = await RawWebSocket.connect("127.0.0.1", server.ws_port, "lime")
    ws.send_text(json.dumps({"state": "new"}))
    authenticating = await next_json(ws)
    ws.send_text(
        json.dumps(
            {
                "id": authenticating["id"],
                "state": "authenticating",
                "from": node,
                "scheme": "guest",
                "authentication": {},
            }
        )
    )
    assert (await next_json(ws))["state"] == "established"
    return ws


async def next_json(ws: RawWebSocket) -> dict[str, Any]:
    frame = await ws.recv()
    assert frame is not None and frame.opcode == TEXT, frame
    parsed: dict[str, Any] = json.loads(frame.payload)
    return parsed


async def closing(ws: RawWebSocket) -> tuple[list[dict[str, Any]], Frame]:
    """Read up to the server's close frame: the envelopes before it, and the close."""
    envelopes = []
    while True:
        frame = await ws.recv()
        assert frame is not None, "the connection ended without a close frame"
        if frame.opcode == CLOSE:
            return envelopes, frame
        envelopes.append(json.loads(frame.payload))


async def nothing_more_for(receiver: WireClient, server: ServerProcess) -> None:
    """The next message ``receiver`` gets is a marker sent now: nothing came before it."""
    marker = await WireClient.guest(server.ws_url, f"{fresh()}/m")
    marker.send({"id": "marker", "to": receiver.node, "type": "text/plain", "content": "m"})
    got = await receiver.expect(lambda e: "content" in e)
    assert got["id"] == "marker", got


async def test_invalid_utf8_is_refused_with_1007_and_never_reaches_the_recipient(server):
    bob = await WireClient.guest(server.ws_url, f"{fresh()}/b")
    sender = await raw_lime(server, f"{fresh()}/s")
    sender.send_text(BAD_UTF8 % bob.node.encode())  # type: ignore[union-attr]
    envelopes, close = await closing(sender)
    assert close.close_code == 1007
    assert envelopes[-1]["state"] == "failed" and "UTF-8" in envelopes[-1]["reason"]["description"]
    await nothing_more_for(bob, server)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([(TEXT, b'{"state":"new"}', True, 4)], "reserved bits"),
        ([(CONTINUATION, b"x", True, 0)], "no message started"),
        ([(TEXT, b'{"sta', False, 0), (TEXT, b'te":"new"}', True, 0)], "before the last"),
        ([(TEXT, b'{"sta', False, 0), (BINARY, b"x", True, 0)], "before the last"),
    ],
    ids=["rsv", "stray-continuation", "text-inside-text", "binary-inside-text"],
)
async def test_frames_that_break_rfc6455_close_with_1002(server, frames, reason):
    ws = await RawWebSocket.connect("127.0.0.1", server.ws_port, "lime")
    for opcode, payload, fin, rsv in frames:
        ws.send_frame(opcode, payload, fin=fin, rsv=rsv)
    envelopes, close = await closing(ws)
    assert close.close_code == 1002
    assert reason in envelopes[-1]["reason"]["description"]


async def test_a_fragmented_message_with_a_ping_between_is_still_fine(server):
    bob = await WireClient.guest(server.ws_url, f"{fresh()}/b")
    sender = await raw_lime(server, f"{fresh()}/s")
    text = json.dumps({"id": "f1", "to": bob.node, "type": "text/plain", "content": "héllo"})
    data = text.encode()
    sender.send_frame(TEXT, data[:30], fin=False)
    sender.send_frame(0x9, b"ping")
    sender.send_frame(CONTINUATION, data[30:], fin=True)
    got = await bob.expect(lambda e: "content" in e)
    assert got["content"] == "héllo"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ((TEXT, b'{"handshake": "\xff"}', True, 0), 1007),
        ((TEXT, b'{"MessageType":"Handshake","Versions":["0.1"]}', True, 2), 1002),
        ((CONTINUATION, b"x", True, 0), 1002),
    ],
    ids=["utf8", "rsv", "stray-continuation"],
)
async def test_feedme_frames_that_break_rfc6455_close_with_their_code(server, frame, code):
    ws = await RawWebSocket.connect("127.0.0.1", server.ws_port, "feedme")
    opcode, payload, fin, rsv = frame
    ws.send_frame(opcode, payload, fin=fin, rsv=rsv)
    _, close = await closing(ws)
    assert close.close_code == code


async def test_deep_nesting_behind_a_pending_command_fails_the_session_with_its_reason(server):
    """Nothing behind the deep envelope is silently skipped: the session fails naming the
    problem, so the client knows every unacknowledged message must be sent again."""
    bob = await WireClient.guest(server.ws_url, f"{fresh()}/b")
    sender = await raw_lime(server, f"{fresh()}/s")
    deep = b"[" * 10_000 + b"]" * 10_000
    sender.send_text(json.dumps({"id": "c1", "method": "get", "uri": "/account"}))
    sender.send_text(
        b'{"id":"deep","to":"%s","type":"application/json","content":%s}'
        % (bob.node.encode(), deep)  # type: ignore[union-attr]
    )
    for n in range(5):
        sender.send_text(
            json.dumps({"id": f"after{n}", "to": bob.node, "type": "text/plain", "content": "x"})
        )
    envelopes, close = await closing(sender)
    assert close.close_code == 1000
    answered = {e.get("id") for e in envelopes if "status" in e}
    assert "c1" in answered  # the pending command still got its answer
    failed = envelopes[-1]
    assert failed["state"] == "failed" and failed["reason"]["code"] == 21
    assert "64 levels" in failed["reason"]["description"]
    await nothing_more_for(bob, server)


async def test_deep_nesting_in_a_feedme_action_is_a_violation(server):
    ws = await RawWebSocket.connect("127.0.0.1", server.ws_port, "feedme")
    ws.send_text(json.dumps({"MessageType": "Handshake", "Versions": ["0.1"]}))
    assert json.loads((await ws.recv()).payload)["MessageType"] == "HandshakeResponse"  # type: ignore[union-attr]
    deep = "[" * 5_000 + "]" * 5_000
    action = {"MessageType": "Action", "ActionName": "a", "ActionArgs": {}, "CallbackId": "1"}
    ws.send_text(json.dumps(action).replace('"ActionArgs": {}', f'"ActionArgs": {{"x": {deep}}}'))
    violation = json.loads((await ws.recv()).payload)  # type: ignore[union-attr]
    assert violation["MessageType"] == "ViolationResponse"
    assert "64 levels" in violation["Diagnostics"]["Detail"]
