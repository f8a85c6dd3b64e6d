"""``api.text.Text``: a string is accepted exactly when it holds no NUL, and the problem JSON
names NUL (not the pattern) when it does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from tidings.api.text import NO_NUL_PATTERN, Text, nul_message

TEXT: TypeAdapter[str] = TypeAdapter(Text)


@given(st.text())
def test_text_accepts_exactly_the_strings_without_nul(value: str) -> None:
    if "\x00" in value:
        with pytest.raises(ValidationError) as caught:
            TEXT.validate_python(value)
        [error] = caught.value.errors()
        assert nul_message(dict(error)) == "may not contain NUL (U+0000)"
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
        assert error["msg"] == message and nul_message(dict(error)) is None
    assert Body(id=None).id is None and Body(id="ab").id == "ab"


def test_the_schema_states_the_pattern() -> None:
    schema = Body.model_json_schema()["properties"]["id"]["anyOf"][0]
    assert schema == {"type": "string", "minLength": 1, "maxLength": 4, "pattern": NO_NUL_PATTERN}
