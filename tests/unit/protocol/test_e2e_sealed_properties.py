"""Properties of sealing: any JSON content round trips, and nothing a peer can send makes
``open_sealed`` raise anything but ``E2EError``."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tidings.protocol.e2e import E2EError, NodeKeys, open_sealed, seal

sender_keys, recipient_keys = NodeKeys.generate(), NodeKeys.generate()

FIELDS = ["v", "id", "from", "to", "signId", "nonce", "ciphertext", "keys", "signature"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=60),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
"""Any JSON a decoder can hand over."""

# values shaped almost like the real ones: base64 of near-right sizes, key entry lists
base64ish = st.binary(max_size=100).map(lambda raw: base64.b64encode(raw).decode())
entries = st.lists(
    st.fixed_dictionaries({"boxId": base64ish | json_values, "key": base64ish | json_values}),
    max_size=4,
)
field_values = json_values | base64ish | entries | st.just(1)


def a_sealed(content: Any = "hello", message_id: str = "m1") -> dict[str, Any]:
    return seal(
        sender_keys,
        message_id=message_id,
        sender="alice@example.com/laptop",
        to="bob@example.com",
        content_type="text/plain",
        content=content,
        recipients=[recipient_keys.box_id],
    )


GOOD = a_sealed()


def open_it(content: object) -> None:
    open_sealed(
        content,
        message_id="m1",
        envelope_from="alice@example.com/laptop",
        envelope_to="bob@example.com/phone",
        my_keys=[recipient_keys],
    )


def only_e2e_errors(content: object) -> None:
    with contextlib.suppress(E2EError):
        open_it(content)


@settings(max_examples=300)
@given(json_values)
def test_any_json_value_is_refused_cleanly(content: Any) -> None:
    only_e2e_errors(content)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), field_values, max_size=10))
def test_any_dict_with_the_field_names_is_refused_cleanly(content: dict[str, Any]) -> None:
    only_e2e_errors(content)


@settings(max_examples=300)
@given(st.sampled_from(FIELDS), field_values)
def test_a_real_message_with_one_field_replaced_is_refused_cleanly(field: str, value: Any) -> None:
    assume(value != GOOD[field])  # a field given its own value back is no change
    content = copy.deepcopy(GOOD)
    content[field] = value
    with pytest.raises(E2EError):
        open_it(content)


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_any_bytes_are_refused_cleanly(data: bytes) -> None:
    only_e2e_errors(data)


@settings(max_examples=200)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_changed_character_of_the_json_text_is_refused_cleanly(at: int, char: int) -> None:
    text = bytearray(json.dumps(GOOD).encode())
    text[at % len(text)] = char
    only_e2e_errors(bytes(text))


@settings(max_examples=100)
@given(json_values, st.text(min_size=1, max_size=40).filter(lambda t: "\n" not in t))
def test_any_json_content_round_trips(content: Any, message_id: str) -> None:
    opened = open_sealed(
        a_sealed(content, message_id),
        message_id=message_id,
        envelope_from="alice@example.com/laptop",
        envelope_to="bob@example.com",
        my_keys=[recipient_keys],
    )
    assert opened.type == "text/plain"
    assert opened.content == content
