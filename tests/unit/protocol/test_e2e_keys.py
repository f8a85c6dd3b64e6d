"""Node keys: Ed25519 signing key, the X25519 box key libsodium derives from it, signatures."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import (
    crypto_scalarmult_base,
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)
from nacl.signing import SigningKey

from tidings.protocol.e2e import (
    E2EError,
    InvalidKey,
    NodeKeys,
    box_id_of,
    decode_key,
    verify,
)


def test_ids_are_derived_as_mm_platform_does() -> None:
    """Reference 2.10 scenario 1: the secret is 64 bytes, ``signId`` decodes to 32 bytes and
    ``boxId == b64(crypto_sign_ed25519_pk_to_curve25519(signPk))``."""
    keys = NodeKeys.generate()
    assert len(keys.secret) == 64
    sign_pk = decode_key(keys.sign_id)
    assert len(sign_pk) == 32
    assert keys.secret[32:] == sign_pk
    expected = base64.b64encode(crypto_sign_ed25519_pk_to_curve25519(sign_pk)).decode()
    assert keys.box_id == expected == box_id_of(keys.sign_id)
    assert bytes(keys.box_key) == crypto_sign_ed25519_sk_to_curve25519(keys.secret)
    assert crypto_scalarmult_base(bytes(keys.box_key)) == decode_key(keys.box_id)


@given(st.binary(min_size=32, max_size=32))
def test_the_secret_round_trips(seed: bytes) -> None:
    keys = NodeKeys(SigningKey(seed))
    again = NodeKeys.from_secret(keys.secret)
    assert again == keys
    assert (again.sign_id, again.box_id, again.secret) == (keys.sign_id, keys.box_id, keys.secret)


@pytest.mark.parametrize("length", [0, 32, 63, 65, 96])
def test_a_secret_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(InvalidKey):
        NodeKeys.from_secret(bytes(length))


def test_a_secret_whose_public_half_is_not_its_seeds_is_refused() -> None:
    one, other = NodeKeys.generate(), NodeKeys.generate()
    with pytest.raises(InvalidKey, match="does not match"):
        NodeKeys.from_secret(one.secret[:32] + other.secret[32:])


def test_the_repr_shows_no_secret() -> None:
    keys = NodeKeys.generate()
    text = repr(keys)
    assert keys.sign_id in text
    assert base64.b64encode(keys.secret).decode() not in text
    assert keys.secret[:32].hex() not in text


def test_keys_are_equal_by_their_public_key() -> None:
    keys = NodeKeys.generate()
    assert NodeKeys.from_secret(keys.secret) == keys
    assert {keys, NodeKeys.from_secret(keys.secret)} == {keys}
    assert keys != NodeKeys.generate()


@given(st.binary(max_size=512))
def test_signatures_verify(message: bytes) -> None:
    keys = NodeKeys.generate()
    signature = keys.sign(message)
    assert len(signature) == 64
    verify(keys.sign_id, message, signature)


def test_a_wrong_signature_is_a_bad_signature() -> None:
    keys, other = NodeKeys.generate(), NodeKeys.generate()
    signature = keys.sign(b"hello")
    for sign_id, message, sig in [
        (keys.sign_id, b"hellO", signature),
        (other.sign_id, b"hello", signature),
        (keys.sign_id, b"hello", signature[:-1] + bytes([signature[-1] ^ 1])),
        (keys.sign_id, b"hello", signature[:63]),
        (keys.sign_id, b"hello", b""),
    ]:
        with pytest.raises(E2EError) as caught:
            verify(sign_id, message, sig)
        assert caught.value.kind == "bad-signature"


def test_a_sign_id_that_is_no_key_is_an_invalid_key() -> None:
    with pytest.raises(InvalidKey):
        verify("not a key", b"hello", bytes(64))
