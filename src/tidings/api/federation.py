"""The federation routes: this server's key document, and the signed routes other domains'
servers call (docs/federation.md).

Every ``/federation/v1/*`` request must carry a valid RFC 9421 signature of its origin server
(``protocol.federation.verify_request``): refused otherwise with a problem naming why, before
anything is read or changed. Before the signature, the claimed origin must be a domain we
federate with (valid, not ours, not denied, a peer we could answer): nothing, not even its key
document, is fetched for any other. Then the origin's rate applies, and only then the body is
looked at.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from ..core.authz import Authorizer
from ..core.errors import TidingsError
from ..core.federation import Federation
from ..core.federation_peers import check_domain
from ..core.federation_trust import PeerKeys
from ..core.limits import TokenBucket
from ..protocol.federation import (
    FederationErrorId,
    FederationRefused,
    NonceCache,
    SigningKey,
    server_document,
    verify_request,
)
from .guard import bearer_guard
from .problems import HTTP_STATUS, PROBLEM_RESPONSES, problem

DOCUMENT_PATH: Final = "/.well-known/tidings/server"
Query = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""A query kind's handler: (origin domain, request body) -> JSON answer; raises
``TidingsError``."""
_QUERY_DECODER: Final = msgspec.json.Decoder(dict[str, Any])
MAX_BUCKETS: Final = 10_000
LOGGED_REFUSALS: Final = 100
"""Refusals of one kind logged one by one; beyond, every hundredth (with the count)."""
log = logging.getLogger("tidings.federation")


def _anyone(domain: str) -> bool:
    return True


@dataclass(slots=True)
class FederationEndpoint:
    """What the routes need, built by the wiring."""

    domain: str
    keys: Callable[[float], list[tuple[SigningKey, float | None]]]
    """This server's published keys and their expiry, at a time."""
    peer_keys: PeerKeys
    federation: Federation
    envelopes: Callable[[str, bytes], Awaitable[dict[str, int]]]
    """Takes a batch of envelopes from a peer (``gateway.federation.PeerEnvelopes.receive``)."""
    public_url: str = ""
    """Requests name this base in their target URI when set (a proxy in front)."""
    deny: Collection[str] = ()
    reachable: Callable[[str], bool] = _anyone
    """Whether we could answer a domain (the relay's rule, ``wiring._reachable``): a peer we
    cannot send ``failed``/``dispatched`` back to must not have its envelopes taken."""
    max_skew_s: float = 60.0
    rate_limit: float = 200.0
    rate_burst: int = 400
    queries: dict[str, Query] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    nonces: NonceCache | None = None
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    """Refused requests by error id (``/metrics``)."""

    def __post_init__(self) -> None:
        if self.nonces is None:
            self.nonces = NonceCache(skew_s=self.max_skew_s)

    def target(self, request: Request) -> str:
        if self.public_url:
            return self.public_url.rstrip("/") + request.url.path
        return str(request.url)

    async def verify(self, request: Request, body: bytes) -> str:
        """The origin domain of a request whose signature holds; raises
        ``FederationRefused``."""
        origin = self._origin(request)
        nonces = self.nonces
        assert nonces is not None
        for attempt in (1, 2):
            now = self.clock()
            try:
                verified = verify_request(
                    request.method,
                    self.target(request),
                    request.headers,
                    body,
                    expected_destination=self.domain,
                    public_keys=self.peer_keys.lookup,
                    now=now,
                    max_skew_s=self.max_skew_s,
                    nonce_seen=nonces.at(now),
                )
            except FederationRefused as refusal:
                if refusal.error_id is not FederationErrorId.UNKNOWN_KEY or attempt == 2:
                    raise
                await self.peer_keys.refresh(origin)  # first contact, or a rotation
                continue
            self._spend(verified.origin)
            origin_domain: str = verified.origin
            return origin_domain
        raise AssertionError("unreachable")

    def _origin(self, request: Request) -> str:
        """The claimed origin, if it is one we federate with; checked before its signature
        because an unknown key makes us fetch the origin's key document (and remember when)."""
        origin = request.headers.get("tidings-origin")
        if origin is None:
            raise FederationRefused(FederationErrorId.UNSIGNED, "Tidings-Origin is missing")
        try:
            valid = check_domain(origin) == origin  # lowercase only: one spelling per domain
        except ValueError:
            valid = False
        if not valid:
            raise FederationRefused(
                FederationErrorId.DENIED,
                f"Tidings-Origin {origin[:256]!r} is not a domain in lowercase LDH form",
            )
        if origin == self.domain:
            raise FederationRefused(
                FederationErrorId.DENIED, f"{origin} is this server's own domain"
            )
        if origin in self.deny:
            raise FederationRefused(
                FederationErrorId.DENIED, f"{origin} is on this server's deny list"
            )
        if not self.reachable(origin):
            raise FederationRefused(
                FederationErrorId.DENIED,
                f"{origin} is no peer of this server (not in [federation] peers, and SRV "
                "lookup is off): its requests could not be answered",
            )
        return origin

    def _spend(self, origin: str) -> None:
        bucket = self.buckets.get(origin)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self.buckets.clear()
            bucket = self.buckets[origin] = TokenBucket(self.rate_limit, self.rate_burst)
        wait = bucket.spend()
        if wait > 0:
            raise FederationRefused(
                FederationErrorId.RATE_LIMITED,
                f"{origin} sends more than {self.rate_limit:g} requests/s: wait {wait:.1f} s",
                retry_after_s=wait,
            )


