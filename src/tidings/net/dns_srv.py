"""``SrvLookup`` (``core.federation_peers``) over DNS, with dnspython's asyncio resolver.

``DnsSrv(dns_server="host:port")`` asks that one server (the ``[federation] dns_server`` setting,
for tests and split-horizon setups); an empty ``dns_server`` uses the system resolver
(``/etc/resolv.conf``). Every lookup is bounded by ``lifetime`` seconds in all, so a dead DNS
server delays a peer's relay by that much and no more.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Final

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.SRV import SRV

from tidings.core.federation_peers import SrvLookupError, SrvRecord

__all__ = ["DnsSrv", "parse_dns_server"]

LIFETIME_S: Final = 2.0


def parse_dns_server(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:53"`` or a bare IP (port 53) to (address, port);
    ``ValueError`` otherwise: dnspython asks nameservers by address, never by name."""
    host, port_text = text, "53"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"dns_server {text!r} is not [IPv6]:port")
        port_text = rest[1:] if rest else "53"
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"dns_server {text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"dns_server {text!r}: {port_text!r} is not a port")
    return address, int(port_text)


class DnsSrv:
    """SRV records by DNS; ``[]`` for NXDOMAIN or no SRV data, ``SrvLookupError`` when no
    server answered in ``lifetime`` seconds (or all said SERVFAIL/REFUSED)."""

    def __init__(self, dns_server: str = "", lifetime: float = LIFETIME_S) -> None:
        if lifetime <= 0:
            raise ValueError("lifetime must be positive")
        self.lifetime = lifetime
        if dns_server:
            address, port = parse_dns_server(dns_server)
            self.resolver = dns.asyncresolver.Resolver(configure=False)
            self.resolver.nameservers = [address]
            self.resolver.port = port
        else:
            self.resolver = dns.asyncresolver.Resolver()
        self.resolver.timeout = lifetime
        self.resolver.lifetime = lifetime
        self.resolver.cache = None  # PeerDirectory caches, with its own TTL bounds

    async def lookup(self, name: str) -> list[SrvRecord]:
        qname = dns.name.from_text(name)  # absolute: no search list
        try:
            # dnspython enforces the lifetime; the outer timeout guards against a bug there
            async with asyncio.timeout(self.lifetime + 1.0):
                answer = await self.resolver.resolve(
                    qname, dns.rdatatype.SRV, search=False, raise_on_no_answer=False
                )
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.exception.DNSException, TimeoutError, OSError) as exc:
            raise SrvLookupError(f"{type(exc).__name__}: {exc}") from exc
        rrset = answer.rrset
        if rrset is None:
            return []
        return [
            SrvRecord(
                rdata.priority,
                rdata.weight,
                rdata.port,
                rdata.target.to_text(omit_final_dot=True) or ".",
                rrset.ttl,
            )
            for rdata in rrset
            if isinstance(rdata, SRV)
        ]
