"""An account's HTTP API on a real ``tidings serve``: ``POST /messages`` (routed like a LIME
message of ``name@domain/http``: delivery, scope, refusals, idempotence, receipts), its own
sessions (``/identities/{identity}/sessions``, with its API key; ``DELETE``) and the key
directory (``/keys``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.integration.test_admin_api import problem_of
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess, running
from tests.unit.protocol.e2e.signers import TestSigner

from tidings.protocol.e2e import sign_node_info

pytestmark = pytest.mark.integration

ADMIN = "admin-account-api"
API = "api-account-api"
NAMES = ("alice", "bob", "carol", "dave")
SCOPE = "tidings.scope"
NODE_INFO = "application/vnd.tidings.node-info+json"
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("account-api"), args=["--admin-token", ADMIN, "--api-token", API]
    )
    process.add_accounts({name: f"{name}-pw" for name in NAMES})
    for name in NAMES:
        process.new_key(name)
    with running(process):
        yield process


def key_of(server: ServerProcess, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.keys[name]}"}


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        yield client


async def login(server: ServerProcess, node: str) -> WireClient:
    client = await WireClient.connect(server.ws_url)
    name = node.partition("@")[0]
    session = await client.establish(node, password=f"{name}-pw")
    assert session["state"] == "established", session
    return client


async def accept_only_contacts(server: ServerProcess, node: str) -> None:
    """``allowUnknownSender: false`` for the node's account, the session left offline."""
    client = await login(server, node)
    strict = await client.command(
        id="strict",
        method="merge",
        uri="/account",
        type="application/vnd.lime.account+json",
        resource={"allowUnknownSender": False},
    )
    assert strict["status"] == "success", strict
    assert (await client.finish())["state"] == "finished"


async def depth(http: httpx.AsyncClient, server: ServerProcess, node: str) -> int:
    identity, _, name = node.partition("/")
    answer = await http.get(
        f"/identities/{identity}/sessions/{name}", headers=key_of(server, identity.split("@")[0])
    )
    assert answer.status_code == 200, answer.text
    value: int = answer.json()["depth"]
    return value


# -- POST /messages ---------------------------------------------------------------------------


