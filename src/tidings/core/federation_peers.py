"""Where a peer domain's federation API lives: the ``[federation]`` table first, then DNS SRV.

``PeerDirectory.base_url(domain)`` answers the base URL that outgoing federation requests of a
domain go to (``<base>/federation/v1/<route>``). The rule, in order:

1. a domain in ``deny`` (or one that is not a domain name) is refused: ``PeerUnknown``;
2. a domain in ``peers`` gets its configured URL (an operator's word beats DNS);
3. with an ``SrvLookup`` (``[federation] srv = true``) the records of ``_tidings._tcp.<domain>``
   are chosen from as RFC 2782 says: the lowest priority, then at random by weight; the answer
   is ``http://<target>:<port>``. No record, or the single target ``.``, is ``PeerUnknown``;
4. else ``PeerUnknown``.

SRV answers are cached for their TTL, clamped to ``[MIN_TTL_S, MAX_TTL_S]`` so a zero TTL does
not make every envelope a DNS query and a huge one does not pin a moved peer for days; "no such
service" is cached for ``NEGATIVE_TTL_S``. A failed lookup (timeout, SERVFAIL) is not cached: the
caller's backoff already paces the retries, and a cached failure would outlive the outage. The
records are cached, not the choice, so each call spreads load by weight. Concurrent calls for one
domain share one lookup, and at most ``max_entries`` domains are cached (the least recently used
go first) since any client can address messages to any number of domains.

SRV-found peers are spoken to over plain ``http``: the record carries no scheme. Requests are
signed (RFC 9421) against pinned or first-use keys, so a wrong target cannot forge a peer, but
confidentiality needs an ``https`` URL in ``peers`` or an egress TLS proxy.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import urlsplit

__all__ = [
    "MAX_TTL_S",
    "MIN_TTL_S",
    "NEGATIVE_TTL_S",
    "SRV_SERVICE",
    "PeerDirectory",
    "PeerLookupFailed",
    "PeerUnknown",
    "SrvLookup",
    "SrvLookupError",
    "SrvRecord",
    "check_base_url",
    "check_domain",
    "check_peers",
    "choose_srv",
    "srv_name",
]

SRV_SERVICE: Final = "_tidings._tcp"
MIN_TTL_S: Final = 30.0
MAX_TTL_S: Final = 3600.0
NEGATIVE_TTL_S: Final = 30.0
MAX_ENTRIES: Final = 10_000
"""Domains whose SRV answer is cached at most."""

_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_HOST_CHARS: Final = re.compile(r"[A-Za-z0-9._\-\[\]:]+")
"""Characters of a configured URL's host and port: names (``_`` for container names), IPv4 and
bracketed IPv6 literals."""


class PeerUnknown(Exception):
    """No federation endpoint for ``domain``: denied, not a domain name, or not found."""

    def __init__(self, domain: str, reason: str) -> None:
        super().__init__(f"peer {domain!r}: {reason}")
        self.domain = domain
        self.reason = reason


class PeerLookupFailed(PeerUnknown):
    """The SRV lookup itself failed (timeout, SERVFAIL): worth retrying, unlike its parent."""


class SrvLookupError(Exception):
    """Raised by an ``SrvLookup`` when DNS did not answer (as opposed to answering "none")."""


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV record; ``target`` without the trailing dot (``"."`` means no service)."""

    priority: int
    weight: int
    port: int
    target: str
    ttl: int = 0
    """Seconds the answer may be cached (0: unknown, so cached ``MIN_TTL_S``)."""


class SrvLookup(Protocol):
    async def lookup(self, name: str) -> list[SrvRecord]:
        """The SRV records of ``name``; ``[]`` for NXDOMAIN or no SRV data; raises
        ``SrvLookupError`` when no answer came."""
        ...


# -- validation ------------------------------------------------------------------------------


def check_domain(text: str) -> str:
    """The domain lowercased; ``ValueError`` unless it is LDH labels of 1..63 characters, at
    most 253 in all, no trailing dot, and a last label that is not all digits (an IPv4 address
    is not a domain). Strict because it becomes part of DNS names and ``Host`` headers."""
    if not isinstance(text, str) or not text:
        raise ValueError("empty domain")
    domain = text.lower()
    if not domain.isascii():
        raise ValueError("not ASCII (use the punycode form, xn--...)")
    if len(domain) > 253:
        raise ValueError(f"longer than 253 characters ({len(domain)})")
    labels = domain.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValueError(f"label {label!r} is not 1 to 63 letters, digits or inner hyphens")
    if labels[-1].isdigit():
        raise ValueError("the last label is all digits")
    return domain


