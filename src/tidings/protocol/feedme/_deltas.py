"""The 14 feed delta operations with feedme-util 0.2.2 ``deltawriter`` semantics.

The client rejects a contextually invalid delta (``INVALID_DELTA``), closes
the feed and reopens it, so the server must apply exactly the same rules to
its authoritative copy before it hashes and sends. Where the JavaScript
writer silently does something odd (string index on an array, integer key on
an object, a sum overflowing to Infinity) these functions are stricter and
raise a ``DeltaError`` whose code is ``strict_only``.

Numbers follow JavaScript doubles: integers stay exact while the operands and
result are within 2**53; beyond that arithmetic is done in floats, as the
client does. ``True``/``False`` are never numbers, and ``1`` never equals
``True`` in ``DeleteValue`` (lodash ``isEqual``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from ._errors import DeltaError, DeltaErrorCode
from ._messages import Delta, DeltaOperation, JsonObject

__all__ = [
    "apply_delta",
    "apply_delta_in_place",
    "apply_deltas",
    "apply_deltas_in_place",
    "check_deltas",
    "copy_json",
    "json_equal",
]

_MAX_SAFE = 2**53
_MISSING: Any = object()


def copy_json(value: Any) -> Any:
    """Deep-copy a JSON value (iterative; scalars are shared)."""
    if not isinstance(value, dict | list):
        return value
    root: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(item, dict | list):
                copied: Any = {} if isinstance(item, dict) else []
                stack.append((item, copied))
                item = copied
            if isinstance(target, dict):
                target[key] = item
            else:
                target.append(item)
    return root


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_double(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.copysign(math.inf, value)


def json_equal(left: Any, right: Any) -> bool:
    """Deep equality as lodash ``isEqual`` sees parsed JSON (numbers as doubles)."""
    stack = [(left, right)]
    while stack:
        a, b = stack.pop()
        if isinstance(a, bool) or isinstance(b, bool):
            if not (isinstance(a, bool) and isinstance(b, bool) and a is b):
                return False
        elif _is_number(a) or _is_number(b):
            if not (_is_number(a) and _is_number(b)):
                return False
            if type(a) is int and type(b) is int and abs(a) <= _MAX_SAFE >= abs(b):
                if a != b:
                    return False
            elif _as_double(a) != _as_double(b):
                return False
        elif isinstance(a, dict):
            if not isinstance(b, dict) or a.keys() != b.keys():
                return False
            stack.extend((a[k], b[k]) for k in a)
        elif isinstance(a, list):
            if not isinstance(b, list) or len(a) != len(b):
                return False
            stack.extend(zip(a, b, strict=True))
        elif a != b or type(a) is not type(b):
            return False
    return True


def _js_arith(current: int | float, operand: int | float, sign: int) -> int | float:
    if type(current) is int and type(operand) is int:
        result = current + sign * operand
        if abs(current) <= _MAX_SAFE and abs(operand) <= _MAX_SAFE and abs(result) <= _MAX_SAFE:
            return result
    return _as_double(current) + sign * _as_double(operand)


class _Writer:
    """Applies one delta; ``cow`` copies every container it walks through."""

    def __init__(self, delta: Delta, cow: bool) -> None:
        self.delta = delta
        self.path = delta.path
        self.cow = cow

    def fail(self, code: DeltaErrorCode) -> DeltaError:
        return DeltaError(code, self.path)

    def _copy(self, value: Any) -> Any:
        if self.cow:
            return value.copy()
        return value

    def child(self, node: Any, key: str | int) -> Any:
        if isinstance(node, dict):
            if not isinstance(key, str):
                raise self.fail(DeltaErrorCode.STRICT_PATH_TYPE)
            if key not in node:
                raise self.fail(DeltaErrorCode.NON_EXISTENT)
            return node[key]
        if isinstance(node, list):
            if not isinstance(key, int):
                raise self.fail(DeltaErrorCode.STRICT_PATH_TYPE)
            if key >= len(node):
                raise self.fail(DeltaErrorCode.NON_EXISTENT)
            return node[key]
        raise self.fail(DeltaErrorCode.NOT_A_CONTAINER)

    def walk(self, root: JsonObject, path: tuple[str | int, ...]) -> tuple[JsonObject, Any]:
        root = self._copy(root)
        node: Any = root
        for key in path:
            child = self.child(node, key)
            if self.cow and isinstance(child, dict | list):
                child = child.copy()
                node[key] = child
            node = child
        return root, node

    def container(self, root: JsonObject) -> tuple[JsonObject, Any, str | int]:
        if not self.path:
            raise self.fail(DeltaErrorCode.ROOT_HAS_NO_CONTAINER)
        root, node = self.walk(root, self.path[:-1])
        return root, node, self.path[-1]

    def endpoint(self, node: Any, key: str | int) -> Any:
        """The value at ``node[key]`` or ``_MISSING``; primitives are not containers."""
        if isinstance(node, dict):
            if not isinstance(key, str):
                raise self.fail(DeltaErrorCode.STRICT_PATH_TYPE)
            return node.get(key, _MISSING)
        if isinstance(node, list):
            if not isinstance(key, int):
                raise self.fail(DeltaErrorCode.STRICT_PATH_TYPE)
            return node[key] if key < len(node) else _MISSING
        raise self.fail(DeltaErrorCode.NOT_A_CONTAINER)

    def value(self) -> Any:
        # Pure mode never mutates, so sharing the delta's value is safe; in
        # place the document would otherwise alias (and later mutate) the delta.
        return self.delta.value if self.cow else copy_json(self.delta.value)

    # --- operations ---------------------------------------------------------

    def set(self, root: JsonObject) -> JsonObject:
        if not self.path:
            if not isinstance(self.delta.value, dict):
                raise self.fail(DeltaErrorCode.ROOT_NOT_OBJECT)
            result: JsonObject = self.value()
            return result
        root, node, key = self.container(root)
        if isinstance(node, list):
            if not isinstance(key, int):
                raise self.fail(DeltaErrorCode.STRICT_PATH_TYPE)
            if key > len(node):
                raise self.fail(DeltaErrorCode.NON_CONTIGUOUS)
            if key == len(node):
                node.append(self.value())
            else:
                node[key] = self.value()
        elif isinstance(node, dict):
            if not isinstance(key, str):
                raise self.fail(DeltaErrorCode.STRICT_PATH_TYPE)
            node[key] = self.value()
        else:
            raise self.fail(DeltaErrorCode.NOT_A_CONTAINER)
        return root

    def delete(self, root: JsonObject) -> JsonObject:
        if not self.path:
            raise self.fail(DeltaErrorCode.ROOT_NOT_DELETABLE)
        root, node, key = self.container(root)
        if self.endpoint(node, key) is _MISSING:
            raise self.fail(DeltaErrorCode.NON_EXISTENT)
        del node[key]
        return root

    def delete_value(self, root: JsonObject) -> JsonObject:
        root, node = self.walk(root, self.path)
        target = self.delta.value
        if isinstance(node, list):
            node[:] = [item for item in node if not json_equal(item, target)]
        elif isinstance(node, dict):
            for key in [k for k, item in node.items() if json_equal(item, target)]:
                del node[key]
        else:
            raise self.fail(DeltaErrorCode.NOT_DELETABLE_FROM)
        return root

    def _update(
        self, root: JsonObject, accepts: Callable[[Any], bool], code: DeltaErrorCode
    ) -> tuple[JsonObject, Any, str | int, Any]:
        root, node, key = self.container(root)
        current = self.endpoint(node, key)
        if current is _MISSING:
            raise self.fail(DeltaErrorCode.NON_EXISTENT)
        if not accepts(current):
            raise self.fail(code)
        return root, node, key, current

    def prepend(self, root: JsonObject) -> JsonObject:
        root, node, key, current = self._update(
            root, lambda v: isinstance(v, str), DeltaErrorCode.NOT_A_STRING
        )
        node[key] = self.delta.value + current
        return root

    def append(self, root: JsonObject) -> JsonObject:
        root, node, key, current = self._update(
            root, lambda v: isinstance(v, str), DeltaErrorCode.NOT_A_STRING
        )
        node[key] = current + self.delta.value
        return root

    def _arith(self, root: JsonObject, sign: int) -> JsonObject:
        root, node, key, current = self._update(root, _is_number, DeltaErrorCode.NOT_A_NUMBER)
        result = _js_arith(current, self.delta.value, sign)
        if isinstance(result, float) and not math.isfinite(result):
            raise self.fail(DeltaErrorCode.STRICT_NON_FINITE)
        node[key] = result
        return root

    def increment(self, root: JsonObject) -> JsonObject:
        return self._arith(root, 1)

    def decrement(self, root: JsonObject) -> JsonObject:
        return self._arith(root, -1)

    def toggle(self, root: JsonObject) -> JsonObject:
        root, node, key, current = self._update(
            root, lambda v: isinstance(v, bool), DeltaErrorCode.NOT_A_BOOLEAN
        )
        node[key] = not current
        return root

    def _array(self, root: JsonObject) -> tuple[JsonObject, list[Any]]:
        root, node = self.walk(root, self.path)
        if not isinstance(node, list):
            raise self.fail(DeltaErrorCode.NOT_AN_ARRAY)
        return root, node

    def insert_first(self, root: JsonObject) -> JsonObject:
        root, node = self._array(root)
        node.insert(0, self.value())
        return root

    def insert_last(self, root: JsonObject) -> JsonObject:
        root, node = self._array(root)
        node.append(self.value())
        return root

    def _insert_at(self, root: JsonObject, offset: int) -> JsonObject:
        root, node, key = self.container(root)
        if self.endpoint(node, key) is _MISSING:
            raise self.fail(DeltaErrorCode.NON_EXISTENT)
        if not isinstance(node, list) or not isinstance(key, int):
            raise self.fail(DeltaErrorCode.NOT_AN_ARRAY)
        node.insert(key + offset, self.value())
        return root

    def insert_before(self, root: JsonObject) -> JsonObject:
        return self._insert_at(root, 0)

    def insert_after(self, root: JsonObject) -> JsonObject:
        return self._insert_at(root, 1)

    def _delete_end(self, root: JsonObject, index: int) -> JsonObject:
        root, node = self._array(root)
        if not node:
            raise self.fail(DeltaErrorCode.EMPTY_ARRAY)
        del node[index]
        return root

    def delete_first(self, root: JsonObject) -> JsonObject:
        return self._delete_end(root, 0)

    def delete_last(self, root: JsonObject) -> JsonObject:
        return self._delete_end(root, -1)


_OPERATIONS: dict[DeltaOperation, Callable[[_Writer, JsonObject], JsonObject]] = {
    DeltaOperation.SET: _Writer.set,
    DeltaOperation.DELETE: _Writer.delete,
    DeltaOperation.DELETE_VALUE: _Writer.delete_value,
    DeltaOperation.PREPEND: _Writer.prepend,
    DeltaOperation.APPEND: _Writer.append,
    DeltaOperation.INCREMENT: _Writer.increment,
    DeltaOperation.DECREMENT: _Writer.decrement,
    DeltaOperation.TOGGLE: _Writer.toggle,
    DeltaOperation.INSERT_FIRST: _Writer.insert_first,
    DeltaOperation.INSERT_LAST: _Writer.insert_last,
    DeltaOperation.INSERT_BEFORE: _Writer.insert_before,
    DeltaOperation.INSERT_AFTER: _Writer.insert_after,
    DeltaOperation.DELETE_FIRST: _Writer.delete_first,
    DeltaOperation.DELETE_LAST: _Writer.delete_last,
}


def _apply(data: JsonObject, delta: Delta, cow: bool) -> JsonObject:
    if not isinstance(data, dict):
        raise TypeError("feed data must be a JSON object")
    return _OPERATIONS[delta.operation](_Writer(delta, cow), data)


def apply_delta(data: JsonObject, delta: Delta) -> JsonObject:
    """Return the document after ``delta``; ``data`` is left untouched.

    Containers along the path are copied, untouched subtrees are shared with
    ``data``, so treat both as immutable afterwards. Raises ``DeltaError``.
    """
    return _apply(data, delta, cow=True)


def apply_delta_in_place(data: JsonObject, delta: Delta) -> JsonObject:
    """Mutate ``data`` and return the new root (a new object only for ``Set []``).

    Atomic: on ``DeltaError`` nothing was changed. Inserted values are deep
    copies, so the document never aliases a delta.
    """
    return _apply(data, delta, cow=False)


def apply_deltas(data: JsonObject, deltas: Iterable[Delta]) -> JsonObject:
    """Apply deltas in order without touching ``data``; ``DeltaError.index`` says which failed."""
    for index, delta in enumerate(deltas):
        try:
            data = _apply(data, delta, cow=True)
        except DeltaError as exc:
            exc.index = index
            raise
    return data


def apply_deltas_in_place(data: JsonObject, deltas: Iterable[Delta]) -> JsonObject:
    """Like ``apply_deltas`` but mutating; earlier deltas stay applied on error."""
    for index, delta in enumerate(deltas):
        try:
            data = _apply(data, delta, cow=False)
        except DeltaError as exc:
            exc.index = index
            raise
    return data


def check_deltas(data: JsonObject, deltas: Iterable[Delta]) -> DeltaError | None:
    """The first error the client would raise for these deltas, or ``None``."""
    try:
        apply_deltas(data, deltas)
    except DeltaError as exc:
        return exc
    return None
