"""The LIME server end to end: a real ``tidings serve`` process, raw JSON over WebSocket."""

from __future__ import annotations

import uuid

import httpx
import pytest
from tests.integration.conftest import PASSWORDS
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration


async def login(server: ServerProcess, node: str, **credentials: str) -> WireClient:
    client = await WireClient.connect(server.ws_url)
    name = node.partition("@")[0]
    if not credentials and name in PASSWORDS:
        credentials = {"password": PASSWORDS[name]}
    session = await client.establish(node, **credentials)
    assert session["state"] == "established", session
    return client


PRESENCE_TYPE = "application/vnd.lime.presence+json"


def text(to: str, content: str, message_id: str | None = None) -> dict[str, object]:
    message: dict[str, object] = {"to": to, "type": "text/plain", "content": content}
    if message_id is not None:
        message["id"] = message_id
    return message


def new_id() -> str:
    return str(uuid.uuid4())


class TestSessions:
    async def test_plain_session_is_established_with_the_full_node(self, server: ServerProcess):
        client = await WireClient.connect(server.ws_url)
        session = await client.establish("alice@localhost/laptop", password="alice-pw")
        assert session["state"] == "established"
        assert session["to"] == "alice@localhost/laptop"
        assert session["from"] == "postmaster@localhost/server"
        assert session["id"] == client.session_id
        finished = await client.finish()
        assert finished == {
            "id": client.session_id,
            "from": "postmaster@localhost/server",
            "to": "alice@localhost/laptop",
            "state": "finished",
        }

    @pytest.mark.parametrize("node", ["alice@localhost", "alice@localhost/undefined"])
    async def test_missing_or_undefined_instance_becomes_default(self, server, node):
        client = await WireClient.connect(server.ws_url)
        session = await client.establish(node, password="alice-pw")
        assert session["to"] == "alice@localhost/default"
        await client.finish()

    async def test_wrong_password_fails_with_13_and_closes(self, server):
        client = await WireClient.connect(server.ws_url)
        session = await client.establish("alice@localhost/x", password="wrong")
        assert session["state"] == "failed"
        assert session["reason"]["code"] == 13
        await client.closed()

    async def test_key_scheme_with_a_created_key(self, server):
        result = server.tidings("account", "key", "bob")
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        client = await WireClient.connect(server.ws_url)
        session = await client.establish("bob@localhost/keyed", key=key)
        assert session["state"] == "established"
        bad = await WireClient.connect(server.ws_url)
        refused = await bad.establish("bob@localhost/keyed2", key=key + "x")
        assert refused["reason"]["code"] == 13

    async def test_wrong_session_id_fails_with_11(self, server):
        client = await WireClient.connect(server.ws_url)
        client.send({"state": "new"})
        await client.expect(lambda e: e.get("state") == "authenticating")
        client.send({"id": "not-the-id", "state": "authenticating", "from": "a@localhost"})
        failed = await client.expect(lambda e: "state" in e)
        assert failed["state"] == "failed" and failed["reason"]["code"] == 11

    async def test_message_before_established_fails_with_15(self, server):
        client = await WireClient.connect(server.ws_url)
        client.send(text("bob@localhost", "too early", "m"))
        failed = await client.expect(lambda e: "state" in e)
        assert failed["state"] == "failed" and failed["reason"]["code"] == 15

    async def test_a_second_connection_takes_the_session_over(self, server, guest):
        first = await login(server, f"{guest}@localhost/phone", scheme="guest")
        await login(server, f"{guest}@localhost/phone", scheme="guest")
        failed = await first.expect(lambda e: "state" in e)
        assert failed["state"] == "failed" and failed["reason"]["code"] == 12

    async def test_without_subprotocol_the_upgrade_is_refused(self, server):
        with pytest.raises(Exception, match="400"):
            await WireClient.connect(server.ws_url, subprotocol="chat")


