"""Envelope classification, codec round trips and node parsing, with hypothesis for junk."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.protocol.lime import (
    MESSAGE_PROCESSING_ERROR,
    VALIDATION_INVALID_URI,
    Command,
    EnvelopeError,
    InvalidNode,
    Message,
    Notification,
    ReasonCode,
    Session,
    decode_envelope,
    encode_envelope,
    parse_node,
)


class TestClassification:
    """reference/lime.md section 2.1: content, then event, then method, then state."""

    @pytest.mark.parametrize(
        ("envelope", "kind"),
        [
            ({"type": "text/plain", "content": "x", "event": "received", "state": "new"}, Message),
            ({"id": "1", "event": "received", "method": "get"}, Notification),
            ({"id": "1", "method": "get", "uri": "/ping", "state": "new"}, Command),
            ({"state": "new"}, Session),
            ({"id": "1", "method": "set", "uri": "/x", "resource": {"content": 1}}, Command),
            ({"id": "1", "method": "set", "uri": "/x", "resource": {"event": 1}}, Command),
        ],
    )
    def test_first_present_key_wins(self, envelope, kind):
        assert type(decode_envelope(json.dumps(envelope).encode())) is kind

    def test_escaped_key_is_still_classified(self):
        data = b'{"\\u0063ontent": "x", "type": "text/plain", "event": "received", "id": "1"}'
        assert type(decode_envelope(data)) is Message

    def test_unknown_shape(self):
        with pytest.raises(EnvelopeError, match="Unknown envelope"):
            decode_envelope(b'{"id": "1"}')

    def test_validation_error_names_kind_and_id(self):
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(b'{"id": "7", "event": "exploded"}')
        assert caught.value.kind is Notification and caught.value.envelope_id == "7"

    def test_encode_omits_unset_keys_and_keeps_raw_content(self):
        envelope = decode_envelope(
            b'{"to":"b@x","type":"application/json","content":{"a":[1,2.50]}}'
        )
        assert encode_envelope(envelope) == (
            b'{"to":"b@x","type":"application/json","content":{"a":[1,2.50]}}'
        )

    def test_nan_is_not_json(self):
        with pytest.raises(EnvelopeError):
            decode_envelope(b'{"type":"application/json","content":NaN}')


class TestReasonCodes:
    def test_shared_numbers_are_explicit_aliases(self):
        assert VALIDATION_INVALID_URI == ReasonCode.VALIDATION_INVALID_METHOD == 27
        assert MESSAGE_PROCESSING_ERROR == ReasonCode.COMMAND_PROCESSING_ERROR == 61

    def test_values_match_lime_csharp(self):
        assert ReasonCode.SESSION_AUTHENTICATION_FAILED == 13
        assert ReasonCode.ROUTING_DESTINATION_NOT_FOUND == 42
        assert ReasonCode.COMMAND_RESOURCE_NOT_FOUND == 67
        assert len({code.value for code in ReasonCode}) == len(ReasonCode)


class TestNodes:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("alice@localhost/home", ("alice", "localhost", "home")),
            ("Alice@LOCALHOST/Home", ("alice", "localhost", "Home")),
            ("alice@localhost", ("alice", "localhost", None)),
            ("alice@localhost/", ("alice", "localhost", None)),
            ("skyler/bedroom", ("skyler", "example.org", "bedroom")),
            ("a@b/c/d", ("a", "b", "c/d")),
        ],
    )
    def test_parse(self, text, expected):
        node = parse_node(text, "example.org")
        assert (node.name, node.domain, node.instance) == expected

    @pytest.mark.parametrize(
        "text", ["", "@localhost", "a@", "a@b@c", " a@c", 'a"@b', "a@b/\x00", "x" * 1024 + "@b"]
    )
    def test_invalid(self, text):
        with pytest.raises(InvalidNode):
            parse_node(text, "example.org")

    def test_no_domain_without_default_is_invalid(self):
        with pytest.raises(InvalidNode):
            parse_node("alice")

    @given(st.text(max_size=30), st.text(max_size=30), st.sampled_from([None, "d"]))
    def test_a_text_holding_nul_never_parses(self, before, after, default):
        with pytest.raises(InvalidNode):
            parse_node(f"{before}\x00{after}", default)

    @given(st.text(max_size=60))
    def test_parse_never_raises_anything_else(self, text):
        try:
            node = parse_node(text, "d")
        except InvalidNode:
            return
        assert parse_node(node.text) == node


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
envelope_like = st.dictionaries(
    st.sampled_from(
        [
            "id",
            "from",
            "to",
            "pp",
            "type",
            "content",
            "event",
            "method",
            "uri",
            "status",
            "state",
            "reason",
            "resource",
            "metadata",
            "scheme",
        ]
    ),
    json_values,
    max_size=8,
)


@settings(max_examples=300)
@given(envelope_like)
def test_decode_returns_an_envelope_or_a_precise_error(obj):
    data = json.dumps(obj).encode()
    try:
        envelope = decode_envelope(data)
    except EnvelopeError as error:
        assert error.reason.code == ReasonCode.VALIDATION_ERROR
        assert error.reason.description
        return
    assert decode_envelope(encode_envelope(envelope)) == envelope


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_junk_bytes_never_escape_as_other_exceptions(data):
    with contextlib.suppress(EnvelopeError):
        decode_envelope(data)
