"""Signed server-to-server requests: RFC 9421 HTTP Message Signatures with Ed25519, over an
RFC 9530 ``Content-Digest`` of the body.

``http-message-signatures`` builds the signature base and checks the signature; everything that
is policy stays here, against the caller's clock: which components must be covered, that the key
belongs to the origin, how old ``created`` may be, and whether the nonce was seen. The package
reads the wall clock when it checks ``created``, so that check is switched off (``_Verifier``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import http_sf
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)

from .._errors import LocalProtocolError
from ._errors import FederationErrorId, FederationRefused
from ._keys import SigningKey, public_key

__all__ = [
    "ALGORITHM",
    "COVERED_COMPONENTS",
    "MAX_FIELD_LENGTH",
    "MAX_NONCE_LENGTH",
    "SIGNATURE_LABEL",
    "Verified",
    "content_digest",
    "sign_request",
    "verify_request",
]

SIGNATURE_LABEL = "sig1"
ALGORITHM = "ed25519"
COVERED_COMPONENTS = (
    "@method",
    "@target-uri",
    "content-digest",
    "tidings-origin",
    "tidings-destination",
)
"""What every signature must cover: the request line, the body (through its digest) and both
ends, so a signed request cannot be replayed to another route, server or peer."""
MAX_FIELD_LENGTH = 4096
"""Longest signature, digest or origin field we parse; ours are a few hundred characters."""
MAX_NONCE_LENGTH = 128
"""Longest nonce we accept, so the replay cache's memory per entry is bounded."""

_E = FederationErrorId


