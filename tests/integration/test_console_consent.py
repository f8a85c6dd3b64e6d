"""The consent view of the web console in a real browser (Debian's chromium through
Playwright) on a real ``tidings serve``: alice (the SDK) creates invites; bob, signed in to the
console, opens one by pasting its capability link and accepts it, and refuses another opened
with ``#offer=<url>``; the relationship shows; chat goes both ways live; an alert that needs an
acknowledgement shows, bob acknowledges it with the keyboard and alice's inbox sees the ack.
With both sides in the browser: carol makes an invite and invalidates another, dan accepts
through the link, carol asks for a new scope, dan accepts it, carol revokes, both see it.
A console error or an uncaught page error fails the test; screenshots go to tmp_path."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from tests.integration.browser_support import CHROMIUM_FLAGS, Watch, browser_or_skip
from tests.server_process import ServerProcess, running

from tidings.sdk import Client, InboxEvent

pytestmark = pytest.mark.integration

STEP = 15.0
MARKUP = "Cardio <b>study</b>"


@pytest.fixture(scope="module")
def consent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("console-consent"))
    process.add_accounts({name: f"{name}-pw" for name in ("alice", "bob", "carol", "dan")})
    with running(process):
        yield process


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


async def sign_in(page: Any, base: str, hash_part: str = "", name: str = "bob") -> None:
    from playwright.async_api import expect

    await page.goto(f"{base}/{hash_part}")
    await expect(page.locator("#domain-suffix")).to_have_text("@localhost")
    await expect(page.locator("#name")).to_be_focused()
    await page.keyboard.type(name)
    await page.keyboard.press("Tab")
    await page.keyboard.type(f"{name}-pw")
    await page.keyboard.press("Enter")
    await expect(page.locator("#whoami")).to_have_text(f"Signed in as {name}@localhost")


async def open_consent(page: Any) -> None:
    """The Consent tab, with the keyboard."""
    from playwright.async_api import expect

    await page.locator("#show-consent").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#consent-view")).to_be_visible()
    await expect(page.locator("#consent-title")).to_be_focused()


async def no_sideways_overflow(page: Any) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0


async def test_bob_accepts_an_offer_chats_and_acknowledges_an_alert(
    consent_server: ServerProcess, tmp_path: Path
) -> None:
    chromium = browser_or_skip()
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
                # an inbox event re-renders the relationship (and its alerts) under bob's
                # focus: the focus stays on the same Acknowledge button
                await alice.consent.request_scope_update(
                    relationship["id"], [{"resource": "account", "level": "read"}]
                )
                await expect(page.locator("#scope-requests li.scope-request")).to_have_count(1)
                await expect(ack).to_be_focused()
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


async def test_invite_scope_change_and_revocation_between_two_consoles(
    consent_server: ServerProcess, tmp_path: Path
) -> None:
    """Both sides in the browser at 360 px. Carol creates an invite with the keyboard and gets
    its capability link; a second one she invalidates. Dan opens the link (#offer=) and
    accepts; carol's invite shows accepted by dan, live. Carol (the requester: the server
    lets only the requester ask for a new scope, and only the accepter decide) asks for
    another permission set; dan sees the pending request and accepts it with the keyboard;
    both see the new permissions. Carol revokes; both see the relationship revoked (and chat
    closed), with who revoked it and why. No console or page error, no sideways overflow."""
    chromium = browser_or_skip()
    from playwright.async_api import async_playwright, expect

    base = consent_server.http_url
    watch = Watch()
    carol_sdk = Client(
        consent_server.ws_url, "carol@localhost", instance="sdk", password="carol-pw"
    )
    async with carol_sdk, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            small = {"viewport": {"width": 360, "height": 740}}
            carol = await (await browser.new_context(**small)).new_page()
            watch.page(carol, "carol")
            await sign_in(carol, base, name="carol")
            await open_consent(carol)
            await expect(carol.locator("#invite-list")).to_have_text("No invites yet.")

            # the invite form, with the keyboard only
            await carol.locator("#invite-app").focus()
            await carol.keyboard.type("sleep-lab")
            for text in ("Sleep <b>lab</b>", "We read your presence at night."):
                await carol.keyboard.press("Tab")  # past the hint (not focusable)
                await carol.keyboard.type(text)
            await carol.keyboard.press("Tab")
            await expect(carol.locator("#invite-permissions")).to_be_focused()
            await expect(carol.locator("#invite-permissions")).to_have_value("presence:read")
            await carol.keyboard.press("Enter")
            link = carol.locator("#invite-url")
            await expect(link).to_be_focused()
            await expect(link).to_have_value(re.compile(r"^http://.+/consent/offers/[\w-]{43}$"))
            url = await link.input_value()
            mine = carol.locator("#invite-list li.invite")
            await expect(mine).to_have_count(1)
            await expect(mine.first).to_contain_text("Sleep <b>lab</b>")
            await expect(mine.first).to_contain_text("(sleep-lab, single-use) pending")
            await expect(mine.first).to_contain_text("presence: read")
            assert await carol.locator("#invite-list b").count() == 0
            await carol.locator("#invite-copy").click()
            await expect(carol.locator("#invite-status")).to_contain_text(
                re.compile("Link copied|copy it with Ctrl")
            )
            (made,) = await carol_sdk.consent.list_invites()
            assert (made["appCode"], made["status"]) == ("sleep-lab", "pending")

            # a second invite, invalidated from the list
            await carol.locator("#invite-app").fill("spare")
            await carol.locator("#invite-name").fill("Spare invite")
            await carol.locator("#invite-consent").fill("Nothing.")
            await carol.locator("#invite-mode").select_option("open-link")
            await carol.locator("#invite-create").click()
            spare = carol.locator("#invite-list li.invite", has_text="Spare invite")
            await expect(spare).to_contain_text("(spare, open-link) pending")
            await spare.locator("button.invalidate").focus()
            await carol.keyboard.press("Enter")
            await expect(spare).to_contain_text("invalidated")
            await expect(spare.locator("button.invalidate")).to_have_count(0)
            await expect(carol.locator("#invites-title")).to_be_focused()
            await no_sideways_overflow(carol)
            await carol.screenshot(path=str(tmp_path / "consent-invites.png"), full_page=True)

            # dan opens the link and accepts
            dan = await (await browser.new_context(**small)).new_page()
            watch.page(dan, "dan")
            await sign_in(dan, base, f"#offer={quote(url, safe='')}", name="dan")
            await expect(dan.locator("#offer-title")).to_have_text("Sleep <b>lab</b>")
            await expect(dan.locator("#offer-details")).to_contain_text("carol@localhost")
            await dan.locator("#offer-accept").focus()
            await dan.keyboard.press("Enter")
            await expect(dan.locator("#relationship-title")).to_have_text(
                "sleep-lab with carol@localhost"
            )
            invite = carol.locator("#invite-list li.invite", has_text="Sleep <b>lab</b>")
            await expect(invite).to_contain_text("accepted")
            await expect(invite).to_contain_text("Accepted by dan@localhost")
            await expect(invite.locator("button.invalidate")).to_have_count(0)
            (relationship,) = [
                r
                for r in await carol_sdk.consent.list_relationships()
                if r["appCode"] == "sleep-lab"
            ]
            rel_id = relationship["id"]
            assert relationship["accepter"] == "dan@localhost"

            # carol asks for another permission set
            carol_button = carol.locator(f'#relationship-list button[data-id="{rel_id}"]')
            await expect(carol_button).to_contain_text("sleep-lab with dan@localhost (active)")
            await carol_button.click()
            await expect(carol.locator("#relationship-facts")).to_contain_text(
                "Permissions: presence: read"
            )
            await expect(carol.locator("#scope-form")).to_be_visible()
            await expect(carol.locator("#scope-permissions")).to_have_value("presence:read")
            await carol.locator("#scope-permissions").fill("presence:read, account:read")
            await carol.locator("#scope-message").fill("Also your <i>account</i>, please.")
            await carol.locator("#scope-message").press("Enter")
            asked = carol.locator("#scope-requests li.scope-request")
            await expect(asked).to_have_count(1)
            await expect(asked).to_contain_text("account: read")
            await expect(asked).to_contain_text("(pending)")
            await expect(asked).to_contain_text("Waiting for dan@localhost")
            await expect(asked.locator("button")).to_have_count(0)

            # dan sees it (live), and accepts it with the keyboard; he cannot ask himself
            pending = dan.locator("#scope-requests li.scope-request")
            await expect(pending).to_contain_text("presence: read, account: read (pending)")
            await expect(pending).to_contain_text("Also your <i>account</i>, please.")
            assert await dan.locator("#scope-requests i").count() == 0
            await expect(dan.locator("#scope-form")).to_be_hidden()
            await pending.locator("button.scope-accept").focus()
            await dan.keyboard.press("Enter")
            await expect(pending).to_contain_text("(accepted)")
            await expect(pending.locator("button")).to_have_count(0)
            await expect(dan.locator("#relationship-title")).to_be_focused()
            for page in (carol, dan):
                await expect(page.locator("#relationship-facts")).to_contain_text(
                    "Permissions: presence: read, account: read"
                )
            await expect(asked).to_contain_text("(accepted)")
            await expect(dan.locator("#inbox")).to_contain_text("Permission request accepted")
            after = await carol_sdk.consent.get_relationship(rel_id)
            assert sorted(p["resource"] for p in after["permissions"]) == ["account", "presence"]
            await no_sideways_overflow(dan)
            await dan.screenshot(path=str(tmp_path / "consent-scope.png"), full_page=True)

            # carol revokes (Revoke…, a reason, Enter); both see it
            await carol.locator("#relationship-revoke").focus()
            await carol.keyboard.press("Enter")
            await expect(carol.locator("#revoke-reason")).to_be_focused()
            await carol.keyboard.type("Study over")
            await carol.keyboard.press("Enter")
            await expect(carol.locator("#relationship-status")).to_have_text("Revoked.")
            for page in (carol, dan):
                button = page.locator(f'#relationship-list button[data-id="{rel_id}"]')
                await expect(button).to_contain_text("(revoked)")
                await expect(page.locator("#relationship-facts")).to_contain_text(
                    "Revoked by carol@localhost: Study over"
                )
                await expect(page.locator("#relationship-revoke")).to_be_hidden()
                await expect(page.locator("#consent-text")).to_be_disabled()
                await expect(page.locator("#inbox")).to_contain_text(
                    "Relationship revoked by carol@localhost"
                )
            await expect(carol.locator("#scope-form")).to_be_hidden()
            revoked = await carol_sdk.consent.get_relationship(rel_id)
            assert revoked["state"] == "revoked" and revoked["revokedBy"] == "carol@localhost"
            for page, who in ((carol, "carol"), (dan, "dan")):
                await no_sideways_overflow(page)
                await page.screenshot(
                    path=str(tmp_path / f"consent-revoked-{who}.png"), full_page=True
                )
        finally:
            await browser.close()
    assert watch.errors == []
    assert len(list(tmp_path.glob("consent-*.png"))) == 4
