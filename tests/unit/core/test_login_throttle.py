"""Failed-login throttling: the pure rule (``LoginThrottle``, on a clock the test moves), and how
``AccountService`` applies it to every password and key check, against a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.accounts import AccountService
from tidings.core.address import parse_address
from tidings.core.errors import ErrorId, Forbidden, LimitExceeded
from tidings.core.login_throttle import (
    FORGET_AFTER_BACKOFFS,
    LoginRule,
    LoginThrottle,
    source_key,
)
from tidings.store.sqlite import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, *, free: int = 3, base: float = 1.0, cap: float = 8.0, keys: int = 100):
    return LoginThrottle(free_failures=free, base_s=base, max_s=cap, max_keys=keys, clock=clock)


# -- the rule ---------------------------------------------------------------------------------


def test_free_failures_then_a_doubling_wait_up_to_the_bound():
    clock = Clock()
    rule = throttle(clock)
    waits = []
    for _ in range(9):
        rule.failed("alice")
        waits.append(rule.wait("alice"))
    assert waits == [0, 0, 0, 1, 2, 4, 8, 8, 8]


def test_the_wait_runs_from_the_last_failure_and_ends():
    clock = Clock()
    rule = throttle(clock, free=0, base=4.0)
    rule.failed("alice")
    clock.now += 1.5
    assert rule.wait("alice") == 2.5
    clock.now += 2.5
    assert rule.wait("alice") == 0
    rule.failed("alice")  # the count goes on: the next wait is longer
    assert rule.wait("alice") == 8


def test_a_success_clears_the_key_and_only_that_key():
    clock = Clock()
    rule = throttle(clock, free=0)
    rule.failed("alice")
    rule.failed("bob")
    rule.succeeded("alice")
    assert rule.wait("alice") == 0 and rule.wait("bob") == 1
    rule.failed("alice")
    assert rule.wait("alice") == 1  # counted from zero again


def test_a_quiet_key_is_forgotten():
    clock = Clock()
    rule = throttle(clock, free=0, cap=2.0)
    for _ in range(5):
        rule.failed("alice")
    clock.now += FORGET_AFTER_BACKOFFS * 2.0
    assert rule.wait("alice") == 0 and len(rule) == 0
    rule.failed("alice")
    assert rule.wait("alice") == 1


def test_memory_is_bounded_and_the_least_recently_failed_go_first():
    clock = Clock()
    rule = throttle(clock, free=0, keys=3)
    for name in ("a", "b", "c"):
        rule.failed(name)
        clock.now += 0.1
    rule.failed("a")  # a is now the most recent
    rule.failed("d")
    assert len(rule) == 3
    assert rule.wait("b") == 0  # evicted
    assert rule.wait("a") > 0 and rule.wait("c") > 0 and rule.wait("d") > 0


def test_a_huge_count_does_not_overflow():
    clock = Clock()
    rule = throttle(clock, free=0, base=0.001, cap=60.0)
    assert rule.backoff(10_000) == 60.0


def test_settings_out_of_range_are_refused():
    for kwargs in ({"free_failures": -1}, {"base_s": 0.0}, {"base_s": 9.0}, {"max_keys": 0}):
        values: dict[str, Any] = {"free_failures": 1, "base_s": 1.0, "max_s": 8.0, **kwargs}
        with pytest.raises(ValueError):
            LoginThrottle(**values)


Op = tuple[str, Any]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("fail"), st.integers(0, 6)),
        st.tuples(st.just("succeed"), st.integers(0, 6)),
        st.tuples(st.just("advance"), st.floats(0, 200, allow_nan=False)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=ops,
    free=st.integers(0, 4),
    base=st.floats(0.01, 5),
    cap=st.floats(5, 30),
    keys=st.integers(1, 5),
)
def test_property_bounded_wait_bounded_memory_and_success_clears(
    ops: list[Op], free: int, base: float, cap: float, keys: int
):
    clock = Clock()
    rule = LoginThrottle(free_failures=free, base_s=base, max_s=cap, max_keys=keys, clock=clock)
    for op, value in ops:
        if op == "fail":
            rule.failed(f"k{value}")
        elif op == "succeed":
            rule.succeeded(f"k{value}")
            assert rule.wait(f"k{value}") == 0
        else:
            clock.now += value
        assert len(rule) <= keys
        for key in range(7):
            assert 0 <= rule.wait(f"k{key}") <= cap


@settings(max_examples=300, deadline=None)
@given(ops=ops, free=st.integers(0, 4))
def test_property_the_wait_is_the_documented_rule(ops: list[Op], free: int):
    """Against a plain model of the rule (no eviction: the bound is never reached here)."""
    base, cap = 1.0, 16.0
    clock = Clock()
    rule = LoginThrottle(free_failures=free, base_s=base, max_s=cap, clock=clock)
    model: dict[str, tuple[int, float]] = {}
    for op, value in ops:
        key = f"k{value}"
        if op == "fail":
            count, last = model.get(key, (0, clock.now))
            if clock.now - last >= FORGET_AFTER_BACKOFFS * cap:
                count = 0
            model[key] = (count + 1, clock.now)
            rule.failed(key)
        elif op == "succeed":
            model.pop(key, None)
            rule.succeeded(key)
        else:
            clock.now += value
        for name, (count, last) in model.items():
            if clock.now - last >= FORGET_AFTER_BACKOFFS * cap or count <= free:
                expected = 0.0
            else:
                expected = max(0.0, last + min(cap, base * 2 ** (count - free - 1)) - clock.now)
            assert rule.wait(name) == pytest.approx(expected)


def test_source_keys():
    assert source_key(("127.0.0.2", 5000)) == "127.0.0.2"
    assert source_key(("2001:db8::1:2:3:4", 5000, 0, 0)) == "2001:db8::/64"
    assert source_key(("2001:db8::1", 1, 0, 0)) == source_key(("2001:db8::ffff", 2, 0, 0))
    assert source_key(("::ffff:10.0.0.1", 1, 0, 0)) == "10.0.0.1"
    assert source_key(("fe80::1%eth0", 1, 0, 2)) == "fe80::/64"
    assert source_key(None) is None
    assert source_key("/tmp/socket") is None
    assert source_key(("not an address", 1)) is None


# -- applied by AccountService ----------------------------------------------------------------


class CountingHasher(PasswordHasher):
    """Cheap parameters, and a count of verifies: an argon2 verify is what costs the time."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