class TestRouting:
    async def test_message_to_a_node_carries_the_stamped_sender(self, server, guest):
        bob = await login(server, f"{guest}@localhost/desk", scheme="guest")
        alice = await login(server, "alice@localhost/r1")
        alice.send(text(f"{guest}@localhost/desk", "hi", "m-node"))
        received = await bob.expect_id("m-node")
        assert received["from"] == "alice@localhost/r1"
        assert received["to"] == f"{guest}@localhost/desk"
        assert received["content"] == "hi"

    async def test_to_without_domain_gets_the_senders_domain(self, server, guest):
        bob = await login(server, f"{guest}@localhost/desk", scheme="guest")
        alice = await login(server, "alice@localhost/r2")
        alice.send(text(f"{guest}/desk", "short form", "m-short"))
        received = await bob.expect_id("m-short")
        assert received["to"] == f"{guest}@localhost/desk"

    async def test_identity_address_reaches_every_identity_session(self, server, guest):
        phone = await login(server, f"{guest}@localhost/phone", scheme="guest")
        laptop = await login(server, f"{guest}@localhost/laptop", scheme="guest")
        alice = await login(server, "alice@localhost/r3")
        alice.send(text(f"{guest}@localhost", "to all", "m-all"))
        assert (await phone.expect_id("m-all"))["content"] == "to all"
        assert (await laptop.expect_id("m-all"))["content"] == "to all"

    async def test_instance_rule_skips_identity_addressed_messages(self, server, guest):
        only_mine = await login(server, f"{guest}@localhost/private", scheme="guest")
        response = await only_mine.command(
            id="p",
            method="set",
            uri="/presence",
            type="application/vnd.lime.presence+json",
            resource={"status": "available", "routingRule": "instance"},
        )
        assert response["status"] == "success"
        other = await login(server, f"{guest}@localhost/shared", scheme="guest")
        alice = await login(server, "alice@localhost/r4")
        alice.send(text(f"{guest}@localhost", "identity-wide", "m-id"))
        alice.send(text(f"{guest}@localhost/private", "direct", "m-direct"))
        assert (await other.expect_id("m-id"))["content"] == "identity-wide"
        first = await only_mine.expect(lambda e: "content" in e)
        assert first["id"] == "m-direct"

    async def test_promiscuous_session_sees_other_instances_messages(self, server, guest):
        watcher = await login(server, f"{guest}@localhost/watch", scheme="guest")
        await watcher.command(
            id="p",
            method="set",
            uri="/presence",
            type="application/vnd.lime.presence+json",
            resource={"status": "available", "routingRule": "promiscuous"},
        )
        await login(server, f"{guest}@localhost/tv", scheme="guest")
        alice = await login(server, "alice@localhost/r5")
        alice.send(text(f"{guest}@localhost/tv", "for the tv", "m-tv"))
        assert (await watcher.expect_id("m-tv"))["content"] == "for the tv"

    async def test_unknown_account_fails_with_42(self, server):
        alice = await login(server, "alice@localhost/r6")
        alice.send(text("nobody-here@localhost", "hello?", "m-42"))
        failed = await alice.expect_id("m-42", event="failed")
        assert failed["reason"]["code"] == 42
        assert failed["to"] == "alice@localhost/r6"

    async def test_other_domain_fails_with_42(self, server):
        alice = await login(server, "alice@localhost/r7")
        alice.send(text("bob@elsewhere.example", "hello?", "m-dom"))
        failed = await alice.expect_id("m-dom", event="failed")
        assert failed["reason"]["code"] == 42

    @pytest.mark.parametrize(
        ("content_type", "content"),
        [
            ("application/json", {"nested": [1, 2.5, None, "x"], "ü": True}),
            ("application/vnd.lime.chatstate+json", {"state": "composing"}),
            ("image/png", "iVBORw0KGgoAAAANSUhEUgAAAAE="),
        ],
    )
    async def test_contents_pass_through_untouched(self, server, guest, content_type, content):
        bob = await login(server, f"{guest}@localhost/desk", scheme="guest")
        alice = await login(server, "alice@localhost/r8")
        message_id = new_id()
        alice.send(
            {
                "id": message_id,
                "to": f"{guest}@localhost/desk",
                "type": content_type,
                "content": content,
            }
        )
        received = await bob.expect_id(message_id)
        assert received["type"] == content_type
        assert received["content"] == content


