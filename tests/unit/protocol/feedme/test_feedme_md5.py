"""Integrity Verification: FeedMd5 byte-exact with feedme-util 0.2.2 md5calculator."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol.feedme import canonical_json, feed_md5, js_number, js_string

# Copy of reference/feedme_md5_vectors.jsonl, checked against the client's own md5calculator.
VECTORS = Path(__file__).with_name("feedme_md5_vectors.jsonl")


def _vectors() -> list[tuple[str, str, str]]:
    # split("\n"), not splitlines(): a vector holds a raw U+2028.
    rows = [json.loads(line) for line in VECTORS.read_text("utf-8").split("\n") if line]
    return [(r["input"], r["canonical"], r["md5"]) for r in rows]


@pytest.mark.parametrize(("source", "canonical", "md5"), _vectors())
def test_reference_vectors(source: str, canonical: str, md5: str) -> None:
    data = json.loads(source)  # stdlib: keeps lone surrogates, like JSON.parse
    assert canonical_json(data) == canonical
    assert feed_md5(data) == md5


def test_all_reference_vectors_present() -> None:
    assert len(_vectors()) == 10


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (100.0, "100"),
        (1.5, "1.5"),
        (-12.5e-10, "-1.25e-9"),
        (1e16, "10000000000000000"),
        (1e21, "1e+21"),
        (1.5e21, "1.5e+21"),
        (1e20, "100000000000000000000"),
        (123456789012345678901, "123456789012345680000"),
        (1e-5, "0.00001"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (2.5e-5, "0.000025"),
        (0.1, "0.1"),
        (0.30000000000000004, "0.30000000000000004"),
        (2**53, "9007199254740992"),
        (2**53 + 1, "9007199254740992"),
        (-(2**53) - 1, "-9007199254740992"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (123.456, "123.456"),
    ],
)
def test_js_number(value: float, expected: str) -> None:
    assert js_number(value) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 10**400])
def test_js_number_rejects_non_finite(bad: float) -> None:
    with pytest.raises(ValueError):
        js_number(bad)


def test_js_number_rejects_bool() -> None:
    with pytest.raises(TypeError):
        js_number(True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", '"plain"'),
        ('q"b\\', '"q\\"b\\\\"'),
        ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
        ("\x00\x1f", '"\\u0000\\u001f"'),
        ("\x7f\u2028\u2029/é", '"\x7f\u2028\u2029/é"'),
        ("\ud800", '"\\ud800"'),
        ("\udc00x", '"\\udc00x"'),
        ("\ud83d\ude00", '"😀"'),  # a surrogate pair is one JS character
        ("😀", '"😀"'),
    ],
)
def test_js_string(text: str, expected: str) -> None:
    assert js_string(text) == expected


def test_keys_sorted_by_utf16_code_units() -> None:
    data = {"\uffff": 1, "😀": 2, "a": 3, "B": 4, "": 5}
    assert canonical_json(data) == '{"":5,"B":4,"a":3,"😀":2,"\uffff":1}'


def test_deep_document_does_not_exhaust_stack() -> None:
    data: dict[str, object] = {}
    node = data
    for _ in range(5000):
        child: dict[str, object] = {}
        node["k"] = child
        node = child
    assert canonical_json(data).startswith('{"k":{"k":')
    assert len(feed_md5(data)) == 24


def test_root_must_be_object() -> None:
    with pytest.raises(TypeError):
        feed_md5([1, 2])  # type: ignore[arg-type]


def test_rejects_non_json() -> None:
    with pytest.raises(TypeError):
        canonical_json({"a": {1, 2}})


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_js_number_round_trips(value: float) -> None:
    text = js_number(value)
    assert float(text) == value or (value == 0 and float(text) == 0)
    assert "e" not in text or "e+" in text or "e-" in text
    assert not text.endswith(".0")


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_safe_integers_print_as_python(value: int) -> None:
    assert js_number(value) == str(value)
    assert js_number(float(value)) == str(value)
