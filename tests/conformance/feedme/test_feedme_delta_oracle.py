"""Feed Deltas: our delta application against the client's own deltaWriter."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from feedme_node import NodeRunner, examples
from feedme_strategies import doc_and_deltas

from tidings.protocol.feedme import Delta, DeltaError, apply_deltas, feed_md5, json_equal

pytestmark = pytest.mark.conformance


def _case(doc: dict[str, Any], batch: list[Delta]) -> dict[str, Any]:
    return {"data": doc, "deltas": msgspec.to_builtins(batch)}


def _compare(doc: dict[str, Any], batch: list[Delta], answer: dict[str, Any]) -> str:
    assert "schema" not in answer, f"client finds our delta schema-invalid: {answer}"
    try:
        ours = apply_deltas(doc, batch)
    except DeltaError as exc:
        if exc.code.strict_only:
            return "strict"  # the client tolerates a JavaScript quirk we refuse
        assert answer["ok"] is False, (doc, batch, exc)
        assert answer["index"] == exc.index, (doc, batch, exc, answer)
        return "error"
    assert answer["ok"] is True, (doc, batch, answer)
    assert json_equal(ours, answer["data"]), (doc, batch, ours, answer)
    assert feed_md5(ours) == answer["md5"]
    return "ok"


def test_deltas_match_client(feedme_node: NodeRunner) -> None:
    batch = examples(doc_and_deltas(), 1000)
    answers = feedme_node("deltas.js", [_case(doc, ds) for doc, ds in batch])
    outcomes = [_compare(doc, ds, answer) for (doc, ds), answer in zip(batch, answers, strict=True)]
    # The comparison is only meaningful if both outcomes occur often.
    assert outcomes.count("ok") > 100 and outcomes.count("error") > 100, outcomes.count("ok")


DOC = {"s": "mid", "n": 10, "b": True, "arr": [1, "two", [3]], "empty": [], "obj": {"x": 1}}


@pytest.mark.parametrize(
    "delta",
    [
        {"Operation": "Set", "Path": ["arr", 4], "Value": 1},
        {"Operation": "Set", "Path": [], "Value": [1]},
        {"Operation": "Delete", "Path": []},
        {"Operation": "Delete", "Path": ["nope"]},
        {"Operation": "DeleteValue", "Path": ["s"], "Value": "m"},
        {"Operation": "Prepend", "Path": ["n"], "Value": "x"},
        {"Operation": "Append", "Path": [], "Value": "x"},
        {"Operation": "Increment", "Path": ["b"], "Value": 1},
        {"Operation": "Decrement", "Path": ["s"], "Value": 1},
        {"Operation": "Toggle", "Path": ["n"]},
        {"Operation": "InsertFirst", "Path": [], "Value": 1},
        {"Operation": "InsertLast", "Path": ["obj"], "Value": 1},
        {"Operation": "InsertBefore", "Path": ["arr", 3], "Value": 1},
        {"Operation": "InsertAfter", "Path": ["arr", 3], "Value": 1},
        {"Operation": "InsertBefore", "Path": ["obj", "x"], "Value": 1},
        {"Operation": "DeleteFirst", "Path": ["empty"]},
        {"Operation": "DeleteLast", "Path": ["obj"]},
        {"Operation": "Set", "Path": ["s", "x"], "Value": 1},
    ],
)
def test_every_error_row_is_an_error_for_the_client(
    feedme_node: NodeRunner, delta: dict[str, Any]
) -> None:
    ours = msgspec.convert(delta, Delta)
    [answer] = feedme_node("deltas.js", [{"data": DOC, "deltas": [delta]}])
    assert _compare(DOC, [ours], answer) == "error"
