"""The web console: its static files (shipped in ``tidings/console``) at ``/`` and
``/console/{file}``, and ``/console/config.json``, where the page learns the WebSocket URL and
the domain.

Only the files the package ships are served, by name (no folders, no listing, nothing outside
the package), each with its content type and a Content-Security-Policy that lets the page load
from this server only and connect to its WebSocket port only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Final

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
HOST_NAME = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
"""A host name, IPv4 or bracketed IPv6 address: what may go into a URL and a CSP header."""


@dataclass(frozen=True, slots=True)
class Console:
    """What the console's page is told: the domain, and where the WebSocket listens."""

    domain: str
    host: str
    """The configured listen address (used when the request's host name is not usable)."""
    ws_port: Callable[[], int]
    """Read at each request: the port is known once the server listens."""


class ConsoleConfig(BaseModel):
    ws: str
    """The LIME WebSocket URL (``ws://host:port/``)."""
    domain: str
    """The domain of this server's identities (``name@domain``)."""


def shipped_files() -> dict[str, bytes]:
    """The console's files by name, read once from the package."""
    folder = resources.files("tidings") / "console"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(ext) for ext in CONTENT_TYPES)
    }


def ws_url(request: Request, fallback_host: str, port: int) -> str:
    """``ws://`` on the host name the browser reached this page at (both ports listen on
    the same address) and the WebSocket port; the configured host when that name is not a
    plain host name (the header is the client's and is written into a header here)."""
    host = (request.headers.get("host") or "").strip()
    if host.startswith("["):
        name = host[: host.find("]") + 1] if "]" in host else ""
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    if not HOST_NAME.fullmatch(name):
        name = f"[{fallback_host}]" if ":" in fallback_host else fallback_host
    if name in ("0.0.0.0", "[::]"):
        name = "127.0.0.1"
    return f"ws://{name}:{port}/"


def policy(ws: str) -> str:
    """The pages' Content-Security-Policy: this server only, and its WebSocket port."""
    return (
        "default-src 'self'; connect-src 'self' "
        f"{ws}; img-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def router(console: Console) -> APIRouter:
    files = shipped_files()
    routes = APIRouter(tags=["console"])

    def headers(request: Request) -> dict[str, str]:
        return {
            "Content-Security-Policy": policy(ws_url(request, console.host, console.ws_port())),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }

    def serve(name: str, request: Request) -> Response:
        body = files.get(name)
        if body is None:
            raise HTTPException(404, "No such console file")  # problem JSON, route-not-found
        media_type = CONTENT_TYPES[name[name.rindex(".") :]]
        return Response(body, media_type=media_type, headers=headers(request))

    @routes.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        return serve("index.html", request)

    @routes.get(
        "/console/config.json",
        response_model=ConsoleConfig,
        summary="Where the web console connects: the LIME WebSocket URL and the domain",
    )
    async def config(request: Request, response: Response) -> ConsoleConfig:
        response.headers.update(headers(request))
        response.headers["Cache-Control"] = "no-store"
        return ConsoleConfig(
            ws=ws_url(request, console.host, console.ws_port()), domain=console.domain
        )

    @routes.get("/console/{name}", include_in_schema=False)
    async def static(name: str, request: Request) -> Response:
        return serve(name, request)

    return routes