class TestNotifications:
    async def test_receipt_events_and_forwarded_received(self, server, guest):
        bob = await login(server, f"{guest}@localhost/desk", scheme="guest")
        alice = await login(server, "alice@localhost/n1")
        await alice.set_receipt("accepted", "dispatched")
        alice.send(text(f"{guest}@localhost/desk", "note", "m-n1"))
        accepted = await alice.expect_id("m-n1", event="accepted")
        assert accepted["from"] == "postmaster@localhost/server"
        await alice.expect_id("m-n1", event="dispatched")
        message = await bob.expect_id("m-n1")
        bob.send({"id": "m-n1", "to": message["from"], "event": "received"})
        received = await alice.expect_id("m-n1", event="received")
        assert received["from"] == f"{guest}@localhost/desk"

    async def test_without_receipt_only_failures_are_sent(self, server, guest):
        bob = await login(server, f"{guest}@localhost/desk", scheme="guest")
        alice = await login(server, "alice@localhost/n2")
        alice.send(text(f"{guest}@localhost/desk", "quiet", "m-n2"))
        await bob.expect_id("m-n2")
        alice.send(text("ghost@localhost", "x", "m-n2-fail"))
        failed = await alice.expect_id("m-n2-fail")
        assert failed["event"] == "failed"
        assert not [e for e in alice.held if e.get("id") == "m-n2"]

    async def test_get_receipt_reflects_the_set(self, server):
        alice = await login(server, "alice@localhost/n3")
        await alice.set_receipt("accepted")
        got = await alice.command(id="g", method="get", uri="/receipt")
        assert got["resource"] == {"events": ["accepted", "failed"]}


class TestOfflineDelivery:
    async def test_becoming_available_again_delivers_the_backlog_before_newer_messages(
        self, server, guest
    ):
        """A message committed while the session's presence change is being saved must wait
        behind the backlog, not overtake it (and push the replay cursor past it)."""
        bob = await login(server, f"{guest}@localhost/a", scheme="guest")
        presence = {"method": "set", "uri": "/presence", "type": PRESENCE_TYPE}
        away = await bob.command(id="p1", **presence, resource={"status": "unavailable"})
        assert away["status"] == "success"
        alice = await login(server, "alice@localhost/u1")
        await alice.set_receipt("accepted")
        alice.send(text(f"{guest}@localhost/a", "first", "u-1"))
        await alice.expect_id("u-1", event="accepted")
        back = {"status": "available", "routingRule": "promiscuous"}  # a rule change is saved
        bob.send({"id": "p2", **presence, "resource": back})
        alice.send(text(f"{guest}@localhost/a", "second", "u-2"))
        await alice.expect_id("u-2", event="accepted")
        got = [(await bob.expect(lambda e: "content" in e))["content"] for _ in range(2)]
        assert got == ["first", "second"]

    async def test_offline_recipient_gets_messages_in_order_on_connect(self, server, guest):
        seed = await login(server, f"{guest}@localhost/home", scheme="guest")
        seed.drop()
        alice = await login(server, "alice@localhost/o1")
        await alice.set_receipt("accepted")
        for n in range(5):
            alice.send(text(f"{guest}@localhost/home", f"#{n}", f"m-o1-{n}"))
        for n in range(5):
            await alice.expect_id(f"m-o1-{n}", event="accepted")
        bob = await login(server, f"{guest}@localhost/home", scheme="guest")
        got = [await bob.expect(lambda e: "content" in e) for _ in range(5)]
        assert [m["content"] for m in got] == [f"#{n}" for n in range(5)]

    async def test_unacknowledged_messages_are_redelivered_acknowledged_ones_not(
        self, server, guest
    ):
        bob = await login(server, f"{guest}@localhost/home", scheme="guest")
        alice = await login(server, "alice@localhost/o2")
        for n in range(3):
            alice.send(text(f"{guest}@localhost/home", f"#{n}", f"m-o2-{n}"))
        first = [await bob.expect(lambda e: "content" in e) for _ in range(3)]
        bob.send({"id": first[0]["id"], "to": first[0]["from"], "event": "received"})
        await alice.expect_id("m-o2-0", event="received")
        bob.drop()
        again = await login(server, f"{guest}@localhost/home", scheme="guest")
        redelivered = [await again.expect(lambda e: "content" in e) for _ in range(2)]
        assert [m["id"] for m in redelivered] == ["m-o2-1", "m-o2-2"]

    async def test_message_to_a_never_seen_identity_waits_for_its_first_session(self, server):
        result = server.tidings("account", "add", "dora", "--password", "dora-pw")
        assert result.returncode == 0, result.stderr
        alice = await login(server, "alice@localhost/o3")
        await alice.set_receipt("accepted")
        alice.send(text("dora@localhost", "welcome", "m-o3"))
        await alice.expect_id("m-o3", event="accepted")
        dora = await login(server, "dora@localhost/first", password="dora-pw")
        assert (await dora.expect_id("m-o3"))["content"] == "welcome"

    async def test_sender_duplicates_are_stored_once(self, server, guest):
        seed = await login(server, f"{guest}@localhost/home", scheme="guest")
        seed.drop()
        alice = await login(server, "alice@localhost/o4")
        await alice.set_receipt("accepted")
        for _ in range(3):
            alice.send(text(f"{guest}@localhost/home", "once", "m-o4"))
            await alice.expect_id("m-o4", event="accepted")
        alice.send(text(f"{guest}@localhost/home", "marker", "m-o4-end"))
        await alice.expect_id("m-o4-end", event="accepted")
        bob = await login(server, f"{guest}@localhost/home", scheme="guest")
        got = [await bob.expect(lambda e: "content" in e) for _ in range(2)]
        assert [m["id"] for m in got] == ["m-o4", "m-o4-end"]


