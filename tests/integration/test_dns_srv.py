"""``net.dns_srv.DnsSrv`` against a real DNS server on loopback UDP (a tiny one built here with
dnspython): records and TTL come through, NXDOMAIN and no data are "none", a silent server is
an ``SrvLookupError`` within the lifetime, and ``PeerDirectory`` + ``DnsSrv`` find a peer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from tests.dns_zone import TinyDns, serving

from tidings.core.federation_peers import PeerDirectory, PeerUnknown, SrvLookupError, SrvRecord
from tidings.net.dns_srv import DnsSrv, parse_dns_server

pytestmark = pytest.mark.integration

ZONE = {
    "_tidings._tcp.beta.test.": ["10 5 9766 node1.beta.test."],
    "_tidings._tcp.gamma.test.": ["20 0 9000 backup.gamma.test.", "10 1 9001 main.gamma.test."],
    "_tidings._tcp.closed.test.": ["0 0 0 ."],
}
EXISTING = {"node1.beta.test."}
"""Names that exist without SRV data (NOERROR, empty answer)."""
TTL = 300


@pytest.fixture
async def tiny_dns() -> AsyncIterator[tuple[TinyDns, str]]:
    server = TinyDns(ZONE, EXISTING, TTL)
    async with serving(server) as address:
        yield server, address


async def test_srv_records_and_their_ttl_come_through(tiny_dns: tuple[TinyDns, str]) -> None:
    server, address = tiny_dns
    async with asyncio.timeout(5):
        records = await DnsSrv(address).lookup("_tidings._tcp.beta.test.")
    assert records == [SrvRecord(10, 5, 9766, "node1.beta.test", TTL)]
    assert server.queries == ["_tidings._tcp.beta.test."]


async def test_nxdomain_and_no_data_are_no_records(tiny_dns: tuple[TinyDns, str]) -> None:
    _, address = tiny_dns
    srv = DnsSrv(address)
    async with asyncio.timeout(5):
        assert await srv.lookup("_tidings._tcp.nosrv.test.") == []
        assert await srv.lookup("node1.beta.test.") == []


async def test_a_silent_server_is_a_lookup_error_within_the_lifetime(
    tiny_dns: tuple[TinyDns, str],
) -> None:
    server, address = tiny_dns
    server.mute = True
    started = time.monotonic()
    async with asyncio.timeout(5):
        with pytest.raises(SrvLookupError):
            await DnsSrv(address, lifetime=0.5).lookup("_tidings._tcp.beta.test.")
    assert time.monotonic() - started < 2.0
    assert server.queries


async def test_peer_directory_finds_peers_through_dns(tiny_dns: tuple[TinyDns, str]) -> None:
    server, address = tiny_dns
    peers = PeerDirectory({"alpha.test": "http://127.0.0.1:9765"}, ["evil.test"], DnsSrv(address))
    async with asyncio.timeout(10):
        assert await peers.base_url("beta.test") == "http://node1.beta.test:9766"
        assert await peers.base_url("Beta.Test") == "http://node1.beta.test:9766"
        assert await peers.base_url("gamma.test") == "http://main.gamma.test:9001"
        assert await peers.base_url("alpha.test") == "http://127.0.0.1:9765"
        for unknown in ("nosrv.test", "closed.test", "evil.test"):
            with pytest.raises(PeerUnknown):
                await peers.base_url(unknown)
    # cached: beta asked once; configured and denied domains never asked
    assert server.queries.count("_tidings._tcp.beta.test.") == 1
    assert not {"_tidings._tcp.alpha.test.", "_tidings._tcp.evil.test."} & set(server.queries)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:53", ("::1", 53)),
        ("10.0.0.1", ("10.0.0.1", 53)),
    ],
)
def test_parse_dns_server(text: str, parsed: tuple[str, int]) -> None:
    assert parse_dns_server(text) == parsed


@pytest.mark.parametrize("bad", ["dns.test:53", "127.0.0.1:0", "127.0.0.1:x", "[::1", ""])
def test_parse_dns_server_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_dns_server(bad)
