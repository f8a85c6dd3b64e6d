"""Feed Deltas: the 14 operations and their errors, as feedme-util 0.2.2 deltawriter."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from feedme_strategies import deltas, small_docs, small_values
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol.feedme import (
    Delta,
    DeltaError,
    DeltaErrorCode,
    DeltaOperation,
    apply_delta,
    apply_delta_in_place,
    apply_deltas,
    apply_deltas_in_place,
    check_deltas,
    copy_json,
    decode_server_message,
    json_equal,
)

Op = DeltaOperation
E = DeltaErrorCode
DOC: dict[str, Any] = {
    "s": "mid",
    "n": 10,
    "f": 1.5,
    "b": True,
    "z": None,
    "arr": [1, "two", [3], {"k": 4}],
    "empty": [],
    "obj": {"x": 1, "y": [1, 1, 2]},
}

OK_CASES = [
    # Set
    (Op.SET, ("s",), "new", lambda d: d.update(s="new")),
    (Op.SET, ("new",), [1], lambda d: d.update(new=[1])),
    (Op.SET, ("arr", 0), None, lambda d: d["arr"].__setitem__(0, None)),
    (Op.SET, ("arr", 4), "end", lambda d: d["arr"].append("end")),
    (Op.SET, ("obj", "y", 3), 9, lambda d: d["obj"]["y"].append(9)),
    (Op.SET, (), {"fresh": 1}, lambda d: (d.clear(), d.update(fresh=1))),
    # Delete
    (Op.DELETE, ("s",), None, lambda d: d.pop("s")),
    (Op.DELETE, ("arr", 1), None, lambda d: d["arr"].pop(1)),
    (Op.DELETE, ("z",), None, lambda d: d.pop("z")),
    # DeleteValue
    (Op.DELETE_VALUE, ("obj", "y"), 1, lambda d: d["obj"].__setitem__("y", [2])),
    (Op.DELETE_VALUE, ("obj",), 1, lambda d: d["obj"].pop("x")),
    (Op.DELETE_VALUE, (), 10, lambda d: d.pop("n")),
    (Op.DELETE_VALUE, ("arr",), {"k": 4}, lambda d: d["arr"].pop(3)),
    (Op.DELETE_VALUE, ("arr",), [3], lambda d: d["arr"].pop(2)),
    (Op.DELETE_VALUE, ("arr",), "nothing", lambda d: None),
    (Op.DELETE_VALUE, ("arr",), True, lambda d: None),  # 1 is not true (lodash isEqual)
    (Op.DELETE_VALUE, ("arr",), 1.0, lambda d: d["arr"].pop(0)),  # JS numbers
    # Prepend / Append
    (Op.PREPEND, ("s",), "pre-", lambda d: d.update(s="pre-mid")),
    (Op.APPEND, ("s",), "-post", lambda d: d.update(s="mid-post")),
    (Op.APPEND, ("arr", 1), "!", lambda d: d["arr"].__setitem__(1, "two!")),
    # Increment / Decrement
    (Op.INCREMENT, ("n",), 5, lambda d: d.update(n=15)),
    (Op.INCREMENT, ("f",), 0.25, lambda d: d.update(f=1.75)),
    (Op.DECREMENT, ("n",), 2.5, lambda d: d.update(n=7.5)),
    (Op.INCREMENT, ("arr", 0), -1, lambda d: d["arr"].__setitem__(0, 0)),
    # Toggle
    (Op.TOGGLE, ("b",), None, lambda d: d.update(b=False)),
    # InsertFirst / InsertLast
    (Op.INSERT_FIRST, ("arr",), "x", lambda d: d["arr"].insert(0, "x")),
    (Op.INSERT_LAST, ("empty",), {"a": 1}, lambda d: d["empty"].append({"a": 1})),
    (Op.INSERT_LAST, ("arr", 2), 4, lambda d: d["arr"][2].append(4)),
    # InsertBefore / InsertAfter
    (Op.INSERT_BEFORE, ("arr", 0), "x", lambda d: d["arr"].insert(0, "x")),
    (Op.INSERT_BEFORE, ("arr", 3), "x", lambda d: d["arr"].insert(3, "x")),
    (Op.INSERT_AFTER, ("arr", 3), "x", lambda d: d["arr"].append("x")),
    (Op.INSERT_AFTER, ("arr", 0), "x", lambda d: d["arr"].insert(1, "x")),
    # DeleteFirst / DeleteLast
    (Op.DELETE_FIRST, ("arr",), None, lambda d: d["arr"].pop(0)),
    (Op.DELETE_LAST, ("arr",), None, lambda d: d["arr"].pop()),
]


def _delta(op: DeltaOperation, path: tuple[str | int, ...], value: Any) -> Delta:
    if op in (Op.DELETE, Op.TOGGLE, Op.DELETE_FIRST, Op.DELETE_LAST):
        return Delta(op, path)
    return Delta(op, path, value)


@pytest.mark.parametrize(("op", "path", "value", "expect"), OK_CASES)
def test_operation_applies(
    op: DeltaOperation, path: tuple[str | int, ...], value: Any, expect: Any
) -> None:
    delta = _delta(op, path, value)
    original = copy.deepcopy(DOC)
    expected = copy.deepcopy(DOC)
    expect(expected)
    result = apply_delta(original, delta)
    assert result == expected
    assert original == DOC, "apply_delta must not mutate its input"
    in_place = copy.deepcopy(DOC)
    assert apply_delta_in_place(in_place, delta) == expected


def test_every_operation_is_covered() -> None:
    assert {case[0] for case in OK_CASES} == set(DeltaOperation)


ERROR_CASES = [
    # Set
    (Op.SET, (), [1], E.ROOT_NOT_OBJECT),
    (Op.SET, (), "x", E.ROOT_NOT_OBJECT),
    (Op.SET, ("missing", "x"), 1, E.NON_EXISTENT),
    (Op.SET, ("arr", 5), 1, E.NON_CONTIGUOUS),
    (Op.SET, ("s", "x"), 1, E.NOT_A_CONTAINER),
    (Op.SET, ("n", 0), 1, E.NOT_A_CONTAINER),
    (Op.SET, ("z", "x"), 1, E.NOT_A_CONTAINER),
    (Op.SET, ("arr", "foo"), 1, E.STRICT_PATH_TYPE),
    (Op.SET, ("obj", 0), 1, E.STRICT_PATH_TYPE),
    (Op.SET, ("s", "x", "y"), 1, E.NOT_A_CONTAINER),
    # Delete
    (Op.DELETE, (), None, E.ROOT_NOT_DELETABLE),
    (Op.DELETE, ("missing",), None, E.NON_EXISTENT),
    (Op.DELETE, ("arr", 4), None, E.NON_EXISTENT),
    (Op.DELETE, ("obj", "nope"), None, E.NON_EXISTENT),
    (Op.DELETE, ("s", 0), None, E.NOT_A_CONTAINER),
    # DeleteValue
    (Op.DELETE_VALUE, ("s",), "m", E.NOT_DELETABLE_FROM),
    (Op.DELETE_VALUE, ("z",), None, E.NOT_DELETABLE_FROM),
    (Op.DELETE_VALUE, ("missing",), 1, E.NON_EXISTENT),
    # Prepend / Append
    (Op.PREPEND, (), "x", E.ROOT_HAS_NO_CONTAINER),
    (Op.PREPEND, ("missing",), "x", E.NON_EXISTENT),
    (Op.PREPEND, ("n",), "x", E.NOT_A_STRING),
    (Op.APPEND, (), "x", E.ROOT_HAS_NO_CONTAINER),
    (Op.APPEND, ("arr",), "x", E.NOT_A_STRING),
    (Op.APPEND, ("z",), "x", E.NOT_A_STRING),
    # Increment / Decrement
    (Op.INCREMENT, (), 1, E.ROOT_HAS_NO_CONTAINER),
    (Op.INCREMENT, ("missing",), 1, E.NON_EXISTENT),
    (Op.INCREMENT, ("s",), 1, E.NOT_A_NUMBER),
    (Op.INCREMENT, ("b",), 1, E.NOT_A_NUMBER),  # bool is not a number
    (Op.DECREMENT, ("z",), 1, E.NOT_A_NUMBER),
    (Op.DECREMENT, (), 1, E.ROOT_HAS_NO_CONTAINER),
    (Op.INCREMENT, ("f",), 1.7976931348623157e308 * 1, None),  # checked separately
    # Toggle
    (Op.TOGGLE, (), None, E.ROOT_HAS_NO_CONTAINER),
    (Op.TOGGLE, ("missing",), None, E.NON_EXISTENT),
    (Op.TOGGLE, ("n",), None, E.NOT_A_BOOLEAN),
    (Op.TOGGLE, ("arr", 0), None, E.NOT_A_BOOLEAN),  # 1 is not a boolean
    # InsertFirst / InsertLast
    (Op.INSERT_FIRST, (), 1, E.NOT_AN_ARRAY),
    (Op.INSERT_FIRST, ("obj",), 1, E.NOT_AN_ARRAY),
    (Op.INSERT_LAST, ("s",), 1, E.NOT_AN_ARRAY),
    (Op.INSERT_LAST, ("missing",), 1, E.NON_EXISTENT),
    # InsertBefore / InsertAfter
    (Op.INSERT_BEFORE, (), 1, E.ROOT_HAS_NO_CONTAINER),
    (Op.INSERT_BEFORE, ("arr", 4), 1, E.NON_EXISTENT),
    (Op.INSERT_BEFORE, ("obj", "x"), 1, E.NOT_AN_ARRAY),
    (Op.INSERT_AFTER, ("arr", 4), 1, E.NON_EXISTENT),  # index == length
    (Op.INSERT_AFTER, ("s",), 1, E.NOT_AN_ARRAY),
    (Op.INSERT_AFTER, ("missing", 0), 1, E.NON_EXISTENT),
    # DeleteFirst / DeleteLast
    (Op.DELETE_FIRST, ("empty",), None, E.EMPTY_ARRAY),
    (Op.DELETE_FIRST, ("obj",), None, E.NOT_AN_ARRAY),
    (Op.DELETE_FIRST, (), None, E.NOT_AN_ARRAY),
    (Op.DELETE_LAST, ("empty",), None, E.EMPTY_ARRAY),
    (Op.DELETE_LAST, ("n",), None, E.NOT_AN_ARRAY),
]


@pytest.mark.parametrize(("op", "path", "value", "code"), [c for c in ERROR_CASES if c[3]])
def test_operation_errors(
    op: DeltaOperation, path: tuple[str | int, ...], value: Any, code: DeltaErrorCode
) -> None:
    delta = _delta(op, path, value)
    original = copy.deepcopy(DOC)
    with pytest.raises(DeltaError) as info:
        apply_delta(original, delta)
    assert info.value.code is code
    assert info.value.path == path
    assert original == DOC
    in_place = copy.deepcopy(DOC)
    with pytest.raises(DeltaError):
        apply_delta_in_place(in_place, delta)
    assert in_place == DOC, "a failed in-place delta changes nothing"


def test_every_operation_has_error_cases() -> None:
    assert {case[0] for case in ERROR_CASES} == set(DeltaOperation)


def test_overflow_to_infinity_is_refused() -> None:
    with pytest.raises(DeltaError) as info:
        apply_delta({"x": 1.7e308}, Delta(Op.INCREMENT, ("x",), 1.7e308))
    assert info.value.code is E.STRICT_NON_FINITE
    assert info.value.code.strict_only


def test_javascript_number_semantics() -> None:
    assert apply_delta({"x": 2**53}, Delta(Op.INCREMENT, ("x",), 1)) == {"x": float(2**53)}
    assert apply_delta({"x": 1}, Delta(Op.INCREMENT, ("x",), 2)) == {"x": 3}
    assert type(apply_delta({"x": 1}, Delta(Op.INCREMENT, ("x",), 2))["x"]) is int
    assert apply_delta({"x": 0.1}, Delta(Op.INCREMENT, ("x",), 0.2)) == {"x": 0.30000000000000004}


def test_set_root_returns_value_and_in_place_copies_it() -> None:
    value = {"a": [1]}
    delta = Delta(Op.SET, (), value)
    result = apply_delta_in_place({"old": 1}, delta)
    assert result == value and result is not value
    result["a"].append(2)
    assert delta.value == {"a": [1]}, "the document must not alias the delta"


def test_pure_apply_shares_nothing_mutable_with_future_in_place_use() -> None:
    data = {"a": {"b": [1]}, "c": [2]}
    new = apply_deltas(data, [Delta(Op.INSERT_LAST, ("a", "b"), 2), Delta(Op.SET, ("d",), 1)])
    assert data == {"a": {"b": [1]}, "c": [2]}
    assert new == {"a": {"b": [1, 2]}, "c": [2], "d": 1}
    assert new["c"] is data["c"]  # untouched subtrees are shared


def test_apply_deltas_reports_failing_index() -> None:
    deltas_ = [Delta(Op.SET, ("a",), 1), Delta(Op.DELETE, ("zz",)), Delta(Op.SET, ("b",), 1)]
    with pytest.raises(DeltaError) as info:
        apply_deltas({}, deltas_)
    assert info.value.index == 1
    error = check_deltas({}, deltas_)
    assert error is not None and error.index == 1 and error.code is E.NON_EXISTENT
    assert check_deltas({}, deltas_[:1]) is None
    data: dict[str, Any] = {}
    with pytest.raises(DeltaError):
        apply_deltas_in_place(data, deltas_)
    assert data == {"a": 1}, "in-place keeps earlier deltas"


def test_later_deltas_see_earlier_ones() -> None:
    result = apply_deltas(
        {},
        [
            Delta(Op.SET, ("a",), []),
            Delta(Op.INSERT_LAST, ("a",), 1),
            Delta(Op.INCREMENT, ("a", 0), 1),
        ],
    )
    assert result == {"a": [2]}


def test_root_must_be_object() -> None:
    with pytest.raises(TypeError):
        apply_delta([], Delta(Op.DELETE_FIRST, ()))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: Delta(Op.SET, ("a",)),
        lambda: Delta(Op.DELETE, ("a",), 1),
        lambda: Delta(Op.TOGGLE, ("a",), None),
        lambda: Delta(Op.PREPEND, ("a",), 1),
        lambda: Delta(Op.APPEND, ("a",), None),
        lambda: Delta(Op.INCREMENT, ("a",), "1"),
        lambda: Delta(Op.DECREMENT, ("a",), True),
        lambda: Delta(Op.SET, (0,), 1),
        lambda: Delta(Op.SET, ("",), 1),
        lambda: Delta(Op.SET, ("a", ""), 1),
        lambda: Delta(Op.SET, ("a", -1), 1),
        lambda: Delta(Op.SET, ("a", True), 1),
        lambda: Delta(Op.SET, ("a", 1.5), 1),
    ],
)
def test_schema_invalid_deltas_cannot_be_built(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    "delta",
    [
        '{"Operation":"Nope","Path":[]}',
        '{"Operation":"Set","Path":[]}',
        '{"Operation":"Delete","Path":["a"],"Value":1}',
        '{"Operation":"Set","Path":[0],"Value":1}',
        '{"Operation":"Set","Path":["a",1.5],"Value":1}',
        '{"Operation":"Set","Path":["a"],"Value":1,"X":1}',
        '{"Operation":"Append","Path":["a"],"Value":1}',
    ],
)
def test_schema_invalid_deltas_make_the_revelation_invalid(delta: str) -> None:
    from tidings.protocol.feedme import RemoteProtocolError

    text = (
        '{"MessageType":"ActionRevelation","ActionName":"a","ActionData":{},"FeedName":"F",'
        f'"FeedArgs":{{}},"FeedDeltas":[{delta}]}}'
    )
    with pytest.raises(RemoteProtocolError):
        decode_server_message(text)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (0, -0.0, True),
        (1, True, False),
        (0, False, False),
        (None, False, False),
        ({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]}, True),
        ({"a": 1}, {"a": 1, "b": 1}, False),
        ([1, 2], [2, 1], False),
        ("1", 1, False),
        (2**53 + 1, 2**53, True),  # both the same double in JavaScript
        ([], {}, False),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal


@given(small_docs, st.lists(deltas(), max_size=4))
def test_pure_and_in_place_agree(doc: dict[str, Any], batch: list[Delta]) -> None:
    snapshot = copy.deepcopy(doc)
    try:
        pure = apply_deltas(doc, batch)
    except DeltaError as exc:
        pure_error: DeltaError | None = exc
    else:
        pure_error = None
    assert doc == snapshot
    target = copy.deepcopy(doc)
    try:
        in_place = apply_deltas_in_place(target, batch)
    except DeltaError as exc:
        assert (
            pure_error is not None and exc.code is pure_error.code and exc.index == pure_error.index
        )
    else:
        assert pure_error is None
        assert json_equal(in_place, pure)


@given(small_values)
def test_copy_json_is_deep(value: Any) -> None:
    copied = copy_json(value)
    assert json_equal(copied, value)
    if isinstance(value, dict | list) and value:
        assert copied is not value
