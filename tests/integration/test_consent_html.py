"""The capability URL as a page a person reads (``Accept: text/html``) on a real
``tidings serve``: requester, consent text and permissions shown, every value escaped (a
display name with markup is text, never markup), and the page's form (``POST .../decide`` with
``key`` and ``decision``) accepting with a valid API key and refusing an invalid one; then the
same page driven in a real browser (Debian's chromium through Playwright)."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from tests.integration.browser_support import CHROMIUM_FLAGS, browser_or_skip
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

NAMES = ("alice", "bob", "carol")
MARKUP = "<script>alert(1)</script>"
CONSENT = 'We read your <b>pulse</b> & "sleep"'
HEART = {"resource": "feed:heart-rate*", "level": "read"}
PRESENCE = {"resource": "presence", "level": "read"}


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    process = ServerProcess(tmp_path_factory.mktemp("consent-html"))
    keys = {}
    process.add_accounts({name: f"{name}-pw" for name in NAMES})
    for name in NAMES:
        keys[name] = process.tidings("account", "key", name).stdout.strip().splitlines()[-1]
    process.start()
    try:
        yield process, keys
    finally:
        process.stop()


@pytest.fixture
async def http(page_server: tuple[ServerProcess, dict]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=page_server[0].http_url, timeout=30.0) as client:
        yield client


async def invite(http: httpx.AsyncClient, key: str, **fields: Any) -> dict[str, Any]:
    body = {
        "appCode": "cardio",
        "displayName": MARKUP,
        "consent": {"en": CONSENT, "fr": "Votre <i>pouls</i>"},
        "requestedPermissions": [HEART, PRESENCE],
        **fields,
    }
    answer = await http.post("/consent/invites", json=body, headers=bearer(key))
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def status_of(http: httpx.AsyncClient, key: str, invite_id: str) -> dict[str, Any]:
    answer = await http.get(f"/consent/invites/{invite_id}", headers=bearer(key))
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


async def test_the_offer_page_shows_everything_escaped(
    http: httpx.AsyncClient, page_server: tuple[ServerProcess, dict]
) -> None:
    _, keys = page_server
    url = (await invite(http, keys["alice"]))["capabilityUrl"]
    page = await http.get(url, headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # nothing runs, frames, caches the page, or leaks its capability URL as a Referer
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    text = page.text
    assert html.escape(MARKUP) in text and MARKUP not in text
    assert "<script" not in text.lower()
    assert "alice@localhost" in text
    assert html.escape(CONSENT) in text and "<b>pulse</b>" not in text
    assert html.escape("Votre <i>pouls</i>") in text and "<i>pouls" not in text
    assert "feed:heart-rate*" in text and "presence" in text
    token = url.rsplit("/", 1)[1]
    assert f"action='/consent/offers/{token}/decide'" in text
    assert "name='key'" in text and "value='accept'" in text and "value='refuse'" in text
    # JSON stays the default, and what a client that asks for JSON gets
    assert (await http.get(url)).json()["displayName"] == MARKUP
    both = await http.get(url, headers={"Accept": "text/html, application/json"})
    assert both.json()["displayName"] == MARKUP
    # an error on the page's URL is problem JSON, whatever the Accept
    gone = await http.get(url + "x", headers={"Accept": "text/html"})
    assert (gone.status_code, gone.json()["error_id"]) == (401, "cmc-capability-invalid")


async def test_the_page_form_accepts_with_a_valid_key_only(
    http: httpx.AsyncClient, page_server: tuple[ServerProcess, dict]
) -> None:
    _, keys = page_server
    created = await invite(http, keys["alice"])
    decide = f"{created['capabilityUrl']}/decide"
    wrong = await http.post(decide, data={"key": "tdk_not-a-key", "decision": "accept"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    empty = await http.post(decide, data={"key": "", "decision": "accept"})
    assert empty.status_code == 401
    assert (await status_of(http, keys["alice"], created["id"]))["status"] == "pending"
    undecided = await http.post(decide, data={"key": keys["bob"], "decision": "maybe"})
    assert undecided.status_code == 422

    done = await http.post(decide, data={"key": keys["bob"], "decision": "accept"})
    assert done.status_code == 200 and "Accepted" in done.text
    status = await status_of(http, keys["alice"], created["id"])
    assert status["status"] == "accepted"
    assert [a["identity"] for a in status["acceptedBy"]] == ["bob@localhost"]
    assert html.escape(status["acceptedBy"][0]["relationshipId"]) in done.text
    # deciding again: the page says why, escaped, with the error id
    again = await http.post(decide, data={"key": keys["carol"], "decision": "accept"})
    assert again.status_code == 409 and "cmc-capability-consumed" in again.text

    other = await invite(http, keys["alice"])
    refused = await http.post(
        f"{other['capabilityUrl']}/decide", data={"key": keys["carol"], "decision": "refuse"}
    )
    assert refused.status_code == 200 and "Refused" in refused.text
    status = await status_of(http, keys["alice"], other["id"])
    assert status["status"] == "refused"
    assert status["refusedBy"][0]["identity"] == "carol@localhost"


async def test_a_person_accepts_in_a_browser(
    http: httpx.AsyncClient, page_server: tuple[ServerProcess, dict]
) -> None:
    chromium = browser_or_skip()
    from playwright.async_api import async_playwright

    _, keys = page_server
    created = await invite(http, keys["alice"])
    refused_one = await invite(http, keys["alice"])
    dialogs: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            page.on("dialog", lambda dialog: dialogs.append(dialog.message))

            await page.goto(created["capabilityUrl"])
            assert await page.title() == "Consent request"
            assert await page.locator("strong").inner_text() == MARKUP  # shown as text
            assert await page.locator("script").count() == 0
            assert await page.locator("p[lang='en']").inner_text() == CONSENT
            permissions = await page.locator("li").all_inner_texts()
            assert permissions == ["read feed:heart-rate*", "read presence"]

            # a wrong key: the page says so, and nothing was decided
            await page.fill("input[name='key']", "tdk_wrong")
            await page.click("button[value='accept']")
            assert await page.locator("h1").inner_text() == "Not signed in"
            assert (await status_of(http, keys["alice"], created["id"]))["status"] == "pending"

            await page.goto(created["capabilityUrl"])
            await page.fill("input[name='key']", keys["bob"])
            await page.click("button[value='accept']")
            assert await page.locator("h1").inner_text() == "Done"
            assert "Accepted" in await page.locator("body").inner_text()
            status = await status_of(http, keys["alice"], created["id"])
            assert [a["identity"] for a in status["acceptedBy"]] == ["bob@localhost"]

            await page.goto(refused_one["capabilityUrl"])
            await page.fill("input[name='key']", keys["carol"])
            await page.click("button[value='refuse']")
            assert "Refused" in await page.locator("body").inner_text()
            status = await status_of(http, keys["alice"], refused_one["id"])
            assert status["status"] == "refused"
        finally:
            await browser.close()
    assert dialogs == []  # the display name's script never ran