RULE = LoginRule(
    free_failures=2, free_failures_per_address=4, backoff_base_s=1.0, backoff_max_s=8.0
)
ALICE = "alice@localhost"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    yield store
    store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
async def accounts(store: SqliteStore, clock: Clock, hasher: CountingHasher) -> AccountService:
    service = AccountService("localhost", store, login=RULE, hasher=hasher, clock=clock)
    await service.add("alice", "alice-pw")
    await service.load()
    hasher.verified = 0
    return service


async def fail(accounts: AccountService, identity: str, password: str, **kw: Any) -> str:
    """Authenticate and expect a refusal; its error id."""
    with pytest.raises((Forbidden, LimitExceeded)) as refused:
        await accounts.authenticate(parse_address(identity), "plain", password, **kw)
    return str(refused.value.error_id)


async def test_an_unknown_name_costs_one_argon2_verify_like_a_wrong_password(accounts, hasher):
    assert await fail(accounts, "nobody@localhost", "guess") == ErrorId.BAD_CREDENTIALS
    assert hasher.verified == 1
    assert await fail(accounts, ALICE, "guess") == ErrorId.BAD_CREDENTIALS
    assert hasher.verified == 2
    assert await fail(accounts, "x" * 500 + "@localhost", "guess") == ErrorId.BAD_CREDENTIALS
    assert hasher.verified == 3


async def test_an_unknown_name_verifies_even_without_load(store, hasher):
    service = AccountService("localhost", store, hasher=hasher)
    assert await fail(service, "nobody@localhost", "guess") == ErrorId.BAD_CREDENTIALS
    assert hasher.verified == 1


async def test_after_the_free_failures_even_the_right_password_waits(accounts, hasher, clock):
    for _ in range(RULE.free_failures + 1):
        assert await fail(accounts, ALICE, "guess") == ErrorId.BAD_CREDENTIALS
    verified = hasher.verified
    with pytest.raises(LimitExceeded) as throttled:
        await accounts.authenticate(parse_address(ALICE), "plain", "alice-pw")
    assert throttled.value.error_id is ErrorId.LOGIN_THROTTLED
    assert throttled.value.message == "Too many failed logins: try again in 1 s"
    assert throttled.value.details == {"retry_after_s": 1.0}
    assert hasher.verified == verified  # refused without checking anything
    clock.now += 0.55
    assert "try again in 0.5 s" in str(await _throttled_message(accounts, ALICE))
    clock.now += 0.45
    principal = await accounts.authenticate(parse_address(ALICE), "plain", "alice-pw")
    assert principal.identity == ALICE and not principal.guest


async def _throttled_message(accounts: AccountService, identity: str) -> str:
    with pytest.raises(LimitExceeded) as throttled:
        await accounts.authenticate(parse_address(identity), "plain", "whatever")
    return throttled.value.message


async def test_a_success_resets_the_identity(accounts, clock):
    for _ in range(RULE.free_failures + 1):
        await fail(accounts, ALICE, "guess")
    clock.now += 1
    await accounts.authenticate(parse_address(ALICE), "plain", "alice-pw")
    for _ in range(RULE.free_failures):  # free again
        assert await fail(accounts, ALICE, "guess") == ErrorId.BAD_CREDENTIALS


