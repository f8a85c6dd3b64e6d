"""Consent through the SDK (``client.consent``) and the CLI against a real ``tidings serve``:
the handshake with ``wait_for_accept``, chat both ways (with the chat LIME message in
``messages()``), alert + ack, scope updates, revoke, the live inbox, ``ConsentError`` with the
exact error id, and the ``tidings invite`` / ``relationships`` / ``chat`` commands."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from tests.server_process import TIDINGS, ServerProcess

from tidings.sdk import Client, Consent, ConsentError, InboxEvent, InviteRefused

pytestmark = pytest.mark.integration

STEP = 10.0
PRESENCE_READ = {"resource": "presence", "level": "read"}
ACCOUNT_READ = {"resource": "account", "level": "read"}
NAMES = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def consent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("tidings-consent"))
    server.add_accounts({name: f"{name}-pw" for name in NAMES})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client(server: ServerProcess, name: str, instance: str = "sdk") -> Client:
    return Client(server.ws_url, f"{name}@localhost", instance=instance, password=f"{name}-pw")


async def invite_of(alice: Client, **kwargs: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "app_code": "cardio",
        "display_name": "Cardio study",
        "consent": {"en": "We read your presence."},
        "permissions": [PRESENCE_READ],
        **kwargs,
    }
    return await alice.consent.create_invite(**arguments)


async def next_of(inbox: Any, kind: str) -> InboxEvent:
    async with asyncio.timeout(STEP):
        async for event in inbox:
            if event.kind == kind:
                return event  # type: ignore[no-any-return]
    raise AssertionError(f"the inbox ended before a {kind!r} event")


async def test_the_whole_handshake_through_the_sdk(consent_server: ServerProcess) -> None:
    async with client(consent_server, "alice") as alice, client(consent_server, "bob") as bob:
        invite = await invite_of(alice)
        waiting = asyncio.ensure_future(alice.consent.wait_for_accept(invite["id"], timeout=STEP))
        offer = await bob.consent.read_offer(invite["capabilityUrl"])
        assert offer["requester"] == "alice@localhost"
        assert offer["consent"] == {"en": "We read your presence."}
        relationship = await bob.consent.accept_invite(invite["capabilityUrl"])
        waited = await waiting
        assert waited["id"] == relationship["id"]
        assert waited["accepter"] == "bob@localhost"
        rel = relationship["id"]
        status = await alice.consent.get_invite_status(invite["id"])
        assert status["status"] == "accepted"
        assert rel in [r["id"] for r in await alice.consent.list_relationships()]
        assert invite["id"] in [i["id"] for i in await alice.consent.list_invites()]

        async with bob.consent.inbox(since=None) as bob_inbox:
            await bob_inbox.subscribe()
            sent = await alice.consent.send_chat(rel, "hi bob")
            assert (await next_of(bob_inbox, "chat")).data
            async with asyncio.timeout(STEP):
                message = await anext(aiter(bob.messages()))
            assert message.type == Consent.CHAT_TYPE
            assert message.sender == "alice@localhost"
            assert message.content["text"] == "hi bob"
            assert message.content["seq"] == sent["seq"]
            await bob.consent.send_chat(rel, "hi alice")
            async with asyncio.timeout(STEP):
                back = await anext(aiter(alice.messages()))
            assert (back.sender, back.content["text"]) == ("bob@localhost", "hi alice")
            history = await bob.consent.chat_history(rel)
            assert [m["text"] for m in history] == ["hi bob", "hi alice"]

            alert = await alice.consent.send_system_alert(
                rel,
                level="warning",
                title={"en": "Battery"},
                body={"en": "Low"},
                ack_required=True,
                ack_id="b1",
            )
            await next_of(bob_inbox, "alert")
            acked = await bob.consent.send_system_ack(alert["id"], "b1")
            assert acked["ackedBy"] == "bob@localhost"

            asked = await alice.consent.request_scope_update(rel, [PRESENCE_READ, ACCOUNT_READ])
            await next_of(bob_inbox, "scope-requested")
            assert (await bob.consent.accept_scope_update(asked["id"]))["state"] == "accepted"
            assert (await alice.consent.get_relationship(rel))["permissions"] == [
                PRESENCE_READ,
                ACCOUNT_READ,
            ]
            asked = await alice.consent.request_scope_update(rel, [PRESENCE_READ])
            assert (await bob.consent.refuse_scope_update(asked["id"]))["state"] == "refused"
            assert len((await alice.consent.get_relationship(rel))["permissions"]) == 2

            revoked = await alice.consent.revoke_relationship(rel, reason="study over")
            assert revoked["state"] == "revoked"
            await next_of(bob_inbox, "relationship-revoked")
        with pytest.raises(ConsentError) as refused:
            await bob.consent.send_chat(rel, "hello?")
        assert refused.value.error_id == "cmc-relationship-revoked"


async def test_the_live_inbox_replays_then_follows(consent_server: ServerProcess) -> None:
    async with client(consent_server, "alice", "inbox") as alice:
        before = await alice.consent.events(since=0, limit=1000)
        cursor = before[-1].seq if before else 0
        first = await invite_of(alice)
        async with alice.consent.inbox(since=cursor) as inbox:
            replayed = await next_of(inbox, "invite-created")
            assert replayed.data["inviteId"] == first["id"]
            second = await invite_of(alice)
            live = await next_of(inbox, "invite-created")
            assert live.data["inviteId"] == second["id"]
            assert live.seq > replayed.seq


async def test_errors_arrive_as_consent_errors_with_the_exact_id(
    consent_server: ServerProcess,
) -> None:
    async with (
        client(consent_server, "alice", "errors") as alice,
        client(consent_server, "bob", "errors") as bob,
        client(consent_server, "carol", "errors") as carol,
    ):
        invite = await invite_of(alice, features={"chat": False, "systemMessaging": False})
        url = invite["capabilityUrl"]
        with pytest.raises(ConsentError) as own:
            await alice.consent.accept_invite(url)
        assert own.value.error_id == "cmc-own-invite"
        relationship = await bob.consent.accept_invite(url)
        with pytest.raises(ConsentError) as consumed:
            await carol.consent.accept_invite(url)
        assert consumed.value.error_id == "cmc-capability-consumed"
        assert consumed.value.code != 0
        assert not consumed.value.description.startswith("cmc-")
        with pytest.raises(ConsentError) as no_chat:
            await alice.consent.send_chat(relationship["id"], "hi")
        assert no_chat.value.error_id == "cmc-chat-disabled"
        with pytest.raises(ConsentError) as no_alerts:
            await alice.consent.send_system_alert(
                relationship["id"], level="info", title={"en": "t"}, body={"en": "b"}
            )
        assert no_alerts.value.error_id == "cmc-system-messaging-disabled"
        with pytest.raises(ConsentError) as too_short:
            await invite_of(alice, expires_at=0)
        assert too_short.value.error_id == "cmc-capability-ttl-out-of-range"
        with pytest.raises(ConsentError) as invalid:
            await bob.consent.read_offer("not-a-token")
        assert invalid.value.error_id == "cmc-capability-invalid"

        closed = await invite_of(alice, mode="open-link")
        await alice.consent.invalidate_capability(closed["id"])
        with pytest.raises(ConsentError) as invalidated:
            await bob.consent.accept_invite(closed["capabilityUrl"])
        assert invalidated.value.error_id == "cmc-capability-invalidated"
        with pytest.raises(ConsentError) as waited:
            await alice.consent.wait_for_accept(closed["id"], timeout=STEP)
        assert waited.value.error_id == "cmc-capability-invalidated"

        refused = await invite_of(alice)
        await carol.consent.refuse_invite(refused["capabilityUrl"], reason="no")
        with pytest.raises(InviteRefused) as told:
            await alice.consent.wait_for_accept(refused["id"], timeout=STEP)
        assert (told.value.by, told.value.reason) == ("carol@localhost", "no")


# -- the command line -------------------------------------------------------------------------


def tidings(server: ServerProcess, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TIDINGS, *args, "--as", name, "--password", f"{name}-pw", "--url", server.ws_url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_cli_invite_accept_list_show_chat_invalidate(consent_server: ServerProcess) -> None:
    created = json_out(
        tidings(
            consent_server,
            "alice",
            "invite",
            "create",
            "--app-code",
            "cli-app",
            "--display-name",
            "From the CLI",
            "--consent",
            "en=Share your presence",
            "--consent",
            "fr=Partagez votre présence",
            "--permission",
            "presence=read",
        )
    )
    assert created["consent"] == {"en": "Share your presence", "fr": "Partagez votre présence"}
    assert created["requestedPermissions"] == [PRESENCE_READ]
    relationship = json_out(
        tidings(consent_server, "bob", "invite", "accept", created["capabilityUrl"])
    )
    assert relationship["requester"] == "alice@localhost"

    listed = tidings(consent_server, "alice", "invite", "list")
    assert listed.returncode == 0, listed.stderr
    ids = [json.loads(line)["id"] for line in listed.stdout.splitlines()]
    assert created["id"] in ids
    shown = json_out(tidings(consent_server, "alice", "invite", "show", created["id"]))
    assert shown["status"] == "accepted"
    assert shown["acceptedBy"][0]["identity"] == "bob@localhost"

    relationships = tidings(consent_server, "bob", "relationships")
    assert relationships.returncode == 0, relationships.stderr
    assert relationship["id"] in [
        json.loads(line)["id"] for line in relationships.stdout.splitlines()
    ]
    chatted = json_out(tidings(consent_server, "bob", "chat", relationship["id"], "hi from cli"))
    assert chatted["text"] == "hi from cli"
    assert chatted["sender"] == "bob@localhost"

    again = tidings(consent_server, "carol", "invite", "accept", created["capabilityUrl"])
    assert again.returncode == 1
    assert "cmc-capability-consumed" in again.stderr

    link = json_out(
        tidings(
            consent_server,
            "alice",
            "invite",
            "create",
            "--app-code",
            "cli-app",
            "--display-name",
            "Open",
            "--consent",
            "Open link",
            "--permission",
            "presence=read",
            "--mode",
            "open-link",
        )
    )
    invalidated = json_out(
        tidings(consent_server, "alice", "invite", "invalidate", link["id"], "--reason", "done")
    )
    assert invalidated["status"] == "invalidated"
    late = tidings(consent_server, "carol", "invite", "accept", link["capabilityUrl"])
    assert late.returncode == 1
    assert "cmc-capability-invalidated" in late.stderr
    refused = tidings(consent_server, "carol", "invite", "refuse", link["capabilityUrl"])
    assert refused.returncode == 1


def test_cli_paths_exist() -> None:
    for args in (["invite", "--help"], ["relationships", "--help"], ["chat", "--help"]):
        shown = subprocess.run([*TIDINGS, *args], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
