"""Named persistent sessions (issue 4) end to end: a real ``tidings serve``, raw LIME JSON.

Bounded queues with drop-oldest (122 + gap marker) and reject-new (121), ``/sessions``
resources, server-side notify over HTTP, session deletion and garbage collection (124), and the
persistent-session protocol (begin / nonce / memento / end, stale nonce 125) with the acceptance
scenarios of reference section 3.9 that apply to a LIME server.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

TOKEN = "sessions-test-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
SERVER = "postmaster@localhost/server"
GAP = "application/vnd.tidings.gap+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("sessions-data")
    process = ServerProcess(data_dir, args=["--allow-guests", "--api-token", TOKEN]).start()
    yield process
    process.stop()


def name() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


async def login(server: ServerProcess, node: str) -> WireClient:
    client = await WireClient.connect(server.ws_url)
    session = await client.establish(node, scheme="guest")
    assert session["state"] == "established", session
    return client


async def command(client: WireClient, method: str, uri: str, **fields: Any) -> dict[str, Any]:
    return await client.command(id=str(uuid.uuid4()), method=method, uri=uri, **fields)


def message(to: str, content: str, message_id: str, **metadata: str) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "id": message_id,
        "to": to,
        "type": "text/plain",
        "content": content,
    }
    if metadata:
        envelope["metadata"] = metadata
    return envelope


def persistent(to: str, content: str, message_id: str, nonce: str, memento: str) -> dict[str, Any]:
    """A message sent under a persistent session's ``nonce``, committing ``memento``."""
    return message(to, content, message_id, **{"tidings.nonce": nonce, "tidings.memento": memento})


async def outcome(client: WireClient, message_id: str) -> dict[str, Any]:
    """The server's verdict on a message sent with receipts on: accepted or failed."""
    return await client.expect(
        lambda e: e.get("id") == message_id and e.get("event") in ("accepted", "failed")
    )


async def accepted(client: WireClient, message_id: str) -> None:
    event = await outcome(client, message_id)
    assert event["event"] == "accepted", event


async def failed(client: WireClient, message_id: str) -> dict[str, Any]:
    event = await outcome(client, message_id)
    assert event["event"] == "failed", event
    return event


async def sender(server: ServerProcess, node: str | None = None) -> WireClient:
    """A logged-in guest (a fresh one unless ``node`` is given) that gets `accepted` events."""
    client = await login(server, node if node is not None else f"{name()}@localhost/s")
    await client.set_receipt("accepted")
    return client


async def send_accepted(client: WireClient, to: str, *message_ids: str) -> None:
    """Send one text message per id (the id is also the content), each accepted in turn."""
    for message_id in message_ids:
        client.send(message(to, message_id, message_id))
        await accepted(client, message_id)


async def shop(server: ServerProcess) -> tuple[str, WireClient]:
    """A fresh shop: its till's node, and the till logged in (it receives the purchases)."""
    till = f"{name()}@localhost/till"
    return till, await login(server, till)


async def contents(client: WireClient, count: int) -> list[Any]:
    """The contents of the next ``count`` messages that reach ``client``."""
    return [(await client.expect(lambda e: "content" in e))["content"] for _ in range(count)]


async def begin(client: WireClient, session: str) -> dict[str, Any]:
    """Begin (again) the persistent session ``session``: its persistence document."""
    return (await command(client, "set", f"/sessions/{session}/persistence"))["resource"]


async def set_limit(client: WireClient, session: str, limit: int | None, policy: str) -> None:
    response = await command(
        client,
        "set",
        f"/sessions/{session}",
        type="application/json",
        resource={"limit": limit, "policy": policy},
    )
    assert response["status"] == "success", response


async def drop(client: WireClient) -> None:
    client.drop()
    await client.closed()


async def offline_session(
    server: ServerProcess,
    identity: str,
    session: str,
    limit: int | None = None,
    policy: str | None = None,
) -> None:
    """Make ``identity``'s session ``session`` (with that queue limit and policy, if given) and
    leave it offline: messages to it queue."""
    owner = await login(server, f"{identity}@localhost/{session}")
    if policy is not None:
        await set_limit(owner, session, limit, policy)
    await owner.finish()