async def test_the_wait_never_exceeds_the_bound(accounts, clock):
    for _ in range(30):
        clock.now += RULE.backoff_max_s  # every attempt comes once its wait is over
        await fail(accounts, ALICE, "guess")
    assert "try again in 8 s" in await _throttled_message(accounts, ALICE)
    clock.now += RULE.backoff_max_s
    await accounts.authenticate(parse_address(ALICE), "plain", "alice-pw")


async def test_an_unknown_name_is_throttled_the_same_way(accounts):
    answers = {}
    for identity in (ALICE, "nobody@localhost"):
        answers[identity] = [await fail(accounts, identity, "guess") for _ in range(4)]
        answers[identity].append(await _throttled_message(accounts, identity))
    assert answers[ALICE] == answers["nobody@localhost"]
    assert answers[ALICE][-2:] == [
        ErrorId.LOGIN_THROTTLED,
        "Too many failed logins: try again in 1 s",
    ]


async def test_an_address_spraying_names_is_throttled_and_others_are_not(accounts):
    for n in range(RULE.free_failures_per_address + 1):
        await fail(accounts, f"user{n}@localhost", "guess", source="10.0.0.1")
    assert await fail(accounts, ALICE, "alice-pw", source="10.0.0.1") == ErrorId.LOGIN_THROTTLED
    await accounts.authenticate(parse_address(ALICE), "plain", "alice-pw", source="10.0.0.2")


async def test_a_success_does_not_reset_its_address(accounts):
    for n in range(RULE.free_failures_per_address):
        await fail(accounts, f"user{n}@localhost", "guess", source="10.0.0.1")
    await accounts.authenticate(parse_address(ALICE), "plain", "alice-pw", source="10.0.0.1")
    await fail(accounts, "user9@localhost", "guess", source="10.0.0.1")
    assert await fail(accounts, ALICE, "alice-pw", source="10.0.0.1") == ErrorId.LOGIN_THROTTLED


async def test_attempts_sent_together_cannot_outrun_the_throttle(accounts, hasher):
    results = await asyncio.gather(
        *(accounts.authenticate(parse_address(ALICE), "plain", "guess") for _ in range(10)),
        return_exceptions=True,
    )
    ids = [getattr(result, "error_id", None) for result in results]
    assert ids.count(ErrorId.BAD_CREDENTIALS) == RULE.free_failures + 1
    assert ids.count(ErrorId.LOGIN_THROTTLED) == 10 - RULE.free_failures - 1
    assert hasher.verified == RULE.free_failures + 1
    assert accounts._turns == {}


async def test_wrong_keys_count_per_address_not_per_identity(accounts):
    key = await accounts.create_key("alice")
    for _ in range(RULE.free_failures_per_address + 1):
        with pytest.raises(Forbidden):
            await accounts.authenticate(parse_address(ALICE), "key", "tdk_guess", source="10.0.0.1")
    with pytest.raises(LimitExceeded):
        await accounts.authenticate(parse_address(ALICE), "key", key, source="10.0.0.1")
    await accounts.authenticate(parse_address(ALICE), "key", key, source="10.0.0.2")
    await accounts.authenticate(parse_address(ALICE), "plain", "alice-pw", source="10.0.0.2")


async def test_the_identity_throttle_does_not_stop_a_key(accounts):
    key = await accounts.create_key("alice")
    for _ in range(RULE.free_failures + 1):
        await fail(accounts, ALICE, "guess")
    assert await fail(accounts, ALICE, "alice-pw") == ErrorId.LOGIN_THROTTLED
    await accounts.authenticate(parse_address(ALICE), "key", key)


async def test_feedme_tokens_count_per_address(accounts):
    key = await accounts.create_key("alice")
    for _ in range(RULE.free_failures_per_address + 1):
        assert accounts.identity_for_key("tdk_guess", "10.0.0.1") is None
    with pytest.raises(LimitExceeded):
        accounts.identity_for_key(key, "10.0.0.1")
    assert accounts.identity_for_key(key, "10.0.0.2") == ALICE
    assert accounts.identity_for_key(key) == ALICE


async def test_the_old_password_of_a_password_change_is_throttled_too(accounts, hasher, clock):
    change = {"password": "new-pw", "oldPassword": "guess"}
    for _ in range(RULE.free_failures + 1):
        with pytest.raises(Forbidden):
            await accounts.update_profile("alice", change, merge=True)
    verified = hasher.verified
    with pytest.raises(LimitExceeded):
        await accounts.update_profile("alice", {**change, "oldPassword": "alice-pw"}, merge=True)
    assert hasher.verified == verified
    assert await fail(accounts, ALICE, "alice-pw") == ErrorId.LOGIN_THROTTLED  # same identity
    clock.now += 1
    await accounts.update_profile("alice", {**change, "oldPassword": "alice-pw"}, merge=True)
    await accounts.authenticate(parse_address(ALICE), "plain", "new-pw")
