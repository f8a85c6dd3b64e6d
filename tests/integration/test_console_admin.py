"""The admin dashboard of the web console in a real browser (Debian's chromium through
Playwright) on a real ``tidings serve --admin-token``: a wrong token is refused on the page;
the right one opens the dashboard, which shows a LIME connection a WireClient opens, its
messages in the chart's rate, and forgets the token on sign-out. A console error or an
uncaught page error fails the test (but for the one 401 the browser itself logs for the
wrong token); screenshots go to the test's tmp_path."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.integration.browser_support import CHROMIUM_FLAGS, Watch, browser_or_skip
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess, running

pytestmark = pytest.mark.integration

ADMIN = "dashboard-admin-token"
PASSWORD = "carol pw"


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("console-admin"), args=["--admin-token", ADMIN])
    process.add_account("carol", PASSWORD)
    with running(process):
        yield process


def test_the_dashboard_files_are_served_with_the_policy(admin_server: ServerProcess) -> None:
    base = admin_server.http_url
    page = httpx.get(f"{base}/console/admin.html")
    assert page.status_code == 200 and "/console/admin.js" in page.text
    assert "script-src 'self';" in page.headers["content-security-policy"]
    script = httpx.get(f"{base}/console/admin.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert 'href="/console/admin.html"' in httpx.get(f"{base}/").text


async def test_the_dashboard_shows_a_connection_another_client_opened(
    admin_server: ServerProcess, tmp_path: Path
) -> None:
    chromium = browser_or_skip()
    from playwright.async_api import async_playwright, expect

    base = admin_server.http_url
    instance = f"dash-{uuid.uuid4().hex[:8]}"
    watch = Watch()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        client: WireClient | None = None
        try:
            context = await browser.new_context(viewport={"width": 360, "height": 740})
            page = await context.new_page()
            watch.page(page, "admin")

            # from the console's link; keyboard only: the token field has the focus
            await page.goto(f"{base}/")
            await page.locator("#admin-link").click()
            await expect(page).to_have_title("Tidings admin dashboard")
            await expect(page.locator("#token")).to_be_focused()

            # a wrong token: refused, with the server's reason; the dashboard stays hidden
            await page.keyboard.type("not-the-token")
            await page.keyboard.press("Enter")
            await expect(page.locator("#token-status")).to_contain_text("Refused")
            await expect(page.locator("#token-status")).to_contain_text("bad-credentials")
            await expect(page.locator("#dashboard")).to_be_hidden()
            assert await page.evaluate("sessionStorage.length") == 0
            await page.screenshot(path=str(tmp_path / "admin-refused.png"), full_page=True)

            await page.locator("#token").fill(ADMIN)
            await page.keyboard.press("Enter")
            await expect(page.locator("#dashboard")).to_be_visible()
            await expect(page.locator("#dashboard-title")).to_be_focused()
            assert ADMIN not in page.url
            assert await page.evaluate("sessionStorage.getItem('tidings.adminToken')") == ADMIN

            # another client opens a LIME session: the dashboard shows it, then its messages
            client = await WireClient.connect(admin_server.ws_url)
            session = await client.establish(f"carol@localhost/{instance}", password=PASSWORD)
            assert session["state"] == "established", session
            row = page.locator("#connections tbody tr", has_text=instance)
            await expect(row).to_have_count(1, timeout=10_000)
            await expect(row).to_contain_text("carol@localhost")
            await expect(row).to_contain_text("lime")
            await expect(page.locator("#connection-count")).to_have_text("1")
            await expect(page.locator("#peers tbody")).to_contain_text("No federation peers")
            for n in range(5):
                client.send(
                    {"id": f"m{n}", "to": "carol@localhost", "type": "text/plain", "content": "x"}
                )
            await expect(page.locator("#rate-chart polyline")).to_have_count(1, timeout=10_000)

            # the token survives a reload of the tab (sessionStorage), never in the URL
            await page.reload()
            await expect(page.locator("#dashboard")).to_be_visible()
            await expect(row).to_have_count(1)
            await expect(page.locator("#rate-chart polyline")).to_have_count(1, timeout=10_000)
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0
            await page.screenshot(path=str(tmp_path / "admin-dashboard.png"), full_page=True)

            # the connection closes: it leaves the table
            await client.finish()
            client = None
            await expect(row).to_have_count(0, timeout=10_000)

            # sign out: the token is forgotten
            await page.locator("#forget").click()
            await expect(page.locator("#token-view")).to_be_visible()
            assert await page.evaluate("sessionStorage.length") == 0
        finally:
            if client is not None:
                client.drop()
            await browser.close()
    # the wrong token's one 401 is the browser's own network log line; nothing else
    refused = "admin console: Failed to load resource: the server responded with a status of 401"
    assert [e for e in watch.errors if not e.startswith(refused)] == []
    assert len(watch.errors) == 1, watch.errors
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "admin-dashboard.png",
        "admin-refused.png",
    ]
