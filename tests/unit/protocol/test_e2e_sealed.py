"""Sealed messages: fan-out to devices, the copy rule, and every way a message can be wrong."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import msgspec
import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
from nacl.public import SealedBox
from nacl.signing import SigningKey, VerifyKey

from tidings.protocol.e2e import (
    E2EError,
    InvalidKey,
    NodeKeys,
    Opened,
    OpenFailure,
    open_sealed,
    seal,
)

from .e2e_spec_client import aad, b64, resign, signed_bytes, spec_seal

ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"

alice_laptop, alice_desk = NodeKeys.generate(), NodeKeys.generate()
bob_phone, bob_tablet, bob_desktop = NodeKeys.generate(), NodeKeys.generate(), NodeKeys.generate()
carol_phone = NodeKeys.generate()
BOB_DEVICES = [bob_phone, bob_tablet, bob_desktop]


def sealed_hello(**changes: Any) -> dict[str, Any]:
    """Alice's laptop to bob: bob's three devices and alice's desk may open it."""
    arguments: dict[str, Any] = {
        "message_id": "m1",
        "sender": f"{ALICE}/laptop",
        "to": BOB,
        "content_type": "application/json",
        "content": {"text": "hello", "n": [1, 2.5, None]},
        "recipients": [k.box_id for k in [*BOB_DEVICES, alice_desk]],
    }
    arguments.update(changes)
    return seal(alice_laptop, **arguments)


def open_as_bob(content: object, keys: NodeKeys = bob_phone, **changes: Any) -> Opened:
    arguments: dict[str, Any] = {
        "message_id": "m1",
        "envelope_from": f"{ALICE}/laptop",
        "envelope_to": f"{BOB}/phone",
        "my_keys": [keys],
    }
    arguments.update(changes)
    return open_sealed(content, **arguments)


def failure(content: object, **changes: Any) -> str:
    with pytest.raises(E2EError) as caught:
        open_as_bob(content, **changes)
    return caught.value.kind


def test_the_content_has_the_documented_fields() -> None:
    content = sealed_hello()
    assert list(content) == [
        "v",
        "id",
        "from",
        "to",
        "signId",
        "nonce",
        "ciphertext",
        "keys",
        "signature",
    ]
    assert content["v"] == 1 and content["id"] == "m1"
    assert (content["from"], content["to"], content["signId"]) == (
        f"{ALICE}/laptop",
        BOB,
        alice_laptop.sign_id,
    )
    assert [entry["boxId"] for entry in content["keys"]] == sorted(
        k.box_id for k in [*BOB_DEVICES, alice_desk]
    )
    assert len(base64.b64decode(content["nonce"])) == 24
    json.dumps(content)  # plain JSON types only


def test_a_client_following_the_docs_can_check_and_decrypt_it() -> None:
    """Signature over the documented lines; key unsealed with the device's box key; AEAD with
    the documented associated data; plaintext ``{"type", "content"}``."""
    content = sealed_hello()
    VerifyKey(base64.b64decode(content["signId"])).verify(
        signed_bytes(content), base64.b64decode(content["signature"])
    )
    entry = next(e for e in content["keys"] if e["boxId"] == bob_tablet.box_id)
    message_key = SealedBox(bob_tablet.box_key).decrypt(base64.b64decode(entry["key"]))
    plaintext = crypto_aead_xchacha20poly1305_ietf_decrypt(
        base64.b64decode(content["ciphertext"]),
        aad("m1", f"{ALICE}/laptop", BOB),
        base64.b64decode(content["nonce"]),
        message_key,
    )
    assert json.loads(plaintext) == {
        "type": "application/json",
        "content": {"text": "hello", "n": [1, 2.5, None]},
    }


def test_what_a_client_following_the_docs_seals_opens() -> None:
    signer = SigningKey(alice_laptop.secret[:32])
    content = spec_seal(
        signer,
        message_id="m1",
        sender=f"{ALICE}/laptop",
        to=BOB,
        plaintext=b'{"type":"text/plain","content":"hi"}',
        box_ids=[bob_phone.box_id],
    )
    opened = open_as_bob(content)
    assert (opened.type, opened.content, opened.sign_id) == (
        "text/plain",
        "hi",
        alice_laptop.sign_id,
    )


