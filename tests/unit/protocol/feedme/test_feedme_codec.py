"""Messages and codec: the shapes feedme-util 0.2.2 enforces, in both directions."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from feedme_strategies import client_messages, json_values, server_messages
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol.feedme import (
    MESSAGE_TYPES,
    Action,
    ActionResponse,
    ActionRevelation,
    Delta,
    DeltaOperation,
    FeedClose,
    FeedCloseResponse,
    FeedKey,
    FeedOpen,
    FeedOpenResponse,
    FeedTermination,
    Handshake,
    HandshakeResponse,
    LocalProtocolError,
    Message,
    RemoteProtocolError,
    ViolationCase,
    ViolationResponse,
    check_json_value,
    decode_client_message,
    decode_server_message,
    encode_message,
    prepare_revelation,
)

FEED = FeedKey.of("Counter", {"Id": "1"})


def wire(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(encode_message(message))
    return result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"MessageType":"Handshake","Versions":["0.1"]}', Handshake(["0.1"])),
        ('{"MessageType":"Handshake","Versions":[""]}', Handshake([""])),
        (
            '{"MessageType":"Action","ActionName":"Echo","ActionArgs":{"Hello":"World"},'
            '"CallbackId":"1"}',
            Action("Echo", {"Hello": "World"}, "1"),
        ),
        (
            '{"MessageType":"FeedOpen","FeedName":"Counter","FeedArgs":{"Id":"1"}}',
            FeedOpen("Counter", {"Id": "1"}),
        ),
        ('{"MessageType":"FeedClose","FeedName":"C","FeedArgs":{}}', FeedClose("C", {})),
        ('{"MessageType":"FeedOpen","FeedName":"C","FeedArgs":{"":""}}', FeedOpen("C", {"": ""})),
        # Whitespace and key order do not matter; duplicate keys: last wins (JSON.parse).
        (
            ' { "FeedArgs" : {} , "FeedName":"x", "MessageType":"FeedClose","FeedName":"C" } ',
            FeedClose("C", {}),
        ),
    ],
)
def test_decode_valid_client_messages(text: str, expected: Message) -> None:
    assert decode_client_message(text) == expected
    assert decode_client_message(text.encode()) == expected


INVALID_CLIENT = [
    "not json",
    "",
    "null",
    "[]",
    '"Handshake"',
    "{}",
    '{"MessageType":"Nope"}',
    '{"MessageType":1}',
    '{"MessageType":"HandshakeResponse","Success":false}',  # a server message
    '{"MessageType":"Handshake","Versions":[]}',
    '{"MessageType":"Handshake","Versions":[1]}',
    '{"MessageType":"Handshake","Versions":"0.1"}',
    '{"MessageType":"Handshake","Versions":["0.1"],"ClientId":"x"}',
    '{"MessageType":"Handshake"}',
    '{"MessageType":"Action","ActionName":"","ActionArgs":{},"CallbackId":"1"}',
    '{"MessageType":"Action","ActionName":"a","ActionArgs":{},"CallbackId":""}',
    '{"MessageType":"Action","ActionName":"a","ActionArgs":[],"CallbackId":"1"}',
    '{"MessageType":"Action","ActionName":"a","ActionArgs":null,"CallbackId":"1"}',
    '{"MessageType":"Action","ActionName":"a","ActionArgs":{},"CallbackId":1}',
    '{"MessageType":"Action","ActionName":"a","ActionArgs":{}}',
    '{"MessageType":"Action","ActionName":"a","ActionArgs":{},"CallbackId":"1","X":0}',
    '{"MessageType":"FeedOpen","FeedName":"","FeedArgs":{}}',
    '{"MessageType":"FeedOpen","FeedName":"F\\u0000","FeedArgs":{}}',
    '{"MessageType":"FeedClose","FeedName":"\\u0000","FeedArgs":{}}',
    '{"MessageType":"FeedOpen","FeedName":"F","FeedArgs":{"a":1}}',
    '{"MessageType":"FeedOpen","FeedName":"F","FeedArgs":{"a":null}}',
    '{"MessageType":"FeedOpen","FeedName":"F","FeedArgs":[]}',
    '{"MessageType":"FeedOpen","FeedName":"F"}',
    '{"MessageType":"FeedClose","FeedName":"F","FeedArgs":{},"FeedData":{}}',
    '{"MessageType":"FeedClose","FeedName":7,"FeedArgs":{}}',
    # JSON that JavaScript's JSON.parse refuses (or we refuse, documented).
    '{"MessageType":"Action","ActionName":"a","ActionArgs":{"x":NaN},"CallbackId":"1"}',
    '{"MessageType":"Action","ActionName":"a","ActionArgs":{"x":Infinity},"CallbackId":"1"}',
    '{"MessageType":"Action","ActionName":"a","ActionArgs":{"x":1e400},"CallbackId":"1"}',
    '{"MessageType":"Action","ActionName":"a","ActionArgs":{"x":"\\ud800"},"CallbackId":"1"}',
    '{"MessageType":"FeedClose","FeedName":"F","FeedArgs":{}} trailing',
    '{"MessageType":"FeedClose","FeedName":"F","FeedArgs":{},}',
    "[" * 5000 + "]" * 5000,
]


@pytest.mark.parametrize("text", INVALID_CLIENT)
def test_decode_invalid_client_messages(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_message(text)
    error = info.value
    assert error.case is ViolationCase.INVALID_MESSAGE
    assert error.diagnostics["Problem"] == "Invalid JSON or schema violation."
    assert error.diagnostics["Message"] == text
    assert error.detail
    assert str(error).startswith("INVALID_MESSAGE: ")


def test_schema_detail_is_precise() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_message('{"MessageType":"FeedOpen","FeedName":"F","FeedArgs":{"a":1}}')
    assert "FeedArgs" in info.value.detail


def test_size_bound() -> None:
    text = '{"MessageType":"Handshake","Versions":["0.1"]}'
    assert decode_client_message(text, max_size=len(text)) == Handshake(["0.1"])
    big = '{"MessageType":"Action","ActionName":"a","ActionArgs":{"x":"' + "y" * 5000 + '"}}'
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_message(big, max_size=100)
    assert "exceeds 100" in info.value.detail
    assert len(info.value.diagnostics["Message"]) <= 1024


def test_invalid_utf8_bytes() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_message(b'{"MessageType":"Handshake","Versions":["\xff"]}')
    assert "\ufffd" in info.value.raw


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (HandshakeResponse.accepted("0.1"), {"Success": True, "Version": "0.1"}),
        (HandshakeResponse.rejected(), {"Success": False}),
        (
            ActionResponse.ok("1", {"a": 1}),
            {"CallbackId": "1", "Success": True, "ActionData": {"a": 1}},
        ),
        (
            ActionResponse.error("1", "BAD"),
            {"CallbackId": "1", "Success": False, "ErrorCode": "BAD", "ErrorData": {}},
        ),
        (
            FeedOpenResponse.ok(FEED, {"Count": 0}),
            {
                "FeedName": "Counter",
                "FeedArgs": {"Id": "1"},
                "Success": True,
                "FeedData": {"Count": 0},
            },
        ),
        (
            FeedOpenResponse.error(FEED, "NO", {"why": None}),
            {
                "FeedName": "Counter",
                "FeedArgs": {"Id": "1"},
                "Success": False,
                "ErrorCode": "NO",
                "ErrorData": {"why": None},
            },
        ),
        (FeedCloseResponse.of(FEED), {"FeedName": "Counter", "FeedArgs": {"Id": "1"}}),
        (
            ActionRevelation.of(FEED, "Inc", {}, [Delta(DeltaOperation.SET, ("a",), None)]),
            {
                "FeedName": "Counter",
                "FeedArgs": {"Id": "1"},
                "ActionName": "Inc",
                "ActionData": {},
                "FeedDeltas": [{"Operation": "Set", "Path": ["a"], "Value": None}],
            },
        ),
        (
            ActionRevelation.of(FEED, "Inc", {}, [], feed_md5="2weHGzWWvl0fEN85gC2ilA=="),
            {
                "FeedName": "Counter",
                "FeedArgs": {"Id": "1"},
                "ActionName": "Inc",
                "ActionData": {},
                "FeedDeltas": [],
                "FeedMd5": "2weHGzWWvl0fEN85gC2ilA==",
            },
        ),
        (
            FeedTermination.of(FEED, "SHUTDOWN"),
            {
                "FeedName": "Counter",
                "FeedArgs": {"Id": "1"},
                "ErrorCode": "SHUTDOWN",
                "ErrorData": {},
            },
        ),
        (ViolationResponse({"Problem": "p"}), {"Diagnostics": {"Problem": "p"}}),
    ],
)
def test_encode_server_messages_exact_keys(message: Message, expected: dict[str, Any]) -> None:
    """No ClientId, no nulls for absent keys, ActionRevelation not FeedAction."""
    assert wire(message) == {"MessageType": type(message).__name__, **expected}
    assert decode_server_message(encode_message(message)) == message


@pytest.mark.parametrize(
    "build",
    [
        lambda: HandshakeResponse(success=True),
        lambda: HandshakeResponse(success=True, version=""),
        lambda: HandshakeResponse(success=False, version="0.1"),
        lambda: ActionResponse(callback_id="1", success=True),
        lambda: ActionResponse(callback_id="", success=True, action_data={}),
        lambda: ActionResponse(callback_id="1", success=True, action_data={}, error_code="X"),
        lambda: ActionResponse(callback_id="1", success=False, error_code="X"),
        lambda: ActionResponse(callback_id="1", success=False, error_data={}),
        lambda: ActionResponse(
            callback_id="1", success=False, action_data={}, error_code="X", error_data={}
        ),
        lambda: ActionResponse.error("1", ""),
        lambda: FeedOpenResponse.ok(FeedKey.of(""), {}),
        lambda: FeedOpenResponse("F", {"a": 1}, success=True, feed_data={}),  # type: ignore[dict-item]
        lambda: FeedOpenResponse("F", {}, success=True, feed_data=[]),  # type: ignore[arg-type]
        lambda: ActionRevelation.of(FEED, "", {}),
        lambda: ActionRevelation.of(FEED, "a", {}, feed_md5="short"),
        lambda: ActionRevelation("F", {}, action_name="a", action_data={}, feed_deltas=[{}]),  # type: ignore[list-item]
        lambda: FeedTermination.of(FEED, ""),
        lambda: Handshake([]),
        lambda: Action("", {}, "1"),
        lambda: ViolationResponse([]),  # type: ignore[arg-type]
    ],
)
def test_constructors_refuse_what_the_client_rejects(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    "payload",
    [
        {"x": math.nan},
        {"x": [math.inf]},
        {"x": -math.inf},
        {"x": {1, 2}},
        {"x": (1,)},
        {1: "a"},
        {"x": "\ud800"},
    ],
)
def test_encode_refuses_non_json(payload: dict[Any, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(ActionResponse.ok("1", payload))


def test_encode_refuses_nan_inside_delta_value() -> None:
    message = ActionRevelation.of(FEED, "a", {}, [Delta(DeltaOperation.SET, ("a",), [math.nan])])
    with pytest.raises(LocalProtocolError):
        encode_message(message)


def test_check_json_value_accepts_plain_json() -> None:
    check_json_value({"a": [1, 2.5, "s", None, True, {"b": []}]})
    with pytest.raises(ValueError):
        check_json_value(object())


def test_prepared_revelation_bytes() -> None:
    message = ActionRevelation.of(
        FEED, "Inc", {"By": 1}, [Delta(DeltaOperation.INCREMENT, ("Count",), 1)]
    )
    prepared = prepare_revelation(message)
    assert prepared.feed == FEED
    assert prepared.payload == encode_message(message)


def test_message_types_registry() -> None:
    assert set(MESSAGE_TYPES) == set(
        [
            "Handshake",
            "Action",
            "FeedOpen",
            "FeedClose",
            "ViolationResponse",
            "HandshakeResponse",
            "ActionResponse",
            "FeedOpenResponse",
            "FeedCloseResponse",
            "ActionRevelation",
            "FeedTermination",
        ]
    )
    assert "FeedAction" not in MESSAGE_TYPES


def test_feed_key_ignores_arg_order() -> None:
    a = FeedOpen("F", {"x": "1", "y": "2"}).feed
    b = FeedClose("F", {"y": "2", "x": "1"}).feed
    assert a == b and hash(a) == hash(b)
    assert a != FeedKey.of("F", {"x": "1"})
    assert a.args_dict() == {"x": "1", "y": "2"}


# --- properties -------------------------------------------------------------


@given(client_messages)
def test_client_round_trip(message: Message) -> None:
    assert decode_client_message(encode_message(message)) == message


@given(server_messages)
def test_server_round_trip(message: Message) -> None:
    encoded = encode_message(message)
    assert decode_server_message(encoded) == message
    assert all(value is not None for value in json.loads(encoded).values())


@given(st.one_of(st.text(), st.binary(), json_values.map(json.dumps)))
def test_junk_never_raises_anything_else(junk: str | bytes) -> None:
    for decode in (decode_client_message, decode_server_message):
        try:
            decode(junk)
        except RemoteProtocolError as exc:
            assert exc.case is ViolationCase.INVALID_MESSAGE


@given(client_messages, st.sampled_from(["drop", "extra", "empty", "null"]), st.data())
def test_mutated_client_messages_are_violations(
    message: Message, how: str, data: st.DataObject
) -> None:
    obj = wire(message)
    keys = [k for k in obj if k != "MessageType"]
    key = data.draw(st.sampled_from(keys))
    if how == "drop":
        del obj[key]
    elif how == "extra":
        obj["ClientId"] = "x"
    elif how == "empty":
        if not isinstance(obj[key], str):
            return
        obj[key] = ""
    else:
        obj[key] = None
    with pytest.raises(RemoteProtocolError):
        decode_client_message(json.dumps(obj))
