"""The server's log output: plain text or JSON lines (``log_format``), each record with the
LIME session or HTTP request it belongs to when the code knows it.

A record names its session through ``extra={"session": ...}`` (LIME connections are protocol
callbacks, not tasks: a context variable would leak from one connection to the next) or
through the ``session_id`` / ``request_id`` context variables, set where a task serves one
session or request (``RequestIds`` sets ``request_id`` per HTTP request).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any, Final

LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
session_id: ContextVar[str | None] = ContextVar("tidings_session_id", default=None)
request_id: ContextVar[str | None] = ContextVar("tidings_request_id", default=None)
REQUEST_ID_HEADER: Final = "x-request-id"
MAX_REQUEST_ID: Final = 128


class ContextIds(logging.Filter):
    """Give every record ``session`` and ``request`` attributes: its own ``extra`` ones, else
    the context variables', else ``None``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "session", None) is None:
            record.session = session_id.get()
        if getattr(record, "request", None) is None:
            record.request = request_id.get()
        return True


class JsonLines(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, and
    ``session`` / ``request`` when known, ``exception`` with a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("session", "request"):
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


class TextLines(logging.Formatter):
    """``time level logger [session=... request=...] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{name}={value}"
            for name in ("session", "request")
            if (value := getattr(record, name, None)) is not None
        ]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


def configure_logging(log_format: str, level: str) -> logging.Handler:
    """Send every logger's records (``level`` and above) to stderr in ``log_format``; replaces
    a handler this function installed before. Returns the handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "tidings", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.tidings = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonLines() if log_format == "json" else TextLines())
    handler.addFilter(ContextIds())
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
http_log = logging.getLogger("tidings.http")


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            text = bytes(value).decode("latin-1")
            if 0 < len(text) <= MAX_REQUEST_ID and text.isprintable() and " " not in text:
                return text
    return None


class RequestIds:
    """ASGI middleware: each HTTP request gets an id (the client's ``X-Request-ID`` when it
    sends a sane one, else a new one), in ``request_id`` while it is served and in the
    response's ``X-Request-ID``; each request is logged at ``info`` (``tidings.http``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        ident = _incoming_id(scope) or uuid.uuid4().hex
        token = request_id.set(ident)
        status = 0

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 0))
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER.encode(), ident.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if http_log.isEnabledFor(logging.INFO):
                http_log.info("%s %s %d", scope.get("method"), scope.get("path"), status)
            request_id.reset(token)