class TestBoundedQueues:
    async def test_drop_oldest_never_drops_what_the_live_session_already_has(self, server):
        """Written to the live connection but not yet acknowledged: the client has it, so it is
        neither dropped nor reported lost (122) to its sender."""
        bob = name()
        await offline_session(server, bob, "live", 2, "drop-oldest")
        receiver = await login(server, f"{bob}@localhost/live")
        alice = await sender(server)
        await send_accepted(alice, f"{bob}@localhost/live", "l1", "l2", "l3", "l4")
        assert await contents(receiver, 4) == ["l1", "l2", "l3", "l4"]
        await command(alice, "get", "/ping")
        assert not [e for e in alice.held if e.get("event") == "failed"]

    async def test_a_resend_to_a_full_reject_new_queue_is_accepted_not_refused(self, server):
        """A client that lost its ``accepted`` re-sends with the same id; the message is queued
        already, so it must hear ``accepted`` again, not 121 (and be delivered once)."""
        bob = name()
        await offline_session(server, bob, "a", 1, "reject-new")
        alice = await sender(server)
        await send_accepted(alice, f"{bob}@localhost/a", "r1")
        await send_accepted(alice, f"{bob}@localhost/a", "r1")
        alice.send(message(f"{bob}@localhost/a", "r2", "r2"))
        assert (await failed(alice, "r2"))["reason"]["code"] == 121
        receiver = await login(server, f"{bob}@localhost/a")
        assert await contents(receiver, 1) == ["r1"]
        await command(receiver, "get", "/ping")  # answered after the whole backlog
        assert not [e for e in receiver.held if "content" in e], "r1 was queued twice"

    async def test_drop_oldest_keeps_the_newest_tells_senders_122_and_marks_a_gap(self, server):
        bob = name()
        await offline_session(server, bob, "phone", 3, "drop-oldest")
        alice = await sender(server)
        await send_accepted(alice, f"{bob}@localhost/phone", "h1", "h2", "h3", "h4", "h5")
        # h1 and h2 were dropped: their sender (live) is told with 122
        for dropped in ("h1", "h2"):
            event = await failed(alice, dropped)
            assert event["reason"]["code"] == 122 and event["from"] == SERVER
        phone = await login(server, f"{bob}@localhost/phone")
        gap = await phone.expect(lambda e: "content" in e)
        assert gap["type"] == GAP and gap["from"] == SERVER
        assert gap["content"]["dropped"] == 2
        assert [x["id"] for x in gap["content"]["lost"]] == ["h1", "h2"]
        rest = [await phone.expect(lambda e: "content" in e) for _ in range(3)]
        assert [m["content"] for m in rest] == ["h3", "h4", "h5"]
        # acknowledging the marker removes it for good
        phone.send({"id": gap["id"], "to": SERVER, "event": "received"})
        for m in rest:
            phone.send({"id": m["id"], "to": m["from"], "event": "received"})
        for m in rest:  # forwarded once committed; the marker's ack was committed before them
            await alice.expect(
                lambda e, i=m["id"]: e.get("id") == i and e.get("event") == "received"
            )
        info = await command(phone, "get", "/sessions/phone")
        assert info["resource"]["depth"] == 0, info
        assert info["resource"]["queue"] == []

    async def test_gap_marker_accumulates_until_acknowledged(self, server):
        bob = name()
        await offline_session(server, bob, "tab", 2, "drop-oldest")
        alice = await sender(server)
        await send_accepted(alice, f"{bob}@localhost/tab", *(f"m{n}" for n in range(6)))
        tab = await login(server, f"{bob}@localhost/tab")
        gap = await tab.expect(lambda e: "content" in e)
        assert gap["type"] == GAP and gap["content"]["dropped"] == 4
        assert [x["id"] for x in gap["content"]["lost"]] == ["m0", "m1", "m2", "m3"]
        assert await contents(tab, 2) == ["m4", "m5"]

    async def test_offline_sender_gets_its_122_when_it_reconnects(self, server):
        bob, carol = name(), name()
        await offline_session(server, bob, "q", 1, "drop-oldest")
        first = await sender(server, f"{carol}@localhost/s")
        await send_accepted(first, f"{bob}@localhost/q", "first")
        await first.finish()
        other = await sender(server)
        await send_accepted(other, f"{bob}@localhost/q", "second")
        back = await login(server, f"{carol}@localhost/s")
        event = await back.expect(lambda e: e.get("id") == "first")
        assert event["event"] == "failed" and event["reason"]["code"] == 122

    async def test_reject_new_refuses_with_121_and_keeps_the_queue(self, server):
        bob = name()
        await offline_session(server, bob, "r", 2, "reject-new")
        alice = await sender(server)
        await send_accepted(alice, f"{bob}@localhost/r", "k0", "k1")
        alice.send(message(f"{bob}@localhost/r", "k2", "k2"))
        assert (await failed(alice, "k2"))["reason"]["code"] == 121
        r = await login(server, f"{bob}@localhost/r")
        assert await contents(r, 2) == ["k0", "k1"]

    async def test_lowering_a_drop_oldest_limit_trims_at_once(self, server):
        # 3.9 scenario 8: limitQueue on a longer queue drops the oldest immediately
        bob = name()
        await offline_session(server, bob, "x")
        alice = await sender(server)
        await send_accepted(alice, f"{bob}@localhost/x", "h1", "h2", "h3", "h4", "h5")
        manager = await login(server, f"{bob}@localhost/manager")
        await set_limit(manager, "x", 3, "drop-oldest")
        snapshot = await command(manager, "get", "/sessions/x")
        queue = snapshot["resource"]["queue"]
        assert [e["kind"] for e in queue] == ["gap", "envelope", "envelope", "envelope"]
        assert [e["envelope"]["content"] for e in queue[1:]] == ["h3", "h4", "h5"]
        assert snapshot["resource"]["limit"] == 3
        assert snapshot["resource"]["policy"] == "drop-oldest"


