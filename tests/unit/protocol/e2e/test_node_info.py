"""Node info documents: signing, the exact signed bytes, and every way verification refuses."""

from __future__ import annotations

import base64
import contextlib
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from tidings.protocol.e2e import (
    E2EError,
    NodeInfo,
    box_id_of,
    node_info_signed_bytes,
    sign_node_info,
    verify_node_info,
)

from .signers import TestSigner

PUBLISHED = 1_764_500_000_000
EXPIRES = 1_767_092_000_000


@pytest.fixture
def signer() -> TestSigner:
    return TestSigner(SigningKey(bytes(range(32))))


def signed(signer: TestSigner, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "identity": "alice@example.com",
        "instance": "laptop",
        "published": PUBLISHED,
        "expires": EXPIRES,
    }
    arguments.update(overrides)
    return sign_node_info(signer, **arguments)


def test_a_signed_document_verifies_and_round_trips(signer: TestSigner) -> None:
    document = signed(signer, connection_info=[{"url": "tcp://10.0.0.1:9", "pri": 1}])
    assert list(document) == [
        "identity",
        "instance",
        "signId",
        "boxId",
        "published",
        "expires",
        "connectionInfo",
        "signature",
    ]
    info = verify_node_info(document)
    assert isinstance(info, NodeInfo)
    assert info.node == "alice@example.com/laptop"
    assert info.sign_id == signer.sign_id
    assert info.box_id == box_id_of(signer.sign_id)
    assert info.document() == document


def test_the_signed_bytes_are_the_documented_lines(signer: TestSigner) -> None:
    document = signed(signer, connection_info=[{"b": 1, "a": "é"}])
    expected = "\n".join(
        [
            "tidings/node-info/v1",
            "alice@example.com",
            "laptop",
            document["signId"],
            document["boxId"],
            str(PUBLISHED),
            str(EXPIRES),
            '[{"a":"é","b":1}]',
        ]
    ).encode()
    assert (
        node_info_signed_bytes(
            "alice@example.com",
            "laptop",
            document["signId"],
            document["boxId"],
            PUBLISHED,
            EXPIRES,
            [{"b": 1, "a": "é"}],
        )
        == expected
    )
    signature = base64.b64decode(document["signature"])
    signer.key.verify_key.verify(expected, signature)  # raises if not these bytes


def test_without_connection_info_the_last_line_is_empty(signer: TestSigner) -> None:
    document = signed(signer)
    assert "connectionInfo" not in document
    message = node_info_signed_bytes(
        "alice@example.com",
        "laptop",
        document["signId"],
        document["boxId"],
        PUBLISHED,
        EXPIRES,
        None,
    )
    assert message.endswith(b"\n" + str(EXPIRES).encode() + b"\n")
    signer.key.verify_key.verify(message, base64.b64decode(document["signature"]))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("identity", "bob@example.com"),
        ("instance", "phone"),
        ("published", PUBLISHED + 1),
        ("expires", EXPIRES - 1),
        ("connectionInfo", [{"url": "tcp://evil"}]),
    ],
)
def test_any_changed_field_breaks_the_signature(signer: TestSigner, field: str, value: Any) -> None:
    document = signed(signer, connection_info=[{"url": "tcp://10.0.0.1:9"}])
    document[field] = value
    with pytest.raises(E2EError) as caught:
        verify_node_info(document)
    assert caught.value.kind == "bad-signature"


def test_another_keys_signature_is_refused(signer: TestSigner) -> None:
    document = signed(signer)
    other = signed(TestSigner())
    document["signature"] = other["signature"]
    with pytest.raises(E2EError) as caught:
        verify_node_info(document)
    assert caught.value.kind == "bad-signature"


def test_a_box_id_not_derived_from_the_sign_id_is_refused(signer: TestSigner) -> None:
    document = signed(signer)
    document["boxId"] = box_id_of(TestSigner().sign_id)
    with pytest.raises(E2EError) as caught:
        verify_node_info(document)
    assert caught.value.kind == "box-mismatch"


