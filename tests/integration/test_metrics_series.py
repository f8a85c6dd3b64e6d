"""The /metrics series operators chart (issue 14, item 3) exist and move under traffic."""

from __future__ import annotations

import re

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
    ):
        start = value(before, series) if series in before else 0.0
        assert value(after, series) - start >= at_least, series
    assert 'tidings_send_to_accepted_seconds_bucket{le="+Inf"}' in after
    assert "tidings_queue_depth_bucket" in after  # a gauge histogram of every queue now
    assert "tidings_messages_expired_total" in after
    assert "tidings_messages_refused_queue_full_total" in after
