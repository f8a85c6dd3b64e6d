"""An identity's named sessions are bounded (a new one beyond max_sessions_per_identity is
refused, never silently), and only the identity itself creates them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

TOKEN = "limit-token"


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("bounded")
    config = data_dir / "tidings.toml"
    config.write_text("max_sessions_per_identity = 2\n")
    process = ServerProcess(
        data_dir, args=["--allow-guests", "--config", str(config), "--api-token", TOKEN]
    )
    process.start()
    yield process
    process.stop()


def someone() -> str:
    return f"guest-{uuid.uuid4().hex[:10]}@localhost"


async def test_a_session_beyond_the_bound_fails_with_34_and_the_others_go_on(bounded):
    identity = someone()
    a = await WireClient.guest(bounded.ws_url, f"{identity}/a")
    b = await WireClient.guest(bounded.ws_url, f"{identity}/b")
    third = await (await WireClient.connect(bounded.ws_url)).establish(
        f"{identity}/c", scheme="guest"
    )
    assert third["state"] == "failed"
    assert third["reason"]["code"] == 34 and "2 sessions" in third["reason"]["description"]
    await a.finish()
    await WireClient.guest(bounded.ws_url, f"{identity}/a")  # an existing name is fine
    assert (await b.command(id="p", method="get", uri="/ping"))["status"] == "success"


async def test_a_message_of_its_own_to_a_new_node_beyond_the_bound_fails_with_34(bounded):
    target = someone()
    a = await WireClient.guest(bounded.ws_url, f"{target}/a")
    await WireClient.guest(bounded.ws_url, f"{target}/b")
    await a.set_receipt("accepted")
    a.send({"id": "m1", "to": f"{target}/zzz", "type": "text/plain", "content": "hi"})
    failed = await a.expect(lambda e: e.get("id") == "m1" and e.get("event") == "failed")
    assert failed["reason"]["code"] == 34
    a.send({"id": "m2", "to": f"{target}/b", "type": "text/plain", "content": "hi"})
    accepted = await a.expect(lambda e: e.get("id") == "m2" and "event" in e)
    assert accepted["event"] == "accepted"


async def test_others_cannot_create_sessions_and_the_owner_is_never_locked_out(bounded):
    """A message from another identity to a node its owner never created goes where a message
    to the identity goes and creates nothing: a flood of them leaves the owner's quota alone."""
    target = someone()
    a = await WireClient.guest(bounded.ws_url, f"{target}/a")
    sender = await WireClient.guest(bounded.ws_url, f"{someone()}/s")
    await sender.set_receipt("accepted")
    for n in range(20):
        sender.send(
            {"id": f"j{n}", "to": f"{target}/junk{n}", "type": "text/plain", "content": "x"}
        )
    for n in range(20):
        answer = await sender.expect(lambda e, i=f"j{n}": e.get("id") == i and "event" in e)
        assert answer["event"] == "accepted", answer
        assert (await a.expect(lambda e, i=f"j{n}": e.get("id") == i))["to"] == f"{target}/junk{n}"
    phone = await WireClient.guest(bounded.ws_url, f"{target}/phone")  # the owner's 2nd device
    listed = await phone.command(id="l", method="get", uri="/sessions")
    assert sorted(i["name"] for i in listed["resource"]["items"]) == ["a", "phone"]
    sender.send({"id": "ok", "to": f"{target}/phone", "type": "text/plain", "content": "hi"})
    assert (await sender.expect(lambda e: e.get("id") == "ok"))["event"] == "accepted"
    assert (await phone.expect(lambda e: e.get("id") == "ok"))["content"] == "hi"


async def test_http_notify_to_a_new_session_beyond_the_bound_is_refused(bounded):
    target = someone()
    await WireClient.guest(bounded.ws_url, f"{target}/a")
    await WireClient.guest(bounded.ws_url, f"{target}/b")
    async with httpx.AsyncClient(base_url=bounded.http_url) as http:
        response = await http.post(
            f"/identities/{target}/notifications",
            json={"content": {"n": 1}, "session": "c"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 202, response.text
    outcome = response.json()
    assert outcome["sessions"] == []
    assert outcome["refused"][0]["session"] == "c"
    assert outcome["refused"][0]["error_id"] == "session-limit"


async def test_a_notification_to_an_unknown_node_of_a_full_identity_harms_nothing(bounded):
    """It names no session (a notification never creates a queue), and the messages committed
    with it in the same batch are still accepted and delivered."""
    target = someone()
    receiver = await WireClient.guest(bounded.ws_url, f"{target}/a")
    await WireClient.guest(bounded.ws_url, f"{target}/b")
    sender = await WireClient.guest(bounded.ws_url, f"{someone()}/s")
    await sender.set_receipt("accepted")
    sender.send({"id": "x", "to": f"{target}/c", "event": "received"})
    sender.send({"id": "m1", "to": f"{target}/a", "type": "text/plain", "content": "hi"})
    accepted = await sender.expect(lambda e: e.get("id") == "m1" and "event" in e)
    assert accepted["event"] == "accepted"
    delivered = await receiver.expect(lambda e: e.get("id") == "m1")
    assert delivered["content"] == "hi"
    listed = await receiver.command(id="l", method="get", uri="/sessions")
    assert sorted(i["name"] for i in listed["resource"]["items"]) == ["a", "b"]


async def test_a_notification_never_creates_a_session(bounded):
    target = someone()
    receiver = await WireClient.guest(bounded.ws_url, f"{target}/a")
    sender = await WireClient.guest(bounded.ws_url, f"{someone()}/s")
    await sender.set_receipt("accepted")
    sender.send({"id": "x", "to": f"{target}/ghost", "event": "received"})
    sender.send({"id": "m", "to": f"{target}/a", "type": "text/plain", "content": "after"})
    # accepted comes from a later commit: the notification has been handled by then
    assert (await sender.expect(lambda e: e.get("id") == "m"))["event"] == "accepted"
    listed = await receiver.command(id="l", method="get", uri="/sessions")
    assert [i["name"] for i in listed["resource"]["items"]] == ["a"]
