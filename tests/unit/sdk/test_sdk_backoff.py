"""Reconnection delays."""

from __future__ import annotations

import itertools

import pytest

from tidings.sdk import Backoff


def test_delays_grow_geometrically_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, factor=2.0, jitter=0.0)
    delays = list(itertools.islice(backoff.delays(), 6))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_jitter_removes_at_most_its_share() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0, jitter=0.5)
    assert next(backoff.delays(rng=lambda: 0.0)) == pytest.approx(1.0)
    assert next(backoff.delays(rng=lambda: 0.999999)) == pytest.approx(0.5, abs=1e-5)


def test_max_attempts_bounds_the_number_of_delays() -> None:
    assert len(list(Backoff(max_attempts=3).delays())) == 3


def test_unbounded_by_default() -> None:
    assert len(list(itertools.islice(Backoff().delays(), 1000))) == 1000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1.0},
        {"initial": 2.0, "maximum": 1.0},
        {"factor": 0.5},
        {"jitter": 1.5},
        {"max_attempts": 0},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]
