"""The console's live feed viewer in a real browser (Debian's chromium through Playwright) on
a real ``tidings serve``: a feed published over HTTP with the api_token is opened in the
viewer, the test publishes updates (deltas of several kinds) and the page shows each new
document, its FeedMd5 checked by feedme.js; then the feed is closed. A console error or an
uncaught page error fails the test; screenshots go to the test's tmp_path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.browser_support import CHROMIUM_FLAGS, Watch, browser_or_skip
from tests.server_process import ServerProcess, running

pytestmark = pytest.mark.integration

TOKEN = "console-feeds-api-token"
ARGS = {"game": "g1"}


@pytest.fixture(scope="module")
def feed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(ServerProcess(tmp_path_factory.mktemp("feeds"), args=["--api-token", TOKEN])) as p:
        yield p


def publish(server: ServerProcess, action: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.http_url}/feeds/scores/actions",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"action_name": action, "action_data": {}, "feed_args": ARGS, **body},
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def pretty(data: dict[str, Any]) -> str:
    """The document as the page shows it (JSON.stringify(data, null, 2))."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def test_the_viewer_is_linked_and_served(feed_server: ServerProcess) -> None:
    index = httpx.get(f"{feed_server.http_url}/")
    assert 'href="/console/feeds.html"' in index.text
    page = httpx.get(f"{feed_server.http_url}/console/feeds.html")
    assert page.status_code == 200 and "/console/feeds.js" in page.text
    assert "script-src 'self';" in page.headers["content-security-policy"]


async def test_a_feed_updates_live_in_the_viewer(
    feed_server: ServerProcess, tmp_path: Path
) -> None:
    chromium = browser_or_skip()
    from playwright.async_api import async_playwright, expect

    document: dict[str, Any] = {"home": 0, "away": 0, "log": [], "live": False, "title": "Cup"}
    publish(feed_server, "start", {"feed_data": document})
    watch = Watch()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            context = await browser.new_context(viewport={"width": 360, "height": 740})
            page = await context.new_page()
            watch.page(page, "viewer")
            await page.goto(f"{feed_server.http_url}/")
            await page.get_by_role("link", name="Feed viewer").click()
            await expect(page).to_have_title("Tidings feed viewer")
            await expect(page.locator("#open-feed")).to_be_enabled()
            await expect(page.locator("#feed-name")).to_be_focused()

            # bad args are refused on the page, before anything is sent
            await page.keyboard.type("scores")
            await page.locator("#feed-args").fill('{"game": 1}')
            await page.locator("#open-feed").click()
            await expect(page.locator("#feed-status")).to_have_text(
                "Every arg value must be a string."
            )

            await page.locator("#feed-args").fill(json.dumps(ARGS))
            await page.locator("#open-feed").click()
            data = page.locator("#feed-data")
            await expect(page.locator("#feed-status")).to_have_text("Open: scores (game=g1)")
            await expect(data).to_have_text(pretty(document))
            await page.screenshot(path=str(tmp_path / "feeds-open.png"), full_page=True)

            # a goal: several delta kinds in one revelation, checked with its FeedMd5
            answer = publish(
                feed_server,
                "goal",
                {
                    "deltas": [
                        {"Operation": "Increment", "Path": ["home"], "Value": 1},
                        {"Operation": "InsertLast", "Path": ["log"], "Value": "home 1-0"},
                        {"Operation": "Toggle", "Path": ["live"]},
                        {"Operation": "Append", "Path": ["title"], "Value": " final"},
                    ]
                },
            )
            assert answer["delivered"] == 1
            document = {"home": 1, "away": 0, "log": ["home 1-0"], "live": True}
            document["title"] = "Cup final"
            await expect(data).to_have_text(pretty(document))
            await expect(page.locator("#feed-meta")).to_have_text(
                "Revision 1: action goal, MD5 verified"
            )

            publish(
                feed_server,
                "goal",
                {
                    "deltas": [
                        {"Operation": "Increment", "Path": ["away"], "Value": 1},
                        {"Operation": "InsertFirst", "Path": ["log"], "Value": "away 1-1"},
                        {"Operation": "Set", "Path": ["scorer"], "Value": {"name": "Zoë"}},
                    ]
                },
            )
            document.update(away=1, log=["away 1-1", "home 1-0"], scorer={"name": "Zoë"})
            await expect(data).to_have_text(pretty(document))
            await expect(page.locator("#feed-meta")).to_have_text(
                "Revision 2: action goal, MD5 verified"
            )
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0
            await page.screenshot(path=str(tmp_path / "feeds-updated.png"), full_page=True)

            # close: the server no longer sends it revelations
            await page.locator("#close-feed").click()
            await expect(page.locator("#feed-status")).to_have_text("Closed: scores (game=g1)")
            await expect(data).to_have_text("")
            await expect(page.locator("#open-feed")).to_be_enabled()
            assert publish(feed_server, "whistle", {"feed_data": {"over": True}})["delivered"] == 0
            await page.screenshot(path=str(tmp_path / "feeds-closed.png"), full_page=True)
        finally:
            await browser.close()
    assert watch.errors == []
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "feeds-closed.png",
        "feeds-open.png",
        "feeds-updated.png",
    ]