class TestSessionResources:
    async def test_a_message_racing_a_delete_is_queued_or_failed_never_orphaned(self, server):
        """Sent while the delete is being committed, a message lands either before the delete
        (its sender is told 124) or after it, in a session that must then still exist."""
        bob = name()
        await offline_session(server, bob, "x")
        manager = await login(server, f"{bob}@localhost/m")
        alice = await sender(server)
        manager.send({"id": "del", "method": "delete", "uri": "/sessions/x"})
        alice.send(message(f"{bob}@localhost/x", "racing", "race-1"))
        await accepted(alice, "race-1")
        assert (await manager.expect_id("del"))["status"] == "success"
        await command(alice, "get", "/ping")  # any 124 for race-1 has reached alice by now
        told = [e for e in alice.held if e.get("id") == "race-1" and e.get("event") == "failed"]
        listed = await command(manager, "get", "/sessions")
        sessions = {i["name"]: i for i in listed["resource"]["items"]}
        if told:
            assert told[0]["reason"]["code"] == 124 and "x" not in sessions
        else:
            assert sessions["x"]["depth"] == 1, "race-1 is stored for a session that is gone"
            receiver = await login(server, f"{bob}@localhost/x")
            assert await contents(receiver, 1) == ["racing"]

    async def test_list_get_set_and_delete(self, server):
        bob = name()
        await offline_session(server, bob, "phone")
        laptop = await login(server, f"{bob}@localhost/laptop")
        listed = await command(laptop, "get", "/sessions")
        assert listed["type"] == "application/vnd.lime.collection+json"
        items = {i["name"]: i for i in listed["resource"]["items"]}
        assert set(items) == {"phone", "laptop"}
        assert items["laptop"]["online"] and not items["phone"]["online"]
        assert items["phone"]["lastSeen"] > 0 and items["phone"]["depth"] == 0
        assert items["phone"]["limit"] == 10_000 and items["phone"]["policy"] == "reject-new"
        one = await command(laptop, "get", "/sessions/phone")
        assert one["type"] == "application/vnd.tidings.session+json"
        assert one["resource"]["node"] == f"{bob}@localhost/phone"
        deleted = await command(laptop, "delete", "/sessions/phone")
        assert deleted["status"] == "success"
        gone = await command(laptop, "get", "/sessions/phone")
        assert gone["status"] == "failure" and gone["reason"]["code"] == 67
        connected = await command(laptop, "delete", "/sessions/laptop")
        assert connected["reason"]["code"] == 66

    async def test_invalid_documents_get_64_and_other_identities_35(self, server):
        bob = name()
        client = await login(server, f"{bob}@localhost/a")
        for resource in ({"limit": 0}, {"policy": "keep-all"}, {"limit": "ten"}, {"x": 1}):
            response = await command(
                client, "set", "/sessions/a", type="application/json", resource=resource
            )
            assert response["status"] == "failure" and response["reason"]["code"] == 64
        other = await command(client, "get", f"lime://{name()}@localhost/sessions")
        assert other["reason"]["code"] == 35

    async def test_deleting_a_session_tells_senders_124(self, server):
        bob = name()
        await offline_session(server, bob, "old")
        carol = await sender(server)
        carol.send(message(f"{bob}@localhost/old", "never read", "nr"))
        await accepted(carol, "nr")
        manager = await login(server, f"{bob}@localhost/manager")
        assert (await command(manager, "delete", "/sessions/old"))["status"] == "success"
        event = await failed(carol, "nr")
        assert event["reason"]["code"] == 124


