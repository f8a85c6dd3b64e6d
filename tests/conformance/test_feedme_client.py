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