def test_every_other_device_of_both_sides_can_open_it() -> None:
    """Recipient with 3 devices, sender with 2: the 4 devices other than the sending one."""
    content = sealed_hello()
    for device, name in zip(BOB_DEVICES, ["phone", "tablet", "desktop"], strict=True):
        opened = open_as_bob(content, device, envelope_to=f"{BOB}/{name}")
        assert opened == Opened(
            type="application/json",
            content={"text": "hello", "n": [1, 2.5, None]},
            sender=f"{ALICE}/laptop",
            sign_id=alice_laptop.sign_id,
            to=BOB,
            is_copy=False,
        )
    copy_opened = open_as_bob(
        content, alice_desk, message_id="m1:copy", envelope_to=f"{ALICE}/desk"
    )
    assert copy_opened.is_copy and copy_opened.to == BOB
    assert copy_opened.content == {"text": "hello", "n": [1, 2.5, None]}
    assert failure(content, keys=alice_laptop) == "not-for-me"


def test_the_json_text_opens_as_well() -> None:
    content = sealed_hello()
    text = json.dumps(content)
    for form in (text, text.encode(), msgspec.Raw(text.encode())):
        assert open_as_bob(form).content == {"text": "hello", "n": [1, 2.5, None]}


def test_raw_content_is_embedded_as_is() -> None:
    content = sealed_hello(content=msgspec.Raw(b'{"a": [1, 2]}'))
    assert open_as_bob(content).content == {"a": [1, 2]}


def test_addresses_compare_as_lime_nodes() -> None:
    content = sealed_hello(sender="Alice@Example.COM/laptop", to="Bob@example.com/phone")
    assert (content["from"], content["to"]) == (f"{ALICE}/laptop", BOB)
    opened = open_as_bob(content, envelope_from="ALICE@example.com/laptop")
    assert opened.sender == f"{ALICE}/laptop"


def test_each_message_has_its_own_key_and_nonce() -> None:
    one, two = sealed_hello(), sealed_hello()
    assert one["nonce"] != two["nonce"] and one["ciphertext"] != two["ciphertext"]
    key_one = SealedBox(bob_phone.box_key).decrypt(
        base64.b64decode(next(e for e in one["keys"] if e["boxId"] == bob_phone.box_id)["key"])
    )
    key_two = SealedBox(bob_phone.box_key).decrypt(
        base64.b64decode(next(e for e in two["keys"] if e["boxId"] == bob_phone.box_id)["key"])
    )
    assert key_one != key_two


# tampering by someone without alice's key: every signed part breaks the signature


