"""A peer found through DNS: alpha.test knows beta.test only from its
``_tidings._tcp.beta.test`` SRV record (a real DNS server on loopback UDP, built here), and
messages with receipts go both ways (beta knows alpha from its configuration)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.dns_zone import TinyDns, serving
from tests.federation.support import ALPHA, BETA, PASSWORDS, STEP, free_port, make_server
from tests.lime_wire import WireClient

pytestmark = pytest.mark.integration


@pytest.fixture
async def zone() -> AsyncIterator[tuple[TinyDns, str, int]]:
    beta_http = free_port()
    server = TinyDns({f"_tidings._tcp.{BETA}.": [f"10 0 {beta_http} localhost."]}, ttl=60)
    async with serving(server) as address:
        yield server, address, beta_http


async def signed_in(url: str, node: str, password: str) -> WireClient:
    wire = await WireClient.connect(url)
    session = await wire.establish(node, password=password)
    assert session["state"] == "established", session
    return wire


async def test_a_peer_found_through_its_srv_record(
    tmp_path: Path, zone: tuple[TinyDns, str, int]
) -> None:
    protocol, dns_server, beta_http = zone
    alpha_http = free_port()
    alpha = make_server(tmp_path, ALPHA, {}, federation={"srv": True, "dns_server": dns_server})
    beta = make_server(tmp_path, BETA, {ALPHA: f"http://127.0.0.1:{alpha_http}"})
    alpha.process.http_port, beta.process.http_port = alpha_http, beta_http
    alpha.start()
    beta.start()
    try:
        bob = await signed_in(beta.ws_url, "bob@beta.test/desk", PASSWORDS["bob"])
        alice = await signed_in(alpha.ws_url, "alice@alpha.test/phone", PASSWORDS["alice"])
        await alice.set_receipt("accepted")
        alice.send(
            {"id": "srv-1", "to": "bob@beta.test/desk", "type": "text/plain", "content": "hi"}
        )
        got = await bob.expect(lambda e: e.get("id") == "srv-1", timeout=STEP)
        assert got["from"] == "alice@alpha.test/phone"
        bob.send({"id": "srv-1", "to": got["from"], "event": "received"})
        received = await alice.expect(
            lambda e: e.get("id") == "srv-1" and e.get("event") == "received", timeout=STEP
        )
        assert received["from"].startswith("bob@beta.test/desk")
        assert f"_tidings._tcp.{BETA}." in protocol.queries
        # a domain with no record is not found: failed at once, nothing queued for it
        alice.send({"id": "srv-2", "to": "x@nowhere.test", "type": "text/plain", "content": "?"})
        failed = await alice.expect(
            lambda e: e.get("id") == "srv-2" and e.get("event") == "failed", timeout=STEP
        )
        assert failed["reason"]["code"] == 42  # no record: no server, said at once
    finally:
        await WireClient.close_all()
        alpha.stop()
        beta.stop()