class TestQueueLimits:
    async def test_full_queue_refuses_with_121(self, tmp_path):
        small = ServerProcess(tmp_path, args=["--allow-guests", "--queue-limit", "2"]).start()
        try:
            seed = await login(small, "full@localhost/home", scheme="guest")
            seed.drop()
            sender = await login(small, "sender@localhost/x", scheme="guest")
            await sender.set_receipt("accepted")
            for n in range(2):
                sender.send(text("full@localhost/home", "x", f"q{n}"))
                await sender.expect_id(f"q{n}", event="accepted")
            sender.send(text("full@localhost/home", "x", "q2"))
            failed = await sender.expect_id("q2", event="failed")
            assert failed["reason"]["code"] == 121
        finally:
            small.stop()


class TestCommands:
    async def test_ping(self, server):
        alice = await login(server, "alice@localhost/c1")
        response = await alice.command(id="ping-1", method="get", uri="/ping")
        assert response == {
            "id": "ping-1",
            "from": "postmaster@localhost/server",
            "to": "alice@localhost/c1",
            "method": "get",
            "status": "success",
            "type": "application/vnd.lime.ping+json",
            "resource": {},
        }

    @pytest.mark.parametrize(
        ("command", "code"),
        [
            ({"method": "get", "uri": "/groups"}, 62),
            ({"method": "delete", "uri": "/ping"}, 63),
            ({"method": "subscribe", "uri": "/account"}, 63),
            (
                {
                    "method": "set",
                    "uri": "/presence",
                    "type": "application/vnd.lime.presence+json",
                    "resource": {"status": "sleepy"},
                },
                64,
            ),
            (
                {
                    "method": "set",
                    "uri": "/contacts",
                    "type": "application/vnd.lime.contact+json",
                    "resource": {"name": "no identity"},
                },
                64,
            ),
            ({"method": "get", "uri": "/contacts/nobody@localhost"}, 67),
            ({"method": "get", "uri": "not-a-uri"}, 27),
        ],
    )
    async def test_failures_carry_the_reason_code(self, server, command, code):
        alice = await login(server, "alice@localhost/c2")
        response = await alice.command(id="bad", **command)
        assert response["status"] == "failure"
        assert response["reason"]["code"] == code
        assert "uri" not in response

    async def test_contacts_crud(self, server):
        carol = await login(server, "carol@localhost/c3")
        empty = await carol.command(id="1", method="get", uri="/contacts")
        assert empty["resource"] == {"itemType": "application/vnd.lime.contact+json", "items": []}
        added = await carol.command(
            id="2",
            method="set",
            uri="/contacts",
            type="application/vnd.lime.contact+json",
            resource={"identity": "alice@localhost", "name": "Alice"},
        )
        assert added["status"] == "success"
        merged = await carol.command(
            id="3",
            method="merge",
            uri="/contacts/alice@localhost",
            type="application/vnd.lime.contact+json",
            resource={"sharePresence": False},
        )
        assert merged["status"] == "success"
        one = await carol.command(id="4", method="get", uri="/contacts/alice@localhost")
        assert one["resource"] == {
            "identity": "alice@localhost",
            "name": "Alice",
            "sharePresence": False,
        }
        listed = await carol.command(id="5", method="get", uri="/contacts")
        assert listed["resource"]["total"] == 1
        gone = await carol.command(id="6", method="delete", uri="/contacts/alice@localhost")
        assert gone["status"] == "success"
        again = await carol.command(id="7", method="get", uri="/contacts/alice@localhost")
        assert again["reason"]["code"] == 67

    async def test_account_profile_and_password_change(self, server):
        result = server.tidings("account", "add", "erin", "--password", "erin-pw")
        assert result.returncode == 0, result.stderr
        erin = await login(server, "erin@localhost/c4", password="erin-pw")
        await erin.command(
            id="1",
            method="set",
            uri="/account",
            type="application/vnd.lime.account+json",
            resource={"fullName": "Erin E.", "email": "erin@example.org"},
        )
        await erin.command(
            id="2",
            method="merge",
            uri="/account",
            type="application/vnd.lime.account+json",
            resource={"city": "Lyon"},
        )
        got = await erin.command(id="3", method="get", uri="/account")
        assert got["resource"] == {
            "identity": "erin@localhost",
            "fullName": "Erin E.",
            "email": "erin@example.org",
            "city": "Lyon",
        }
        wrong = await erin.command(
            id="4",
            method="merge",
            uri="/account",
            type="application/vnd.lime.account+json",
            resource={"password": "bmV3", "oldPassword": "d3Jvbmc="},
        )
        assert wrong["status"] == "failure" and wrong["reason"]["code"] == 13
        changed = await erin.command(
            id="5",
            method="merge",
            uri="/account",
            type="application/vnd.lime.account+json",
            resource={"password": "new-pw", "oldPassword": "erin-pw"},
        )
        assert changed["status"] == "success"
        again = await WireClient.connect(server.ws_url)
        assert (await again.establish("erin@localhost/c5", password="new-pw"))["state"] == (
            "established"
        )

    async def test_presence_subscribe_gets_observe_gated_by_share_presence(self, server):
        bob = await login(server, "bob@localhost/p1")
        await bob.command(
            id="c",
            method="set",
            uri="/contacts",
            type="application/vnd.lime.contact+json",
            resource={"identity": "alice@localhost"},
        )
        alice = await login(server, "alice@localhost/p1")
        subscribed = await alice.command(
            id="s", method="subscribe", uri="lime://bob@localhost/presence"
        )
        assert subscribed["status"] == "success"
        first = await alice.expect(lambda e: e.get("method") == "observe")
        assert first["resource"]["instances"] == ["p1"], "another session of bob is still live"
        await bob.command(
            id="p",
            method="set",
            uri="/presence",
            type="application/vnd.lime.presence+json",
            resource={"status": "busy", "message": "in a meeting"},
        )
        observed = await alice.expect(
            lambda e: e.get("method") == "observe" and e["resource"].get("status") == "busy"
        )
        assert observed["uri"] == "lime://bob@localhost/presence"
        assert observed["type"] == "application/vnd.lime.presence+json"
        assert "id" not in observed and "status" not in observed
        carol = await login(server, "carol@localhost/p1")
        refused = await carol.command(
            id="s2", method="subscribe", uri="lime://bob@localhost/presence"
        )
        assert refused["status"] == "failure" and refused["reason"]["code"] == 35

    async def test_command_to_another_node_is_routed_and_answered(self, server, guest):
        bob = await login(server, f"{guest}@localhost/desk", scheme="guest")
        alice = await login(server, "alice@localhost/c6")
        alice.send({"id": "q1", "to": f"{guest}@localhost/desk", "method": "get", "uri": "/ping"})
        request = await bob.expect_id("q1")
        assert request["from"] == "alice@localhost/c6"
        bob.send(
            {
                "id": "q1",
                "to": request["from"],
                "method": "get",
                "status": "success",
                "type": "application/vnd.lime.ping+json",
                "resource": {},
            }
        )
        response = await alice.expect_id("q1", status="success")
        assert response["from"] == f"{guest}@localhost/desk"