def _refused(
    endpoint: FederationEndpoint, refusal: FederationRefused, request: Request
) -> JSONResponse:
    error_id = str(refusal.error_id)
    count = endpoint.refused[error_id] = endpoint.refused.get(error_id, 0) + 1
    if count <= LOGGED_REFUSALS or count % LOGGED_REFUSALS == 0:  # a flood logs now and then
        log.warning(
            "refused a federation request claiming to be from %r (%s, %d so far): %s",
            request.headers.get("tidings-origin", "")[:256],
            error_id,
            count,
            refusal.detail,
        )
    headers = None
    if refusal.status == 429:
        # Whole seconds, rounded up (RFC 9110 10.2.3): the peer must not come back too early.
        wait = refusal.retry_after_s if refusal.retry_after_s is not None else 1.0
        headers = {"Retry-After": str(max(1, math.ceil(wait)))}
    return problem(refusal.status, error_id, refusal.detail, headers)


def _failed(error: TidingsError) -> JSONResponse:
    return problem(HTTP_STATUS[error.error_id], error.error_id.value, error.message)


async def _signed(
    endpoint: FederationEndpoint,
    request: Request,
    work: Callable[[str, bytes], Awaitable[Response]],
) -> Response:
    """``work(origin, body)`` for a request whose signature holds; every refusal, of the
    request or of what it asks, as the problem that names it."""
    body = await request.body()
    try:
        origin = await endpoint.verify(request, body)
        return await work(origin, body)
    except FederationRefused as refusal:
        return _refused(endpoint, refusal, request)
    except TidingsError as error:
        refused = endpoint.refused
        refused[error.error_id.value] = refused.get(error.error_id.value, 0) + 1
        return _failed(error)


async def federation_status(endpoint: FederationEndpoint) -> dict[str, Any]:
    """This server's domain and key, each peer's outbox and counters, refused requests."""
    return {
        "domain": endpoint.domain,
        "keyId": endpoint.keys(endpoint.clock())[-1][0].key_id,
        "peers": await endpoint.federation.status(),
        "refusedRequests": dict(endpoint.refused),
    }


def router(endpoint: FederationEndpoint, authz: Authorizer) -> APIRouter:
    routes = APIRouter(tags=["federation"], responses=PROBLEM_RESPONSES)

    @routes.get(
        "/federation/status",
        summary="Each peer: outbox depth, oldest waiting envelope, counters, last error",
        dependencies=[Depends(bearer_guard(authz))],
    )
    async def status() -> dict[str, Any]:
        return await federation_status(endpoint)

    @routes.get(DOCUMENT_PATH, summary="This server's domain and public keys, signed by each")
    async def document() -> dict[str, Any]:
        return server_document(endpoint.domain, endpoint.keys(endpoint.clock()))

    @routes.post(
        "/federation/v1/envelopes",
        summary="Envelopes another server relays (signed; all or nothing per batch)",
        response_class=Response,
    )
    async def envelopes(request: Request) -> Response:
        async def take(origin: str, body: bytes) -> Response:
            return JSONResponse(await endpoint.envelopes(origin, body))

        return await _signed(endpoint, request, take)

    @routes.post(
        "/federation/v1/hello",
        summary="A server says it is up again: what waits for it is sent now",
        response_class=Response,
    )
    async def hello(request: Request) -> Response:
        async def greet(origin: str, body: bytes) -> Response:
            endpoint.federation.hello(origin)
            return JSONResponse({"domain": endpoint.domain})

        return await _signed(endpoint, request, greet)

    @routes.post(
        "/federation/v1/query",
        summary="A question of another server for one of its users (presence, keys, consent)",
        response_class=Response,
    )
    async def query(request: Request) -> Response:
        async def answer(origin: str, body: bytes) -> Response:
            try:
                question = _QUERY_DECODER.decode(body)
            except msgspec.DecodeError as exc:
                return problem(422, "invalid-argument", f"Not a JSON object: {exc}")
            kind = question.get("kind")
            handler = endpoint.queries.get(kind) if isinstance(kind, str) else None
            if handler is None:
                return problem(404, "resource-not-found", f"No query kind {kind!r}")
            return JSONResponse({"answer": await handler(origin, question)})

        return await _signed(endpoint, request, answer)

    return routes
