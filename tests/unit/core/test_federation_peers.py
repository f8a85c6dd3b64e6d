"""``core.federation_peers``: configured peers win, denied and unknown ones are refused, SRV
records are chosen as RFC 2782 says and cached by their clamped TTL; the validators accept LDH
names and good URLs and refuse the rest with a message naming the entry."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core.federation_peers import (
    MAX_TTL_S,
    MIN_TTL_S,
    NEGATIVE_TTL_S,
    PeerDirectory,
    PeerLookupFailed,
    PeerUnknown,
    SrvLookupError,
    SrvRecord,
    check_base_url,
    check_domain,
    check_peers,
    choose_srv,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSrv:
    """Answers from a table; counts the queries; raises ``SrvLookupError`` for ``fail``."""

    def __init__(self, table: dict[str, list[SrvRecord]] | None = None) -> None:
        self.table = table or {}
        self.queries: list[str] = []
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def lookup(self, name: str) -> list[SrvRecord]:
        self.queries.append(name)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise SrvLookupError("timed out")
        return list(self.table.get(name, []))


BETA = "_tidings._tcp.beta.test."


def directory(
    srv: FakeSrv | None = None, clock: FakeClock | None = None, **kwargs: int
) -> PeerDirectory:
    return PeerDirectory(
        {"Alpha.test": "http://127.0.0.1:9766/"},
        ["evil.test"],
        srv,
        clock or FakeClock(),
        rng=random.Random(7),
        **kwargs,
    )


# -- the rule --------------------------------------------------------------------------------


async def test_a_configured_peer_gets_its_url_normalized_and_dns_is_not_asked() -> None:
    srv = FakeSrv({"_tidings._tcp.alpha.test.": [SrvRecord(0, 0, 1, "elsewhere.test")]})
    peers = directory(srv)
    assert await peers.base_url("alpha.test") == "http://127.0.0.1:9766"
    assert await peers.base_url("ALPHA.Test") == "http://127.0.0.1:9766"
    assert srv.queries == []


async def test_a_denied_domain_is_refused_even_when_configured_or_in_dns() -> None:
    srv = FakeSrv({"_tidings._tcp.evil.test.": [SrvRecord(0, 0, 1, "evil.test")]})
    peers = PeerDirectory({"evil.test": "http://e:1"}, ["EVIL.test"], srv, FakeClock())
    with pytest.raises(PeerUnknown) as refused:
        await peers.base_url("Evil.Test")
    assert refused.value.domain == "evil.test"
    assert "denied" in refused.value.reason
    assert srv.queries == []


async def test_an_unknown_domain_without_srv_is_refused() -> None:
    with pytest.raises(PeerUnknown, match="SRV lookup is off"):
        await directory(None).base_url("beta.test")


@pytest.mark.parametrize("bad", ["", "beta_test", "-beta.test", "beta.test.", "a" * 64 + ".t"])
async def test_a_name_that_is_not_a_domain_is_refused_before_any_lookup(bad: str) -> None:
    srv = FakeSrv()
    with pytest.raises(PeerUnknown, match="not a domain name"):
        await directory(srv).base_url(bad)
    assert srv.queries == []


async def test_srv_gives_http_target_and_port() -> None:
    srv = FakeSrv({BETA: [SrvRecord(10, 5, 9766, "Node1.Beta.test.", 300)]})
    assert await directory(srv).base_url("beta.test") == "http://node1.beta.test:9766"
    assert srv.queries == [BETA]


async def test_srv_with_no_records_or_the_dot_target_is_unknown() -> None:
    srv = FakeSrv({"_tidings._tcp.dot.test.": [SrvRecord(0, 0, 0, ".")]})
    peers = directory(srv)
    for domain in ("nosrv.test", "dot.test"):
        with pytest.raises(PeerUnknown, match="no usable SRV record"):
            await peers.base_url(domain)


async def test_srv_records_with_a_bad_port_or_target_are_skipped() -> None:
    srv = FakeSrv(
        {
            BETA: [
                SrvRecord(0, 1, 0, "zero-port.test"),
                SrvRecord(0, 1, 80, "bad_target.test"),
                SrvRecord(5, 1, 8080, "good.test"),
            ]
        }
    )
    assert await directory(srv).base_url("beta.test") == "http://good.test:8080"


def test_choose_srv_takes_the_lowest_priority_only() -> None:
    records = [
        SrvRecord(20, 100, 1, "backup.test"),
        SrvRecord(10, 0, 2, "primary.test"),
        SrvRecord(30, 100, 3, "last.test"),
    ]
    rng = random.Random(1)
    assert {choose_srv(records, rng) for _ in range(200)} == {records[1]}


def test_choose_srv_spreads_by_weight() -> None:
    heavy, light, zero = (
        SrvRecord(10, 60, 1, "heavy.test"),
        SrvRecord(10, 20, 2, "light.test"),
        SrvRecord(10, 0, 3, "zero.test"),
    )
    rng = random.Random(3)
    counts = Counter(choose_srv([light, zero, heavy], rng) for _ in range(8000))
    # randint(0, 80): zero wins on 0 only (1/81), light on 1..20, heavy on 21..80
    assert counts[heavy] / 8000 == pytest.approx(60 / 81, abs=0.03)
    assert counts[light] / 8000 == pytest.approx(20 / 81, abs=0.03)
    assert counts[zero] / 8000 == pytest.approx(1 / 81, abs=0.005)  # weight 0 goes first


def test_choose_srv_with_all_weights_zero_picks_each() -> None:
    records = [SrvRecord(1, 0, port, f"n{port}.test") for port in (1, 2, 3)]
    rng = random.Random(5)
    assert {choose_srv(records, rng) for _ in range(300)} == set(records)


# -- caching ---------------------------------------------------------------------------------


async def test_an_answer_is_cached_for_its_ttl() -> None:
    clock = FakeClock()
    srv = FakeSrv({BETA: [SrvRecord(10, 5, 9766, "node1.beta.test", 120)]})
    peers = directory(srv, clock)
    await peers.base_url("beta.test")
    clock.now += 119
    await peers.base_url("beta.test")
    assert len(srv.queries) == 1
    srv.table[BETA] = [SrvRecord(10, 5, 9767, "node2.beta.test", 120)]
    clock.now += 1
    assert await peers.base_url("beta.test") == "http://node2.beta.test:9767"
    assert len(srv.queries) == 2


@pytest.mark.parametrize(
    ("ttls", "cached_for"),
    [((0,), MIN_TTL_S), ((5, 500), MIN_TTL_S), ((900, 300), 300.0), ((86_400,), MAX_TTL_S)],
)
async def test_the_ttl_is_the_smallest_clamped(ttls: tuple[int, ...], cached_for: float) -> None:
    clock = FakeClock()
    srv = FakeSrv({BETA: [SrvRecord(1, 1, 9000 + i, "n.test", t) for i, t in enumerate(ttls)]})
    peers = directory(srv, clock)
    await peers.base_url("beta.test")
    clock.now += cached_for - 0.5
    await peers.base_url("beta.test")
    assert len(srv.queries) == 1
    clock.now += 0.5
    await peers.base_url("beta.test")
    assert len(srv.queries) == 2


async def test_no_service_is_cached_negatively_for_30_s() -> None:
    clock = FakeClock()
    srv = FakeSrv()
    peers = directory(srv, clock)
    for _ in range(3):
        with pytest.raises(PeerUnknown):
            await peers.base_url("beta.test")
    assert len(srv.queries) == 1
    srv.table[BETA] = [SrvRecord(0, 0, 9766, "node1.beta.test", 600)]
    clock.now += NEGATIVE_TTL_S
    assert await peers.base_url("beta.test") == "http://node1.beta.test:9766"


async def test_a_failed_lookup_is_retryable_and_not_cached() -> None:
    srv = FakeSrv({BETA: [SrvRecord(0, 0, 9766, "node1.beta.test", 600)]})
    srv.fail = True
    peers = directory(srv)
    with pytest.raises(PeerLookupFailed, match="timed out"):
        await peers.base_url("beta.test")
    srv.fail = False
    assert await peers.base_url("beta.test") == "http://node1.beta.test:9766"
    assert len(srv.queries) == 2


async def test_concurrent_calls_share_one_lookup_and_survive_a_cancelled_caller() -> None:
    srv = FakeSrv({BETA: [SrvRecord(0, 0, 9766, "node1.beta.test", 600)]})
    srv.gate = asyncio.Event()
    peers = directory(srv)
    calls = [asyncio.ensure_future(peers.base_url("beta.test")) for _ in range(5)]
    await asyncio.sleep(0)
    calls[0].cancel()
    srv.gate.set()
    results = await asyncio.gather(*calls[1:])
    assert results == ["http://node1.beta.test:9766"] * 4
    assert srv.queries == [BETA]


async def test_the_cache_keeps_the_most_recently_used_domains() -> None:
    srv = FakeSrv(
        {f"_tidings._tcp.d{i}.test.": [SrvRecord(0, 0, 1, "n.test", 600)] for i in range(4)}
    )
    peers = directory(srv, max_entries=2)
    for i in (0, 1, 0, 2):
        await peers.base_url(f"d{i}.test")
    assert len(peers) == 2
    await peers.base_url("d0.test")  # still cached
    await peers.base_url("d1.test")  # evicted: asked again
    assert srv.queries.count("_tidings._tcp.d0.test.") == 1
    assert srv.queries.count("_tidings._tcp.d1.test.") == 2


# -- validation ------------------------------------------------------------------------------

ldh_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
last_label = ldh_label.filter(lambda s: not s.isdigit())
domains = st.builds(
    lambda head, tail: ".".join([*head, tail]), st.lists(ldh_label, max_size=4), last_label
).filter(lambda d: len(d) <= 253)


@given(domain=domains, upper=st.booleans())
def test_check_domain_accepts_ldh_names_and_lowercases(domain: str, upper: bool) -> None:
    assert check_domain(domain.upper() if upper else domain) == domain


@given(
    domain=domains,
    bad=st.sampled_from(list("_ /@:!*+,;=?#%\\\t\x00é")),
    at=st.integers(min_value=0),
)
def test_check_domain_refuses_a_bad_character(domain: str, bad: str, at: int) -> None:
    at %= len(domain) + 1
    with pytest.raises(ValueError):
        check_domain(domain[:at] + bad + domain[at:])


@given(labels=st.lists(ldh_label, min_size=5, max_size=12))
def test_check_domain_refuses_names_over_253(labels: list[str]) -> None:
    domain = ".".join(labels) + ".test"
    while len(domain) <= 253:
        domain = "a" * 63 + "." + domain
    with pytest.raises(ValueError, match="longer than 253"):
        check_domain(domain)


@pytest.mark.parametrize(
    "bad",
    ["", ".", "a..b", "a.", ".a", "-a.test", "a-.test", "a" * 64 + ".test", "127.0.0.1", "x.42"],
)
def test_check_domain_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        check_domain(bad)


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("http://127.0.0.1:9766", "http://127.0.0.1:9766"),
        ("HTTPS://Beta.Test/", "https://beta.test"),
        ("http://[::1]:8080/tidings/", "http://[::1]:8080/tidings"),
        ("http://beta_node:9766", "http://beta_node:9766"),
    ],
)
def test_check_base_url_normalizes(url: str, normal: str) -> None:
    assert check_base_url(url) == normal


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://beta.test", "scheme"),
        ("beta.test:9766", "scheme"),
        ("http://user:pw@beta.test", "user information"),
        ("http://beta.test/?x=1", "query"),
        ("http://beta.test/#top", "fragment"),
        ("http://beta.test:99999", "port"),
        ("http://beta.test:0", "port 0"),
        ("http://", "host"),
        ("http://be ta.test", "URL"),
    ],
)
def test_check_base_url_refuses(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_base_url(url)


def test_check_peers_normalizes_and_names_the_bad_entry() -> None:
    assert check_peers({"Beta.Test": "http://127.0.0.1:9766/"}) == {
        "beta.test": "http://127.0.0.1:9766"
    }
    with pytest.raises(ValueError, match=r"peer 'beta_test': not a domain name"):
        check_peers({"beta.test": "http://a:1", "beta_test": "http://b:1"})
    with pytest.raises(ValueError, match=r"peer 'beta.test': base URL 'http://b/\?q': has a query"):
        check_peers({"beta.test": "http://b/?q"})
    with pytest.raises(ValueError, match="listed twice"):
        check_peers({"beta.test": "http://a:1", "BETA.test": "http://b:1"})


def test_the_directory_refuses_a_bad_configuration() -> None:
    with pytest.raises(ValueError, match="peer 'x y'"):
        PeerDirectory({"x y": "http://a:1"}, [], None)
    with pytest.raises(ValueError):
        PeerDirectory({}, ["evil_test"], None)
