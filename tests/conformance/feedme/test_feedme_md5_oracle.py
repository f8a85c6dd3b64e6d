"""Integrity Verification: our FeedMd5 against the client's own md5calculator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from feedme_node import NodeRunner, examples
from feedme_strategies import json_objects, text
from hypothesis import strategies as st

from tidings.protocol.feedme import canonical_json, feed_md5

pytestmark = pytest.mark.conformance
VECTORS = Path(__file__).parents[2] / "unit" / "protocol" / "feedme" / "feedme_md5_vectors.jsonl"


def test_reference_vectors_through_the_client(feedme_node: NodeRunner) -> None:
    rows = [json.loads(line) for line in VECTORS.read_text("utf-8").split("\n") if line]
    # Feed the Node side the vector's own JSON text so JSON.parse does the parsing.
    answers = feedme_node("md5.js", [json.loads(row["input"]) for row in rows])
    for row, answer in zip(rows, answers, strict=True):
        assert answer["md5"] == row["md5"]
        assert answer["canonical"] == row["canonical"]


astral_keys = st.dictionaries(
    st.sampled_from(["", "a", "B", "10", "9", "\uffff", "\ue000", "😀", "𝄞", "é", "\x7f"]),
    st.one_of(text, st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    max_size=8,
)
interesting_numbers = st.lists(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.sampled_from([0.1, -0.0, 1e21, 1e-7, 1e-6, 5e-324, 2**53 + 1, 123456789012345678901]),
        st.floats(min_value=-1e25, max_value=1e25).map(lambda f: round(f, 3)),
    ),
    max_size=10,
).map(lambda numbers: {"n": numbers})


def test_feed_md5_matches_client(feedme_node: NodeRunner) -> None:
    docs: list[dict[str, Any]] = examples(
        st.one_of(json_objects, astral_keys, interesting_numbers), 600
    )
    answers = feedme_node("md5.js", docs)
    for doc, answer in zip(docs, answers, strict=True):
        assert canonical_json(doc) == answer["canonical"], doc
        assert feed_md5(doc) == answer["md5"], doc
