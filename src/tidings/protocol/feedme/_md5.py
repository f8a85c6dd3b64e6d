"""FeedMd5, byte-exact with feedme-util 0.2.2 ``md5calculator.js``.

The client hashes its own JavaScript copy of the feed data, so the canonical
JSON must be what ``JSON.stringify`` would print: JS number formatting, JS
string escaping, object keys sorted by UTF-16 code units. ``json.dumps`` gets
floats, ``-0``, large integers and astral-plane key order wrong.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from typing import Any

__all__ = ["canonical_json", "feed_md5", "js_number", "js_string"]

_MAX_SAFE = 2**53
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')
_HAS_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    return f"\\u{ord(char):04x}"


def _utf16_normal(text: str) -> str:
    """Merge surrogate pairs into code points, as one JS string would hold them."""
    if _HAS_SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def js_string(text: str) -> str:
    """Quote ``text`` exactly as ES2019 ``JSON.stringify`` does (lone surrogates escaped)."""
    text = _utf16_normal(text)
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


def js_number(value: int | float) -> str:
    """Format a number exactly as JavaScript's ``Number::toString`` / ``JSON.stringify``.

    Integers beyond 2**53 are first rounded to a double, as ``JSON.parse``
    does on the client. Raises ``ValueError`` for NaN and infinities, which
    cannot occur in data the client parsed.
    """
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers")
    if isinstance(value, int):
        if -_MAX_SAFE <= value <= _MAX_SAFE:
            return str(value)
        try:
            value = float(value)
        except OverflowError as exc:
            raise ValueError("integer too large for a JavaScript number") from exc
    if not math.isfinite(value):
        raise ValueError("NaN and infinities are not JSON")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    raw_digits = int_part + frac_part
    stripped = raw_digits.lstrip("0")
    # n: position of the decimal point relative to the first significant digit.
    n = len(int_part) - (len(raw_digits) - len(stripped)) + (int(exp_text) if exp_text else 0)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    exponent = n - 1
    exp_sign = "+" if exponent >= 0 else "-"
    head = digits[0] if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{head}e{exp_sign}{abs(exponent)}"


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def canonical_json(value: Any) -> str:
    """The exact text the client hashes: sorted keys, no whitespace, JS formatting.

    Iterative, so documents nested as deeply as the decoder allows cannot
    exhaust the Python stack.
    """
    out: list[str] = []
    # Work items are either a value to render or a literal string to emit.
    stack: list[tuple[bool, Any]] = [(False, value)]
    while stack:
        literal, item = stack.pop()
        if literal:
            out.append(item)
        elif isinstance(item, dict):
            keys = [(_utf16_normal(k), k) for k in item]
            keys.sort(key=lambda pair: _utf16_key(pair[0]))
            out.append("{")
            pending: list[tuple[bool, Any]] = []
            for index, (normal, key) in enumerate(keys):
                prefix = "," if index else ""
                pending.append((True, prefix + js_string(normal) + ":"))
                pending.append((False, item[key]))
            pending.append((True, "}"))
            stack.extend(reversed(pending))
        elif isinstance(item, list | tuple):
            out.append("[")
            pending = []
            for index, element in enumerate(item):
                if index:
                    pending.append((True, ","))
                pending.append((False, element))
            pending.append((True, "]"))
            stack.extend(reversed(pending))
        elif isinstance(item, str):
            out.append(js_string(item))
        elif item is True:
            out.append("true")
        elif item is False:
            out.append("false")
        elif item is None:
            out.append("null")
        elif isinstance(item, int | float):
            out.append(js_number(item))
        else:
            raise TypeError(f"not a JSON value: {type(item).__name__}")
    return "".join(out)


def feed_md5(feed_data: dict[str, Any]) -> str:
    """Base64 MD5 of the canonical JSON of ``feed_data`` (24 characters).

    Raises ``TypeError`` unless the root is an object, like the client.
    """
    if not isinstance(feed_data, dict):
        raise TypeError("feed data must be a JSON object")
    digest = hashlib.md5(canonical_json(feed_data).encode("utf-8"), usedforsecurity=False)
    return base64.b64encode(digest.digest()).decode("ascii")
