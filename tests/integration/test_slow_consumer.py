"""A client that stops reading cannot grow the server: past ``max_output_buffer`` nothing more is
written to it live, what has an id waits in its queue, and it gets everything, in order, once it
reads again. A Feedme client that falls as far behind is disconnected."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.raw_ws import TEXT, RawWebSocket
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

MESSAGES = 1500
BODY = "x" * 40_000  # 60 MB in all: the old server buffered every byte of it
RSS_GROWTH_BOUND = 30 * 1024 * 1024
TOKEN = "slow-token"


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("slow")
    config = data_dir / "tidings.toml"
    config.write_text("max_output_buffer = 65536\nrate_limit = 100000\nrate_burst = 100000\n")
    process = ServerProcess(
        data_dir, args=["--allow-guests", "--config", str(config), "--api-token", TOKEN]
    )
    process.start()
    yield process
    process.stop()


def rss(server: ServerProcess) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def stalled_reader(server: ServerProcess, node: str) -> RawWebSocket:
    """An established guest session whose client then reads nothing (its stream reader stops
    taking bytes once its small buffer is full, so TCP backs up to the server)."""
    ws = await RawWebSocket.connect("127.0.0.1", server.ws_port, "lime")
    ws.reader._limit = 1024  # type: ignore[attr-defined]  # pause reading early
    ws.send_text(json.dumps({"state": "new"}))
    authenticating = json.loads((await ws.recv()).payload)  # type: ignore[union-attr]
    ws.send_text(
        json.dumps(
            {"id": authenticating["id"], "state": "authenticating", "from": node, "scheme": "guest"}
        )
    )
    assert json.loads((await ws.recv()).payload)["state"] == "established"  # type: ignore[union-attr]
    return ws


async def test_a_reader_that_stalls_costs_a_bounded_buffer_and_loses_nothing(slow):
    target = f"guest-{uuid.uuid4().hex[:8]}@localhost/r"
    reader = await stalled_reader(slow, target)
    sender = await WireClient.guest(slow.ws_url, f"guest-{uuid.uuid4().hex[:8]}@localhost/s")
    await sender.set_receipt("accepted")
    before = rss(slow)
    for n in range(MESSAGES):
        sender.send({"id": f"m{n}", "to": target, "type": "text/plain", "content": BODY})
        if n % 100 == 99:  # paced by its accepted notifications (MESSAGES is a multiple)
            await sender.expect(lambda e, i=f"m{n}": e.get("id") == i, timeout=60)
    grown = rss(slow) - before
    assert slow.metric("output_stalls_total") >= 1
    assert grown < RSS_GROWTH_BOUND, f"the server grew by {grown} bytes"
    # it reads again: every message comes, in order, once
    reader.reader._limit = 1 << 20  # type: ignore[attr-defined]
    seen = []
    while len(seen) < MESSAGES:
        frame = await reader.recv(timeout=60)
        assert frame is not None and frame.opcode == TEXT
        envelope = json.loads(frame.payload)
        if "content" in envelope:
            seen.append(envelope["id"])
    assert seen == [f"m{n}" for n in range(MESSAGES)]
    assert (await sender.command(id="p", method="get", uri="/ping"))["status"] == "success"


async def test_others_are_served_while_one_reader_stalls(slow):
    target = f"guest-{uuid.uuid4().hex[:8]}@localhost/r"
    await stalled_reader(slow, target)
    flooder = await WireClient.guest(slow.ws_url, f"guest-{uuid.uuid4().hex[:8]}@localhost/f")
    for _ in range(300):
        flooder.send({"to": target, "type": "text/plain", "content": BODY})  # fire-and-forget
    alice = await WireClient.guest(slow.ws_url, f"guest-{uuid.uuid4().hex[:8]}@localhost/a")
    bob = await WireClient.guest(slow.ws_url, f"guest-{uuid.uuid4().hex[:8]}@localhost/b")
    alice.send({"id": "hi", "to": bob.node, "type": "text/plain", "content": "hi"})
    assert (await bob.expect(lambda e: e.get("id") == "hi"))["content"] == "hi"


async def test_a_feedme_client_far_behind_is_disconnected(slow):
    """Nothing of Feedme's is queued: a client that reads nothing while it is sent more than
    the bound is dropped (the real client reconnects and reopens its feeds)."""
    feed = f"big-{uuid.uuid4().hex[:6]}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=slow.http_url, headers=headers) as http:
        await publish(http, feed, {"n": 0})
        ws = await RawWebSocket.connect("127.0.0.1", slow.ws_port, "feedme")
        ws.reader._limit = 1024  # type: ignore[attr-defined]
        ws.send_text(json.dumps({"MessageType": "Handshake", "Versions": ["0.1"]}))
        ws.send_text(json.dumps({"MessageType": "FeedOpen", "FeedName": feed, "FeedArgs": {}}))
        for _ in range(2):  # the handshake and feed-open responses
            assert (await ws.recv()) is not None
        delivered = 1
        published = 0
        while delivered and published < 2000:  # bounded: ~80 MB if never dropped
            delivered = await publish(http, feed, {"n": published, "pad": BODY})
            published += 1
        assert delivered == 0, "the stalled client was never dropped"
        assert slow.metric("feedme_slow_consumers_total") >= 1
        frames = 0
        while await ws.recv(timeout=30) is not None:  # what it had, then the end
            frames += 1
        assert frames < published


async def publish(http: httpx.AsyncClient, feed: str, data: dict[str, object]) -> int:
    response = await http.post(
        f"/feeds/{feed}/actions",
        json={"action_name": "set", "action_data": {}, "feed_args": {}, "feed_data": data},
    )
    assert response.status_code == 200, response.text
    return int(response.json()["delivered"])


async def test_a_reader_that_never_catches_up_is_dropped_after_the_stall_timeout(tmp_path):
    """Stalled and never written an answer (so the 4x bound never trips), it would otherwise
    hold its connection for good; its queue keeps what it had not acknowledged."""
    config = tmp_path / "tidings.toml"
    config.write_text(
        "max_output_buffer = 65536\nstall_timeout_s = 1\nrate_limit = 100000\nrate_burst = 100000\n"
    )
    server = ServerProcess(tmp_path / "data", args=["--allow-guests", "--config", str(config)])
    server.start()
    try:
        target = f"guest-{uuid.uuid4().hex[:8]}@localhost/r"
        reader = await stalled_reader(server, target)
        sender = await WireClient.guest(server.ws_url, f"guest-{uuid.uuid4().hex[:8]}@localhost/s")
        await sender.set_receipt("accepted")
        for n in range(300):  # 12 MB: more than the socket buffers take
            sender.send({"id": f"m{n}", "to": target, "type": "text/plain", "content": BODY})
        await sender.expect(lambda e: e.get("id") == "m299", timeout=60)
        line = await asyncio.to_thread(server.wait_for_line, "as a slow consumer")
        assert target in line
        assert server.metric("slow_consumers_total") == 1
        await reader.close()
        again = await stalled_reader(server, target)  # the queue kept the rest for it
        again.reader._limit = 1 << 30  # type: ignore[attr-defined]
        first = json.loads((await again.recv(timeout=30)).payload)  # type: ignore[union-attr]
        assert first["id"].startswith("m")
        await WireClient.close_all()
    finally:
        server.stop()
