"""Stamping the trust scope into encoded message envelopes (``protocol.lime._scope``)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol.lime import (
    SCOPE_KEY,
    UNSET,
    Message,
    Notification,
    NotificationEvent,
    Raw,
    encode_envelope,
    scoped_metadata,
    stamp_scope,
)

SCOPES = ("self", "friends", "public")


def gateway_encoding(message: Message) -> bytes:
    """What the gateway stores: the scope first in the metadata, whatever the sender put."""
    return encode_envelope(
        msgspec.structs.replace(message, metadata=scoped_metadata(message.metadata))
    )


def test_the_scope_goes_first_and_replaces_the_senders():
    scoped = scoped_metadata({"a": "1", SCOPE_KEY: "self", "b": "2"})
    assert list(scoped.items()) == [(SCOPE_KEY, "public"), ("a", "1"), ("b", "2")]
    assert scoped_metadata(None) == {SCOPE_KEY: "public"}
    assert scoped_metadata(UNSET, "friends") == {SCOPE_KEY: "friends"}


def test_a_payload_already_right_is_returned_as_is():
    payload = gateway_encoding(
        Message(id="1", from_="a@x/i", to="b@x", type="text/plain", content=Raw(b'"hi"'))
    )
    assert stamp_scope(payload, "public") is payload
    stamped = stamp_scope(payload, "friends")
    assert json.loads(stamped)["metadata"] == {SCOPE_KEY: "friends"}
    assert stamp_scope(stamped, "friends") is stamped


def test_a_message_encoded_without_the_scope_gets_it_the_slow_way():
    """Queued before scopes existed; the content holds a look-alike that must stay as it is."""
    content = b'{"metadata":{"tidings.scope":"self"}}'
    payload = encode_envelope(
        Message(
            id="1",
            from_="a@x/i",
            to="b@x",
            metadata={"k": "v"},
            type="application/json",
            content=Raw(content),
        )
    )
    stamped = json.loads(stamp_scope(payload, "friends"))
    assert list(stamped["metadata"].items()) == [(SCOPE_KEY, "friends"), ("k", "v")]
    assert stamped["content"] == json.loads(content)


def test_an_id_holding_a_brace_still_gets_it():
    payload = gateway_encoding(
        Message(id='{"metadata":{', from_="a@x/i", to="b@x", type="text/plain", content=Raw(b'"x"'))
    )
    assert json.loads(stamp_scope(payload, "self"))["metadata"][SCOPE_KEY] == "self"


@pytest.mark.parametrize(
    "payload",
    [
        encode_envelope(
            Notification(
                id="1",
                from_="a@x/i",
                to="b@x",
                event=NotificationEvent.RECEIVED,
                metadata={"x": "y"},
            )
        ),
        b"not json",
    ],
)
def test_what_is_not_a_message_is_left_alone(payload):
    assert stamp_scope(payload, "friends") is payload


_text = st.text(max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["metadata", SCOPE_KEY, "type", "content", "k"]) | _text,
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)
_optional = st.none() | _text


@st.composite
def messages(draw: st.DrawFn) -> Message:
    def field(value: Any) -> Any:
        return UNSET if value is None else value

    metadata = draw(
        st.none()
        | st.dictionaries(st.sampled_from([SCOPE_KEY, "metadata", "k"]) | _text, _json, max_size=4)
    )
    return Message(
        id=field(draw(_optional)),
        from_=draw(_text),
        to=draw(_text),
        pp=field(draw(_optional)),
        metadata=field(metadata),
        type=draw(_text),
        content=Raw(msgspec.json.encode(draw(_json))),
    )


@given(messages(), st.sampled_from(SCOPES))
def test_stamping_changes_the_scope_and_nothing_else(message: Message, scope: str) -> None:
    payload = gateway_encoding(message)
    stamped = stamp_scope(payload, scope)
    before, after = json.loads(payload), json.loads(stamped)
    assert after["metadata"][SCOPE_KEY] == scope
    assert next(iter(after["metadata"])) == SCOPE_KEY
    before["metadata"][SCOPE_KEY] = scope
    assert after == before
    assert list(after["metadata"]) == list(before["metadata"])
    assert stamp_scope(stamped, scope) is stamped
