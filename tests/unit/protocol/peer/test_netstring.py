"""Netstrings: encoding, incremental reading under any split, and every refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol import InvalidState
from tidings.protocol.peer import NetstringReader, PeerError, encode_netstring


def feed_in_pieces(reader: NetstringReader, data: bytes, cuts: list[int]) -> list[bytes]:
    """Feed ``data`` split at ``cuts`` (positions, any order, duplicates allowed)."""
    payloads: list[bytes] = []
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        payloads += reader.feed(data[start:cut])
        start = cut
    return payloads


def outcome(data: bytes, cuts: list[int], max_length: int) -> tuple[str, list[bytes]]:
    """``("ok", payloads)`` or ``(kind, payloads before the error)``."""
    reader = NetstringReader(max_length)
    payloads: list[bytes] = []
    start = 0
    try:
        for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            payloads += reader.feed(data[start:cut])
            start = cut
    except PeerError as exc:
        return exc.kind, payloads
    return "ok", payloads


def test_encoding() -> None:
    assert encode_netstring(b"") == b"0:,"
    assert encode_netstring(b"hello world!") == b"12:hello world!,"


def test_partial_input_is_kept() -> None:
    reader = NetstringReader()
    assert reader.feed(b"3:ab") == []
    assert reader.feed(b"c,1") == [b"abc"]
    assert reader.feed(b":x,0:,") == [b"x", b""]


def test_byte_at_a_time() -> None:
    data = encode_netstring(b"first") + encode_netstring(b"") + encode_netstring(b"x" * 300)
    reader = NetstringReader()
    payloads = [p for i in range(len(data)) for p in reader.feed(data[i : i + 1])]
    assert payloads == [b"first", b"", b"x" * 300]


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b":x,", "malformed"),  # no length
        (b"x", "malformed"),  # a non-digit before ':'
        (b"1a:x,", "malformed"),
        (b" 1:x,", "malformed"),
        (b"+1:x,", "malformed"),
        (b"01:x,", "malformed"),  # a leading zero
        (b"00:,", "malformed"),
        (b"1:xy", "malformed"),  # no trailing ','
        (b"1:x;", "malformed"),
        (b"1000:", "malformed"),  # more digits than len(str(max_length)) = 3
        (b"1000", "malformed"),  # known before the ':' arrives
        (b"101:", "too-large"),
    ],
)
def test_refusals(data: bytes, kind: str) -> None:
    for cuts in ([], list(range(len(data)))):
        reader = NetstringReader(max_length=100)
        with pytest.raises(PeerError) as caught:
            feed_in_pieces(reader, data, cuts)
        assert caught.value.kind == kind
        with pytest.raises(InvalidState):
            reader.feed(b"0:,")


def test_the_limit_itself_is_accepted() -> None:
    reader = NetstringReader(max_length=100)
    assert reader.feed(encode_netstring(b"x" * 100)) == [b"x" * 100]
    assert NetstringReader(max_length=0).feed(b"0:,0:,") == [b"", b""]


def test_a_refused_header_is_refused_before_its_payload_arrives() -> None:
    reader = NetstringReader(max_length=100)
    with pytest.raises(PeerError, match="over 100"):
        reader.feed(b"999:")


@given(st.lists(st.binary(max_size=200), max_size=8), st.lists(st.integers(0, 10_000)))
def test_any_split_yields_every_payload_in_order(payloads: list[bytes], cuts: list[int]) -> None:
    data = b"".join(encode_netstring(p) for p in payloads)
    assert feed_in_pieces(NetstringReader(max_length=200), data, cuts) == payloads


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=30).map(encode_netstring),
            st.binary(max_size=8),
            st.sampled_from([b"0", b":", b",", b"9", b"12:", b"01:"]),
        ),
        max_size=10,
    ).map(b"".join),
    st.lists(st.integers(0, 1000), max_size=20),
)
def test_junk_fails_the_same_way_whatever_the_split(data: bytes, cuts: list[int]) -> None:
    kind, whole = outcome(data, [], max_length=20)
    kind_in_pieces, pieces = outcome(data, cuts, max_length=20)
    assert kind_in_pieces == kind
    if kind == "ok":
        assert pieces == whole
    else:
        assert pieces[: len(whole)] == whole
