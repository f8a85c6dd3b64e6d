"""``api.text.Text``: a string is accepted exactly when it holds no NUL, and the problem JSON
names NUL (not the pattern) when it does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from tidings.api.text import MEDIA_TYPE, NO_NUL_PATTERN, Text, pattern_message
from tidings.protocol.lime._session import _MEDIA_TYPE

TEXT: TypeAdapter[str] = TypeAdapter(Text)


@given(st.text())
def test_text_accepts_exactly_the_strings_without_nul(value: str) -> None:
    if "\x00" in value:
        with pytest.raises(ValidationError) as caught:
            TEXT.validate_python(value)
        [error] = caught.value.errors()
        assert pattern_message(dict(error)) == "may not contain NUL (U+0000)"
    else:
        assert TEXT.validate_python(value) == value


class Body(BaseModel):
    id: Text | None = Field(default=None, min_length=1, max_length=4)


def test_bounds_beside_it_keep_their_own_messages() -> None:
    for value, message in [
        ("", "String should have at least 1 character"),
        ("abcde", "String should have at most 4 characters"),
    ]:
        with pytest.raises(ValidationError) as caught:
            Body(id=value)
        [error] = caught.value.errors()
        assert error["msg"] == message and pattern_message(dict(error)) is None
    assert Body(id=None).id is None and Body(id="ab").id == "ab"


def test_the_schema_states_the_pattern() -> None:
    schema = Body.model_json_schema()["properties"]["id"]["anyOf"][0]
    assert schema == {"type": "string", "minLength": 1, "maxLength": 4, "pattern": NO_NUL_PATTERN}


class Typed(BaseModel):
    type: str = Field(pattern=MEDIA_TYPE)


@pytest.mark.parametrize(
    ("value", "good"),
    [
        ("application/json", True),
        ("text/plain; charset=utf-8", True),
        ("application/vnd.lime.presence+json", True),
        ("plain", False),
        ("text/", False),
        ("text/pl\x00ain", False),
        ("a b/c", False),
    ],
)
def test_a_message_type_is_a_mime_type_as_lime_has_it(value: str, good: bool) -> None:
    """The HTTP API's message ``type`` takes exactly what a LIME message's does (23 there)."""
    lime = _MEDIA_TYPE.fullmatch(value) is not None
    assert lime is good
    if good:
        assert Typed(type=value).type == value
        return
    with pytest.raises(ValidationError) as caught:
        Typed(type=value)
    [error] = caught.value.errors()
    assert pattern_message(dict(error)) == (
        "must be a MIME type, such as application/json or text/plain"
    )
