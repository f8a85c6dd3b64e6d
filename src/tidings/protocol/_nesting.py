"""A bound on JSON nesting, checked before a frame reaches the decoder.

msgspec recurses once per level and raises ``RecursionError`` near Python's recursion limit,
wherever the call stack happens to be; a bound of our own makes deep frames a validation error
with a name, at the same depth every time.
"""

from __future__ import annotations

import re
from typing import Final

MAX_DEPTH: Final = 64
"""Levels of arrays and objects an envelope may nest; generous for any real document."""

_STRINGS: Final = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def nested_deeper_than(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text ``data`` nests arrays/objects more than ``limit`` levels.

    Costs two ``count`` calls for an ordinary frame; only one with more brackets than the limit
    is looked at closely (strings dropped, then innermost pairs peeled off once per level, all
    in C). Unbalanced brackets count as deep: such a frame is not valid JSON anyway.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    return bool(brackets)
