"""Hypothesis strategies shared by the Feedme unit and conformance tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tidings.protocol.feedme import (
    Action,
    ActionResponse,
    ActionRevelation,
    Delta,
    DeltaOperation,
    FeedClose,
    FeedCloseResponse,
    FeedKey,
    FeedOpen,
    FeedOpenResponse,
    FeedTermination,
    Handshake,
    HandshakeResponse,
    ViolationResponse,
)

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
feed_names = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=8
)
"""Feed names key stored documents: NUL, which PostgreSQL's text cannot hold, is no name."""
feed_keys = st.builds(FeedKey.of, feed_names, feed_args)

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


client_messages = st.one_of(
    st.builds(Handshake, st.lists(text, min_size=1, max_size=3)),
    st.builds(Action, non_empty, json_objects, non_empty),
    st.builds(lambda k: FeedOpen(k.name, k.args_dict()), feed_keys),
    st.builds(lambda k: FeedClose(k.name, k.args_dict()), feed_keys),
)
server_messages = st.one_of(
    st.builds(ViolationResponse, json_objects),
    st.builds(HandshakeResponse.accepted, non_empty),
    st.just(HandshakeResponse.rejected()),
    st.builds(ActionResponse.ok, non_empty, json_objects),
    st.builds(ActionResponse.error, non_empty, non_empty, json_objects),
    st.builds(FeedOpenResponse.ok, feed_keys, json_objects),
    st.builds(FeedOpenResponse.error, feed_keys, non_empty, json_objects),
    st.builds(FeedCloseResponse.of, feed_keys),
    st.builds(FeedTermination.of, feed_keys, non_empty, json_objects),
    st.builds(
        ActionRevelation.of,
        feed_keys,
        non_empty,
        json_objects,
        st.lists(deltas(), max_size=3),
        st.one_of(
            st.none(), st.text(st.characters(exclude_categories=("Cs",)), min_size=24, max_size=24)
        ),
    ),
)


def _existing_paths(doc: Any) -> list[tuple[str | int, ...]]:
    """Every path into ``doc`` that the delta schema can express."""
    found: list[tuple[str | int, ...]] = [()]
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            children: Any = [(k, v) for k, v in node.items() if k]
        elif isinstance(node, list) and path:
            children = list(enumerate(node))
        else:
            continue
        for key, child in children:
            found.append((*path, key))
            stack.append(((*path, key), child))
    return found


@st.composite
def doc_and_deltas(draw: st.DrawFn) -> tuple[dict[str, Any], list[Delta]]:
    """A document and deltas whose paths mostly hit it, so successes are common."""
    doc = draw(small_docs)
    batch = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        delta = draw(deltas())
        if draw(st.integers(min_value=0, max_value=3)):
            path = draw(st.sampled_from(_existing_paths(doc)))
            if draw(st.booleans()) and path:
                path = (*path[:-1], draw(st.one_of(small_keys, st.integers(0, 3))))
            if path and isinstance(path[0], str):
                delta = Delta(delta.operation, path, delta.value)
        batch.append(delta)
    return doc, batch
