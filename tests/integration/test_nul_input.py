"""A NUL (U+0000) in a string that would become a store column or key is refused at the edge,
with the same precise answer on SQLite and PostgreSQL (whose ``text`` cannot hold it: before,
such input was a storage error there, HTTP 503 or LIME 51, and accepted on SQLite).

Message content and other JSON documents are stored encoded, NUL escaped: they keep it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.postgres import PostgresDatabases
from tests.server_process import ServerProcess, running

pytestmark = pytest.mark.integration

API = "nul-api-token"
ADMIN = "nul-admin-token"
PASSWORD = "pw"
NUL = "\x00"
STORES = ["sqlite", "postgresql"]
INVALID_URI = 27
INVALID_ARGUMENT = 64


@pytest.fixture(scope="module", params=STORES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    store: list[str] = []
    databases: PostgresDatabases | None = None
    if request.param == "postgresql":
        databases = request.getfixturevalue("postgres")
        store = ["--store", databases.fresh()]
    process = ServerProcess(
        tmp_path_factory.mktemp(f"nul-{request.param}"),
        args=[
            "--api-token",
            API,
            "--admin-token",
            ADMIN,
            "--app",
            "examples.chat_room:app",
            *store,
        ],
    )
    process.add_accounts({"alice": PASSWORD, "bob": PASSWORD}, *store)
    for name in ("alice", "bob"):
        key = process.tidings("account", "key", name, *store)
        assert key.returncode == 0, key.stderr
        process.keys[name] = key.stdout.strip().splitlines()[-1]
    with running(process):
        yield process
    if databases is not None:
        databases.drop(store[1])


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem_of(response: httpx.Response, status: int, error_id: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document = response.json()
    assert document["error_id"] == error_id, document
    return str(document["detail"])


async def alice(server: ServerProcess, instance: str = "home") -> WireClient:
    client = await WireClient.connect(server.ws_url)
    session = await client.establish(f"alice@localhost/{instance}", password=PASSWORD)
    assert session["state"] == "established", session
    return client


# -- LIME ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "uri"),
    [
        ("set", "/sessions/a%00b"),
        ("get", "/sessions/a%00b"),
        ("delete", "/sessions/a%00b"),
        ("set", "/sessions/a%00b/persistence"),
        ("get", "/keys/a%00b"),
        ("delete", "/keys/a%00b"),
        ("get", "/consent/invites/a%00b"),
        ("set", "/consent/invites/a%00b/invalidate"),
        ("get", "/consent/relationships/a%00b"),
        ("delete", "/consent/relationships/a%00b"),
        ("get", "/feeds/scores?team=a%00b"),
        ("get", "/sessions/a\x00b"),
    ],
)
async def test_a_lime_command_uri_holding_nul_is_refused(
    server: ServerProcess, method: str, uri: str
) -> None:
    client = await alice(server)
    command: dict[str, Any] = {"id": str(uuid.uuid4()), "method": method, "uri": uri}
    if method == "set":
        command |= {"type": "application/json", "resource": {"limit": 10}}
    answer = await client.command(**command)
    assert answer["status"] == "failure", answer
    assert answer["reason"]["code"] == INVALID_URI, answer
    assert "NUL" in answer["reason"]["description"]
    # the session goes on
    ping = await client.command(id="ping", method="get", uri="/ping")
    assert ping["status"] == "success"


async def test_a_persistent_session_memento_holding_nul_is_refused(server: ServerProcess) -> None:
    instance = f"p{uuid.uuid4().hex[:8]}"
    client = await alice(server, instance)
    await client.set_receipt("accepted")
    begun = await client.command(
        id="begin",
        method="set",
        uri=f"/sessions/{instance}/persistence",
        type="application/json",
        resource={},
    )
    assert begun["status"] == "success", begun
    nonce = begun["resource"]["nonce"]

    def step(message_id: str, memento: str) -> None:
        client.send(
            {
                "id": message_id,
                "to": "bob@localhost",
                "type": "text/plain",
                "content": "x",
                "metadata": {"tidings.nonce": nonce, "tidings.memento": memento},
            }
        )

    step("nul", f"state{NUL}")
    refused = await client.expect_id("nul", event="failed")
    assert refused["reason"]["code"] == INVALID_ARGUMENT, refused
    assert "NUL" in refused["reason"]["description"]
    step("plain", "state")  # the same nonce is still current: nothing was stored
    await client.expect_id("plain", event="accepted")


async def test_nul_in_message_content_and_metadata_is_kept(server: ServerProcess) -> None:
    """Content is the application's business: stored as the encoded envelope, NUL escaped."""
    sender = await alice(server)
    await sender.set_receipt("accepted")
    reader = await WireClient.connect(server.ws_url)
    instance = f"r{uuid.uuid4().hex[:8]}"
    session = await reader.establish(f"bob@localhost/{instance}", password=PASSWORD)
    assert session["state"] == "established", session
    await reader.finish()  # offline: the message waits in the store
    sender.send(
        {
            "id": "content",
            "to": f"bob@localhost/{instance}",
            "type": "application/json",
            "content": {f"k{NUL}": f"v{NUL}"},
            "metadata": {"note": f"n{NUL}"},
        }
    )
    await sender.expect_id("content", event="accepted")
    back = await WireClient.connect(server.ws_url)
    session = await back.establish(f"bob@localhost/{instance}", password=PASSWORD)
    assert session["state"] == "established", session
    message = await back.expect_id("content")
    assert message["content"] == {f"k{NUL}": f"v{NUL}"}
    assert message["metadata"]["note"] == f"n{NUL}"


