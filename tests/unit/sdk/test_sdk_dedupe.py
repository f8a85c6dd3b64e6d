"""The dedupe set: a bounded LRU of (sender, id), optionally persisted."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.sdk import SeenMessages


def key(n: int) -> tuple[str, str]:
    return ("alice@localhost/a", f"m{n}")


def test_remembers_what_it_was_given() -> None:
    seen = SeenMessages(capacity=10)
    seen.add(key(1))
    assert key(1) in seen
    assert key(2) not in seen
    assert ("bob@localhost/b", "m1") not in seen  # the sender is part of the key


def test_evicts_the_least_recently_used_beyond_capacity() -> None:
    seen = SeenMessages(capacity=3)
    for n in range(3):
        seen.add(key(n))
    assert seen.check(key(0))  # a hit refreshes key 0
    seen.add(key(3))
    assert len(seen) == 3
    assert key(1) not in seen
    assert key(0) in seen and key(2) in seen and key(3) in seen


def test_check_reports_misses_without_adding() -> None:
    seen = SeenMessages(capacity=3)
    assert not seen.check(key(1))
    assert key(1) not in seen


@given(st.lists(st.integers(0, 30), max_size=200), st.integers(1, 10))
def test_never_exceeds_capacity_and_keeps_the_latest(adds: list[int], capacity: int) -> None:
    seen = SeenMessages(capacity=capacity)
    for n in adds:
        seen.add(key(n))
    assert len(seen) <= capacity
    if adds:
        assert key(adds[-1]) in seen


def test_survives_a_restart_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "seen.log"
    seen = SeenMessages(capacity=100, path=path)
    seen.add(key(1))
    seen.add(key(2))
    seen.close()
    again = SeenMessages(capacity=100, path=path)
    assert key(1) in again and key(2) in again
    assert key(3) not in again
    again.close()


def test_file_keeps_only_the_latest_capacity_keys(tmp_path: Path) -> None:
    path = tmp_path / "seen.log"
    seen = SeenMessages(capacity=2, path=path)
    for n in range(3):
        seen.add(key(n))
    seen.close()
    again = SeenMessages(capacity=2, path=path)
    assert key(0) not in again
    assert key(1) in again and key(2) in again
    again.close()


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "seen.log"
    path.write_bytes(b'["alice@localhost/a","m1"]\n["alice@localhost/a","m')
    seen = SeenMessages(capacity=10, path=path)
    assert key(1) in seen
    assert len(seen) == 1
    seen.add(key(2))  # appends after the compaction dropped the torn line
    seen.close()
    again = SeenMessages(capacity=10, path=path)
    assert again.check(key(2))
    again.close()


def test_log_is_compacted_when_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "seen.log"
    seen = SeenMessages(capacity=5, path=path, fsync=False)
    for n in range(100):
        seen.add(key(n))
    seen.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) <= 2 * 5 + 1
    again = SeenMessages(capacity=5, path=path)
    assert again.check(key(99))
    again.close()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SeenMessages(capacity=0)
