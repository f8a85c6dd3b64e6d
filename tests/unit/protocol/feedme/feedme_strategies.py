"""Hypothesis strategies shared by the Feedme unit and conformance tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tidings.protocol.feedme import Delta, DeltaOperation, FeedKey

# No surrogates: msgspec (and UTF-8 text frames) cannot carry lone ones.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
non_empty = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=16,
)
json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(text, json_values, max_size=5)
feed_args = st.dictionaries(text, text, max_size=3)
feed_keys = st.builds(FeedKey.of, non_empty, feed_args)

# Small alphabets so that generated paths often hit generated documents.
KEYS = ("a", "b", "c")
small_keys = st.sampled_from(KEYS)
small_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from(["", "x", "yz"]),
)
small_values: st.SearchStrategy[Any] = st.recursive(
    small_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(small_keys, children, max_size=3)
    ),
    max_leaves=10,
)
small_docs: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    small_keys, small_values, max_size=3
)
paths = st.one_of(
    st.just(()),
    st.tuples(small_keys).flatmap(
        lambda head: st.lists(
            st.one_of(small_keys, st.integers(min_value=0, max_value=3)), max_size=3
        ).map(lambda rest: head + tuple(rest))
    ),
)


@st.composite
def deltas(draw: st.DrawFn) -> Delta:
    op = draw(st.sampled_from(list(DeltaOperation)))
    path = draw(paths)
    if op in (
        DeltaOperation.DELETE,
        DeltaOperation.TOGGLE,
        DeltaOperation.DELETE_FIRST,
        DeltaOperation.DELETE_LAST,
    ):
        return Delta(op, path)
    if op in (DeltaOperation.PREPEND, DeltaOperation.APPEND):
        return Delta(op, path, draw(st.sampled_from(["", "p", "q r"])))
    if op in (DeltaOperation.INCREMENT, DeltaOperation.DECREMENT):
        return Delta(op, path, draw(small_scalars.filter(lambda v: type(v) in (int, float))))
    if op is DeltaOperation.SET and not path:
        return Delta(op, path, draw(st.one_of(small_docs, small_values)))
    return Delta(op, path, draw(small_values))
