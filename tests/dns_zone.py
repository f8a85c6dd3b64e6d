"""A tiny DNS server for tests (dnspython on loopback UDP): SRV answers from a zone given in
text form, NXDOMAIN for names it does not hold, silence while ``mute``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class TinyDns(asyncio.DatagramProtocol):
    def __init__(
        self, zone: Mapping[str, list[str]], existing: Collection[str] = (), ttl: int = 300
    ) -> None:
        """``zone``: SRV records by owner name (``"10 5 9766 node1.beta.test."``);
        ``existing``: names that exist without SRV data (NOERROR, empty answer)."""
        self.zone = zone
        self.existing = existing
        self.ttl = ttl
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[str] = []
        self.mute = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport is not a DatagramTransport subclass in 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().lower()
        self.queries.append(name)
        if self.mute:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.zone and question.rdtype == dns.rdatatype.SRV:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, self.ttl, dns.rdataclass.IN, dns.rdatatype.SRV, self.zone[name]
                )
            )
        elif name not in self.zone and name not in self.existing:
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@asynccontextmanager
async def serving(server: TinyDns) -> AsyncIterator[str]:
    """``server`` on a free loopback port, as ``127.0.0.1:PORT``."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
    finally:
        transport.close()
