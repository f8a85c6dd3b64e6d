"""Helpers for the Feedme conformance tests (imported by name, unlike conftest)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NodeRunner = Callable[[str, Iterable[Any]], list[Any]]


def examples(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """Draw ``count`` hypothesis examples so one Node process can judge them all.

    Shrinking is traded for speed: a failure reports the exact input instead.
    """
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(example: Any) -> None:
        drawn.append(example)

    draw()
    return drawn
