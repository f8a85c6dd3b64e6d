"""The token bucket behind per-connection backpressure, on a clock the test controls."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core import limits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(limits, "_monotonic", fake)
    return fake


def test_the_burst_is_free_then_each_token_costs_one_period(clock):
    bucket = limits.TokenBucket(rate=10.0, burst=3)
    assert [bucket.spend() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.spend() == pytest.approx(0.1)
    assert bucket.spend() == pytest.approx(0.2)
    clock.now += 0.2
    assert bucket.spend() == pytest.approx(0.1)


def test_an_idle_bucket_holds_one_burst_not_more(clock):
    bucket = limits.TokenBucket(rate=10.0, burst=3)
    clock.now += 3600
    assert [bucket.spend() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.spend() > 0.0


@given(
    rate=st.floats(min_value=1.0, max_value=1e5),
    burst=st.integers(min_value=1, max_value=1000),
    steps=st.lists(st.tuples(st.integers(1, 50), st.floats(0.0, 2.0)), max_size=30),
)
def test_waits_match_the_debt_and_never_exceed_the_rate(rate, burst, steps):
    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(limits, "_monotonic", clock)
        bucket = limits.TokenBucket(rate, burst)
        start, spent = clock.now, 0
        for count, pause in steps:
            for _ in range(count):
                wait = bucket.spend()
                spent += 1
                # Honouring every wait keeps the sender within burst + rate * elapsed.
                allowed = burst + rate * (clock.now + wait - start)
                assert spent <= allowed + 1e-6 * allowed
                assert wait >= 0.0
            clock.now += pause
