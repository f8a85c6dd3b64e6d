"""A bound on request bodies, enforced before any route reads (or parses) them.

FastAPI parses a JSON body before the handler runs, so a check inside a handler comes after the
whole body is in memory. This ASGI middleware reads at most ``limit`` bytes (declared length or
chunked), answers 413 problem JSON beyond that, and replays the body to the app otherwise.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import problem

DEFAULT_LIMIT = 1024 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int = DEFAULT_LIMIT) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        too_large = declared is not None and declared > self.limit
        try:
            body = None if too_large else await _read(receive, self.limit)
        except _ClientGone:
            return  # the client left mid-body: nobody to answer, nothing to act on
        if body is None:
            detail = f"The request body is larger than {self.limit} bytes"
            await problem(413, "body-too-large", detail)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length header, if it is a number (the HTTP parser refuses other values; if
    one got through, the bound on what is read still holds)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


class _ClientGone(Exception):
    """The client disconnected before its body ended."""


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
