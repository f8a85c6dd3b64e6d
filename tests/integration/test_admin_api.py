"""The admin HTTP routes of a real ``tidings serve``: the admin_token, and only it, opens them;
connections, queues, disconnecting a session, settings, federation status and accounts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess, running

pytestmark = pytest.mark.integration

ADMIN = "admin-secret-token"
API = "api-secret-token"
PASSWORD = "alice-pw"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("admin-api"), args=["--admin-token", ADMIN, "--api-token", API]
    )
    process.add_account("alice", PASSWORD)
    process.new_key("alice")
    with running(process):
        yield process


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, headers=bearer(ADMIN), timeout=30) as client:
        yield client


def problem_of(response: httpx.Response, status: int, error_id: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["error_id"] == error_id and document["status"] == status
    return document


ADMIN_ROUTES = [
    ("GET", "/admin/connections"),
    ("GET", "/admin/queues"),
    ("DELETE", "/admin/sessions/alice@localhost/default"),
    ("GET", "/admin/settings"),
    ("GET", "/admin/federation"),
    ("GET", "/admin/accounts"),
    ("POST", "/admin/accounts"),
    ("DELETE", "/admin/accounts/alice"),
    ("POST", "/admin/accounts/alice/keys"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_refuse_other_tokens_and_none(
    server: ServerProcess, method: str, path: str
) -> None:
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        missing = problem_of(http.request(method, path), 401, "bad-credentials")
        assert "admin_token" in missing["detail"] or "admin token" in missing["detail"]
        problem_of(http.request(method, path, headers=bearer("nonsense")), 401, "bad-credentials")
        problem_of(http.request(method, path, headers=bearer(API)), 403, "forbidden")
        key = server.keys["alice"]
        problem_of(http.request(method, path, headers=bearer(key)), 403, "forbidden")
    # nothing was done: alice is still there
    assert "alice" in [
        a["name"]
        for a in httpx.get(f"{server.http_url}/admin/accounts", headers=bearer(ADMIN)).json()
    ]


def test_the_admin_token_is_refused_on_server_and_account_routes(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.http_url, headers=bearer(ADMIN), timeout=30) as http:
        problem_of(http.get("/federation/status"), 403, "forbidden")
        problem_of(http.get("/identities/alice@localhost/sessions"), 403, "forbidden")
        problem_of(http.get("/feeds/~alice/notes"), 403, "forbidden")
        problem_of(http.get("/consent/inbox"), 403, "forbidden")
    assert httpx.get(f"{server.http_url}/federation/status", headers=bearer(API)).status_code == 200


def test_accounts_and_keys(server: ServerProcess, admin: httpx.Client) -> None:
    name = f"u{uuid.uuid4().hex[:10]}"
    created = admin.post("/admin/accounts", json={"name": name, "password": "pw-1"})
    assert created.status_code == 201, created.text
    assert created.json() == {"name": name, "identity": f"{name}@localhost"}
    problem_of(
        admin.post("/admin/accounts", json={"name": name, "password": "x"}), 409, "account-exists"
    )
    problem_of(
        admin.post("/admin/accounts", json={"name": "Bad Name", "password": "x"}),
        422,
        "invalid-argument",
    )
    problem_of(
        admin.post("/admin/accounts", json={"name": "postmaster", "password": "x"}),
        422,
        "invalid-argument",
    )
    assert name in [a["name"] for a in admin.get("/admin/accounts").json()]

    issued = admin.post(f"/admin/accounts/{name}/keys", json={"label": "ci"})
    assert issued.status_code == 201, issued.text
    key = issued.json()["key"]
    assert issued.json()["label"] == "ci" and key.startswith("tdk_")
    # the key works as the account's: it reads its own feed
    own = httpx.get(f"{server.http_url}/feeds/~{name}/notes", headers=bearer(key))
    assert own.status_code == 200, own.text
    problem_of(admin.post("/admin/accounts/nobody/keys"), 404, "account-not-found")

    assert admin.delete(f"/admin/accounts/{name}").status_code == 204
    assert name not in [a["name"] for a in admin.get("/admin/accounts").json()]
    problem_of(admin.delete(f"/admin/accounts/{name}"), 404, "account-not-found")
    gone = httpx.get(f"{server.http_url}/feeds/~{name}/notes", headers=bearer(key))
    problem_of(gone, 401, "bad-credentials")


def test_settings_are_redacted(admin: httpx.Client) -> None:
    answer = admin.get("/admin/settings")
    assert answer.status_code == 200
    settings = answer.json()
    assert settings["api_token"] == "***" and settings["admin_token"] == "***"
    assert settings["domain"] == "localhost" and settings["store"] == "sqlite"
    assert ADMIN not in answer.text and API not in answer.text


def test_federation_status(admin: httpx.Client) -> None:
    status = admin.get("/admin/federation").json()
    assert status["domain"] == "localhost" and status["peers"] == []
    assert isinstance(status["keyId"], str) and status["keyId"]


async def login(server: ServerProcess, instance: str) -> WireClient:
    client = await WireClient.connect(server.ws_url)
    session = await client.establish(f"alice@localhost/{instance}", password=PASSWORD)
    assert session["state"] == "established", session
    return client


async def test_a_session_shows_up_is_disconnected_and_keeps_its_queue(
    server: ServerProcess,
) -> None:
    instance = f"i{uuid.uuid4().hex[:8]}"
    alice = await login(server, instance)
    async with httpx.AsyncClient(
        base_url=server.http_url, headers=bearer(ADMIN), timeout=30
    ) as admin:
        connections = (await admin.get("/admin/connections")).json()
        mine = [c for c in connections if c["instance"] == instance]
        assert len(mine) == 1, connections
        assert mine[0]["identity"] == "alice@localhost" and mine[0]["protocol"] == "lime"
        assert mine[0]["remote"].startswith("127.0.0.1:") and mine[0]["since"] > 0

        answer = await admin.delete(f"/admin/sessions/alice@localhost/{instance}")
        assert answer.status_code == 200, answer.text
        ended = await alice.expect(lambda e: e.get("state") == "failed")
        assert ended["reason"]["code"] == 11
        assert "administrator" in ended["reason"]["description"]
        await alice.closed()
        problem_of(
            await admin.delete(f"/admin/sessions/alice@localhost/{instance}"),
            404,
            "session-not-found",
        )
        gone = (await admin.get("/admin/connections")).json()
        assert not [c for c in gone if c["instance"] == instance]

        # a message for the offline session waits in its queue, and is delivered on return
        notified = await admin.post(
            "/identities/alice@localhost/notifications",
            headers=bearer(API),
            json={"type": "text/plain", "content": "while away", "session": instance},
        )
        assert notified.status_code == 202, notified.text
        queues = (await admin.get("/admin/queues", params={"top": 1000})).json()
        queue = [
            q for q in queues if q["identity"] == "alice@localhost" and q["instance"] == instance
        ]
        assert queue and queue[0]["depth"] == 1 and queue[0]["online"] is False
        assert [q["depth"] for q in queues] == sorted((q["depth"] for q in queues), reverse=True)
        problem_of(await admin.get("/admin/queues", params={"top": 0}), 422, "invalid-argument")

    again = await login(server, instance)
    message = await again.expect(lambda e: e.get("content") == "while away")
    assert message["type"] == "text/plain"


async def test_feedme_connections_are_listed(server: ServerProcess) -> None:
    key = server.keys["alice"]
    await WireClient.connect(f"{server.ws_url}?token={key}", subprotocol="feedme")
    async with httpx.AsyncClient(
        base_url=server.http_url, headers=bearer(ADMIN), timeout=30
    ) as admin:
        connections = (await admin.get("/admin/connections")).json()
    feedme = [c for c in connections if c["protocol"] == "feedme"]
    assert [c["identity"] for c in feedme] == ["alice@localhost"]
    assert feedme[0]["instance"] is None and feedme[0]["remote"].startswith("127.0.0.1:")
