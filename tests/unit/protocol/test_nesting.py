"""The nesting bound agrees with the real depth of any JSON document, strings and all."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol._nesting import MAX_DEPTH, nested_deeper_than
from tidings.protocol.lime import EnvelopeError, decode_envelope

# strings full of the characters the check must not be fooled by
tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\ab\u00e9'), max_size=8)
scalars = st.none() | st.booleans() | st.integers() | tricky_text
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(documents, st.integers(min_value=0, max_value=12))
def test_the_check_matches_the_depth(document: Any, limit: int) -> None:
    data = msgspec.json.encode(document)
    assert nested_deeper_than(data, limit) == (depth(document) > limit)


@given(st.integers(min_value=0, max_value=200))
def test_wrapping_one_level_at_a_time(levels: int) -> None:
    data = b"[" * levels + b"]" * levels
    assert nested_deeper_than(data) == (levels > MAX_DEPTH)


def test_a_deep_envelope_is_a_named_validation_error_not_a_recursion_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    frame = b'{"id":"x","to":"a@b","type":"application/json","content":%s}' % deep
    try:
        decode_envelope(frame)
    except EnvelopeError as error:
        assert "64 levels" in error.reason.description
    else:
        raise AssertionError("decoded")


def test_the_bound_itself_still_decodes() -> None:
    content = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)
    frame = b'{"id":"x","to":"a@b","type":"application/json","content":%s}' % content
    assert decode_envelope(frame).id == "x"
