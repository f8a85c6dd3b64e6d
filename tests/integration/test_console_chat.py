"""The web console in a real browser (Debian's chromium through Playwright) on a real
``tidings serve``: alice and bob sign in from two browser contexts, chat both ways, and each
sender sees its messages reach two ticks (received); then both sign out. A console error or
an uncaught page error fails the test; screenshots of each page go to the test's tmp_path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.browser_support import CHROMIUM_FLAGS, Watch, browser_or_skip
from tests.server_process import ServerProcess, running

pytestmark = pytest.mark.integration

NAMES = ("alice", "bob")


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("console"))
    process.add_accounts({name: f"{name} pw é" for name in NAMES})
    with running(process):
        yield process


def test_the_console_is_served_with_its_policy(console_server: ServerProcess) -> None:
    index = httpx.get(f"{console_server.http_url}/")
    assert index.status_code == 200 and "<title>Tidings console</title>" in index.text
    ws = f"ws://127.0.0.1:{console_server.ws_port}/"
    assert f"connect-src 'self' {ws};" in index.headers["content-security-policy"]
    config = httpx.get(f"{console_server.http_url}/console/config.json").json()
    assert config == {"ws": ws, "domain": "localhost"}
    assert httpx.get(f"{console_server.http_url}/console/nothing.js").status_code == 404


async def sign_in(page: Any, base: str, name: str, shots: Path) -> None:
    from playwright.async_api import expect

    await page.goto(f"{base}/")
    await expect(page.locator("#domain-suffix")).to_have_text("@localhost")
    await page.screenshot(path=str(shots / f"{name}-sign-in.png"), full_page=True)
    # keyboard only: the name field has the focus, Tab goes to the password, Enter submits
    await expect(page.locator("#name")).to_be_focused()
    await page.keyboard.type(name)
    await page.keyboard.press("Tab")
    await expect(page.locator("#password")).to_be_focused()
    await page.keyboard.type(f"{name} pw é")
    await page.keyboard.press("Enter")
    await expect(page.locator("#whoami")).to_have_text(f"Signed in as {name}@localhost")
    await expect(page.locator("#chat-view")).to_be_visible()
    await expect(page.locator("#peer")).to_be_focused()


async def say(page: Any, text: str) -> Any:
    """Type a message and send it with Enter; its bubble."""
    await page.locator("#text").fill(text)
    await page.locator("#text").press("Enter")
    mine = page.locator("li.message.mine", has_text=text)
    from playwright.async_api import expect

    await expect(mine).to_have_count(1)
    await expect(page.locator("#text")).to_have_value("")
    return mine


async def test_two_people_chat_both_ways_with_ticks(
    console_server: ServerProcess, tmp_path: Path
) -> None:
    chromium = browser_or_skip()
    from playwright.async_api import async_playwright, expect

    base = console_server.http_url
    watch = Watch()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            pages = {}
            for name, width in (("alice", 1024), ("bob", 360)):
                context = await browser.new_context(viewport={"width": width, "height": 740})
                page = await context.new_page()
                watch.page(page, name)
                pages[name] = page
            alice, bob = pages["alice"], pages["bob"]

            # a wrong password: the page says why, and stays on the sign-in form
            await alice.goto(f"{base}/")
            await alice.locator("#name").fill("alice")
            await alice.locator("#password").fill("wrong")
            await alice.locator("#password").press("Enter")
            await expect(alice.locator("#sign-in-status")).to_contain_text("Could not sign in")
            await expect(alice.locator("#chat-view")).to_be_hidden()

            await sign_in(alice, base, "alice", tmp_path)
            await sign_in(bob, base, "bob", tmp_path)

            # alice opens a chat with bob (keyboard: type the name, Enter) and writes
            await alice.keyboard.type("bob")
            await alice.keyboard.press("Enter")
            await expect(alice.locator("#conversation-title")).to_have_text(
                "Chat with bob@localhost"
            )
            await expect(alice.locator("#text")).to_be_focused()
            first = await say(alice, "Hello bob <b>not bold</b>")
            await expect(first.locator(".ticks")).to_have_attribute("data-ticks", "2")
            await expect(first.locator(".ticks")).to_have_text("✓✓")

            # bob sees it live, in a conversation with alice that opened itself (unread)
            peer = bob.locator("#peer-list button", has_text="alice@localhost")
            await expect(peer).to_contain_text("1")
            await peer.click()
            theirs = bob.locator("li.message.theirs")
            await expect(theirs).to_have_text(["Hello bob <b>not bold</b>"])
            assert await bob.locator("li.message b").count() == 0  # text, never markup
            reply = await say(bob, "Hi alice, got it")
            await expect(reply.locator(".ticks")).to_have_attribute("data-ticks", "2")

            await expect(alice.locator("li.message.theirs")).to_have_text(["Hi alice, got it"])
            second = await say(alice, "Great, two ticks each way")
            await expect(second.locator(".ticks")).to_have_attribute("data-ticks", "2")
            await expect(bob.locator("li.message.theirs")).to_have_text(
                ["Hello bob <b>not bold</b>", "Great, two ticks each way"]
            )

            # at 360 px nothing overflows sideways
            overflow = await bob.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0
            for name, page in pages.items():
                await page.screenshot(path=str(tmp_path / f"{name}-chat.png"), full_page=True)

            # bob signs out: alice's next message is accepted (one tick) and waits for him;
            # when he signs in again it is delivered, and her tick becomes two
            await bob.locator("#sign-out").click()
            await expect(bob.locator("#sign-in-view")).to_be_visible()
            waiting = await say(alice, "While you were away")
            await expect(waiting.locator(".ticks")).to_have_attribute("data-ticks", "1")
            await expect(waiting.locator(".ticks")).to_have_text("✓")
            await sign_in(bob, base, "bob", tmp_path)
            peer = bob.locator("#peer-list button", has_text="alice@localhost")
            await peer.click()
            await expect(bob.locator("li.message.theirs")).to_have_text(["While you were away"])
            await expect(waiting.locator(".ticks")).to_have_attribute("data-ticks", "2")

            # sign out: back to the sign-in form, the session finished
            for name, page in pages.items():
                await page.locator("#sign-out").click()
                await expect(page.locator("#sign-in-view")).to_be_visible()
                await expect(page.locator("#sign-in-status")).to_have_text("")
                await page.screenshot(path=str(tmp_path / f"{name}-signed-out.png"))

            # a second tab of alice's browser (same instance) takes her session over: the
            # first tab goes back to the sign-in form and says why
            await sign_in(alice, base, "alice", tmp_path)
            second_tab = await alice.context.new_page()
            watch.page(second_tab, "alice 2")
            await sign_in(second_tab, base, "alice", tmp_path)
            await expect(alice.locator("#sign-in-status")).to_contain_text("taken over")
            await expect(alice.locator("#sign-in-status")).to_contain_text("(12)")
        finally:
            await browser.close()
    assert watch.errors == []
    shots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(shots) == 6 and all(re.fullmatch(r"\w+-[\w-]+\.png", s) for s in shots)