def check_base_url(text: str) -> str:
    """The URL with a lowercased scheme and host and no trailing ``/``; ``ValueError`` unless it
    is ``http``/``https`` with a host, a valid port, and no userinfo, query or fragment (paths
    are appended to it, and credentials in it would end up in logs)."""
    if not isinstance(text, str) or not text or not text.isprintable() or " " in text:
        raise ValueError("not a URL")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("the scheme is not http or https")
    if "@" in parts.netloc:
        raise ValueError("has user information")
    if parts.query or "?" in text:
        raise ValueError("has a query")
    if parts.fragment or "#" in text:
        raise ValueError("has a fragment")
    host = parts.hostname
    if not host or not _HOST_CHARS.fullmatch(parts.netloc):
        raise ValueError("has no valid host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if port == 0:
        raise ValueError("has port 0")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def check_peers(peers: Mapping[str, str]) -> dict[str, str]:
    """The ``[federation] peers`` table normalized (domains lowercased, URLs by
    ``check_base_url``); ``ValueError`` naming the first bad entry, for config validation."""
    checked: dict[str, str] = {}
    for domain, url in peers.items():
        try:
            key = check_domain(domain)
        except ValueError as exc:
            raise ValueError(f"peer {domain!r}: not a domain name: {exc}") from None
        try:
            checked_url = check_base_url(url)
        except ValueError as exc:
            raise ValueError(f"peer {domain!r}: base URL {url!r}: {exc}") from None
        if key in checked:
            raise ValueError(f"peer {domain!r}: listed twice (domains are case-insensitive)")
        checked[key] = checked_url
    return checked


# -- the SRV rule ----------------------------------------------------------------------------


def srv_name(domain: str) -> str:
    """The SRV owner name queried for a (checked) domain, absolute."""
    return f"{SRV_SERVICE}.{domain}."


def _usable(record: SrvRecord) -> bool:
    if not 0 < record.port <= 65535 or record.priority < 0 or record.weight < 0:
        return False
    try:
        check_domain(record.target)
    except ValueError:
        return False
    return True


def _service(records: Sequence[SrvRecord]) -> list[SrvRecord]:
    """The usable records; none when the answer is the single target ``.`` (RFC 2782: the
    service is decidedly not available)."""
    if len(records) == 1 and records[0].target in (".", ""):
        return []
    return [r for r in records if _usable(r)]


def choose_srv(records: Sequence[SrvRecord], rng: random.Random) -> SrvRecord | None:
    """RFC 2782's pick of one record: among the lowest priority, weight 0 records first, then a
    running sum of weights and the first record whose sum reaches ``randint(0, total)``. None
    when no record is usable (bad port or target) or the answer is the single target ``.``."""
    usable = _service(records)
    if not usable:
        return None
    best = min(r.priority for r in usable)
    group = [r for r in usable if r.priority == best]
    rng.shuffle(group)  # equal weights: no record is favoured by its place in the answer
    group.sort(key=lambda r: r.weight != 0)
    pick = rng.randint(0, sum(r.weight for r in group))
    running = 0
    for record in group:
        running += record.weight
        if running >= pick:
            return record
    return group[-1]  # unreachable: the last running sum is the total


@dataclass(frozen=True, slots=True)
class _Entry:
    records: tuple[SrvRecord, ...]
    """Empty: no service (negative entry)."""
    expires: float


class PeerDirectory:
    """The base URL of each peer domain (see the module docstring for the rule)."""

    def __init__(
        self,
        configured: Mapping[str, str],
        deny: Collection[str],
        srv: SrvLookup | None,
        clock: Callable[[], float] = time.monotonic,
        *,
        rng: random.Random | None = None,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.configured = check_peers(configured)
        self.deny = frozenset(check_domain(d) for d in deny)
        self.srv = srv
        self.max_entries = max_entries
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        """Least recently used first."""
        self._pending: dict[str, asyncio.Task[_Entry]] = {}

    def __len__(self) -> int:
        """Domains with a cached SRV answer (expired ones included until touched)."""
        return len(self._cache)

    async def base_url(self, domain: str) -> str:
        """The peer's base URL; ``PeerUnknown`` when there is none (``PeerLookupFailed`` when
        DNS did not answer)."""
        try:
            key = check_domain(domain)
        except ValueError as exc:
            raise PeerUnknown(domain, f"not a domain name: {exc}") from None
        if key in self.deny:
            raise PeerUnknown(key, "denied by [federation] deny")
        url = self.configured.get(key)
        if url is not None:
            return url
        if self.srv is None:
            raise PeerUnknown(key, "not in [federation] peers (and SRV lookup is off)")
        entry = await self._entry(key, self.srv)
        chosen = choose_srv(entry.records, self._rng)
        if chosen is None:
            raise PeerUnknown(key, f"no usable SRV record at {srv_name(key)}")
        return f"http://{chosen.target}:{chosen.port}"

    def forget(self, domain: str) -> None:
        """Drop a domain's cached answer (say, after its host refused connections)."""
        self._cache.pop(domain.lower(), None)

    async def _entry(self, key: str, srv: SrvLookup) -> _Entry:
        entry = self._cache.get(key)
        if entry is not None and entry.expires > self._clock():
            self._cache.move_to_end(key)
            return entry
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._lookup(key, srv))
            self._pending[key] = task
            task.add_done_callback(lambda t: self._settled(key, t))
        # shield: one cancelled caller does not cancel the lookup the others wait for
        return await asyncio.shield(task)

    def _settled(self, key: str, task: asyncio.Task[_Entry]) -> None:
        self._pending.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved, so a lookup every caller gave up on logs no warning

    async def _lookup(self, key: str, srv: SrvLookup) -> _Entry:
        try:
            found = await srv.lookup(srv_name(key))
        except SrvLookupError as exc:
            raise PeerLookupFailed(key, f"SRV lookup of {srv_name(key)} failed: {exc}") from exc
        named = [
            SrvRecord(r.priority, r.weight, r.port, r.target.rstrip(".").lower() or ".", r.ttl)
            for r in found
        ]
        records = tuple(_service(named))
        if records:
            ttl = min(MAX_TTL_S, max(MIN_TTL_S, float(min(r.ttl for r in records))))
        else:
            ttl = NEGATIVE_TTL_S
        entry = _Entry(records, self._clock() + ttl)
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return entry
