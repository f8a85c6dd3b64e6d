"""The console's static route: the shipped files with their content types and policy, and
nothing else (no traversal out of the package, no listing, unknown names 404)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tidings.api import problems
from tidings.api.console import Console, router, shipped_files, ws_url

WS_PORT = 9999


@pytest.fixture
async def client() -> httpx.AsyncClient:
    app = FastAPI()
    problems.install(app)
    app.include_router(router(Console("example.test", "127.0.0.1", lambda: WS_PORT)))
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://chat.example.test:8766")


async def test_the_page_and_its_files_are_served_with_their_types(
    client: httpx.AsyncClient,
) -> None:
    index = await client.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert "/console/console.js" in index.text
    policy = index.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert f"connect-src 'self' ws://chat.example.test:{WS_PORT}/;" in policy
    assert "script-src 'self';" in policy and "unsafe" not in policy
    assert index.headers["x-content-type-options"] == "nosniff"
    types = {
        "console.js": "text/javascript; charset=utf-8",
        "lime.js": "text/javascript; charset=utf-8",
        "feedme.js": "text/javascript; charset=utf-8",
        "listeners.js": "text/javascript; charset=utf-8",
        "feeds.js": "text/javascript; charset=utf-8",
        "feeds.html": "text/html; charset=utf-8",
        "console.css": "text/css; charset=utf-8",
        "index.html": "text/html; charset=utf-8",
        "favicon.svg": "image/svg+xml",
        "admin.html": "text/html; charset=utf-8",
        "admin.js": "text/javascript; charset=utf-8",
        "consent.js": "text/javascript; charset=utf-8",
    }
    for name, media_type in types.items():
        answer = await client.get(f"/console/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == media_type
        assert answer.content == shipped_files()[name]


async def test_config_names_the_websocket_and_the_domain(client: httpx.AsyncClient) -> None:
    answer = await client.get("/console/config.json")
    assert answer.status_code == 200
    assert answer.json() == {"ws": f"ws://chat.example.test:{WS_PORT}/", "domain": "example.test"}
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "path",
    [
        "/console/../api/console.py",
        "/console/%2e%2e/api/console.py",
        "/console/..%2Fapi%2Fconsole.py",
        "/console/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/console/",
        "/console",
        "/console/missing.js",
        "/console/INDEX.HTML",
        "/console/index.html.bak",
        "/console/__init__.py",
        "/console/./lime.js/..",
    ],
)
async def test_traversal_listing_and_unknown_names_are_404(
    client: httpx.AsyncClient, path: str
) -> None:
    answer = await client.get(path)
    assert answer.status_code == 404, (path, answer.text[:200])
    assert answer.json()["error_id"] == "route-not-found"
    assert "console.js" not in answer.text


@pytest.mark.parametrize(
    "raw",
    ["/console/../api/console.py", "/console/../../../pyproject.toml", "/console/..", "/console/."],
)
async def test_literal_dot_segments_are_404(raw: str) -> None:
    """As a client that does not normalize the path sends them (httpx would)."""
    app = FastAPI()
    problems.install(app)
    app.include_router(router(Console("example.test", "127.0.0.1", lambda: WS_PORT)))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw,
        "raw_path": raw.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"chat.example.test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8766),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 404
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    assert b"route-not-found" in body


def test_the_websocket_host_is_the_page_host_when_it_is_a_plain_name() -> None:
    def request(host: str) -> object:
        scope = {"type": "http", "headers": [(b"host", host.encode("latin-1"))]}
        from starlette.requests import Request

        return Request(scope)

    assert ws_url(request("localhost:8766"), "0.0.0.0", 1) == "ws://localhost:1/"  # type: ignore[arg-type]
    assert ws_url(request("[::1]:8766"), "::", 1) == "ws://[::1]:1/"  # type: ignore[arg-type]
    # anything that is not a host name falls back to the configured host
    for bad in ("evil.test; script-src *", "a b", "", "x'y"):
        assert ws_url(request(bad), "10.0.0.1", 2) == "ws://10.0.0.1:2/"  # type: ignore[arg-type]
    assert ws_url(request(""), "0.0.0.0", 3) == "ws://127.0.0.1:3/"  # type: ignore[arg-type]
