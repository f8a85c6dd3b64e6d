"""Contents on the wire, received messages, errors, credentials and the public surface."""

from __future__ import annotations

import base64

import pytest

import tidings.sdk as sdk
from tidings.protocol.lime import Command, CommandMethod, CommandStatus, Message, Raw, ReasonCode
from tidings.sdk import CommandResult, LimeError, MessageFailed, ReceivedMessage, RequestTimeout
from tidings.sdk._client import Client, _credentials
from tidings.sdk._types import decode_document, encode_document, is_json_type


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        ("application/json", True),
        ("application/vnd.lime.receipt+json", True),
        ("Application/JSON; charset=utf-8", True),
        ("text/plain", False),
        ("image/png", False),
    ],
)
def test_is_json_type(media_type: str, expected: bool) -> None:
    assert is_json_type(media_type) is expected


def test_text_goes_as_a_json_string() -> None:
    assert bytes(encode_document('say "hi"', "text/plain")) == b'"say \\"hi\\""'


def test_bytes_go_base64() -> None:
    raw = encode_document(b"\x00\x01\xff", "image/png")
    assert decode_document(raw) == base64.b64encode(b"\x00\x01\xff").decode()


def test_json_documents_round_trip() -> None:
    document = {"text": "hi", "thread": 2, "tags": ["a"]}
    assert decode_document(encode_document(document, "application/x+json")) == document


def test_structured_content_needs_a_json_type() -> None:
    with pytest.raises(TypeError):
        encode_document({"a": 1}, "text/plain")


def test_received_message_from_envelope() -> None:
    envelope = Message(
        id="m1",
        from_="alice@localhost/a",
        to="bob@localhost/b",
        type="application/json",
        content=Raw(b'{"n":1}'),
    )
    message = ReceivedMessage.from_envelope(envelope)
    assert message.sender == "alice@localhost/a"
    assert message.content == {"n": 1}
    assert message.key == ("alice@localhost/a", "m1")
    assert message.envelope is envelope


def test_a_message_without_id_has_no_key() -> None:
    envelope = Message(from_="alice@localhost/a", type="text/plain", content=Raw(b'"x"'))
    assert ReceivedMessage.from_envelope(envelope).key is None


def test_command_result_decodes_the_resource() -> None:
    response = Command(
        id="c1",
        method=CommandMethod.GET,
        status=CommandStatus.SUCCESS,
        type="application/vnd.lime.ping+json",
        resource=Raw(b"{}"),
    )
    result = CommandResult.from_envelope(response)
    assert (result.type, result.resource) == ("application/vnd.lime.ping+json", {})
    bare = CommandResult.from_envelope(
        Command(id="c2", method=CommandMethod.SET, status=CommandStatus.SUCCESS)
    )
    assert (bare.type, bare.resource) == (None, None)


def test_errors_carry_reason_codes() -> None:
    error = MessageFailed(42, "no such account", "m1")
    assert error.code is ReasonCode.ROUTING_DESTINATION_NOT_FOUND
    assert error.message_id == "m1"
    assert "42" in str(error) and "no such account" in str(error)
    assert isinstance(error, LimeError)
    custom = LimeError(999, "server-specific")
    assert custom.code == 999 and not isinstance(custom.code, ReasonCode)
    assert issubclass(RequestTimeout, TimeoutError)


def test_credentials_go_base64_on_the_wire() -> None:
    assert _credentials("pässword", None, False) == (
        "plain",
        {"password": base64.b64encode("pässword".encode()).decode()},
    )
    assert _credentials(None, "k3y", False) == ("key", {"key": base64.b64encode(b"k3y").decode()})
    assert _credentials(None, None, True) == ("guest", {})


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"password": "a", "guest": True}, {"password": "a", "key": "b"}],
)
def test_exactly_one_credential(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Client("ws://127.0.0.1:1/", "alice@localhost", **kwargs)  # type: ignore[arg-type]


def test_identity_must_have_a_domain() -> None:
    with pytest.raises(ValueError):
        Client("ws://127.0.0.1:1/", "alice", guest=True)


def test_node_before_connecting() -> None:
    client = Client("ws://127.0.0.1:1/", "Alice@LocalHost", instance="phone", guest=True)
    assert client.node == "alice@localhost/phone"


def test_public_surface() -> None:
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
    assert sorted(sdk.__all__) == sdk.__all__
    assert "Client" in sdk.__all__ and "SeenMessages" in sdk.__all__