class TestPersistence:
    async def test_begin_remember_crash_detection_and_end(self, server):
        # 3.9 scenario 13
        till, shopper = await shop(server)
        client = await sender(server, f"{name()}@localhost/buyer")
        first = await command(client, "set", "/sessions/buyer/persistence")
        assert first["type"] == "application/vnd.tidings.persistence+json"
        r1 = first["resource"]
        assert len(base64.b64decode(r1["nonce"])) == 15 and len(r1["nonce"]) == 20
        assert r1["memento"] is None and r1["crashed"] is False
        client.send(persistent(till, "buy 0", "b0", r1["nonce"], "hello"))
        await accepted(client, "b0")
        delivered = await shopper.expect_id("b0")
        assert delivered["metadata"] == {"tidings.scope": "public"}, "the nonce stays at the server"
        again = await begin(client, "buyer")
        assert again["crashed"] is True and again["memento"] == "hello"
        assert again["nonce"] != r1["nonce"]
        client.send(persistent(till, "buy 1", "b1", again["nonce"], "goodbye"))
        await accepted(client, "b1")
        end = {
            "type": "application/vnd.tidings.persistence+json",
            "resource": {"nonce": again["nonce"]},
        }
        ended = await command(client, "delete", "/sessions/buyer/persistence", **end)
        assert ended["status"] == "success"
        ended = await command(client, "delete", "/sessions/buyer/persistence", **end)
        assert ended["status"] == "success", "end is idempotent"
        fresh = await begin(client, "buyer")
        assert fresh["crashed"] is False and fresh["memento"] is None

    async def test_stale_nonce_is_refused_with_125_and_changes_nothing(self, server):
        # 3.9 scenarios 14 and 17 (old nonce after a new begin; the last memento wins)
        till, shopper = await shop(server)
        client = await sender(server, f"{name()}@localhost/p")
        n3 = (await begin(client, "p"))["nonce"]
        client.send(persistent(till, "x", "bad", "bad", "x"))
        assert (await failed(client, "bad"))["reason"]["code"] == 125
        for memento in ("one", "two"):
            client.send(persistent(till, memento, memento, n3, memento))
            await accepted(client, memento)
        n4 = await begin(client, "p")
        assert n4["memento"] == "two" and n4["crashed"]
        client.send(persistent(till, "late", "late", n3, "late"))
        assert (await failed(client, "late"))["reason"]["code"] == 125
        stale_end = await command(
            client, "delete", "/sessions/p/persistence", metadata={"tidings.nonce": n3}
        )
        assert stale_end["reason"]["code"] == 125
        assert await contents(shopper, 2) == ["one", "two"]
        probe = await begin(client, "p")
        assert probe["memento"] == "two", "refused requests committed no memento"

    async def test_a_verbatim_resend_is_not_executed_twice(self, server):
        # 3.9 scenario 17, hardening: same nonce, same request id
        till, shopper = await shop(server)
        client = await sender(server, f"{name()}@localhost/h")
        nonce = (await begin(client, "h"))["nonce"]
        buy = persistent(till, "toaster", "buy-1", nonce, "1")
        client.send(buy)
        await accepted(client, "buy-1")
        client.send(buy)
        await accepted(client, "buy-1")
        client.send(message(till, "marker", "after"))
        await accepted(client, "after")
        assert await contents(shopper, 2) == ["toaster", "marker"], "one toaster"

    async def test_two_clients_racing_on_one_session_only_the_current_nonce_wins(self, server):
        till, shopper = await shop(server)
        node = f"{name()}@localhost/race"
        a = await sender(server, node)
        nonce_a = (await begin(a, "race"))["nonce"]
        b = await sender(server, node)  # takes the session over from a
        nonce_b = (await begin(b, "race"))["nonce"]
        a2 = await sender(server, node)  # a comes back with its old nonce
        a2.send(persistent(till, "from a", "ra", nonce_a, "a"))
        assert (await failed(a2, "ra"))["reason"]["code"] == 125
        b2 = await sender(server, node)
        b2.send(persistent(till, "from b", "rb", nonce_b, "b"))
        await accepted(b2, "rb")
        assert await contents(shopper, 1) == ["from b"]
        state = await begin(b2, "race")
        assert state["memento"] == "b"

    async def test_persistent_message_without_id_and_nonce_on_commands_are_refused(self, server):
        me = name()
        client = await login(server, f"{me}@localhost/z")
        response = await command(client, "get", "/sessions", metadata={"tidings.nonce": "n"})
        assert response["status"] == "failure" and response["reason"]["code"] == 64
        client.send(
            {
                "to": f"{me}@localhost/other",
                "type": "text/plain",
                "content": "x",
                "metadata": {"tidings.nonce": "n"},
            }
        )
        ended = await client.expect(lambda e: "state" in e)
        assert ended["state"] == "failed" and ended["reason"]["code"] == 64

    async def test_persistence_survives_a_kill_9(self, tmp_path):
        process = ServerProcess(tmp_path, args=["--allow-guests"]).start()
        try:
            client = await sender(process, "k9@localhost/p")
            nonce = (await begin(client, "p"))["nonce"]
            client.send(persistent("k9@localhost/other", "x", "x1", nonce, "42"))
            await accepted(client, "x1")
            process.kill()
            process.restart()
            again = await login(process, "k9@localhost/p")
            state = await begin(again, "p")
            assert state == {**state, "crashed": True, "memento": "42"}
        finally:
            process.stop()