def content_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` field value of ``body``: ``sha-256=:<base64>:``."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode('ascii')}:"


@dataclass
class _Request:
    """The request shape ``http-message-signatures`` reads: method, absolute URL, headers."""

    method: str
    url: str
    headers: dict[str, str]


def sign_request(
    method: str,
    url: str,
    body: bytes,
    *,
    origin: str,
    destination: str,
    key: SigningKey,
    now: float,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers to add to a federation request so ``destination`` accepts it.

    ``url`` is the absolute URL the request is sent to, as the receiver will see it. ``nonce``
    defaults to 128 random bits (base64url). Raises ``LocalProtocolError`` for input the
    receiver would refuse anyway (lowercase method, a key of another domain, a bad URL).
    """
    if not key.key_id.startswith(f"{origin}#"):
        raise LocalProtocolError(f"key {key.key_id!r} is not a key of {origin!r}")
    headers = {
        "Content-Digest": content_digest(body),
        "Tidings-Origin": origin,
        "Tidings-Destination": destination,
    }
    request = _Request(method, url, headers)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key.key_id: key.private}),
    )
    try:
        signer.sign(
            request,
            key_id=key.key_id,
            created=datetime.datetime.fromtimestamp(int(now), tz=datetime.UTC),
            nonce=secrets.token_urlsafe(16) if nonce is None else nonce,
            label=SIGNATURE_LABEL,
            covered_component_ids=COVERED_COMPONENTS,
            # The digest is ours (computed above); without this the package refuses to sign
            # a message that already has one.
            use_existing_digest=True,
        )
    except HTTPMessageSignaturesException as exc:
        raise LocalProtocolError(f"cannot sign this request: {exc}") from exc
    return headers


@dataclass(frozen=True)
class Verified:
    """A request whose signature, digest, freshness and nonce all held."""

    origin: str
    keyid: str
    created: int
    nonce: str


class _Verifier(HTTPMessageVerifier):
    """The package's verifier without its wall-clock check of ``created`` and ``expires``.

    ``verify_request`` checks both against the caller's ``now``, after the signature, so that a
    forged timestamp is reported as a bad signature rather than as stale.
    """

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


def verify_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    expected_destination: str,
    public_keys: Callable[[str, str], bytes | None],
    now: float,
    max_skew_s: float,
    nonce_seen: Callable[[str, str, float], bool],
) -> Verified:
    """Check a federation request; raise ``FederationRefused`` for the first check it fails.

    ``headers`` may use any case. ``public_keys(origin, keyid)`` returns the raw public key we
    trust for that key id, or ``None``. ``nonce_seen(origin, nonce, created)`` records the nonce
    and says whether it was seen before; it is called only for an otherwise valid request, so a
    forged request cannot burn a nonce. The checks run in this order: unsigned, digest,
    destination, key, signature, stale, replayed.
    """
    fields = _fields(headers)
    signature = fields.get("signature")
    signature_input = fields.get("signature-input")
    origin = fields.get("tidings-origin")
    if signature is None or signature_input is None or origin is None:
        raise FederationRefused(
            _E.UNSIGNED, "Signature, Signature-Input and Tidings-Origin are required"
        )

    digest = fields.get("content-digest")
    if digest is None:
        raise FederationRefused(_E.DIGEST_MISMATCH, "no Content-Digest")
    if not hmac.compare_digest(digest.encode("utf-8"), content_digest(body).encode("ascii")):
        raise FederationRefused(_E.DIGEST_MISMATCH, "Content-Digest does not match the body")
    covered, params = _signature_input(signature_input)
    _require_canonical_signature(signature)
    if "content-digest" not in covered:
        raise FederationRefused(_E.DIGEST_MISMATCH, "the signature does not cover Content-Digest")

    if fields.get("tidings-destination") != expected_destination:
        raise FederationRefused(
            _E.WRONG_DESTINATION, f"this server is {expected_destination}, not the destination"
        )

    keyid = params.get("keyid")
    if not isinstance(keyid, str) or not keyid.startswith(f"{origin}#"):
        raise FederationRefused(_E.BAD_SIGNATURE, f"keyid is not a key of {origin}")
    raw = public_keys(origin, keyid)
    if raw is None:
        raise FederationRefused(_E.UNKNOWN_KEY, f"no trusted key {keyid}")

    if params.get("alg") != ALGORITHM:
        raise FederationRefused(_E.BAD_SIGNATURE, f'alg must be "{ALGORITHM}"')
    missing = [c for c in COVERED_COMPONENTS if c not in covered]
    if missing:
        raise FederationRefused(_E.BAD_SIGNATURE, f"the signature does not cover {missing}")
    _verify_signature(method, url, fields, keyid, raw)

    created = params.get("created")
    if type(created) is not int or abs(now - created) > max_skew_s:
        raise FederationRefused(_E.STALE, "created is missing or too far from our clock")
    expires = params.get("expires")
    if type(expires) is int and expires < now:
        raise FederationRefused(_E.STALE, "the signature has expired")

    nonce = params.get("nonce")
    if not isinstance(nonce, str):
        raise FederationRefused(_E.REPLAYED, "no nonce")
    if nonce_seen(origin, nonce, created):
        raise FederationRefused(_E.REPLAYED, "nonce already used")
    return Verified(origin=origin, keyid=keyid, created=created, nonce=nonce)


def _fields(headers: Mapping[str, str]) -> dict[str, str]:
    """Lowercased names, values trimmed as HTTP parsers do; a name given twice is refused."""
    fields: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in fields:
            raise FederationRefused(_E.BAD_SIGNATURE, f"header {lower} given twice")
        if lower in _BOUNDED and len(value) > MAX_FIELD_LENGTH:
            raise FederationRefused(_E.BAD_SIGNATURE, f"header {lower} is too long")
        fields[lower] = value.strip(" \t")
    return fields


_BOUNDED = frozenset(
    ("signature", "signature-input", "content-digest", "tidings-origin", "tidings-destination")
)


def _canonical_dictionary(value: str, name: str) -> dict[str, Any]:
    """``value`` parsed as a Structured Field Dictionary that it is the one serialization of.

    Equivalent spellings are refused so a signed request has exactly one form: Base64 with
    non-zero padding bits, for one, decodes to the same signature, and a relay could otherwise
    alter a signed request without breaking it.
    """

    def refuse_duplicate(key: str, context: str) -> None:
        raise ValueError(f"duplicate {context} key {key!r}")

    try:
        parsed = http_sf.parse(
            value.encode("ascii"), tltype="dictionary", on_duplicate_key=refuse_duplicate
        )
        canonical = isinstance(parsed, dict) and http_sf.ser(parsed) == value
    except (ValueError, TypeError) as exc:  # StructuredFieldError is a ValueError
        raise FederationRefused(_E.BAD_SIGNATURE, f"{name} is malformed") from exc
    if not canonical:
        raise FederationRefused(_E.BAD_SIGNATURE, f"{name} is not in canonical form")
    return cast(dict[str, Any], parsed)


def _require_canonical_signature(value: str) -> None:
    _canonical_dictionary(value, "Signature")


def _signature_input(value: str) -> tuple[list[str], dict[str, Any]]:
    """The covered component names and parameters of the one signature ``value`` declares."""
    parsed = _canonical_dictionary(value, "Signature-Input")
    if len(parsed) != 1:
        raise FederationRefused(_E.BAD_SIGNATURE, "Signature-Input must hold one signature")
    # One member: (inner list of (name, parameters), parameters), as http_sf parses it.
    ((members, params),) = parsed.values()
    if not isinstance(members, list) or not isinstance(params, dict):
        raise FederationRefused(_E.BAD_SIGNATURE, "Signature-Input is not an inner list")
    covered: list[str] = []
    for name, member_params in members:
        # Parameterised components (";sf", ";key", ";req") are never needed here.
        if not isinstance(name, str) or member_params:
            raise FederationRefused(_E.BAD_SIGNATURE, "unexpected covered component")
        covered.append(name)
    nonce = params.get("nonce")
    if isinstance(nonce, str) and len(nonce) > MAX_NONCE_LENGTH:
        raise FederationRefused(_E.BAD_SIGNATURE, "nonce is too long")
    return covered, dict(params)


def _verify_signature(
    method: str, url: str, fields: dict[str, str], keyid: str, raw: bytes
) -> None:
    try:
        key = public_key(raw)
    except ValueError as exc:
        raise FederationRefused(_E.UNKNOWN_KEY, f"key {keyid} is not an Ed25519 key") from exc
    verifier = _Verifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={keyid: key}, private_keys={}),
    )
    try:
        verifier.verify(
            _Request(method, url, dict(fields)), max_age=None, require_components=COVERED_COMPONENTS
        )
    except HTTPMessageSignaturesException as exc:
        raise FederationRefused(_E.BAD_SIGNATURE, f"signature does not verify: {exc}") from exc