class TestDelegation:
    async def test_pp_needs_a_delegation(self, server, guest):
        target = await login(server, f"{guest}@localhost/desk", scheme="guest")
        bob = await login(server, "bob@localhost/d1")
        bob.send(
            {
                "id": "d-1",
                "from": "alice@localhost",
                "to": f"{guest}@localhost/desk",
                "type": "text/plain",
                "content": "as alice",
            }
        )
        refused = await bob.expect_id("d-1", event="failed")
        assert refused["reason"]["code"] == 32
        alice = await login(server, "alice@localhost/d1")
        granted = await alice.command(
            id="g",
            method="set",
            uri="/delegations",
            type="application/vnd.lime.delegation+json",
            resource={"target": "bob@localhost"},
        )
        assert granted["status"] == "success"
        bob.send(
            {
                "id": "d-2",
                "from": "alice@localhost",
                "to": f"{guest}@localhost/desk",
                "type": "text/plain",
                "content": "as alice",
            }
        )
        delivered = await target.expect_id("d-2")
        assert delivered["from"] == "alice@localhost"
        assert delivered["pp"] == "bob@localhost/d1"
        revoked = await alice.command(id="r", method="delete", uri="/delegations/bob@localhost")
        assert revoked["status"] == "success"


class TestBadInput:
    async def test_invalid_json_fails_the_session_and_others_keep_working(self, server, guest):
        bob = await login(server, f"{guest}@localhost/desk", scheme="guest")
        mallory = await login(server, "carol@localhost/b1")
        mallory.send_raw(b"{not json")
        failed = await mallory.expect(lambda e: "state" in e)
        assert failed["state"] == "failed" and failed["reason"]["code"] == 21
        alice = await login(server, "alice@localhost/b1")
        alice.send(text(f"{guest}@localhost/desk", "still here", "m-b1"))
        assert (await bob.expect_id("m-b1"))["content"] == "still here"

    async def test_invalid_message_with_id_gets_failed_and_session_continues(self, server):
        alice = await login(server, "alice@localhost/b2")
        alice.send({"id": "bad-type", "to": "bob@localhost", "type": "no slash", "content": "x"})
        failed = await alice.expect_id("bad-type", event="failed")
        assert failed["reason"]["code"] == 23
        alice.send({"id": "bad-shape", "to": 5, "type": "text/plain", "content": "x"})
        failed = await alice.expect_id("bad-shape", event="failed")
        assert failed["reason"]["code"] == 21
        alice.send({"id": "bad-to", "to": "a@b@c", "type": "text/plain", "content": "x"})
        failed = await alice.expect_id("bad-to", event="failed")
        assert failed["reason"]["code"] == 26
        pong = await alice.command(id="after", method="get", uri="/ping")
        assert pong["status"] == "success"

    async def test_binary_frame_fails_the_session(self, server):
        alice = await login(server, "alice@localhost/b3")
        alice.send_raw(b"\x00\x01", binary=True)
        failed = await alice.expect(lambda e: "state" in e)
        assert failed["state"] == "failed" and failed["reason"]["code"] == 21

    async def test_oversized_envelope_fails_the_session(self, server):
        alice = await login(server, "alice@localhost/b4")
        alice.send(text("bob@localhost", "x" * (70 * 1024), "big"))
        failed = await alice.expect(lambda e: "state" in e)
        assert failed["state"] == "failed" and failed["reason"]["code"] == 21
        assert "limit" in failed["reason"]["description"]


class TestHttp:
    def test_healthz_and_metrics(self, server):
        assert httpx.get(f"{server.http_url}/healthz").json()["status"] == "ok"
        metrics = httpx.get(f"{server.http_url}/metrics").text
        assert "tidings_sessions_established_total" in metrics
