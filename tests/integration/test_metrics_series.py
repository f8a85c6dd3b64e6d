"""The /metrics series operators chart (issue 14, item 3) exist and move under traffic."""

from __future__ import annotations

import os
import re
import uuid

import httpx
import pytest
from tests.integration.conftest import PASSWORDS
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration


def scrape(server: ServerProcess) -> str:
    return httpx.get(f"{server.http_url}/metrics").text


def value(text: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert found is not None, f"no {series} in /metrics"
    return float(found.group(1))


async def test_the_series_move_under_traffic(server: ServerProcess) -> None:
    before = scrape(server)
    alice = await WireClient.connect(server.ws_url)
    assert (await alice.establish("alice@localhost/m", password=PASSWORDS["alice"]))["state"] == (
        "established"
    )
    bob = await WireClient.connect(server.ws_url)
    assert (await bob.establish("bob@localhost/m", password=PASSWORDS["bob"]))["state"] == (
        "established"
    )
    await alice.set_receipt("accepted")
    for i in range(5):
        alice.send({"id": f"mx{i}", "to": "bob@localhost/m", "type": "text/plain", "content": "x"})
        got = await bob.expect(lambda e, i=i: e.get("id") == f"mx{i}")
        bob.send({"id": got["id"], "to": got["from"], "event": "received"})
        await alice.expect(lambda e, i=i: e.get("id") == f"mx{i}" and e.get("event") == "received")
    after = scrape(server)
    for series, at_least in (
        ('tidings_envelopes_in_by_type_total{type="message"}', 5),
        ('tidings_envelopes_in_by_type_total{type="notification"}', 5),
        ('tidings_notifications_in_total{event="received"}', 5),
        ("tidings_send_to_accepted_seconds_count", 5),
        ("tidings_commit_batch_operations_count", 1),
        ("tidings_commit_seconds_count", 1),
        ("tidings_store_commits_total", 1),
    ):
        start = value(before, series) if series in before else 0.0
        assert value(after, series) - start >= at_least, series
    assert 'tidings_send_to_accepted_seconds_bucket{le="+Inf"}' in after
    assert "tidings_queue_depth_bucket" in after  # a gauge histogram of every queue now
    assert "tidings_messages_expired_total" in after
    assert "tidings_messages_refused_queue_full_total" in after
    # the writer thread ran ten writes and their commits: some CPU, never more than the process's
    writer_cpu = value(after, "tidings_store_writer_cpu_seconds_total")
    assert 0 < writer_cpu <= process_cpu_seconds(server.process.pid)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a whole process, all its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def deltas(before: str, after: str, *series: str) -> dict[str, float]:
    """How much each series moved between two scrapes (absent before: from zero)."""
    return {s: value(after, s) - (value(before, s) if s in before else 0.0) for s in series}


def out(kind: str) -> str:
    return f'tidings_envelopes_out_by_type_total{{type="{kind}"}}'


async def guest(server: ServerProcess, node: str) -> WireClient:
    return await WireClient.guest(server.ws_url, node)


async def offline_queue(
    server: ServerProcess, instance: str, limit: int, policy: str
) -> tuple[str, WireClient]:
    """A fresh guest identity whose session ``instance`` has that queue bound and is offline,
    and a live sender (receipts: accepted) to fill it."""
    identity = f"{uuid.uuid4().hex[:8]}@localhost"
    owner = await guest(server, f"{identity}/{instance}")
    answer = await owner.command(
        id="lim",
        method="set",
        uri=f"/sessions/{instance}",
        type="application/json",
        resource={"limit": limit, "policy": policy},
    )
    assert answer["status"] == "success", answer
    await owner.finish()
    alice = await guest(server, f"{uuid.uuid4().hex[:8]}@localhost/a")
    await alice.set_receipt("accepted")
    return identity, alice


async def test_envelopes_out_are_counted_by_type_exactly(server: ServerProcess) -> None:
    before = scrape(server)
    alice = await guest(server, f"{uuid.uuid4().hex[:8]}@localhost/a")  # 2 session envelopes
    bob_node = f"{uuid.uuid4().hex[:8]}@localhost/b"
    bob = await guest(server, bob_node)  # 2 more
    await alice.set_receipt("accepted")  # 1 command (the response)
    for i in range(3):  # 3 messages to bob, 3 accepted to alice, bob's 3 received forwarded
        alice.send({"id": f"o{i}", "to": bob_node, "type": "text/plain", "content": "x"})
        got = await bob.expect(lambda e, i=i: e.get("id") == f"o{i}")
        await alice.expect(lambda e, i=i: e.get("id") == f"o{i}" and e.get("event") == "accepted")
        bob.send({"id": got["id"], "to": got["from"], "event": "received"})
        await alice.expect(lambda e, i=i: e.get("id") == f"o{i}" and e.get("event") == "received")
    alice.send({"id": "c1", "to": bob_node, "method": "get", "uri": "/status"})  # 1 forwarded
    await bob.expect(lambda e: e.get("id") == "c1")
    pong = await alice.command(id="p1", method="get", uri="/ping")  # 1 command response
    assert pong["status"] == "success"
    moved = deltas(
        before,
        scrape(server),
        out("message"),
        out("notification"),
        out("command"),
        out("session"),
        "tidings_envelopes_sent_total",
    )
    assert moved == {
        out("message"): 3,
        out("notification"): 6,
        out("command"): 3,
        out("session"): 4,
        "tidings_envelopes_sent_total": 16,
    }


async def test_fanout_counts_each_session_an_identity_wide_message_reaches(
    server: ServerProcess,
) -> None:
    identity = f"{uuid.uuid4().hex[:8]}@localhost"
    phone = await guest(server, f"{identity}/phone")
    laptop = await guest(server, f"{identity}/laptop")
    alice = await guest(server, f"{uuid.uuid4().hex[:8]}@localhost/a")
    await alice.set_receipt("accepted")
    before = scrape(server)
    alice.send({"id": "f1", "to": identity, "type": "text/plain", "content": "both"})
    await alice.expect(lambda e: e.get("id") == "f1" and e.get("event") == "accepted")
    alice.send({"to": identity, "type": "text/plain", "content": "both, no id"})
    alice.send({"id": "f2", "to": f"{identity}/phone", "type": "text/plain", "content": "one"})
    await alice.expect(lambda e: e.get("id") == "f2" and e.get("event") == "accepted")
    for client, count in ((phone, 3), (laptop, 2)):
        for _ in range(count):
            await client.expect(lambda e: "content" in e)
    moved = deltas(
        before, scrape(server), "tidings_fanout_deliveries_total", "tidings_messages_routed_total"
    )
    # two sessions for each identity-wide message; the one to a node is no fan-out
    assert moved == {"tidings_fanout_deliveries_total": 4, "tidings_messages_routed_total": 3}


async def test_drop_oldest_discards_are_counted_as_the_gap_marker_reports(
    server: ServerProcess,
) -> None:
    identity, alice = await offline_queue(server, "q", 2, "drop-oldest")
    before = scrape(server)
    for n in (1, 2):  # fire-and-forget: nobody to tell when they go
        alice.send({"to": f"{identity}/q", "type": "text/plain", "content": f"f{n}"})
    for n in (1, 2, 3):  # a1 goes with f1 and f2: only a1's sender is told (122)
        alice.send({"id": f"a{n}", "to": f"{identity}/q", "type": "text/plain", "content": f"a{n}"})
        await alice.expect(lambda e, n=n: e.get("id") == f"a{n}" and e.get("event") == "accepted")
    failed = await alice.expect(lambda e: e.get("event") == "failed")
    assert (failed["id"], failed["reason"]["code"]) == ("a1", 122)
    moved = deltas(
        before,
        scrape(server),
        "tidings_messages_dropped_queue_full_total",
        "tidings_messages_refused_queue_full_total",
    )
    assert moved == {
        "tidings_messages_dropped_queue_full_total": 3,
        "tidings_messages_refused_queue_full_total": 0,
    }
    back = await guest(server, f"{identity}/q")
    gap = await back.expect(lambda e: "content" in e)
    assert gap["type"] == "application/vnd.tidings.gap+json" and gap["content"]["dropped"] == 3
    rest = [await back.expect(lambda e: "content" in e) for _ in range(2)]
    assert [m["content"] for m in rest] == ["a2", "a3"]
    assert not [e for e in alice.held if e.get("event") == "failed"]  # none for f1, f2


async def test_a_full_reject_new_queue_counts_refusals_not_resends(server: ServerProcess) -> None:
    identity, alice = await offline_queue(server, "r", 1, "reject-new")
    before = scrape(server)
    for message_id in ("r1", "r1", "r2"):  # stored; a re-send (accepted again); refused
        alice.send({"id": message_id, "to": f"{identity}/r", "type": "text/plain", "content": "r"})
        told = await alice.expect(lambda e, i=message_id: e.get("id") == i and "event" in e)
        assert told["event"] == ("failed" if message_id == "r2" else "accepted"), told
    moved = deltas(
        before,
        scrape(server),
        "tidings_messages_refused_queue_full_total",
        "tidings_messages_dropped_queue_full_total",
    )
    assert moved == {
        "tidings_messages_refused_queue_full_total": 1,
        "tidings_messages_dropped_queue_full_total": 0,
    }


async def test_the_other_new_series_are_exposed(server: ServerProcess) -> None:
    text = scrape(server)
    assert "# TYPE tidings_federation_retries_total counter" in text
    assert "# TYPE tidings_fanout_deliveries_total counter" in text
