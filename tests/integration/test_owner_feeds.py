"""Accounts' own feeds (``~name/FEED``) on a real ``tidings serve``: the owner publishes over
HTTP with its API key and over LIME (``set /feeds/FEED``), reads over HTTP and Feedme, and
another account, a client without a token and a wrong key are refused on each surface with
their exact codes. (Granted readers: the unit tests over a fake GrantChecker, and the consent
suite end to end.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess

from tidings.protocol.feedme import feed_md5

pytestmark = pytest.mark.integration
TOKEN = "owner-feeds-api-token"
PASSWORDS = {"bob": "bob-pw", "ann": "ann-pw"}
PUBLICATION = "application/vnd.tidings.feed-publication+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("owner-feeds")
    process = ServerProcess(data_dir, args=["--api-token", TOKEN, "--allow-guests"])
    process.add_accounts(PASSWORDS)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keys(server: ServerProcess) -> dict[str, str]:
    return {name: server.tidings("account", "key", name).stdout.strip() for name in PASSWORDS}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def feedme(server: ServerProcess, key: str | None = None) -> WireClient:
    query = f"?token={key}" if key else ""
    client = await WireClient.connect(server.ws_url + query, subprotocol="feedme")
    client.send({"MessageType": "Handshake", "Versions": ["0.1"]})
    answer = await client.expect(lambda m: m.get("MessageType") == "HandshakeResponse")
    assert answer["Success"] is True
    return client


async def open_feed(client: WireClient, name: str) -> dict[str, Any]:
    client.send({"MessageType": "FeedOpen", "FeedName": name, "FeedArgs": {}})
    return await client.expect(
        lambda m: m.get("MessageType") == "FeedOpenResponse" and m.get("FeedName") == name
    )


async def lime(server: ServerProcess, name: str) -> WireClient:
    client = await WireClient.connect(server.ws_url)
    session = await client.establish(f"{name}@localhost/{fresh('dev')}", password=PASSWORDS[name])
    assert session["state"] == "established", session
    return client


async def command(client: WireClient, method: str, uri: str, **fields: Any) -> dict[str, Any]:
    return await client.command(id=str(uuid.uuid4()), method=method, uri=uri, **fields)


async def test_the_owner_publishes_over_http_with_its_key_and_reads_it_back(server, keys):
    feed = fresh("heart-rate")
    url = f"{server.http_url}/feeds/~bob/{feed}"
    async with httpx.AsyncClient() as http:
        empty = await http.get(url, headers=bearer(keys["bob"]))
        assert empty.status_code == 200 and empty.json()["feed_data"] == {}
        first = await http.post(
            f"{url}/actions",
            headers=bearer(keys["bob"]),
            json={"action_name": "beat", "feed_data": {"bpm": 60}},
        )
        assert first.status_code == 200, first.text
        assert first.json()["feed_name"] == f"~bob/{feed}"
        more = await http.post(
            f"{url}/actions",
            headers=bearer(keys["bob"]),
            json={
                "action_name": "beat",
                "deltas": [{"Operation": "Increment", "Path": ["bpm"], "Value": 2}],
            },
        )
        assert more.json()["feed_md5"] == feed_md5({"bpm": 62})
        read = await http.get(url, headers=bearer(keys["bob"]))
        assert read.json() == {
            "feed_name": f"~bob/{feed}",
            "feed_args": {},
            "feed_data": {"bpm": 62},
            "feed_md5": feed_md5({"bpm": 62}),
        }
        by_server = await http.get(url, headers=bearer(TOKEN))
        assert by_server.json()["feed_data"] == {"bpm": 62}


async def test_http_refusals_have_their_exact_ids(server, keys):
    feed = fresh("private")
    url = f"{server.http_url}/feeds/~bob/{feed}"
    body = {"action_name": "x", "feed_data": {"secret": 1}}
    async with httpx.AsyncClient() as http:
        assert (
            await http.post(f"{url}/actions", headers=bearer(keys["bob"]), json=body)
        ).is_success
        cases = [
            ("get", url, bearer(keys["ann"]), 403, "not-granted"),
            ("post", f"{url}/actions", bearer(keys["ann"]), 403, "not-granted"),
            ("get", url, {}, 401, "bad-credentials"),
            ("get", url, bearer("not-a-key"), 401, "bad-credentials"),
            ("post", f"{url}/actions", {"Authorization": keys["bob"]}, 401, "bad-credentials"),
            (
                "get",
                f"{server.http_url}/feeds/~nobody/{feed}",
                bearer(keys["ann"]),
                403,
                "not-granted",
            ),
            (
                "post",
                f"{server.http_url}/feeds/~nobody/x/actions",
                bearer(TOKEN),
                404,
                "account-not-found",
            ),
            (
                "get",
                f"{server.http_url}/feeds/~bob/bad*name",
                bearer(keys["bob"]),
                422,
                "invalid-argument",
            ),
            ("get", f"{server.http_url}/feeds/~bob", {}, 422, "invalid-argument"),
            (
                "post",
                f"{server.http_url}/feeds/~bob/actions",
                bearer(TOKEN),
                422,
                "invalid-argument",
            ),
        ]
        for method, target, headers, status, error_id in cases:
            answer = await http.request(
                method.upper(), target, headers=headers, json=body if method == "post" else None
            )
            assert (answer.status_code, answer.json()["error_id"]) == (status, error_id), (
                method,
                target,
                answer.text,
            )
            assert answer.headers["content-type"] == "application/problem+json"
        read = await http.get(url, headers=bearer(keys["bob"]))
        assert read.json()["feed_data"] == {"secret": 1}  # nothing refused was written


async def test_the_owner_reads_over_feedme_and_sees_revelations(server, keys):
    feed = fresh("steps")
    async with httpx.AsyncClient() as http:
        await http.post(
            f"{server.http_url}/feeds/~bob/{feed}/actions",
            headers=bearer(keys["bob"]),
            json={"action_name": "init", "feed_data": {"steps": 0}},
        )
        client = await feedme(server, keys["bob"])
        opened = await open_feed(client, f"~bob/{feed}")
        assert opened["Success"] is True and opened["FeedData"] == {"steps": 0}
        published = await http.post(
            f"{server.http_url}/feeds/~bob/{feed}/actions",
            headers=bearer(keys["bob"]),
            json={
                "action_name": "walk",
                "action_data": {"n": 5},
                "deltas": [{"Operation": "Increment", "Path": ["steps"], "Value": 5}],
            },
        )
        assert published.json()["delivered"] == 1
    revealed = await client.expect(lambda m: m.get("MessageType") == "ActionRevelation")
    assert revealed["FeedName"] == f"~bob/{feed}"
    assert revealed["ActionData"] == {"n": 5}
    assert revealed["FeedMd5"] == feed_md5({"steps": 5})


async def test_feedme_refuses_others_with_documented_codes(server, keys):
    feed = f"~bob/{fresh('mood')}"
    stranger = await feedme(server, keys["ann"])
    refused = await open_feed(stranger, feed)
    assert refused["Success"] is False
    assert refused["ErrorCode"] == "UNAUTHORIZED"
    assert refused["ErrorData"]["errorId"] == "not-granted"
    anonymous = await feedme(server)
    nameless = await open_feed(anonymous, feed)
    assert (nameless["ErrorCode"], nameless["ErrorData"]["errorId"]) == (
        "UNAUTHORIZED",
        "forbidden",
    )
    malformed = await open_feed(anonymous, "~bob")
    assert (malformed["ErrorCode"], malformed["ErrorData"]["errorId"]) == (
        "INVALID_FEED",
        "invalid-argument",
    )


async def test_the_owner_publishes_and_reads_over_lime(server, keys):
    feed = fresh("sleep")
    watcher = await feedme(server, keys["bob"])
    assert (await open_feed(watcher, f"~bob/{feed}"))["FeedData"] == {}
    bob = await lime(server, "bob")
    done = await command(
        bob,
        "set",
        f"/feeds/{feed}",
        type=PUBLICATION,
        resource={"action_name": "night", "feed_data": {"hours": 7}},
    )
    assert done["status"] == "success", done
    assert done["type"] == "application/vnd.tidings.feed-revealed+json"
    assert done["resource"]["feed_name"] == f"~bob/{feed}"
    assert done["resource"]["delivered"] == 1
    revealed = await watcher.expect(lambda m: m.get("MessageType") == "ActionRevelation")
    assert revealed["FeedMd5"] == feed_md5({"hours": 7})
    for uri in (f"/feeds/{feed}", f"lime://bob@localhost/feeds/{feed}"):
        read = await command(bob, "get", uri)
        assert read["status"] == "success", read
        assert read["type"] == "application/vnd.tidings.feed+json"
        assert read["resource"]["feed_data"] == {"hours": 7}
    async with httpx.AsyncClient() as http:
        over_http = await http.get(
            f"{server.http_url}/feeds/~bob/{feed}", headers=bearer(keys["bob"])
        )
    assert over_http.json()["feed_data"] == {"hours": 7}


async def test_lime_refusals_have_their_codes(server):
    feed = fresh("diary")
    ann = await lime(server, "ann")
    body = {"action_name": "x", "feed_data": {}}
    cases = [
        ("get", f"lime://bob@localhost/feeds/{feed}", {}, 35),
        ("set", f"lime://bob@localhost/feeds/{feed}", {"type": PUBLICATION, "resource": body}, 35),
        ("set", f"/feeds/{feed}", {"type": "text/plain", "resource": body}, 64),
        ("set", f"/feeds/{feed}", {"type": PUBLICATION, "resource": {"action_name": "x"}}, 64),
        ("set", "/feeds/bad*name", {"type": PUBLICATION, "resource": body}, 64),
        ("get", "/feeds", {}, 67),
        ("delete", f"/feeds/{feed}", {}, 63),
    ]
    for method, uri, fields, code in cases:
        answer = await command(ann, method, uri, **fields)
        assert answer["status"] == "failure", (uri, answer)
        assert answer["reason"]["code"] == code, (method, uri, answer)
