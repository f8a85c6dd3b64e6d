"""The cluster's pieces without sockets: the message codec (any bytes give a message or a clear
error), the session directory as a state machine (its two indexes agree after any sequence,
and it matches a plain model), and the holes a live write can jump over."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core.cluster_directory import Holes, SessionDirectory
from tidings.core.cluster_messages import (
    Attached,
    ClusterMessageError,
    Deliver,
    Forget,
    Heartbeat,
    LiveEntry,
    Sessions,
    Wake,
    decode,
    encode,
)

text = st.text(max_size=12)
presence = st.dictionaries(st.sampled_from(["status", "message"]), text, max_size=2)
messages = st.one_of(
    st.builds(Heartbeat, text, st.integers(0, 10**6)),
    st.builds(Attached, text, text, text, presence),
    st.builds(Wake, text, text, text, st.lists(st.integers(0, 2**62))),
    st.builds(Deliver, text, text, text, st.binary(max_size=30), text, text, st.booleans()),
    st.builds(Forget, text, text, text, st.binary(max_size=30)),
    st.builds(Sessions, text, st.lists(st.builds(LiveEntry, text, text, presence), max_size=3)),
)


@given(messages)
def test_every_message_survives_its_codec(message: Any) -> None:
    assert decode(encode(message)) == message


@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_message_or_a_clear_error(data: bytes) -> None:
    try:
        decoded = decode(data)
    except ClusterMessageError:
        return
    assert isinstance(decoded.origin, str)


@given(messages, st.integers(0, 60), st.binary(min_size=1, max_size=4))
def test_a_damaged_message_is_refused_clearly_or_still_a_message(
    message: Any, at: int, noise: bytes
) -> None:
    data = bytearray(encode(message))
    at = min(at, len(data))
    data[at : at + len(noise)] = noise
    with contextlib.suppress(ClusterMessageError):
        decode(bytes(data))


NODES = ["n1", "n2", "n3"]
keys = st.tuples(st.sampled_from(["ann", "bob"]), st.sampled_from(["x", "y"]))
steps = st.lists(
    st.one_of(
        st.tuples(st.just("attach"), st.sampled_from(NODES), keys),
        st.tuples(st.just("detach"), st.sampled_from(NODES), keys),
        st.tuples(st.just("beat"), st.sampled_from(NODES), st.none()),
        st.tuples(st.just("tick"), st.none(), st.none()),
        st.tuples(st.just("bye"), st.sampled_from(NODES), st.none()),
        st.tuples(st.just("here"), st.none(), keys),
        st.tuples(st.just("hello"), st.sampled_from(NODES), st.lists(keys, max_size=3)),
    ),
    max_size=40,
)


@given(steps)
def test_the_directory_stays_consistent_and_matches_a_model(sequence: list[Any]) -> None:
    """Model: each session's owner; each node's last heartbeat. A node silent for three
    heartbeats (3 s here) is dead and owns nothing."""
    directory = SessionDirectory("me", interval=1.0)
    now = 0.0
    owner: dict[tuple[str, str], str] = {}
    heard: dict[str, float] = {}
    for action, node, arg in sequence:
        if action == "attach":
            directory.attached(node, arg[0], arg[1], {}, now)
            owner[arg] = node
            heard[node] = now
        elif action == "detach":
            directory.detached(node, arg[0], arg[1])
            if owner.get(arg) == node:
                del owner[arg]
        elif action == "beat":
            directory.heard(node, now)
            heard[node] = now
        elif action == "tick":
            now += 1.0
            directory.expire(now)
            for dead in [n for n, t in heard.items() if now - t >= 3.0]:
                del heard[dead]
                owner = {k: v for k, v in owner.items() if v != dead}
        elif action == "bye":
            directory.drop(node)
            heard.pop(node, None)
            owner = {k: v for k, v in owner.items() if v != node}
        elif action == "here":
            directory.taken_here(arg[0], arg[1])
            owner.pop(arg, None)
        else:
            directory.replace(node, [(i, n, {}) for i, n in arg], now)
            owner = {k: v for k, v in owner.items() if v != node}
            for key in arg:
                owner[key] = node
            heard[node] = now
        directory.check()
        for identity in ("ann", "bob"):
            for instance in ("x", "y"):
                assert directory.owner(identity, instance) == owner.get((identity, instance))
        assert set(directory.nodes) == set(heard)


def test_a_node_is_dead_after_three_missed_heartbeats() -> None:
    directory = SessionDirectory("me", interval=2.0)
    directory.attached("n1", "ann", "x", {"status": "busy"}, 10.0)
    assert directory.expire(15.9) == []
    assert directory.owner("ann", "x") == "n1"
    assert directory.expire(16.0) == ["ann"]
    assert directory.owner("ann", "x") is None and not directory.nodes


def test_a_late_detached_from_the_old_node_leaves_the_new_owner() -> None:
    directory = SessionDirectory("me", interval=2.0)
    directory.attached("n1", "ann", "x", {}, 0.0)
    assert directory.attached("n2", "ann", "x", {}, 0.0) == "n1"
    assert not directory.detached("n1", "ann", "x")
    assert directory.owner("ann", "x") == "n2"
    directory.check()


def test_holes_are_only_rows_a_live_write_jumped_over() -> None:
    holes = Holes()
    holes.jump(10, 11)  # no gap
    holes.jump(11, 15)  # 12..14 may be missing
    assert holes.take([5, 11, 13, 15]) == [13]
    assert holes.take([13]) == []  # written once
    assert holes.all() == (11, [(11, 15)])


@pytest.mark.parametrize("bad", [b"", b"\x80", b"\xa3abc", b"\x81\xa1t\xa4wake"])
def test_known_garbage_is_a_cluster_message_error(bad: bytes) -> None:
    with pytest.raises(ClusterMessageError):
        decode(bad)
