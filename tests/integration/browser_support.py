"""What the browser tests share: Debian's chromium driven by Playwright (``executable_path``
and ``--no-sandbox``, as root here), and a watch that fails a test on any console error."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_or_skip() -> str:
    """Debian's chromium and the Playwright package: scripts/test installs both; a developer
    machine without them skips, CI (CI=true) fails."""
    chromium = shutil.which("chromium")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None:
        message = "needs Debian's chromium and the playwright package (scripts/test installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return chromium


class Watch:
    """Console errors and uncaught exceptions of the pages, which fail the test."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def page(self, page: Any, who: str) -> None:
        def console(message: Any) -> None:
            if message.type == "error":
                self.errors.append(f"{who} console: {message.text}")

        page.on("console", console)
        page.on("pageerror", lambda error: self.errors.append(f"{who} pageerror: {error}"))