def _nested(depth: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(depth):
        value = [value]
    return value


def _remove(field: str) -> Any:
    def change(document: dict[str, Any]) -> None:
        del document[field]

    return change


def _set(field: str, value: Any) -> Any:
    def change(document: dict[str, Any]) -> None:
        document[field] = value

    return change


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (_remove("signature"), "malformed"),
        (_remove("identity"), "malformed"),
        (_set("extra", 1), "malformed"),
        (_set("published", True), "malformed"),
        (_set("published", 1.5), "malformed"),
        (_set("published", -1), "malformed"),
        (_set("expires", 2**53), "malformed"),
        (_set("expires", PUBLISHED), "malformed"),
        (_set("identity", "alice"), "malformed"),
        (_set("identity", "alice@example.com\nx"), "malformed"),
        (_set("identity", "alice@example.com/laptop"), "malformed"),
        (_set("identity", "a@" + "d" * 600), "malformed"),
        (_set("instance", ""), "malformed"),
        (_set("instance", "lap\ntop"), "malformed"),
        (_set("instance", "i" * 257), "malformed"),
        (_set("connectionInfo", {"not": "a list"}), "malformed"),
        (_set("connectionInfo", [1.5]), "malformed"),
        (_set("connectionInfo", ["x" * 4100]), "malformed"),
        (_set("connectionInfo", _nested(20)), "malformed"),
        (_set("signature", "not base64!"), "malformed"),
        (_set("signature", base64.b64encode(b"x" * 63).decode()), "malformed"),
        (_set("signId", "AAAA"), "invalid-key"),
        (_set("boxId", 5), "malformed"),
    ],
)
def test_malformed_documents_are_refused_with_their_kind(
    signer: TestSigner, change: Any, kind: str
) -> None:
    document = signed(signer)
    change(document)
    with pytest.raises(E2EError) as caught:
        verify_node_info(document)
    assert caught.value.kind == kind


def test_a_sign_id_that_is_no_curve_point_is_an_invalid_key(signer: TestSigner) -> None:
    document = signed(signer)
    document["signId"] = base64.b64encode(b"\xff" * 32).decode()  # no Ed25519 point
    with pytest.raises(E2EError) as caught:
        verify_node_info(document)
    assert caught.value.kind in ("invalid-key", "box-mismatch")


def test_connection_info_at_the_size_bound_is_accepted(signer: TestSigner) -> None:
    fits = ["x" * (4096 - 4)]  # ["..."] is 4 bytes more
    assert verify_node_info(signed(signer, connection_info=fits)).connection_info == fits
    with pytest.raises(E2EError) as caught:
        signed(signer, connection_info=["x" * (4096 - 3)])
    assert caught.value.kind == "malformed"


def test_signing_refuses_what_verification_would(signer: TestSigner) -> None:
    with pytest.raises(E2EError):
        signed(signer, instance="a\nb")
    with pytest.raises(E2EError):
        signed(signer, expires=PUBLISHED)


def test_non_objects_are_malformed() -> None:
    for value in (None, [], "x", 1, b"{}"):
        with pytest.raises(E2EError) as caught:
            verify_node_info(value)
        assert caught.value.kind == "malformed"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_FIELDS = st.sampled_from(
    [
        "identity",
        "instance",
        "signId",
        "boxId",
        "published",
        "expires",
        "connectionInfo",
        "signature",
        "other",
    ]
)


@settings(max_examples=300)
@given(st.dictionaries(_FIELDS, _json, max_size=9))
def test_arbitrary_documents_raise_only_e2e_errors(document: dict[str, Any]) -> None:
    with contextlib.suppress(E2EError):
        verify_node_info(document)


@settings(max_examples=200)
@given(field=_FIELDS, value=_json)
def test_a_valid_document_with_one_field_replaced_raises_only_e2e_errors(
    field: str, value: Any
) -> None:
    document = signed(TestSigner(SigningKey(bytes(32))), connection_info=[1])
    document = copy.deepcopy(document)
    document[field] = value
    try:
        info = verify_node_info(document)
    except E2EError:
        return
    assert info.document()[field] == value  # only an unchanged value can verify
