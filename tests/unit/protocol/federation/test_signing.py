"""Signed requests: a round trip, every refusal with its error id, replay, and a cross-check
against a signature base built by hand from RFC 9421 (so we speak the standard, not just agree
with ourselves)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.protocol import LocalProtocolError, RemoteProtocolError
from tidings.protocol.federation import (
    STATUS,
    FederationErrorId,
    FederationRefused,
    NonceCache,
    SigningKey,
    Verified,
    content_digest,
    key_id,
    sign_request,
    verify_request,
)

E = FederationErrorId
NOW = 1_700_000_000.0
SKEW = 60.0
URL = "https://beta.test/federation/v1/envelopes"
BODY = b'{"envelopes": []}'


def make_key(domain: str, byte: int) -> SigningKey:
    seed = bytes([byte]) * 32
    probe = SigningKey(f"{domain}#probe", seed)
    return SigningKey(key_id(domain, probe.public), seed)


ALPHA = make_key("alpha.test", 1)
ALPHA_OTHER = make_key("alpha.test", 2)
GAMMA = make_key("gamma.test", 3)
TRUSTED = {(k.key_id.split("#")[0], k.key_id): k.public for k in (ALPHA, GAMMA)}


def trusted(origin: str, keyid: str) -> bytes | None:
    return TRUSTED.get((origin, keyid))


def signed(
    *,
    key: SigningKey = ALPHA,
    origin: str = "alpha.test",
    destination: str = "beta.test",
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    now: float = NOW,
    nonce: str | None = "n-0123456789abcdef",
) -> dict[str, str]:
    return sign_request(
        method, url, body, origin=origin, destination=destination, key=key, now=now, nonce=nonce
    )


def verify(
    headers: dict[str, str],
    *,
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    now: float = NOW,
    cache: NonceCache | None = None,
    keys: object = trusted,
) -> Verified:
    nonces = cache if cache is not None else NonceCache(skew_s=SKEW)
    return verify_request(
        method,
        url,
        headers,
        body,
        expected_destination="beta.test",
        public_keys=keys,  # type: ignore[arg-type]
        now=now,
        max_skew_s=SKEW,
        nonce_seen=nonces.at(now),
    )


def refusal(headers: dict[str, str], **kwargs: object) -> FederationErrorId:
    with pytest.raises(FederationRefused) as caught:
        verify(headers, **kwargs)  # type: ignore[arg-type]
    assert caught.value.status == STATUS[caught.value.error_id]
    return caught.value.error_id


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


def hand_signed(
    components: tuple[str, ...] = (
        "@method",
        "@target-uri",
        "content-digest",
        "tidings-origin",
        "tidings-destination",
    ),
    params: str = ';created=1700000000;keyid="{keyid}";alg="ed25519";nonce="hand"',
    key: SigningKey = ALPHA,
) -> dict[str, str]:
    """Headers signed with ``cryptography`` over a signature base built by hand (RFC 9421 2.5)."""
    headers = {
        "Content-Digest": content_digest(BODY),
        "Tidings-Origin": "alpha.test",
        "Tidings-Destination": "beta.test",
    }
    values = {
        "@method": "POST",
        "@target-uri": URL,
        "content-digest": headers["Content-Digest"],
        "tidings-origin": "alpha.test",
        "tidings-destination": "beta.test",
    }
    inner = "(" + " ".join(f'"{c}"' for c in components) + ")" + params.format(keyid=key.key_id)
    lines = [f'"{c}": {values[c]}' for c in components] + [f'"@signature-params": {inner}']
    signature = key.sign("\n".join(lines).encode("ascii"))
    headers["Signature-Input"] = f"sig1={inner}"
    headers["Signature"] = f"sig1=:{base64.b64encode(signature).decode()}:"
    return headers


class TestRoundTrip:
    def test_verified(self) -> None:
        headers = signed()
        assert set(headers) == {
            "Content-Digest",
            "Tidings-Origin",
            "Tidings-Destination",
            "Signature-Input",
            "Signature",
        }
        assert verify(headers) == Verified(
            origin="alpha.test", keyid=ALPHA.key_id, created=int(NOW), nonce="n-0123456789abcdef"
        )

    def test_header_names_in_any_case(self) -> None:
        headers = signed()
        assert verify({k.lower(): v for k, v in headers.items()}).origin == "alpha.test"
        assert verify({k.upper(): v for k, v in headers.items()}).origin == "alpha.test"

    def test_the_default_nonce_is_128_random_bits(self) -> None:
        nonces = {verify(signed(nonce=None)).nonce for _ in range(20)}
        assert len(nonces) == 20
        for nonce in nonces:
            assert len(base64.urlsafe_b64decode(nonce + "==")) == 16

    def test_created_is_whole_seconds(self) -> None:
        assert verify(signed(now=NOW + 0.9), now=NOW).created == int(NOW)

    def test_empty_body(self) -> None:
        assert verify(signed(body=b""), body=b"").origin == "alpha.test"


class TestStandard:
    """RFC 9421 and RFC 9530, checked without http-message-signatures."""

    def test_content_digest_matches_the_rfc_9530_example(self) -> None:
        # RFC 9530 section 2, first example: the content {"hello": "world"}.
        expected = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        assert content_digest(b'{"hello": "world"}') == expected

    def test_our_signature_verifies_over_a_hand_built_signature_base(self) -> None:
        headers = signed(body=b'{"hello": "world"}')
        digest = base64.b64encode(hashlib.sha256(b'{"hello": "world"}').digest()).decode()
        assert headers["Content-Digest"] == f"sha-256=:{digest}:"
        params = (
            '("@method" "@target-uri" "content-digest" "tidings-origin" "tidings-destination")'
            f';created=1700000000;keyid="{ALPHA.key_id}";alg="ed25519";nonce="n-0123456789abcdef"'
        )
        assert headers["Signature-Input"] == f"sig1={params}"
        base = (
            '"@method": POST\n'
            f'"@target-uri": {URL}\n'
            f'"content-digest": sha-256=:{digest}:\n'
            '"tidings-origin": alpha.test\n'
            '"tidings-destination": beta.test\n'
            f'"@signature-params": {params}'
        ).encode("ascii")
        assert headers["Signature"].startswith("sig1=:") and headers["Signature"].endswith(":")
        signature = base64.b64decode(headers["Signature"][len("sig1=:") : -1])
        Ed25519PublicKey.from_public_bytes(ALPHA.public).verify(signature, base)

    def test_we_accept_a_signature_made_without_our_code(self) -> None:
        verified = verify(hand_signed())
        assert (verified.keyid, verified.nonce) == (ALPHA.key_id, "hand")

    def test_parameter_order_does_not_matter(self) -> None:
        params = ';alg="ed25519";nonce="hand";keyid="{keyid}";created=1700000000'
        assert verify(hand_signed(params=params)).created == int(NOW)


class TestRefusals:
    @pytest.mark.parametrize("name", ["Signature", "Signature-Input", "Tidings-Origin"])
    def test_unsigned(self, name: str) -> None:
        assert refusal(without(signed(), name)) is E.UNSIGNED

    def test_no_headers_at_all(self) -> None:
        assert refusal({}) is E.UNSIGNED

    def test_no_content_digest(self) -> None:
        assert refusal(without(signed(), "Content-Digest")) is E.DIGEST_MISMATCH

    def test_body_tampered(self) -> None:
        assert refusal(signed(), body=BODY + b" ") is E.DIGEST_MISMATCH

    def test_body_and_digest_tampered(self) -> None:
        headers = signed() | {"Content-Digest": content_digest(b"{}")}
        assert refusal(headers, body=b"{}") is E.BAD_SIGNATURE

    def test_digest_in_another_form(self) -> None:
        sha512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
        assert refusal(signed() | {"Content-Digest": f"sha-512=:{sha512}:"}) is E.DIGEST_MISMATCH

    def test_digest_not_covered(self) -> None:
        components = ("@method", "@target-uri", "tidings-origin", "tidings-destination")
        assert refusal(hand_signed(components)) is E.DIGEST_MISMATCH

    def test_no_destination(self) -> None:
        assert refusal(without(signed(), "Tidings-Destination")) is E.WRONG_DESTINATION

    def test_wrong_destination(self) -> None:
        with pytest.raises(FederationRefused) as caught:
            verify(signed(destination="gamma.test"))
        assert (caught.value.error_id, caught.value.status) == (E.WRONG_DESTINATION, 421)

    def test_destination_tampered(self) -> None:
        headers = signed(destination="gamma.test") | {"Tidings-Destination": "beta.test"}
        assert refusal(headers) is E.BAD_SIGNATURE

    def test_method_tampered(self) -> None:
        assert refusal(signed(), method="PUT") is E.BAD_SIGNATURE

    @pytest.mark.parametrize(
        "url",
        [
            "https://beta.test/federation/v1/query",
            "http://beta.test/federation/v1/envelopes",
            "https://beta.test:8443/federation/v1/envelopes",
            "https://beta.test/federation/v1/envelopes?x=1",
            "https://evil.test/federation/v1/envelopes",
        ],
    )
    def test_url_tampered(self, url: str) -> None:
        assert refusal(signed(), url=url) is E.BAD_SIGNATURE

    def test_origin_tampered(self) -> None:
        # The keyid no longer belongs to the claimed origin.
        assert refusal(signed() | {"Tidings-Origin": "gamma.test"}) is E.BAD_SIGNATURE

    def test_origin_tampered_to_a_prefix_lookalike(self) -> None:
        assert refusal(signed() | {"Tidings-Origin": "alpha"}) is E.BAD_SIGNATURE

    def test_unknown_key(self) -> None:
        assert refusal(signed(key=ALPHA_OTHER)) is E.UNKNOWN_KEY

    def test_signed_by_another_key_under_a_trusted_keyid(self) -> None:
        def wrong(origin: str, keyid: str) -> bytes:
            return ALPHA_OTHER.public

        assert refusal(signed(), keys=wrong) is E.BAD_SIGNATURE

    def test_keyid_of_another_domain(self) -> None:
        looked_up: list[str] = []

        def spy(origin: str, keyid: str) -> bytes | None:
            looked_up.append(keyid)
            return trusted(origin, keyid)

        assert refusal(hand_signed(key=GAMMA), keys=spy) is E.BAD_SIGNATURE
        assert looked_up == []  # refused before any lookup

    def test_a_key_that_is_not_ed25519(self) -> None:
        assert refusal(signed(), keys=lambda o, k: b"short") is E.UNKNOWN_KEY

    @pytest.mark.parametrize("alg", ['alg="rsa-pss-sha512"', 'alg="ED25519"', ""])
    def test_wrong_or_missing_alg(self, alg: str) -> None:
        params = ';created=1700000000;keyid="{keyid}";nonce="hand"' + (f";{alg}" if alg else "")
        assert refusal(hand_signed(params=params)) is E.BAD_SIGNATURE

    @pytest.mark.parametrize("missing", ["@method", "@target-uri", "tidings-origin"])
    def test_a_covered_component_missing(self, missing: str) -> None:
        components = tuple(
            c
            for c in (
                "@method",
                "@target-uri",
                "content-digest",
                "tidings-origin",
                "tidings-destination",
            )
            if c != missing
        )
        assert refusal(hand_signed(components)) is E.BAD_SIGNATURE

    def test_signature_bytes_tampered(self) -> None:
        headers = signed()
        value = headers["Signature"]
        flipped = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
        assert refusal(headers | {"Signature": flipped}) is E.BAD_SIGNATURE

    @pytest.mark.parametrize(
        "field",
        [
            "sig1=(",
            'sig1=("@method");created=1, sig2=("@method");created=1',
            "sig1=?1",
            'sig1=("@method";req "@target-uri")',
            "sig1=(1 2)",
            "Sig1=()",
            "sig1=()\u00e9",
        ],
    )
    def test_malformed_signature_input(self, field: str) -> None:
        assert refusal(signed() | {"Signature-Input": field}) is E.BAD_SIGNATURE

    def test_two_signatures(self) -> None:
        headers = signed()
        other = signed(key=ALPHA, nonce="other")
        doubled = {
            "Signature-Input": headers["Signature-Input"]
            + ", "
            + other["Signature-Input"].replace("sig1=", "sig2=", 1),
            "Signature": headers["Signature"] + ", " + other["Signature"].replace("sig1=", "sig2="),
        }
        assert refusal(headers | doubled) is E.BAD_SIGNATURE

    def test_signature_labels_disagree(self) -> None:
        headers = signed()
        assert refusal(headers | {"Signature": "sig2=" + headers["Signature"][5:]}) is (
            E.BAD_SIGNATURE
        )

    def test_header_given_twice_in_different_case(self) -> None:
        headers = signed()
        assert refusal(headers | {"signature": headers["Signature"]}) is E.BAD_SIGNATURE

    @pytest.mark.parametrize("name", ["Signature-Input", "Signature"])
    def test_oversized_fields(self, name: str) -> None:
        headers = signed()
        assert refusal(headers | {name: headers[name] + " " * 4096}) is E.BAD_SIGNATURE

    def test_oversized_nonce(self) -> None:
        assert refusal(signed(nonce="n" * 129)) is E.BAD_SIGNATURE
        assert verify(signed(nonce="n" * 128)).nonce == "n" * 128

    @pytest.mark.parametrize("offset", [SKEW + 1, -(SKEW + 1), 10 * SKEW, -1e9])
    def test_stale_both_ways(self, offset: float) -> None:
        assert refusal(signed(), now=NOW + offset) is E.STALE

    @pytest.mark.parametrize("offset", [SKEW, -SKEW])
    def test_exactly_at_the_skew_is_fresh(self, offset: float) -> None:
        assert verify(signed(), now=NOW + offset).created == int(NOW)

    def test_no_created(self) -> None:
        assert refusal(hand_signed(params=';keyid="{keyid}";alg="ed25519";nonce="h"')) is E.STALE

    def test_expired_signature(self) -> None:
        params = ';created=1700000000;expires=1699999999;keyid="{keyid}";alg="ed25519";nonce="h"'
        assert refusal(hand_signed(params=params)) is E.STALE

    def test_no_nonce(self) -> None:
        params = ';created=1700000000;keyid="{keyid}";alg="ed25519"'
        assert refusal(hand_signed(params=params)) is E.REPLAYED

    def test_replayed(self) -> None:
        cache = NonceCache(skew_s=SKEW)
        headers = signed()
        verify(headers, cache=cache)
        assert refusal(headers, cache=cache, now=NOW + 1) is E.REPLAYED
        # The same nonce from another origin is another request.
        verify(signed(key=GAMMA, origin="gamma.test"), cache=cache)

    def test_a_refused_request_does_not_burn_its_nonce(self) -> None:
        cache = NonceCache(skew_s=SKEW)
        headers = signed()
        assert refusal(headers, cache=cache, method="PUT") is E.BAD_SIGNATURE
        assert refusal(headers, cache=cache, now=NOW + 2 * SKEW) is E.STALE
        assert len(cache) == 0
        verify(headers, cache=cache)

    def test_checks_run_in_order(self) -> None:
        # Unsigned wins over everything; a bad digest over a wrong destination; and so on.
        assert refusal(without(signed(destination="x"), "Signature"), body=b"") is E.UNSIGNED
        assert refusal(signed(destination="x"), body=b"") is E.DIGEST_MISMATCH
        assert refusal(signed(destination="x", key=ALPHA_OTHER)) is E.WRONG_DESTINATION
        assert refusal(signed(key=ALPHA_OTHER), method="PUT") is E.UNKNOWN_KEY
        assert refusal(signed(), method="PUT", now=NOW + 1e6) is E.BAD_SIGNATURE

    def test_the_statuses(self) -> None:
        assert {e.value: STATUS[e] for e in E} == {
            "federation-unsigned": 401,
            "federation-digest-mismatch": 401,
            "federation-unknown-key": 401,
            "federation-bad-signature": 401,
            "federation-stale": 401,
            "federation-replayed": 401,
            "federation-wrong-destination": 421,
            "federation-rate-limited": 429,
            "federation-bad-document": 502,
            "federation-denied": 403,
            "federation-foreign-sender": 403,
        }
        error = FederationRefused(E.STALE, "too old")
        assert isinstance(error, RemoteProtocolError)
        assert (error.status, error.detail, error.retry_after_s) == (401, "too old", None)


class TestSigningInput:
    def test_a_key_of_another_domain(self) -> None:
        with pytest.raises(LocalProtocolError):
            signed(key=GAMMA)

    @pytest.mark.parametrize("url", ["/relative", "https://beta.test/a b", "https://bêta.test/"])
    def test_a_url_that_cannot_be_signed(self, url: str) -> None:
        with pytest.raises(LocalProtocolError):
            signed(url=url)

    def test_a_lowercase_method(self) -> None:
        with pytest.raises(LocalProtocolError):
            signed(method="post")

    def test_a_header_value_with_a_newline(self) -> None:
        with pytest.raises(LocalProtocolError):
            signed(destination="beta.test\r\nX-Evil: 1")


class TestNonceCache:
    def test_remembers_until_twice_the_skew(self) -> None:
        cache = NonceCache(skew_s=10)
        assert not cache.seen("a", "n", 100, now=100)
        assert cache.seen("a", "n", 100, now=119.9)
        assert not cache.seen("b", "n", 100, now=100)
        cache.expire(120)
        assert len(cache) == 0
        assert not cache.seen("a", "n", 100, now=120)

    def test_full_refuses_as_rate_limited_never_forgets_a_live_nonce(self) -> None:
        cache = NonceCache(skew_s=10, max_entries=3, max_per_origin=3)
        for n in "xyz":
            assert not cache.seen("a", n, 100, now=100)
        with pytest.raises(FederationRefused) as caught:
            cache.seen("b", "w", 100, now=105)
        assert caught.value.error_id is E.RATE_LIMITED and caught.value.status == 429
        assert caught.value.retry_after_s == 15  # until the oldest entry expires at 120
        assert cache.seen("a", "x", 100, now=105)  # still remembered
        # Once entries expire there is room again.
        assert not cache.seen("b", "w", 115, now=120)
        assert len(cache) == 1

    def test_one_origin_cannot_fill_the_cache(self) -> None:
        cache = NonceCache(skew_s=10, max_entries=100, max_per_origin=2)
        cache.seen("flood", "1", 100, now=100)
        cache.seen("flood", "2", 100, now=100)
        with pytest.raises(FederationRefused) as caught:
            cache.seen("flood", "3", 100, now=100)
        assert caught.value.error_id is E.RATE_LIMITED
        assert not cache.seen("calm", "1", 100, now=100)

    def test_refused_through_verify_request(self) -> None:
        cache = NonceCache(skew_s=SKEW, max_entries=1)
        verify(signed(nonce="one"), cache=cache)
        with pytest.raises(FederationRefused) as caught:
            verify(signed(nonce="two"), cache=cache)
        assert caught.value.error_id is E.RATE_LIMITED

    def test_bounds_must_be_positive(self) -> None:
        with pytest.raises(ValueError):
            NonceCache(skew_s=0)

    @given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 30)), max_size=60))
    def test_never_says_unseen_twice_within_the_window(self, events: list[tuple[str, int]]) -> None:
        cache = NonceCache(skew_s=5)
        seen_at: dict[str, int] = {}
        for now, (nonce, delta) in enumerate(events):
            created = now + delta % 3
            first = cache.seen("o", nonce, created, now=now)
            if nonce in seen_at and now < seen_at[nonce] + 10:
                assert first
            if not first:
                seen_at[nonce] = created


PATHS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~/%20", max_size=40)


class TestProperties:
    @settings(max_examples=150)
    @given(body=st.binary(max_size=2000), path=PATHS, query=st.none() | PATHS)
    def test_round_trip(self, body: bytes, path: str, query: str | None) -> None:
        path = path.replace("%", "%25").replace("%2520", "%20")
        url = f"https://beta.test:9766/{path}" + (
            "" if query is None else "?" + query.replace("%", "%25")
        )
        headers = signed(url=url, body=body)
        assert verify(headers, url=url, body=body).origin == "alpha.test"

    @settings(max_examples=300)
    @given(body=st.binary(min_size=1, max_size=200), data=st.data())
    def test_any_byte_of_the_body_changed_is_refused(
        self, body: bytes, data: st.DataObject
    ) -> None:
        headers = signed(body=body)
        index = data.draw(st.integers(0, len(body) - 1))
        flip = data.draw(st.integers(1, 255))
        mutated = body[:index] + bytes([body[index] ^ flip]) + body[index + 1 :]
        with pytest.raises(FederationRefused):
            verify(headers, body=mutated)

    @settings(max_examples=300)
    @given(
        name=st.sampled_from(["Signature", "Signature-Input"]),
        data=st.data(),
    )
    def test_any_byte_of_the_signature_fields_changed_is_refused(
        self, name: str, data: st.DataObject
    ) -> None:
        headers = signed()
        value = headers[name].encode("latin-1")
        index = data.draw(st.integers(0, len(value) - 1))
        flip = data.draw(st.integers(1, 255))
        mutated = value[:index] + bytes([value[index] ^ flip]) + value[index + 1 :]
        with pytest.raises(FederationRefused):
            verify(headers | {name: mutated.decode("latin-1")})

    @pytest.mark.parametrize("name", ["Signature", "Signature-Input"])
    def test_every_bit_of_the_signature_fields_matters(self, name: str) -> None:
        # Exhaustive where hypothesis samples: a flipped Base64 padding bit once went unnoticed.
        headers = signed()
        value = headers[name].encode("latin-1")
        for index in range(len(value)):
            for bit in range(8):
                mutated = bytearray(value)
                mutated[index] ^= 1 << bit
                with pytest.raises(FederationRefused):
                    verify(headers | {name: mutated.decode("latin-1")})

    def test_base64_padding_bits_are_not_ignored(self) -> None:
        headers = signed()
        value = headers["Signature"]  # sig1=:<86 characters>==:
        last = value[-4]
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        twin = alphabet[alphabet.index(last) ^ 1]
        same = value[:-4] + twin + value[-3:]
        assert base64.b64decode(same[6:-1]) == base64.b64decode(value[6:-1])
        assert refusal(headers | {"Signature": same}) is E.BAD_SIGNATURE
