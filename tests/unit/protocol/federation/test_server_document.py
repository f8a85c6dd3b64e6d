"""Server key documents: signed by every listed key, read strictly, pinned keys vouch for new
ones during a rotation's overlap."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tidings.protocol import LocalProtocolError
from tidings.protocol.federation import (
    MAX_DOCUMENT_KEYS,
    FederationErrorId,
    FederationRefused,
    SigningKey,
    canonical_json,
    key_id,
    read_server_document,
    server_document,
)

E = FederationErrorId
NOW = 1_700_000_000.0
DOMAIN = "alpha.test"


def make_key(byte: int, domain: str = DOMAIN) -> SigningKey:
    seed = bytes([byte]) * 32
    return SigningKey(key_id(domain, SigningKey("x#y", seed).public), seed)


OLD, NEW, STRANGER = make_key(1), make_key(2), make_key(3)


def read(document: Any, pinned: tuple[bytes, ...] = (), now: float = NOW) -> list[Any]:
    return read_server_document(document, domain=DOMAIN, pinned=pinned, now=now)


def refusal(document: Any, pinned: tuple[bytes, ...] = (), now: float = NOW) -> E:
    with pytest.raises(FederationRefused) as caught:
        read(document, pinned, now)
    return caught.value.error_id


def test_key_id() -> None:
    public = OLD.public
    assert key_id(DOMAIN, public) == f"{DOMAIN}#{hashlib.sha256(public).hexdigest()[:16]}"
    assert OLD.key_id == key_id(DOMAIN, public)
    assert "seed" not in repr(OLD) and OLD.seed.hex() not in repr(OLD)


def test_round_trip_through_json() -> None:
    document = json.loads(json.dumps(server_document(DOMAIN, [(OLD, None)])))
    assert read(document) == [(OLD.key_id, OLD.public, None)]
    assert read(document, pinned=(OLD.public,)) == [(OLD.key_id, OLD.public, None)]


def test_the_signed_bytes_are_canonical_json() -> None:
    document = server_document(DOMAIN, [(OLD, NOW + 10.7)])
    key = base64.b64encode(OLD.public).decode()
    expected = (
        f'{{"domain":"{DOMAIN}","keys":[{{"expires":{int(NOW) + 10},"id":"{OLD.key_id}",'
        f'"key":"{key}"}}]}}'
    ).encode()
    assert canonical_json({"domain": DOMAIN, "keys": document["keys"]}) == expected
    signature = base64.b64decode(document["signatures"][OLD.key_id])
    Ed25519PublicKey.from_public_bytes(OLD.public).verify(signature, expected)


class TestRotation:
    def test_a_peer_pinning_the_old_key_accepts_the_new(self) -> None:
        document = server_document(DOMAIN, [(OLD, NOW + 3600), (NEW, None)])
        assert set(document["signatures"]) == {OLD.key_id, NEW.key_id}
        assert read(document, pinned=(OLD.public,)) == [
            (OLD.key_id, OLD.public, int(NOW) + 3600),
            (NEW.key_id, NEW.public, None),
        ]

    def test_a_document_with_only_an_unpinned_key_is_refused(self) -> None:
        document = server_document(DOMAIN, [(NEW, None)])
        assert refusal(document, pinned=(OLD.public,)) is E.UNKNOWN_KEY

    def test_a_stranger_cannot_add_itself_to_a_pinned_document(self) -> None:
        document = server_document(DOMAIN, [(OLD, None), (STRANGER, None)])
        assert read(document, pinned=(OLD.public,))  # OLD signed: the operator added it
        forged = server_document(DOMAIN, [(STRANGER, None)])
        forged["keys"].insert(0, server_document(DOMAIN, [(OLD, None)])["keys"][0])
        forged["signatures"][OLD.key_id] = base64.b64encode(b"\0" * 64).decode()
        assert refusal(forged, pinned=(OLD.public,)) is E.BAD_SIGNATURE

    def test_expired_keys_are_dropped(self) -> None:
        document = server_document(DOMAIN, [(OLD, NOW - 1), (NEW, None)])
        assert read(document) == [(NEW.key_id, NEW.public, None)]

    def test_an_expired_pinned_key_no_longer_vouches(self) -> None:
        document = server_document(DOMAIN, [(OLD, NOW - 1), (NEW, None)])
        assert refusal(document, pinned=(OLD.public,)) is E.UNKNOWN_KEY
        assert read(document, pinned=(NEW.public,)) == [(NEW.key_id, NEW.public, None)]

    def test_a_key_expires_at_its_second(self) -> None:
        document = server_document(DOMAIN, [(OLD, NOW), (NEW, None)])
        assert len(read(document, now=NOW - 1)) == 2
        assert len(read(document, now=NOW)) == 1

    def test_every_key_expired(self) -> None:
        document = server_document(DOMAIN, [(OLD, NOW - 1)])
        assert refusal(document) is E.BAD_DOCUMENT


class TestTampering:
    def document(self) -> dict[str, Any]:
        return server_document(DOMAIN, [(OLD, NOW + 60), (NEW, None)])

    def test_expiry_changed(self) -> None:
        document = self.document()
        document["keys"][0]["expires"] = None
        assert refusal(document) is E.BAD_SIGNATURE

    def test_key_replaced(self) -> None:
        document = self.document()
        document["keys"][1]["key"] = base64.b64encode(STRANGER.public).decode()
        assert refusal(document) is E.BAD_SIGNATURE

    def test_signatures_swapped(self) -> None:
        document = self.document()
        signatures = document["signatures"]
        signatures[OLD.key_id], signatures[NEW.key_id] = (
            signatures[NEW.key_id],
            signatures[OLD.key_id],
        )
        assert refusal(document) is E.BAD_SIGNATURE

    def test_a_key_dropped_from_the_list(self) -> None:
        document = self.document()
        del document["keys"][0]
        assert refusal(document) is E.BAD_DOCUMENT  # its signature has no key now

    def test_a_key_that_did_not_sign(self) -> None:
        document = self.document()
        del document["signatures"][NEW.key_id]
        assert refusal(document) is E.BAD_DOCUMENT

    def test_another_domain(self) -> None:
        document = server_document("gamma.test", [(make_key(4, "gamma.test"), None)])
        assert refusal(document) is E.BAD_DOCUMENT


def shape(change: Any) -> dict[str, Any]:
    document = copy.deepcopy(server_document(DOMAIN, [(OLD, None)]))
    change(document)
    return document


SHAPES = {
    "empty object": lambda d: d.clear(),
    "extra field": lambda d: d.update(extra=1),
    "no signatures": lambda d: d.pop("signatures"),
    "domain not a string": lambda d: d.update(domain=1),
    "keys not a list": lambda d: d.update(keys={}),
    "no keys": lambda d: d.update(keys=[]),
    "key not an object": lambda d: d["keys"].__setitem__(0, "k"),
    "key with extra field": lambda d: d["keys"][0].update(use="sig"),
    "key without expires": lambda d: d["keys"][0].pop("expires"),
    "id of another domain": lambda d: d["keys"][0].update(id="gamma.test#1"),
    "id a lookalike domain": lambda d: d["keys"][0].update(id="alpha.testx#1"),
    "id not a string": lambda d: d["keys"][0].update(id=5),
    "id too long": lambda d: d["keys"][0].update(id=DOMAIN + "#" + "a" * 400),
    "expires a float": lambda d: d["keys"][0].update(expires=2e9),
    "expires a bool": lambda d: d["keys"][0].update(expires=True),
    "expires negative": lambda d: d["keys"][0].update(expires=-1),
    "expires huge": lambda d: d["keys"][0].update(expires=2**64),
    "key not base64": lambda d: d["keys"][0].update(key="!!!"),
    "key url-safe base64": lambda d: d["keys"][0].update(key="-_" + d["keys"][0]["key"][2:]),
    "key too short": lambda d: d["keys"][0].update(key=base64.b64encode(b"k" * 31).decode()),
    "key not a string": lambda d: d["keys"][0].update(key=None),
    "signatures not an object": lambda d: d.update(signatures=[]),
    "signature too short": lambda d: d["signatures"].update(
        {OLD.key_id: base64.b64encode(b"s" * 63).decode()}
    ),
    "signature by an unlisted key": lambda d: d["signatures"].update({DOMAIN + "#x": "AA=="}),
    "signature not a string": lambda d: d["signatures"].update({OLD.key_id: 1}),
    "same key twice": lambda d: d["keys"].append(dict(d["keys"][0])),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_shape_errors(name: str) -> None:
    assert refusal(shape(SHAPES[name])) is E.BAD_DOCUMENT


def test_not_json_objects() -> None:
    for document in (None, "x", 1, [], [server_document(DOMAIN, [(OLD, None)])]):
        assert refusal(document) is E.BAD_DOCUMENT


def test_at_most_sixteen_keys() -> None:
    keys = [(make_key(10 + i), None) for i in range(MAX_DOCUMENT_KEYS)]
    assert len(read(server_document(DOMAIN, keys))) == MAX_DOCUMENT_KEYS
    too_many = server_document(DOMAIN, keys)
    extra = server_document(DOMAIN, [(make_key(99), None)])
    too_many["keys"] += extra["keys"]
    too_many["signatures"] |= extra["signatures"]
    assert refusal(too_many) is E.BAD_DOCUMENT
    with pytest.raises(LocalProtocolError):
        server_document(DOMAIN, [*keys, (make_key(99), None)])


def test_we_only_publish_our_own_keys() -> None:
    with pytest.raises(LocalProtocolError):
        server_document(DOMAIN, [(make_key(5, "gamma.test"), None)])
    with pytest.raises(LocalProtocolError):
        server_document(DOMAIN, [])
