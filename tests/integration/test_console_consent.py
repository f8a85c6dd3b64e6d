"""The consent view of the web console in a real browser (Debian's chromium through
Playwright) on a real ``tidings serve``: alice (the SDK) creates invites; bob, signed in to the
console, opens one by pasting its capability link and accepts it, and refuses another opened
with ``#offer=<url>``; the relationship shows; chat goes both ways live; an alert that needs an
acknowledgement shows, bob acknowledges it with the keyboard and alice's inbox sees the ack.
A console error or an uncaught page error fails the test; screenshots go to tmp_path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from tests.integration.test_consent_html import CHROMIUM_FLAGS, _browser_or_skip
from tests.integration.test_console_chat import Watch
from tests.server_process import ServerProcess

from tidings.sdk import Client, InboxEvent

pytestmark = pytest.mark.integration

STEP = 15.0
MARKUP = "Cardio <b>study</b>"


@pytest.fixture(scope="module")
def consent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("console-consent"))
    for name in ("alice", "bob"):
        made = process.tidings("account", "add", name, "--password", f"{name}-pw")
        assert made.returncode == 0, made.stderr
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_the_consent_script_is_served_and_linked(consent_server: ServerProcess) -> None:
    base = consent_server.http_url
    script = httpx.get(f"{base}/console/consent.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    index = httpx.get(f"{base}/").text
    assert 'id="show-consent"' in index and 'id="consent-view"' in index


async def next_of(inbox: Any, kind: str, **data: str) -> InboxEvent:
    """The next inbox event of this kind whose data has these values."""
    async with asyncio.timeout(STEP):
        async for event in inbox:
            if event.kind == kind and all(event.data.get(k) == v for k, v in data.items()):
                return event  # type: ignore[no-any-return]
    raise AssertionError(f"the inbox ended before a {kind!r} event")


async def sign_in(page: Any, base: str, hash_part: str = "") -> None:
    from playwright.async_api import expect

    await page.goto(f"{base}/{hash_part}")
    await expect(page.locator("#domain-suffix")).to_have_text("@localhost")
    await expect(page.locator("#name")).to_be_focused()
    await page.keyboard.type("bob")
    await page.keyboard.press("Tab")
    await page.keyboard.type("bob-pw")
    await page.keyboard.press("Enter")
    await expect(page.locator("#whoami")).to_have_text("Signed in as bob@localhost")


async def test_bob_accepts_an_offer_chats_and_acknowledges_an_alert(
    consent_server: ServerProcess, tmp_path: Path
) -> None:
    chromium = _browser_or_skip()
    from playwright.async_api import async_playwright, expect

    base = consent_server.http_url
    watch = Watch()
    alice = Client(consent_server.ws_url, "alice@localhost", instance="sdk", password="alice-pw")
    async with alice, async_playwright() as playwright:
        invite = await alice.consent.create_invite(
            app_code="cardio",
            display_name=MARKUP,
            consent={"en": "We read your <i>pulse</i>."},
            permissions=[{"resource": "presence", "level": "read"}],
        )
        url = invite["capabilityUrl"]
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            context = await browser.new_context(viewport={"width": 360, "height": 740})
            page = await context.new_page()
            watch.page(page, "bob")
            await sign_in(page, base)

            # the Consent view, with the keyboard: Tab from the peer field to the tabs
            consent_tab = page.locator("#show-consent")
            await consent_tab.focus()
            await page.keyboard.press("Enter")
            await expect(page.locator("#consent-view")).to_be_visible()
            await expect(page.locator("#chat-view")).to_be_hidden()
            await expect(page.locator("#consent-title")).to_be_focused()
            await expect(page.locator("#relationship-list")).to_have_text("No relationships yet.")

            # paste the capability link, Enter: the offer, as text
            await page.locator("#offer-url").fill(url)
            await page.locator("#offer-url").press("Enter")
            await expect(page.locator("#offer-title")).to_have_text(MARKUP)
            await expect(page.locator("#offer-title")).to_be_focused()
            await expect(page.locator("#offer-details")).to_contain_text("alice@localhost")
            await expect(page.locator("#offer-details")).to_contain_text(
                "We read your <i>pulse</i>."
            )
            await expect(page.locator("#offer-details")).to_contain_text("presence: read")
            assert await page.locator("#offer b, #offer i").count() == 0
            await page.screenshot(path=str(tmp_path / "consent-offer.png"), full_page=True)
            await page.keyboard.press("Tab")
            await expect(page.locator("#offer-accept")).to_be_focused()
            await page.keyboard.press("Enter")

            relationship = await alice.consent.wait_for_accept(invite["id"], timeout=STEP)
            assert relationship["accepter"] == "bob@localhost"
            await expect(page.locator("#offer")).to_be_hidden()
            await expect(page.locator("#offer-status")).to_contain_text("Accepted: cardio")
            button = page.locator(f'#relationship-list button[data-id="{relationship["id"]}"]')
            await expect(button).to_contain_text("cardio with alice@localhost (active)")
            await expect(page.locator("#relationship-title")).to_have_text(
                "cardio with alice@localhost"
            )
            await expect(page.locator("#consent-text")).to_be_focused()
            await expect(page.locator("#inbox")).to_contain_text("Relationship created")

            # alice writes: it shows live in bob's page, as text
            await alice.consent.send_chat(relationship["id"], "Hello bob <b>hi</b>")
            theirs = page.locator("#consent-chat li.message.theirs")
            await expect(theirs).to_have_text(["alice@localhost: Hello bob <b>hi</b>"])
            assert await page.locator("#consent-chat b").count() == 0

            # bob answers from the page (Enter); alice's inbox gets it from bob
            async with alice.consent.inbox(since=0) as inbox:
                await page.keyboard.type("Hi alice")
                await page.keyboard.press("Enter")
                await expect(page.locator("#consent-chat li.message.mine")).to_have_text(
                    ["Hi alice"]
                )
                await expect(page.locator("#consent-text")).to_have_value("")
                chat = await next_of(inbox, "chat", **{"from": "bob@localhost"})
                assert chat.data["text"] == "Hi alice"
                history = await alice.consent.chat_history(relationship["id"])
                assert [(m["sender"], m["text"]) for m in history] == [
                    ("alice@localhost", "Hello bob <b>hi</b>"),
                    ("bob@localhost", "Hi alice"),
                ]

                # an alert that needs an acknowledgement: bob acknowledges it (keyboard)
                alert = await alice.consent.send_system_alert(
                    relationship["id"],
                    level="warning",
                    title={"en": "Battery <low>"},
                    body={"en": "Charge the sensor."},
                    ack_required=True,
                    ack_id="battery-1",
                )
                shown = page.locator(f'#consent-alerts li[data-id="{alert["id"]}"]')
                await expect(shown).to_contain_text("warning: Battery <low>")
                await expect(shown).to_contain_text("Charge the sensor.")
                ack = shown.locator("button.ack")
                await ack.focus()
                await page.keyboard.press("Enter")
                acked = await next_of(inbox, "alert-acked", alertId=alert["id"])
                assert acked.data["by"] == "bob@localhost"
                assert acked.data["ackId"] == "battery-1"
            await expect(shown).to_contain_text("Acknowledged by bob@localhost")
            await expect(shown.locator("button.ack")).to_have_count(0)
            await expect(page.locator("#inbox")).to_contain_text("Alert acknowledged by")

            # at 360 px nothing overflows sideways
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0
            await page.screenshot(path=str(tmp_path / "consent-relationship.png"), full_page=True)

            # a second invite opened with #offer=<url> (a fresh tab, signed in), refused
            second = await alice.consent.create_invite(
                app_code="sleep",
                display_name="Sleep study",
                consent={"en": "We read your presence at night."},
                permissions=[{"resource": "presence", "level": "read"}],
            )
            await page.locator("#sign-out").click()
            await expect(page.locator("#sign-in-view")).to_be_visible()
            await page.close()
            page = await context.new_page()
            watch.page(page, "bob 2")
            await sign_in(page, base, f"#offer={quote(second['capabilityUrl'], safe='')}")
            await expect(page.locator("#consent-view")).to_be_visible()
            await expect(page.locator("#offer-title")).to_have_text("Sleep study")
            await page.locator("#offer-refuse").click()
            await expect(page.locator("#offer-status")).to_have_text("Refused.")
            status = await alice.consent.get_invite_status(second["id"])
            assert [r["identity"] for r in status["refusedBy"]] == ["bob@localhost"]
            # the first relationship is still listed, its chat loaded from the history
            button = page.locator(f'#relationship-list button[data-id="{relationship["id"]}"]')
            await button.click()
            await expect(page.locator("#consent-chat li.message")).to_have_count(2)
            await page.screenshot(path=str(tmp_path / "consent-refused.png"), full_page=True)
        finally:
            await browser.close()
    assert watch.errors == []
    assert len(list(tmp_path.glob("consent-*.png"))) == 3