async def test_a_lime_consent_invite_display_name_holding_nul_is_refused(
    server: ServerProcess,
) -> None:
    client = await alice(server)
    answer = await client.command(
        id="invite",
        method="set",
        uri="/consent/invites",
        type="application/json",
        resource={
            "appCode": "study",
            "displayName": f"A{NUL}study",
            "consent": {"en": "Share"},
            "requestedPermissions": [{"resource": "feed:heart*", "level": "read"}],
        },
    )
    assert answer["status"] == "failure", answer
    assert answer["reason"] == {
        "code": INVALID_ARGUMENT,
        "description": "displayName may not contain NUL (U+0000)",
    }


# -- Feedme -------------------------------------------------------------------------------------


async def test_a_feedme_feed_name_holding_nul_is_a_violation(server: ServerProcess) -> None:
    client = await WireClient.connect(server.ws_url, subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    await client.expect(lambda m: m.get("MessageType") == "HandshakeResponse")
    client.send({"MessageType": "FeedOpen", "FeedName": f"room{NUL}", "FeedArgs": {}})
    answer = await client.expect(lambda m: m.get("MessageType") == "ViolationResponse")
    assert answer["Diagnostics"]["Problem"] == "Invalid JSON or schema violation."
    assert "NUL" in answer["Diagnostics"]["Detail"]
    client.send({"MessageType": "FeedOpen", "FeedName": "room", "FeedArgs": {"room": "lobby"}})
    opened = await client.expect(lambda m: m.get("MessageType") == "FeedOpenResponse")
    assert opened["Success"] is True


# -- HTTP ---------------------------------------------------------------------------------------

HTTP_CASES: list[tuple[str, str, str, dict[str, Any] | None, str]] = [
    # (who, method, url, body, the field named in the answer)
    ("alice", "POST", "/messages", {"to": "bob@localhost", "content": 1, "id": "a\x00"}, "body.id"),
    (
        "api",
        "POST",
        "/identities/bob@localhost/notifications",
        {"content": 1, "id": "a\x00"},
        "body.id",
    ),
    (
        "api",
        "POST",
        "/identities/bob@localhost/notifications",
        {"content": 1, "session": "a\x00"},
        "body.session",
    ),
    (
        "api",
        "POST",
        "/identities/bob@localhost/notifications",
        {"content": 1, "pattern": "a\x00*"},
        "body.pattern",
    ),
    ("alice", "GET", "/identities/alice@localhost/sessions/a%00b", None, "path.name"),
    ("alice", "DELETE", "/identities/alice@localhost/sessions/a%00b", None, "path.name"),
    (
        "alice",
        "POST",
        "/identities/alice@localhost/sessions/home/notifications",
        {"id": "a\x00", "from": "bob@localhost/x", "event": "received"},
        "body.id",
    ),
    ("admin", "POST", "/admin/accounts/alice/keys", {"label": "ci\x00"}, "body.label"),
    ("admin", "DELETE", "/admin/accounts/a%00b", None, "path.name"),
    ("admin", "POST", "/admin/accounts/a%00b/keys", {}, "path.name"),
    (
        "api",
        "POST",
        "/feeds/a%00b/actions",
        {"action_name": "x", "feed_data": {}},
        "path.feed_name",
    ),
    ("anyone", "GET", "/feeds/a%00b", None, "path.feed_name"),
    ("alice", "GET", "/keys/bob@localhost/a%00b", None, "path.sign_id"),
]


@pytest.mark.parametrize(
    ("who", "method", "url", "body", "field"),
    HTTP_CASES,
    ids=[f"{method} {url} {field}" for _, method, url, _, field in HTTP_CASES],
)
def test_an_http_name_or_id_holding_nul_is_422(
    server: ServerProcess,
    http: httpx.Client,
    who: str,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    field: str,
) -> None:
    tokens = {"api": API, "admin": ADMIN, **server.keys}
    headers = bearer(tokens[who]) if who in tokens else {}
    response = http.request(method, url, headers=headers, json=body)
    detail = problem_of(response, 422, "invalid-argument")
    assert detail == f"{field}: may not contain NUL (U+0000)"


def test_http_content_holding_nul_is_kept(server: ServerProcess, http: httpx.Client) -> None:
    sent = http.post(
        "/messages",
        headers=bearer(server.keys["alice"]),
        json={"to": "bob@localhost", "content": {f"k{NUL}": f"v{NUL}"}},
    )
    assert sent.status_code == 202, sent.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/consent/invites/a%00b"),
        ("POST", "/consent/invites/a%00b/invalidate"),
        ("GET", "/consent/relationships/a%00b"),
        ("DELETE", "/consent/relationships/a%00b"),
        ("POST", "/consent/scope-requests/a%00b/accept"),
    ],
)
def test_a_consent_id_holding_nul_names_nothing(
    server: ServerProcess, http: httpx.Client, method: str, path: str
) -> None:
    response = http.request(method, path, headers=bearer(server.keys["alice"]))
    problem_of(response, 404, "cmc-not-found")


