"""Signed requests to other domains' servers (``core.federation.PeerChannel``), over httpx.

Every request is a POST signed with this server's current key (``protocol.federation``);
redirects are never followed (a signature covers one target URI). Answers are sorted into
what the relay does next: 2xx done, ``PeerUnreachable`` (network, timeout, 401, 408, 421,
425, 429, 5xx: try again later) or ``PeerRefusal`` (any other 4xx: never).

An answer is read as it streams in, uncompressed, and refused once it passes
``MAX_ANSWER_BYTES``; each request, from finding the peer to the answer's last byte, has a
deadline besides httpx's timeout per read: a peer cannot make us hold more than the bound in
memory, nor hold a relay by trickling bytes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

import httpx

from ..core.federation import PeerRefusal, PeerUnreachable
from ..core.federation_peers import PeerLookupFailed, PeerUnknown
from ..protocol.federation import SigningKey, sign_request

RETRYABLE: Final = frozenset({401, 408, 421, 425, 429})
DOCUMENT_PATH: Final = "/.well-known/tidings/server"
MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024
PER_PEER: Final = 16
"""Requests in flight to one peer, at most (the connection pool holds 200 for all)."""
MAX_PEER_SLOTS: Final = 10_000
DEADLINE_S: Final = 30.0
"""The most one request may take in all (httpx's timeout bounds each read)."""


class FederationClient:
    def __init__(
        self,
        domain: str,
        key: Callable[[], SigningKey],
        base_url: Callable[[str], Awaitable[str]],
        *,
        timeout_s: float = 15.0,
        deadline_s: float = DEADLINE_S,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``key()`` is the current signing key (read at each request: rotation);
        ``base_url(domain)`` finds a peer (``core.federation_peers``)."""
        self._domain = domain
        self._key = key
        self._base_url = base_url
        self._clock = clock
        self._deadline_s = deadline_s
        self._max_answer_bytes = max_answer_bytes
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            # Compressed answers would be inflated past the bound before it is checked.
            headers={"Accept-Encoding": "identity"},
        )

    async def _base(self, domain: str) -> str:
        """The peer's base URL. A domain that has no server (no SRV record, denied) is a
        refusal for good, 42 to the senders; a lookup that failed now is tried again."""
        try:
            return (await self._base_url(domain)).rstrip("/")
        except PeerLookupFailed as exc:
            raise PeerUnreachable(f"cannot find the server of {domain} now: {exc}") from None
        except PeerUnknown as exc:
            raise PeerRefusal(
                404,
                {"error_id": "destination-not-found", "detail": f"no server of {domain}: {exc}"},
            ) from None
        except Exception as exc:
            raise PeerUnreachable(f"cannot find the server of {domain}: {exc}") from None

    async def post(self, domain: str, route: str, body: bytes) -> Any:
        async def send() -> Any:
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
            return await self._exchange("POST", url, body, headers)

        return await self._within_deadline(domain, send())

    async def document(self, domain: str) -> Any:
        """The peer's key document (``GET /.well-known/tidings/server``)."""

        async def read() -> Any:
            return await self._exchange("GET", f"{await self._base(domain)}{DOCUMENT_PATH}")

        return await self._within_deadline(domain, read())

    async def close(self) -> None:
        await self._http.aclose()

    async def _within_deadline(self, domain: str, request: Coroutine[Any, Any, Any]) -> Any:
        """Run ``request`` within the deadline, and within the peer's share of connections:
        a peer that answers slowly (or never) holds at most ``PER_PEER`` of them, so the
        others' relays and questions still go."""
        slots = self._slots.get(domain)
        if slots is None:
            if len(self._slots) >= MAX_PEER_SLOTS:
                self._slots = {d: s for d, s in self._slots.items() if s.locked()}
            slots = self._slots[domain] = asyncio.Semaphore(PER_PEER)
        try:
            async with asyncio.timeout(self._deadline_s), slots:
                return await request
        except TimeoutError:
            raise PeerUnreachable(f"no whole answer within {self._deadline_s:g} s") from None
        finally:
            request.close()  # never awaited when the deadline came while waiting for a slot

    async def _exchange(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        try:
            async with self._http.stream(method, url, content=body, headers=headers) as response:
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise PeerUnreachable(f"the answer is compressed ({encoding[:40]})")
                declared = response.headers.get("content-length", "")
                if _digits(declared) and int(declared) > self._max_answer_bytes:
                    raise PeerUnreachable(_too_large(self._max_answer_bytes))
                content = bytearray()
                async for chunk in response.aiter_raw():
                    content += chunk
                    if len(content) > self._max_answer_bytes:
                        raise PeerUnreachable(_too_large(self._max_answer_bytes))
        except httpx.HTTPError as exc:
            raise PeerUnreachable(f"{type(exc).__name__}: {exc}".strip(": ")) from None
        return _answer(response.status_code, response.headers, bytes(content))


def _too_large(bound: int) -> str:
    return f"the answer is larger than {bound} bytes"


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes '²' or '٣', which ``int``/``float``
    refuse or read otherwise."""
    return text.isascii() and text.isdigit()


def _answer(status: int, headers: httpx.Headers, content: bytes) -> Any:
    try:
        body = json.loads(content) if content else None
    except ValueError:  # not JSON, or not UTF-8
        body = None
    if 200 <= status < 300:
        return body
    problem = (
        body if isinstance(body, dict) else {"detail": content[:500].decode("utf-8", "replace")}
    )
    detail = f"{status} {problem.get('error_id') or ''} {problem.get('detail') or ''}".strip()
    if status in RETRYABLE or status >= 500:
        retry_after = headers.get("retry-after", "").strip()
        raise PeerUnreachable(detail, float(retry_after) if _digits(retry_after) else None)
    raise PeerRefusal(status, problem)
