"""A peer found through DNS: alpha.test knows beta.test only from its
``_tidings._tcp.beta.test`` SRV record (a real DNS server on loopback UDP, built here), and
messages with receipts go both ways (beta knows alpha from its configuration)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from tests.federation.support import ALPHA, BETA, PASSWORDS, STEP, free_port, make_server
from tests.lime_wire import WireClient

pytestmark = pytest.mark.integration


class Zone(asyncio.DatagramProtocol):
    def __init__(self, records: dict[str, str]) -> None:
        self.records = records
        self.asked: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().lower()
        self.asked.append(name)
        response = dns.message.make_response(query)
        if name in self.records and question.rdtype == dns.rdatatype.SRV:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, 60, dns.rdataclass.IN, dns.rdatatype.SRV, [self.records[name]]
                )
            )
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def zone() -> AsyncIterator[tuple[Zone, str]]:
    loop = asyncio.get_running_loop()
    beta_http = free_port()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Zone({f"_tidings._tcp.{BETA}.": f"10 0 {beta_http} localhost."}),
        local_addr=("127.0.0.1", 0),
    )
    try:
        yield protocol, f"127.0.0.1:{transport.get_extra_info('sockname')[1]}|{beta_http}"
    finally:
        transport.close()


async def signed_in(url: str, node: str, password: str) -> WireClient:
    wire = await WireClient.connect(url)
    session = await wire.establish(node, password=password)
    assert session["state"] == "established", session
    return wire


async def test_a_peer_found_through_its_srv_record(tmp_path: Path, zone: tuple[Zone, str]) -> None:
    protocol, where = zone
    dns_server, beta_http = where.split("|")
    alpha_http = free_port()
    alpha = make_server(tmp_path, ALPHA, {}, federation={"srv": True, "dns_server": dns_server})
    beta = make_server(tmp_path, BETA, {ALPHA: f"http://127.0.0.1:{alpha_http}"})
    alpha.process.http_port, beta.process.http_port = alpha_http, int(beta_http)
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
        assert f"_tidings._tcp.{BETA}." in protocol.asked
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
