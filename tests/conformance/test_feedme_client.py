"""The unmodified npm feedme-client 0.0.35 (+ feedme-transport-ws 0.0.4) against tidings serve.

reference/feedme.md section 8.5 lists the behaviour this reproduces: connect, action success
and failure, feed open with data, revelation applied with its hash verified, a bad hash making
the client close and reopen the feed, termination (TERMINATED with the server's code), close,
and reconnection re-opening feeds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.server_process import ServerProcess

pytestmark = pytest.mark.conformance
PACKAGE = Path(__file__).parent / "feedme"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    assert shutil.which("node"), "node is required for the conformance suite"
    if not (PACKAGE / "node_modules" / "feedme-client").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True)
    return PACKAGE / "node_modules"


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("feedme-conformance"),
        args=["--app", "tests.conformance.feedme_app:app"],
    )
    assert server.tidings("account", "add", "fay", "--password", "pw").returncode == 0
    server.start()
    yield server
    server.stop()


def run_scenario(server: ServerProcess, token: str | None = None) -> dict[str, dict]:
    args = ["node", str(PACKAGE / "scenario.js"), server.ws_url]
    if token:
        args.append(token)
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=PACKAGE)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    seen = {line["kind"]: line for line in lines}
    assert result.returncode == 0, (result.stdout, result.stderr)
    return seen


def test_real_client_full_scenario(node_modules, app_server):
    seen = run_scenario(app_server)
    assert seen["connect"]["state"] == "connected"
    assert seen["echo"]["data"] == {"echo": {"a": "1"}}
    assert seen["fail"]["message"].startswith("REJECTED")
    assert (seen["fail"]["code"], seen["fail"]["data"]) == ("NOPE", {"why": "asked to fail"})
    assert seen["open"]["data"]["who"] == "anonymous"
    action = seen["action"]
    assert action["name"] == "bump"
    assert action["newData"]["n"] == action["oldData"]["n"] + 1
    assert seen["badServerMessage"]["message"].startswith("INVALID_HASH")
    assert seen["badHashClose"]["message"].startswith("BAD_ACTION_REVELATION")
    assert "n" in seen["reopened"]["data"]
    assert seen["terminated"]["message"].startswith("TERMINATED")
    assert (seen["terminated"]["code"], seen["terminated"]["data"]) == (
        "GAME_OVER",
        {"final": seen["reopened"]["data"]["n"]},
    )
    assert seen["openAfterTermination"]["state"] == "open"
    assert seen["reconnectedAndReopened"]["state"] == "open"
    assert seen["closed"]["err"] is None
    assert "done" in seen


def test_real_client_with_a_token_is_identified(node_modules, app_server):
    key = app_server.tidings("account", "key", "fay").stdout.strip()
    seen = run_scenario(app_server, key)
    assert seen["open"]["data"]["who"] == "fay@localhost"


OWNER_TOKEN = "conformance-api-token"


@pytest.fixture(scope="module")
def owner_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("feedme-owner-feeds"), args=["--api-token", OWNER_TOKEN]
    )
    server.add_accounts({"bob": "pw", "ann": "pw"})
    server.start()
    yield server
    server.stop()


def publish_owned(server: ServerProcess, key: str, feed: str, body: dict) -> None:
    import httpx

    answer = httpx.post(
        f"{server.http_url}/feeds/{feed}/actions",
        headers={"Authorization": f"Bearer {key}"},
        json=body,
    )
    assert answer.status_code == 200, answer.text


def test_real_client_opens_an_accounts_own_feed_as_its_owner(node_modules, owner_server):
    """docs/feedme.md, Accounts' own feeds: FeedOpen of ~bob/NAME with bob's key; the owner's
    publications reach the client, applied with their FeedMd5 verified."""
    key = owner_server.tidings("account", "key", "bob").stdout.strip()
    feed = "~bob/heart-rate"
    publish_owned(owner_server, key, feed, {"action_name": "init", "feed_data": {"bpm": 60}})
    process = subprocess.Popen(
        ["node", str(PACKAGE / "owner_feed.js"), owner_server.ws_url, key, feed, "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PACKAGE,
    )
    assert process.stdout is not None
    seen: dict[str, list[dict]] = {}
    try:
        for line in process.stdout:
            event = json.loads(line)
            seen.setdefault(event["kind"], []).append(event)
            if event["kind"] == "open":  # the feed is open: the owner publishes twice
                assert event["data"] == {"bpm": 60}
                delta = {"Operation": "Increment", "Path": ["bpm"], "Value": 2}
                publish_owned(owner_server, key, feed, {"action_name": "beat", "deltas": [delta]})
                publish_owned(
                    owner_server, key, feed, {"action_name": "reset", "feed_data": {"bpm": 0}}
                )
    finally:
        assert process.wait(timeout=60) == 0, (seen, process.stderr and process.stderr.read())
    assert "badServerMessage" not in seen and "timeout" not in seen, seen
    beat, reset = seen["action"]
    assert (beat["name"], beat["oldData"], beat["newData"]) == ("beat", {"bpm": 60}, {"bpm": 62})
    assert (reset["name"], reset["newData"]) == ("reset", {"bpm": 0})
    assert "done" in seen


def test_real_client_of_another_account_is_refused(node_modules, owner_server):
    key = owner_server.tidings("account", "key", "ann").stdout.strip()
    args = ["node", str(PACKAGE / "owner_feed.js"), owner_server.ws_url, key, "~bob/heart-rate"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=PACKAGE)
    assert result.returncode == 0, (result.stdout, result.stderr)
    seen = {json.loads(line)["kind"]: json.loads(line) for line in result.stdout.splitlines()}
    refused = seen["refused"]
    assert refused["message"].startswith("REJECTED")
    assert refused["code"] == "UNAUTHORIZED"
    assert refused["data"]["errorId"] == "not-granted"
