"""Strings of HTTP requests that become store columns or keys: one annotated type.

PostgreSQL's ``text`` cannot hold the NUL character (U+0000), which SQLite keeps: a name, an
id or a label holding one is refused here, at the edge, with the same 422 ``invalid-argument``
on every store (never a store error, never accepted by one store and refused by the other).
JSON documents (message content, feed data) are stored encoded, NUL escaped, and may hold it.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import StringConstraints

from ..protocol.lime import MEDIA_TYPE_PATTERN

__all__ = ["MEDIA_TYPE", "NO_NUL_PATTERN", "Text", "pattern_message"]

NO_NUL_PATTERN: Final = "^[^\\x00]*$"
"""Any string without NUL (ECMA 262, as the OpenAPI schema states it, and Python ``re``)."""

Text = Annotated[str, StringConstraints(pattern=NO_NUL_PATTERN)]
"""A string without NUL: for body fields (their ``Field`` bounds beside it) and path
parameters that name something stored. A pattern, so that the OpenAPI schema says it."""


MEDIA_TYPE: Final = f"^{MEDIA_TYPE_PATTERN}$"
"""A message's ``type``: a MIME type, as LIME requires of the same field (23 there)."""

_PATTERN_MESSAGES: Final = {
    NO_NUL_PATTERN: "may not contain NUL (U+0000)",
    MEDIA_TYPE: "must be a MIME type, such as application/json or text/plain",
}


def pattern_message(error: dict[str, Any]) -> str | None:
    """What a pydantic error of one of these patterns means, in words (its own message
    quotes the regular expression); None for any other error."""
    if error.get("type") == "string_pattern_mismatch":
        context = error.get("ctx") or {}
        return _PATTERN_MESSAGES.get(context.get("pattern", ""))
    return None
