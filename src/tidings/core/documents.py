"""Checking JSON documents (account, contact, presence) against a table of allowed fields."""

from __future__ import annotations

from typing import Any

from .errors import ErrorId, Invalid

FieldTypes = dict[str, type | tuple[type, ...]]


def check_fields(document: Any, fields: FieldTypes, what: str) -> dict[str, Any]:
    """A copy of ``document`` if it is an object whose keys are all known and well typed.

    ``bool`` is not accepted where a number is expected, although Python calls it an ``int``.
    """
    if not isinstance(document, dict):
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"A {what} must be a JSON object")
    for key, value in document.items():
        expected = fields.get(key)
        if expected is None:
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"Unknown {what} field {key!r}")
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"The {what} field {key!r} has the wrong type")
    return dict(document)