def flip(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[len(raw) // 2] ^= 0x01
    return b64(bytes(raw))


def tamper_key(content: dict[str, Any]) -> None:
    content["keys"][0]["key"] = flip(content["keys"][0]["key"])


def reorder(content: dict[str, Any]) -> None:
    content["keys"].reverse()


def drop_other(content: dict[str, Any]) -> None:
    content["keys"] = [e for e in content["keys"] if e["boxId"] != bob_tablet.box_id]


def add_carol(content: dict[str, Any]) -> None:
    content["keys"].append({"boxId": carol_phone.box_id, "key": content["keys"][0]["key"]})


TAMPERING = {
    "ciphertext": lambda c: c.update(ciphertext=flip(c["ciphertext"])),
    "nonce": lambda c: c.update(nonce=flip(c["nonce"])),
    "wrapped key": tamper_key,
    "id": lambda c: c.update(id="m2"),
    "from": lambda c: c.update({"from": f"{ALICE}/desk"}),
    "to": lambda c: c.update(to=CAROL),
    "signId": lambda c: c.update(signId=alice_desk.sign_id),
    "signature": lambda c: c.update(signature=flip(c["signature"])),
    "keys order": reorder,
    "key removed": drop_other,
    "key added": add_carol,
}


@pytest.mark.parametrize("change", TAMPERING.values(), ids=list(TAMPERING))
def test_tampering_breaks_the_signature(change: Any) -> None:
    content = sealed_hello()
    change(content)
    envelope = {"message_id": content["id"], "envelope_from": content["from"]}
    assert failure(content, **envelope) == "bad-signature"


# a sender that signs what it sends, but sends something that does not hold


def test_a_ciphertext_that_does_not_decrypt_is_tampered() -> None:
    content = sealed_hello()
    content["ciphertext"] = flip(content["ciphertext"])
    assert failure(resign(content, alice_laptop.signing_key)) == "tampered"


def test_a_wrapped_key_that_does_not_unseal_is_tampered() -> None:
    content = sealed_hello()
    for entry in content["keys"]:
        if entry["boxId"] == bob_phone.box_id:
            entry["key"] = flip(entry["key"])
    content = resign(content, alice_laptop.signing_key)
    assert failure(content) == "tampered"
    assert open_as_bob(content, bob_tablet, envelope_to=f"{BOB}/tablet").type  # others still can


def test_a_wrapped_key_for_another_message_is_tampered() -> None:
    content = sealed_hello()
    other = sealed_hello()
    mine = next(e for e in other["keys"] if e["boxId"] == bob_phone.box_id)
    for entry in content["keys"]:
        if entry["boxId"] == bob_phone.box_id:
            entry["key"] = mine["key"]
    assert failure(resign(content, alice_laptop.signing_key)) == "tampered"


def test_the_ciphertext_is_bound_to_id_from_and_to() -> None:
    """Re-signing with new addresses does not help: the AEAD's associated data had the old."""
    for field, value, envelope in [
        ("id", "m2", {"message_id": "m2"}),
        ("to", CAROL, {"envelope_to": f"{CAROL}/phone"}),
        ("from", f"{ALICE}/desk", {"envelope_from": f"{ALICE}/desk"}),
    ]:
        content = sealed_hello()
        content[field] = value
        assert failure(resign(content, alice_laptop.signing_key), **envelope) == "tampered"


def test_a_message_signed_by_another_key_reports_that_key() -> None:
    """The sealed message says who signed; whether that key is alice's is the directory's word,
    so ``sign_id`` must be checked by the caller."""
    mallory = NodeKeys.generate()
    content = resign(sealed_hello(), mallory.signing_key)
    assert open_as_bob(content).sign_id == mallory.sign_id


def test_a_plaintext_that_is_not_type_and_content_is_malformed() -> None:
    signer = SigningKey(alice_laptop.secret[:32])
    for plaintext in [
        b"not json",
        b'"text"',
        b'{"type": "text/plain"}',
        b'{"type": 1, "content": 2}',
        b'{"type": "a", "content": 1, "more": 2}',
        b'{"type": "\xff", "content": 1}',
        b"[" * 100 + b"]" * 100,
    ]:
        content = spec_seal(
            signer,
            message_id="m1",
            sender=f"{ALICE}/laptop",
            to=BOB,
            plaintext=plaintext,
            box_ids=[bob_phone.box_id],
        )
        assert failure(content) == "malformed", plaintext


# keys that are not the right ones


def test_keys_not_sealed_for_are_not_for_me() -> None:
    content = sealed_hello()
    assert failure(content, keys=carol_phone) == "not-for-me"
    assert failure(content, my_keys=[]) == "not-for-me"


def test_any_of_my_keys_may_open_it() -> None:
    """Current and retired keys alike: the one the message was sealed for is used."""
    content = sealed_hello()
    assert open_as_bob(content, my_keys=[NodeKeys.generate(), bob_phone]).type


# the envelope must be the one the sender signed for


def test_replay_to_another_recipient_is_refused() -> None:
    """Bob hands alice's message to carol, under the same or a new id."""
    content = sealed_hello()
    for envelope in [
        {"envelope_from": f"{ALICE}/laptop", "envelope_to": f"{CAROL}/phone"},
        {"envelope_from": f"{BOB}/phone", "envelope_to": f"{CAROL}/phone"},
        {"message_id": "m2", "envelope_to": f"{CAROL}/phone"},
    ]:
        assert failure(content, keys=carol_phone, **envelope) == "wrong-recipient"


def test_the_envelope_must_match_the_signed_fields() -> None:
    content = sealed_hello()
    for envelope in [
        {"message_id": "m2"},
        {"message_id": "m1 "},
        {"envelope_from": f"{ALICE}/desk"},
        {"envelope_from": ALICE},
        {"envelope_from": f"{BOB}/phone"},
        {"envelope_to": f"{CAROL}/phone"},
        {"envelope_from": "not a node"},
        {"envelope_to": ""},
    ]:
        assert failure(content, **envelope) == "wrong-recipient", envelope


def test_a_copy_is_only_for_the_senders_own_identity() -> None:
    content = sealed_hello()
    # the copy id delivered to bob: bob is not the sender's identity
    assert failure(content, message_id="m1:copy") == "wrong-recipient"
    # the copy delivered to alice under the plain id: the message is not to alice
    kind = failure(content, keys=alice_desk, envelope_to=f"{ALICE}/desk")
    assert kind == "wrong-recipient"
    # another suffix
    kind = failure(content, keys=alice_desk, message_id="m1:copy2", envelope_to=f"{ALICE}/desk")
    assert kind == "wrong-recipient"
    # the copy must still come from the signing node
    kind = failure(
        content,
        keys=alice_desk,
        message_id="m1:copy",
        envelope_to=f"{ALICE}/desk",
        envelope_from=f"{ALICE}/phone",
    )
    assert kind == "wrong-recipient"


def test_a_note_to_self_opens_both_ways() -> None:
    content = sealed_hello(to=ALICE)
    for message_id in ("m1", "m1:copy"):
        opened = open_as_bob(
            content, alice_desk, message_id=message_id, envelope_to=f"{ALICE}/desk"
        )
        assert opened.is_copy == message_id.endswith(":copy")


# malformed contents


def malformed_variants() -> dict[str, Any]:
    good = sealed_hello()

    def variant(**changes: Any) -> dict[str, Any]:
        content = copy.deepcopy(good)
        content.update(changes)
        return content

    def without(field: str) -> dict[str, Any]:
        content = copy.deepcopy(good)
        del content[field]
        return content

    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = good["signature"][-3]  # 64 bytes: "xx==", the second x has 4 unused bits
    padding_bits = good["signature"][:-3] + alphabet[alphabet.index(last) ^ 1] + "=="
    entry = good["keys"][0]
    return {
        "not an object": ["v", 1],
        "null": None,
        "version 2": variant(v=2),
        "version true": variant(v=True),
        "missing signature": without("signature"),
        "missing keys": without("keys"),
        "unknown field": variant(extra="unsigned"),
        "id with line feed": variant(id="m1\nbob@example.com"),
        "empty id": variant(id=""),
        "id with a lone surrogate": variant(id="m\ud800"),
        "from without instance": variant(**{"from": ALICE}),
        "from not a node": variant(**{"from": "alice"}),
        "to with instance": variant(to=f"{BOB}/phone"),
        "nonce not base64": variant(nonce="!" * 32),
        "nonce too short": variant(nonce=b64(bytes(18))),
        "signature not canonical": variant(signature=padding_bits),
        "signature short": variant(signature=b64(bytes(63))),
        "ciphertext too short": variant(ciphertext=b64(bytes(15))),
        "ciphertext not base64": variant(ciphertext="%%%%" * 8),
        "signId not a key": variant(signId="x" * 44),
        "no keys": variant(keys=[]),
        "65 keys": variant(keys=[entry] * 65),
        "same boxId twice": variant(keys=[entry, entry]),
        "wrapped key short": variant(keys=[{"boxId": entry["boxId"], "key": b64(bytes(79))}]),
        "boxId not a key": variant(keys=[{"boxId": "y" * 44, "key": entry["key"]}]),
        "key entry extra field": variant(keys=[dict(entry, extra=1)]),
        "id not a string": variant(id=1),
        "json text garbage": "{not json",
        "json text not utf-8": b'{"v": 1, "id": "\x80"}',
        "json text with a lone surrogate": '{"v": 1, "id": "\ud800"}',
        "json too deep": "[" * 10000 + "]" * 10000,
    }


@pytest.mark.parametrize("content", malformed_variants().values(), ids=list(malformed_variants()))
def test_malformed_contents_are_refused(content: object) -> None:
    assert failure(content) == "malformed"


def test_the_kinds_are_the_documented_ones() -> None:
    assert [kind.value for kind in OpenFailure] == [
        "malformed",
        "bad-signature",
        "wrong-recipient",
        "not-for-me",
        "tampered",
    ]
    assert issubclass(E2EError, Exception)


# what seal refuses to make


@pytest.mark.parametrize(
    "changes",
    [
        {"sender": ALICE},
        {"sender": "alice"},
        {"to": "nobody"},
        {"message_id": ""},
        {"message_id": "x" * 252},
        {"message_id": "m\n1"},
        {"content_type": ""},
        {"recipients": []},
        {"recipients": [NodeKeys.generate().box_id for _ in range(65)]},
        {"content": object()},
    ],
)
def test_seal_refuses_what_no_one_could_open(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sealed_hello(**changes)


def test_seal_refuses_a_recipient_that_is_no_box_key() -> None:
    with pytest.raises(InvalidKey):
        sealed_hello(recipients=["not a key"])


def test_duplicate_recipients_are_sealed_for_once() -> None:
    content = sealed_hello(recipients=[bob_phone.box_id, bob_phone.box_id])
    assert [e["boxId"] for e in content["keys"]] == [bob_phone.box_id]
    assert open_as_bob(content).type


def test_the_longest_id_still_has_room_for_its_copy() -> None:
    message_id = "x" * 251
    content = sealed_hello(message_id=message_id)
    opened = open_as_bob(
        content, alice_desk, message_id=message_id + ":copy", envelope_to=f"{ALICE}/desk"
    )
    assert opened.is_copy