async def test_a_message_reaches_a_connected_session_as_from_the_http_node(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    bob = await login(server, "bob@localhost/live")
    answer = await http.post(
        "/messages",
        headers=key_of(server, "alice"),
        json={"to": "bob@localhost/live", "type": "text/plain", "content": "hi", "id": "m-live"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json() == {
        "id": "m-live",
        "from": "alice@localhost/http",
        "to": "bob@localhost/live",
        "dispatched": True,
    }
    got = await bob.expect_id("m-live")
    assert got["from"] == "alice@localhost/http"
    assert got["type"] == "text/plain" and got["content"] == "hi"
    assert got["metadata"] == {SCOPE: "public"}  # stamped like any LIME message


async def test_a_retry_with_the_same_id_is_stored_once(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    bob = await login(server, "bob@localhost/phone")
    assert (await bob.finish())["state"] == "finished"
    body = {"to": "bob@localhost/phone", "content": {"n": 1}, "id": "m-once"}
    for _ in range(2):
        answer = await http.post("/messages", headers=key_of(server, "alice"), json=body)
        assert answer.status_code == 202, answer.text
        assert answer.json()["dispatched"] is False
    assert await depth(http, server, "bob@localhost/phone") == 1
    back = await login(server, "bob@localhost/phone")
    got = await back.expect_id("m-once")
    assert got["content"] == {"n": 1} and got["type"] == "application/json"
    pong = await back.command(id="after-once", method="get", uri="/ping")
    assert pong["status"] == "success"
    assert not [e for e in back.held if e.get("id") == "m-once"]


async def test_receipts_go_to_the_accounts_http_session(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    alice = await login(server, "alice@localhost/http")
    bob = await login(server, "bob@localhost/r")
    answer = await http.post(
        "/messages",
        headers=key_of(server, "alice"),
        json={"to": "bob@localhost/r", "content": "ack me", "id": "m-receipt"},
    )
    assert answer.status_code == 202, answer.text
    got = await bob.expect_id("m-receipt")
    bob.send({"id": got["id"], "to": got["from"], "event": "received"})
    receipt = await alice.expect(lambda e: e.get("id") == "m-receipt" and "event" in e)
    assert receipt["event"] == "received" and receipt["from"].startswith("bob@localhost")


async def test_refusals_are_the_lime_paths_and_store_nothing(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    alice = key_of(server, "alice")
    problem_of(
        await http.post("/messages", headers=alice, json={"to": "nobody@localhost", "content": 1}),
        404,
        "account-not-found",
    )
    problem_of(
        await http.post("/messages", headers=alice, json={"to": "x@elsewhere.test", "content": 1}),
        404,
        "destination-not-found",
    )
    # dave accepts only its contacts (none): a stranger is refused as over LIME (32)
    await accept_only_contacts(server, "dave@localhost/strict")
    problem_of(
        await http.post(
            "/messages", headers=alice, json={"to": "dave@localhost/strict", "content": "no"}
        ),
        403,
        "unknown-sender",
    )
    problem_of(
        await http.post(
            "/messages",
            headers=alice,
            json={"to": "carol@localhost", "content": "now", "realtime": True},
        ),
        410,
        "message-expired",
    )
    assert await depth(http, server, "dave@localhost/strict") == 0
    sessions = await http.get(
        "/identities/carol@localhost/sessions", headers=key_of(server, "carol")
    )
    assert sum(s["depth"] for s in sessions.json()) == 0


async def test_a_full_reject_new_queue_refuses_with_queue_full(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    carol = await login(server, "carol@localhost/tiny")
    limited = await carol.command(
        id="tiny",
        method="set",
        uri="/sessions/tiny",
        type="application/vnd.tidings.session+json",
        resource={"limit": 1, "policy": "reject-new"},
    )
    assert limited["status"] == "success", limited
    assert (await carol.finish())["state"] == "finished"
    alice = key_of(server, "alice")
    first = await http.post(
        "/messages", headers=alice, json={"to": "carol@localhost/tiny", "content": 1}
    )
    assert first.status_code == 202, first.text
    problem_of(
        await http.post(
            "/messages", headers=alice, json={"to": "carol@localhost/tiny", "content": 2}
        ),
        429,
        "queue-full",
    )
    assert await depth(http, server, "carol@localhost/tiny") == 1


async def test_only_an_accounts_api_key_sends(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    body = {"to": "bob@localhost", "content": "x"}
    problem_of(await http.post("/messages", json=body), 401, "bad-credentials")
    problem_of(
        await http.post("/messages", json=body, headers={"Authorization": "Bearer nope"}),
        401,
        "bad-credentials",
    )
    for token in (API, ADMIN):
        problem_of(
            await http.post("/messages", json=body, headers={"Authorization": f"Bearer {token}"}),
            403,
            "forbidden",
        )


@pytest.mark.parametrize(
    "body",
    [
        b'{"to": "bob@localhost", "content": NaN}',
        b'{"to": "bob@localhost", "content": [1, Infinity]}',
        b'{"to": "bob@localhost"}',
        b'{"to": "bob@localhost", "content": 1, "from": "carol@localhost"}',
        b'{"to": "bob@localhost", "content": 1, "expireAfter": 0}',
        b'{"to": "bob@localhost", "content": 1, "id": ""}',
        b'{"to": "bob@localhost", "content": "' + b"x" * 70_000 + b'"}',
        b"not json",
    ],
)
async def test_bad_bodies_are_invalid_arguments(
    server: ServerProcess, http: httpx.AsyncClient, body: bytes
) -> None:
    headers = {**key_of(server, "alice"), "Content-Type": "application/json"}
    problem_of(await http.post("/messages", content=body, headers=headers), 422, "invalid-argument")


def test_any_recipient_text_is_routed_or_refused_with_a_problem(server: ServerProcess) -> None:
    """The ``to`` parser over arbitrary text: 202 only for an address that parses (and then
    names an account here), else a problem with an address or routing id; never a 5xx."""
    refusals = {"invalid-address", "invalid-argument", "account-not-found", "destination-not-found"}
    with httpx.Client(
        base_url=server.http_url, timeout=30, headers=key_of(server, "alice")
    ) as http:

        @given(to=st.one_of(st.text(max_size=40), st.sampled_from(["bob", "bob@", "@x", "a/b"])))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def check(to: str) -> None:
            answer = http.post("/messages", json={"to": to, "content": "p", "id": "fuzz"})
            if answer.status_code == 202:
                assert answer.json()["to"].partition("@")[0] == to.partition("@")[0].lower()
            else:
                assert answer.status_code in (404, 422), answer.text
                assert answer.json()["error_id"] in refusals

        check()


# -- an account's own sessions ------------------------------------------------------------------


async def test_an_account_reads_and_deletes_its_own_sessions_only(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    bob = await login(server, "bob@localhost/old")
    assert (await bob.finish())["state"] == "finished"
    alice_session = await login(server, "alice@localhost/http")
    sent = await http.post(
        "/messages",
        headers=key_of(server, "alice"),
        json={"to": "bob@localhost/old", "content": "lost", "id": "m-old"},
    )
    assert sent.status_code == 202, sent.text
    bob_key, alice_key = key_of(server, "bob"), key_of(server, "alice")
    listed = await http.get("/identities/bob@localhost/sessions", headers=bob_key)
    assert "old" in [s["name"] for s in listed.json()]
    one = await http.get("/identities/bob@localhost/sessions/old", headers=bob_key)
    assert [e["id"] for e in one.json()["queue"]] == ["m-old"]
    for method in ("GET", "DELETE"):
        problem_of(
            await http.request(method, "/identities/bob@localhost/sessions/old", headers=alice_key),
            403,
            "forbidden",
        )
    problem_of(
        await http.get("/identities/bob@localhost/sessions", headers=alice_key), 403, "forbidden"
    )
    live = await login(server, "bob@localhost/busy")
    problem_of(
        await http.delete("/identities/bob@localhost/sessions/busy", headers=bob_key),
        409,
        "session-connected",
    )
    await live.finish()
    deleted = await http.delete("/identities/bob@localhost/sessions/old", headers=bob_key)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"identity": "bob@localhost", "name": "old", "removed": 1}
    # the sender's HTTP node is told, as a LIME sender would be (session-expired, 124)
    failed = await alice_session.expect(lambda e: e.get("id") == "m-old" and "event" in e)
    assert failed["event"] == "failed" and failed["reason"]["code"] == 124
    problem_of(
        await http.delete("/identities/bob@localhost/sessions/old", headers=bob_key),
        404,
        "session-not-found",
    )
    # the api_token may read anyone's (server-side apps)
    as_server = await http.get(
        "/identities/bob@localhost/sessions", headers={"Authorization": f"Bearer {API}"}
    )
    assert as_server.status_code == 200
    assert "old" not in [s["name"] for s in as_server.json()]


# -- the key directory --------------------------------------------------------------------------


async def test_keys_answer_what_lime_answers(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    carol = await login(server, "carol@localhost/laptop")
    signer = TestSigner()
    published = int(time.time() * 1000)
    document = sign_node_info(
        signer, "carol@localhost", "laptop", published, published + 30 * DAY_MS, None
    )
    done = await carol.command(
        id="publish", method="set", uri="/keys", type=NODE_INFO, resource=document
    )
    assert done["status"] == "success", done
    over_lime = await carol.command(id="list", method="get", uri="lime://carol@localhost/keys")
    listed = await http.get("/keys/carol@localhost", headers=key_of(server, "alice"))
    assert listed.status_code == 200, listed.text
    assert listed.json() == over_lime["resource"]["items"] == [document]
    one = await http.get(
        f"/keys/carol@localhost/{quote(signer.sign_id, safe='')}", headers=key_of(server, "bob")
    )
    assert one.status_code == 200 and one.json() == document
    problem_of(
        await http.get(
            f"/keys/alice@localhost/{quote(signer.sign_id, safe='')}",
            headers=key_of(server, "bob"),
        ),
        404,
        "resource-not-found",
    )
    problem_of(
        await http.get("/keys/carol@localhost", headers={"Authorization": f"Bearer {API}"}),
        403,
        "forbidden",
    )
    problem_of(await http.get("/keys/carol@localhost"), 401, "bad-credentials")
    # dave accepts only contacts: its listing is not shared with strangers (35 over LIME)
    await accept_only_contacts(server, "dave@localhost/strict")
    problem_of(
        await http.get("/keys/dave@localhost", headers=key_of(server, "alice")), 403, "not-shared"
    )


async def test_an_offline_session_acknowledges_over_http_and_the_sender_hears(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    bob = await login(server, "bob@localhost/inbox")
    assert (await bob.finish())["state"] == "finished"
    carol = await login(server, "carol@localhost/sender")
    await carol.set_receipt("accepted", "failed")
    carol.send({"id": "m-ack", "to": "bob@localhost/inbox", "type": "text/plain", "content": "x"})
    await carol.expect(lambda e: e.get("id") == "m-ack" and e.get("event") == "accepted")
    queued = await http.get(
        "/identities/bob@localhost/sessions/inbox", headers=key_of(server, "bob")
    )
    [entry] = queued.json()["queue"]
    body = {"id": entry["id"], "from": entry["from"], "event": "received"}
    route = "/identities/bob@localhost/sessions/inbox/notifications"
    for token, status, error_id in (
        (key_of(server, "alice"), 403, "forbidden"),
        ({"Authorization": f"Bearer {API}"}, 403, "forbidden"),
    ):
        problem_of(await http.post(route, json=body, headers=token), status, error_id)
    assert await depth(http, server, "bob@localhost/inbox") == 1
    acked = await http.post(route, json=body, headers=key_of(server, "bob"))
    assert acked.status_code == 200, acked.text
    assert acked.json() == {"id": "m-ack", "removed": True}
    receipt = await carol.expect(lambda e: e.get("id") == "m-ack" and e.get("event") == "received")
    assert receipt["from"] == "bob@localhost/inbox"
    assert await depth(http, server, "bob@localhost/inbox") == 0
    again = await http.post(route, json=body, headers=key_of(server, "bob"))
    assert again.json() == {"id": "m-ack", "removed": False}
    live = await login(server, "bob@localhost/inbox")
    problem_of(
        await http.post(route, json=body, headers=key_of(server, "bob")), 409, "session-connected"
    )
    await live.finish()
