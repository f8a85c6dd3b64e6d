"""Signed requests to other domains' servers (``core.federation.PeerChannel``), over httpx.

Every request is a POST signed with this server's current key (``protocol.federation``);
redirects are never followed (a signature covers one target URI). Answers are sorted into
what the relay does next: 2xx done, ``PeerUnreachable`` (network, timeout, 401, 408, 421,
425, 429, 5xx: try again later) or ``PeerRefusal`` (any other 4xx: never).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httpx

from ..core.federation import PeerRefusal, PeerUnreachable
from ..protocol.federation import SigningKey, sign_request

RETRYABLE: Final = frozenset({401, 408, 421, 425, 429})
DOCUMENT_PATH: Final = "/.well-known/tidings/server"
MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024


class FederationClient:
    def __init__(
        self,
        domain: str,
        key: Callable[[], SigningKey],
        base_url: Callable[[str], Awaitable[str]],
        *,
        timeout_s: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``key()`` is the current signing key (read at each request: rotation);
        ``base_url(domain)`` finds a peer (``core.federation_peers``)."""
        self._domain = domain
        self._key = key
        self._base_url = base_url
        self._clock = clock
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def _base(self, domain: str) -> str:
        try:
            return (await self._base_url(domain)).rstrip("/")
        except Exception as exc:
            raise PeerUnreachable(f"cannot find the server of {domain}: {exc}") from None

    async def post(self, domain: str, route: str, body: bytes) -> Any:
        url = f"{await self._base(domain)}/federation/v1/{route}"
        headers = sign_request(
            "POST",
            url,
            body,
            origin=self._domain,
            destination=domain,
            key=self._key(),
            now=self._clock(),
        )
        headers["Content-Type"] = "application/json"
        try:
            response = await self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise PeerUnreachable(f"{type(exc).__name__}: {exc}".strip(": ")) from None
        return _answer(response)

    async def document(self, domain: str) -> Any:
        """The peer's key document (``GET /.well-known/tidings/server``)."""
        url = f"{await self._base(domain)}{DOCUMENT_PATH}"
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            raise PeerUnreachable(f"{type(exc).__name__}: {exc}") from None
        return _answer(response)

    async def close(self) -> None:
        await self._http.aclose()


def _answer(response: httpx.Response) -> Any:
    status = response.status_code
    if len(response.content) > MAX_ANSWER_BYTES:
        raise PeerUnreachable(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    if 200 <= status < 300:
        return body
    problem = body if isinstance(body, dict) else {"detail": response.text[:500]}
    detail = f"{status} {problem.get('error_id') or ''} {problem.get('detail') or ''}".strip()
    if status in RETRYABLE or status >= 500:
        retry_after = response.headers.get("retry-after")
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        raise PeerUnreachable(detail, seconds)
    raise PeerRefusal(status, problem)