def test_consent_texts_holding_nul_are_refused(server: ServerProcess, http: httpx.Client) -> None:
    alice_key, bob_key = bearer(server.keys["alice"]), bearer(server.keys["bob"])
    offer = {
        "appCode": "study",
        "displayName": "A study",
        "consent": {"en": "Share"},
        "requestedPermissions": [{"resource": "feed:heart*", "level": "read"}],
    }
    detail = problem_of(
        http.post("/consent/invites", headers=alice_key, json={**offer, "displayName": "A\x00"}),
        422,
        "invalid-argument",
    )
    assert detail == "displayName may not contain NUL (U+0000)"
    made = http.post("/consent/invites", headers=alice_key, json=offer)
    assert made.status_code == 201, made.text
    token = made.json()["capabilityUrl"].rstrip("/").rsplit("/", 1)[-1]
    accepted = http.post(f"/consent/offers/{token}/accept", headers=bob_key)
    assert accepted.status_code == 201, accepted.text
    relationship = accepted.json()["id"]
    detail = problem_of(
        http.post(
            f"/consent/relationships/{relationship}/chat", headers=bob_key, json={"text": "h\x00"}
        ),
        422,
        "cmc-invalid-event-content",
    )
    assert detail == "text may not contain NUL (U+0000)"
    detail = problem_of(
        http.delete(
            f"/consent/relationships/{relationship}", headers=bob_key, params={"reason": "\x00"}
        ),
        422,
        "invalid-argument",
    )
    assert detail == "reason may not contain NUL (U+0000)"
    chat = http.post(
        f"/consent/relationships/{relationship}/chat", headers=bob_key, json={"text": "hi"}
    )
    assert chat.status_code == 201, chat.text
    history = http.get(f"/consent/relationships/{relationship}/chat", headers=alice_key)
    assert [item["text"] for item in history.json()["items"]] == ["hi"]
    assert json.dumps(history.json())  # the relationship is untouched