async def notify(http: httpx.AsyncClient, identity: str, **body: Any) -> httpx.Response:
    """POST one server-side notification for ``identity`` (a guest name) over HTTP."""
    return await http.post(
        f"/identities/{identity}@localhost/notifications", json=body, headers=HEADERS
    )


class TestHttpNotify:
    async def test_notify_one_all_and_pattern(self, server):
        bob = name()
        sessions = {
            s: await login(server, f"{bob}@localhost/{s}") for s in ("foo_1", "foo_2", "bar")
        }
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            one = await notify(http, bob, content={"n": 1}, session="foo_1", id="n1")
            assert one.status_code == 202 and one.json()["sessions"] == ["foo_1"]
            pattern = await notify(http, bob, content={"n": 2}, pattern="foo_*", id="n2")
            assert sorted(pattern.json()["sessions"]) == ["foo_1", "foo_2"]
            everyone = await notify(http, bob, content={"n": 3}, id="n3")
            assert sorted(everyone.json()["sessions"]) == ["bar", "foo_1", "foo_2"]
            again = await notify(http, bob, content={"n": 3}, id="n3")
            assert again.json()["sessions"] == [], "a retry with the same id is stored once"
        got = {s: [] for s in sessions}
        for s, client in sessions.items():
            expected = {"foo_1": 3, "foo_2": 2, "bar": 1}[s]
            for _ in range(expected):
                m = await client.expect(lambda e: "content" in e)
                assert m["from"] == SERVER and m["type"] == "application/json"
                got[s].append(m["content"]["n"])
        assert got == {"foo_1": [1, 2, 3], "foo_2": [2, 3], "bar": [3]}

    async def test_queue_snapshot_and_list_over_http(self, server):
        bob = name()
        await offline_session(server, bob, "box")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            posted = await notify(http, bob, type="text/plain", content="queued", session="box")
            assert posted.status_code == 202
            listed = await http.get(f"/identities/{bob}@localhost/sessions", headers=HEADERS)
            assert [(s["name"], s["depth"]) for s in listed.json()] == [("box", 1)]
            info = await http.get(f"/identities/{bob}@localhost/sessions/box", headers=HEADERS)
            queue = info.json()["queue"]
            assert len(queue) == 1 and queue[0]["envelope"]["content"] == "queued"
            missing = await http.get(f"/identities/{bob}@localhost/sessions/nope", headers=HEADERS)
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/problem+json"
            assert missing.json()["error_id"] == "session-not-found"
            refused = await http.get(f"/identities/{bob}@localhost/sessions")
            assert refused.status_code == 401
            assert refused.json()["error_id"] == "bad-credentials"
            unknown = await notify(http, "nobody-here", content=1)
            assert unknown.status_code == 404
            spec = (await http.get("/openapi.json")).json()
            assert "/identities/{identity}/notifications" in spec["paths"]


