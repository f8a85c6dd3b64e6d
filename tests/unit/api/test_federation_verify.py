"""``FederationEndpoint.verify``: the claimed origin is checked before its signature, since an
unknown key id makes the receiver fetch the origin's key document and remember when. An origin
that is not a valid domain, is this server's own, is denied, or is no peer it could answer is
refused without anything being fetched or remembered; a peer it could answer is verified."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from starlette.requests import Request

from tidings.api.federation import FederationEndpoint
from tidings.core.federation import Federation
from tidings.core.federation_trust import PeerKeys
from tidings.protocol.federation import (
    FederationErrorId,
    FederationRefused,
    SigningKey,
    server_document,
    sign_request,
)

OURS, ALPHA, GAMMA, EVIL = "beta.test", "alpha.test", "gamma.test", "evil.test"
URL = f"http://{OURS}/federation/v1/envelopes"
BODY = b'{"envelopes": []}'


class _Pins:
    """No pins stored."""

    async def app_state_get(self, key: str) -> str | None:
        return None

    async def app_state_keys(self, prefix: str) -> list[str]:
        return []

    def transact(self, work: Any, done: Any) -> None:
        done(None)


class Documents:
    """Every domain's key document, counting who was asked."""

    def __init__(self) -> None:
        self.keys: dict[str, SigningKey] = {}
        self.asked: list[str] = []

    def key(self, domain: str) -> SigningKey:
        return self.keys.setdefault(domain, SigningKey.generate(domain))

    async def document(self, domain: str) -> Any:
        self.asked.append(domain)
        return server_document(domain, [(self.key(domain), None)])


def endpoint(documents: Documents) -> FederationEndpoint:
    async def envelopes(origin: str, body: bytes) -> dict[str, int]:
        raise AssertionError("not called by verify")

    return FederationEndpoint(
        domain=OURS,
        keys=lambda now: [],
        peer_keys=PeerKeys({}, _Pins(), documents.document),
        federation=cast(Federation, None),
        envelopes=envelopes,
        deny=frozenset({EVIL}),
        reachable=lambda domain: domain in {ALPHA, EVIL},  # EVIL: denied all the same
    )


def request(headers: dict[str, str]) -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": "http",
            "server": (OURS, 80),
            "path": "/federation/v1/envelopes",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
    )


def signed(documents: Documents, origin: str) -> Request:
    """A request from ``origin``, signed by a key of its (a made-up id where the origin is no
    domain) that the receiver does not know yet: verifying it would fetch a document."""
    key = documents.key(ALPHA)
    if origin != ALPHA:
        key = SigningKey(f"{origin}#{'0' * 16}", key.seed)
    headers = sign_request(
        "POST", URL, BODY, origin=origin, destination=OURS, key=key, now=time.time()
    )
    return request(headers)


async def test_a_peer_we_could_answer_is_verified_after_reading_its_document() -> None:
    """The control: without it the refusals below could pass by never fetching anything."""
    documents = Documents()
    assert await endpoint(documents).verify(signed(documents, ALPHA), BODY) == ALPHA
    assert documents.asked == [ALPHA]


@pytest.mark.parametrize(
    ("origin", "detail"),
    [
        (OURS, "own domain"),
        (EVIL, "deny list"),
        (GAMMA, "no peer of this server"),
        ("Alpha.test", "not a domain"),
        ("alpha.test.", "not a domain"),
        ("127.0.0.1", "not a domain"),
        ("alpha_test", "not a domain"),
        ("a" * 64 + ".test", "not a domain"),
        ("", "not a domain"),
    ],
    ids=[
        "own",
        "denied",
        "not-a-peer",
        "uppercase",
        "trailing-dot",
        "ip",
        "underscore",
        "long",
        "empty",
    ],
)
async def test_an_origin_we_do_not_federate_with_is_refused_without_fetching(
    origin: str, detail: str
) -> None:
    documents = Documents()
    receiver = endpoint(documents)
    with pytest.raises(FederationRefused) as refused:
        await receiver.verify(signed(documents, origin), BODY)
    assert refused.value.error_id is FederationErrorId.DENIED
    assert refused.value.status == 403
    assert detail in refused.value.detail
    assert documents.asked == []
    assert receiver.peer_keys._read_at == {}  # nothing remembered per claimed origin


async def test_a_request_without_an_origin_is_unsigned_and_fetches_nothing() -> None:
    documents = Documents()
    with pytest.raises(FederationRefused) as refused:
        await endpoint(documents).verify(request({"Content-Type": "application/json"}), BODY)
    assert refused.value.error_id is FederationErrorId.UNSIGNED
    assert documents.asked == []
