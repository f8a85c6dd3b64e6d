"""The HTTP body bound, driven as a bare ASGI app: any chunking, declared or not."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tidings.api.body_limit import BodyLimit

LIMIT = 64


class _Recorder:
    """The wrapped app: records the body it read and answers 204."""

    def __init__(self) -> None:
        self.body: bytes | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.body = b"".join(chunks)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _call(
    chunks: list[bytes], declared: bytes | None, *, complete: bool = True
) -> tuple[_Recorder, list[dict[str, Any]]]:
    app = _Recorder()
    headers = [] if declared is None else [(b"content-length", declared)]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    pending = [
        {
            "type": "http.request",
            "body": chunk,
            "more_body": index < len(chunks) - 1 or not complete,
        }
        for index, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(BodyLimit(app, limit=LIMIT)(scope, receive, send))
    return app, sent


def _problem(sent: list[dict[str, Any]]) -> dict[str, Any]:
    assert sent[0]["status"] == 413
    assert (b"content-type", b"application/problem+json") in sent[0]["headers"]
    return json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=6), st.booleans())
def test_a_body_within_the_limit_reaches_the_app_whole(chunks, declare):
    body = b"".join(chunks)
    declared = str(len(body)).encode() if declare else None
    app, sent = _call(chunks, declared)
    if len(body) <= LIMIT:
        assert app.body == body and sent[0]["status"] == 204
    else:
        assert app.body is None
        assert _problem(sent)["error_id"] == "body-too-large"


def test_a_declared_length_over_the_limit_is_refused_unread():
    app, sent = _call([b"x"], str(LIMIT + 1).encode())
    assert app.body is None
    problem = _problem(sent)
    assert problem["status"] == 413 and str(LIMIT) in problem["detail"]


def test_a_content_length_that_is_not_a_number_still_bounds_what_is_read():
    app, sent = _call([b"z" * LIMIT, b"z"], b"12abc")
    assert app.body is None
    assert _problem(sent)["error_id"] == "body-too-large"


def test_a_client_gone_mid_body_reaches_no_app_and_gets_no_answer():
    app, sent = _call([b'{"a": 1'], None, complete=False)
    assert app.body is None and sent == []
