"""RFC 6455 checks on frames: a model of fragment order checked against ``Reassembler`` for any
sequence of data frames, and UTF-8 checked against Python's own decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from picows import WSCloseCode, WSMsgType
from picows.picows import _make_test_ws_frame

from tidings.gateway.frames import FrameError, Reassembler, check_reserved_bits, check_text

KINDS = [WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION]
frames = st.lists(
    st.tuples(st.sampled_from(KINDS), st.binary(max_size=6), st.booleans()), max_size=12
)


@given(frames, st.integers(min_value=1, max_value=40))
def test_reassembly_follows_the_rfc(sequence, limit):
    reassembler = Reassembler(limit)
    started: tuple[WSMsgType, bytes] | None = None
    skipping = False
    for kind, payload, fin in sequence:
        frame = _make_test_ws_frame(kind, payload, fin, False)
        in_message = started is not None or skipping
        if (kind is WSMsgType.CONTINUATION) != in_message:
            with pytest.raises(FrameError) as error:
                reassembler.add(frame)
            assert error.value.code is WSCloseCode.PROTOCOL_ERROR
            return
        out = reassembler.add(frame)
        if skipping:
            assert out is None
            skipping = not fin
            continue
        whole = (started[1] if started else b"") + payload
        kind_of_message = started[0] if started else kind
        if fin:
            assert out == (kind_of_message, whole)
            started = None
        elif len(whole) > limit:
            assert out == (kind_of_message, whole)  # cut short, for the session to refuse
            started, skipping = None, True
        else:
            assert out is None
            started = (kind_of_message, whole)


@given(st.binary(max_size=64))
def test_text_is_refused_exactly_when_it_is_not_utf8(data):
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    if valid:
        check_text(data)
    else:
        with pytest.raises(FrameError) as error:
            check_text(data)
        assert error.value.code is WSCloseCode.INVALID_TEXT


def test_reserved_bits_are_refused():
    check_reserved_bits(_make_test_ws_frame(WSMsgType.TEXT, b"x", True, False))
    with pytest.raises(FrameError):
        check_reserved_bits(_make_test_ws_frame(WSMsgType.TEXT, b"x", True, True))