async def test_idle_sessions_are_collected_and_senders_told_124(tmp_path: Path):
    config = tmp_path / "tidings.toml"
    config.write_text("session_idle_s = 0.5\nsession_gc_interval_s = 0.2\n")
    process = ServerProcess(
        tmp_path / "data", args=["--allow-guests", "--config", str(config)]
    ).start()
    try:
        await offline_session(process, "gc-bob", "idle")
        alice = await sender(process, "gc-alice@localhost/s")
        alice.send(message("gc-bob@localhost/idle", "unread", "u1"))
        await accepted(alice, "u1")
        event = await failed(alice, "u1")  # waits for the collector, event-driven
        assert event["reason"]["code"] == 124
        manager = await login(process, "gc-bob@localhost/m")
        listed = await command(manager, "get", "/sessions")
        assert "idle" not in [i["name"] for i in listed["resource"]["items"]]
    finally:
        process.stop()


class TestSdk:
    async def test_backlog_reports_the_gap_then_the_kept_messages(self, server, tmp_path):
        from tidings.sdk import Client, Gap, PersistentSession, backlog

        bob = name()
        await offline_session(server, bob, "feed", 2, "drop-oldest")
        alice = await sender(server)
        await send_accepted(alice, f"{bob}@localhost/feed", "f0", "f1", "f2", "f3")
        async with Client(server.ws_url, f"{bob}@localhost", instance="feed", guest=True) as c:
            items = []
            async with asyncio.timeout(10):
                async for item in backlog(c):
                    items.append(item)
                    if len(items) == 3:
                        break
            gap = items[0]
            assert isinstance(gap, Gap) and gap.dropped == 2
            assert [i for _, i in gap.lost] == ["f0", "f1"]
            assert [m.content for m in items[1:] if not isinstance(m, Gap)] == ["f2", "f3"]
            async with PersistentSession(c) as session:
                assert session.crashed is False and session.memento is None
                await session.send_message(f"{bob}@localhost/feed", "self", memento="m1")
                assert session.memento == "m1"
            again = await PersistentSession(c).begin()
            assert again.crashed is False and again.memento is None, "the block ended it"
