"""The web console's own JavaScript clients against the npm clients they imitate.

``console/lime.js`` runs beside the unmodified ``lime-js`` 3.0.1 (+ ``lime-transport-websocket``
2.0.3), and ``console/feedme.js`` beside ``feedme-client`` 0.0.35 (+ ``feedme-transport-ws``
0.0.4), in one Node process each (``tests/conformance/console/compare_*.mjs``), against a real
``tidings serve`` on loopback. Node 20 has no global ``WebSocket``: our clients get
``console/browser_websocket.mjs``, the browser's interface (and its ``close()`` code rule) over
the ``ws`` package feedme-transport-ws already installs. The tests normalize what differs by
construction (node names, ids) and assert that both clients saw the same thing, and what that
thing is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.conformance.console_feed_app import START
from tests.conformance.console_feed_app import STEPS as BATCHES
from tests.server_process import ServerProcess

from tidings.app import Delta
from tidings.protocol.feedme import apply_deltas

pytestmark = pytest.mark.conformance

HERE = Path(__file__).parent
DRIVERS = HERE / "console"
DOMAIN = "localhost"
SERVER_NODE = f"postmaster@{DOMAIN}/server"
NODE = shutil.which("node")
ACCOUNTS = {
    "alice": "alice-pw",  # session: ours
    "bob": "bob-pw",  # session: npm
    "carol": "carol-pw",  # exchange: ours
    "dave": "dave-pw",  # exchange: npm
    "erin": "erin-pw",  # commands: ours (a roster that starts empty)
    "frank": "frank-pw",  # commands: npm (a roster that starts empty)
    "gina": "gina-pw",  # unknown recipient: ours
    "hank": "hank-pw",  # unknown recipient: npm
}


def spec(name: str, instance: str) -> dict[str, str]:
    return {"name": name, "password": ACCOUNTS[name], "instance": instance}


@pytest.fixture(scope="module")
def console_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped console clients as Node ES modules (the files themselves, byte for byte,
    beside a package.json that makes ``.js`` an ES module)."""
    if NODE is None:
        pytest.fail("Node.js is needed to compare the console's clients with the npm ones")
    for package in ("lime/node_modules/lime-js", "feedme/node_modules/feedme-client"):
        if not (HERE / package).is_dir():
            pytest.fail(f"{package} is missing: run npm ci in its tests/conformance folder")
    folder = tmp_path_factory.mktemp("console-js")
    for name in ("lime.js", "feedme.js", "listeners.js"):
        source = resources.files("tidings") / "console" / name
        (folder / name).write_bytes(source.read_bytes())
    (folder / "package.json").write_text('{"type": "module"}')
    return folder


def drive(script: str, scenario: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario of a compare_*.mjs driver and return its JSON result."""
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(DRIVERS / script), *([scenario] if scenario else []), json.dumps(payload)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DRIVERS,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    context = f"{script} {scenario} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert lines, context
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("ok") is True, f"{result.get('error')}\n{context}"
    return result


def normalize(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every string in ``names`` (ids, nodes) replaced by its placeholder."""
    if isinstance(value, dict):
        return {key: normalize(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [normalize(item, names) for item in value]
    if isinstance(value, str):
        return names.get(value, value)
    return value


# -- LIME ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lime_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("console-lime"), args=["--domain", DOMAIN])
    server.add_accounts(ACCOUNTS)
    server.start()
    yield server
    server.stop()


def lime(server: ServerProcess, console_dir: Path, scenario: str, **args: Any) -> dict[str, Any]:
    payload = {
        "ws": server.ws_url,
        "domain": DOMAIN,
        "timeoutMs": 5000,
        "consoleDir": str(console_dir),
        **args,
    }
    return drive("compare_lime.mjs", scenario, payload)


def sides(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return result["ours"], result["npm"]


def without_id(envelope: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in envelope.items() if key != "id"}


def test_lime_sign_in_finish_and_wrong_password(lime_server: ServerProcess, console_dir: Path):
    """Both clients sign in with a plain password and finish; a wrong password fails the same
    way (reason 13, docs/lime.md) and both hand the failed session back to the caller."""
    accounts = {"ours": spec("alice", "ours"), "npm": spec("bob", "npm")}
    ours, npm = sides(lime(lime_server, console_dir, "session", accounts=accounts))
    views = []
    for side in (ours, npm):
        session = side["established"]["id"]
        names = {side["node"]: "<node>", session: "<session>"}
        views.append(normalize({key: side[key] for key in ("established", "finished")}, names))
        assert side["wrong"]["failed"]["id"] != session
        views[-1]["wrong"] = without_id(side["wrong"]["failed"])
    assert views[0] == views[1]
    assert views[0]["established"] == {
        "id": "<session>",
        "from": SERVER_NODE,
        "to": "<node>",
        "state": "established",
    }
    assert views[0]["finished"]["state"] == "finished"
    assert views[0]["wrong"]["state"] == "failed"
    assert views[0]["wrong"]["reason"]["code"] == 13
    assert (ours["node"], npm["node"]) == ("alice@localhost/ours", "bob@localhost/npm")


MESSAGES = [
    {"type": "text/plain", "content": "hello ✓ <b>not markup</b>"},
    {"type": "application/json", "content": {"n": 1, "text": "é🎉", "l": [None, True, 2.5]}},
]


def test_lime_exchange_both_ways(lime_server: ServerProcess, console_dir: Path) -> None:
    """An our-client session and an npm-client session send each other the same messages with
    every receipt on (accepted, dispatched, received, consumed) and consume what they get:
    what each side receives and the notifications each gets for its own messages are the same
    once nodes and ids are named by role. The `received` notifications each client sends by
    itself (autoNotifyReceipt) reach the other side alike; each also answers the other's
    `get /ping` to its node (autoReplyPings)."""
    accounts = {"ours": spec("carol", "ours"), "npm": spec("dave", "npm")}
    result = lime(lime_server, console_dir, "exchange", accounts=accounts, messages=MESSAGES)
    ours, npm = sides(result)
    views = []
    for side, peer in ((ours, npm), (npm, ours)):
        names = {
            side["node"]: "<self>",
            peer["node"]: "<peer>",
            side["node"].split("/")[0]: "<self-identity>",
            side["receipt"]["id"]: "<receipt>",
            side["peerPing"]["id"]: "<ping>",
            side["finished"]["id"]: "<session>",
        }
        names.update({id_: f"<mine-{n}>" for n, id_ in enumerate(side["sent"])})
        names.update({id_: f"<theirs-{n}>" for n, id_ in enumerate(peer["sent"])})
        views.append(normalize(side, names))
        assert side["unexpectedMessages"] == []
    view = views[0]
    for key in ("receipt", "received", "notifications", "peerPing", "finished"):
        assert views[0][key] == views[1][key], key
    assert view["receipt"]["status"] == "success"
    for n, (message, expected) in enumerate(zip(view["received"], MESSAGES, strict=True)):
        assert message["id"] == f"<theirs-{n}>"
        assert message["from"] == "<peer>"
        assert message["to"] == "<self-identity>"
        assert (message["type"], message["content"]) == (expected["type"], expected["content"])
    for n, notifications in enumerate(view["notifications"]):
        assert [(x["event"], x["from"], x["to"], x["id"]) for x in notifications] == [
            ("accepted", SERVER_NODE, "<self>", f"<mine-{n}>"),
            ("dispatched", SERVER_NODE, "<self>", f"<mine-{n}>"),
            ("received", "<peer>", "<self>", f"<mine-{n}>"),
            ("consumed", "<peer>", "<self>", f"<mine-{n}>"),
        ]
    assert view["peerPing"] == {
        "id": "<ping>",
        "from": "<peer>",
        "to": "<self>",
        "method": "get",
        "type": "application/vnd.lime.ping+json",
        "resource": {},
        "status": "success",
    }


PRESENCE = "application/vnd.lime.presence+json"
CONTACT = "application/vnd.lime.contact+json"
COMMANDS: list[dict[str, Any]] = [
    {"method": "get", "uri": "/ping"},
    {
        "method": "set",
        "uri": "/presence",
        "type": PRESENCE,
        "resource": {"status": "available", "routingRule": "identity", "message": "here"},
    },
    {"method": "get", "uri": "/presence"},
    {"method": "get", "uri": "/contacts"},
    {
        "method": "set",
        "uri": "/contacts",
        "type": CONTACT,
        "resource": {"identity": "gina@localhost", "name": "Gina", "sharePresence": False},
    },
    {"method": "get", "uri": "/contacts"},
    {"method": "get", "uri": "/contacts/gina@localhost"},
    {"method": "delete", "uri": "/contacts/gina@localhost"},
    {"method": "get", "uri": "/contacts/gina@localhost"},
    {"method": "get", "uri": "/no-such-resource"},
    {"method": "delete", "uri": "/ping"},
    {"method": "set", "uri": "/presence", "type": PRESENCE, "resource": {"status": "x"}},
]


def test_lime_commands_alike(lime_server: ServerProcess, console_dir: Path) -> None:
    """The same commands (ping, presence, the contact roster, and three bad ones) from each
    client, on two accounts that start alike: the same responses, successes and failure
    reasons (67 no such contact, 62 unknown resource, 63 bad method, 64 bad argument)."""
    accounts = {"ours": spec("erin", "ours"), "npm": spec("frank", "npm")}
    ours, npm = sides(
        lime(lime_server, console_dir, "commands", accounts=accounts, commands=COMMANDS)
    )
    views = []
    for side in (ours, npm):
        names = {side["node"]: "<self>", side["node"].split("/")[0]: "<self-identity>"}
        names.update({r["id"]: f"<command-{n}>" for n, r in enumerate(side["responses"])})
        views.append(normalize(side["responses"], names))
    assert views[0] == views[1]
    statuses = [(r["method"], r["status"], r.get("reason", {}).get("code")) for r in views[0]]
    assert statuses == [
        ("get", "success", None),
        ("set", "success", None),
        ("get", "success", None),
        ("get", "success", None),
        ("set", "success", None),
        ("get", "success", None),
        ("get", "success", None),
        ("delete", "success", None),
        ("get", "failure", 67),
        ("get", "failure", 62),
        ("delete", "failure", 63),
        ("set", "failure", 64),
    ]
    assert views[0][2]["resource"]["message"] == "here"
    assert views[0][3]["resource"]["items"] == []
    assert [item["identity"] for item in views[0][5]["resource"]["items"]] == ["gina@localhost"]
    assert views[0][6]["resource"]["name"] == "Gina"


def test_lime_unknown_recipient_fails_alike(lime_server: ServerProcess, console_dir: Path):
    """A message to an account that does not exist: both clients get the same `failed`
    notification (reason 42) for it."""
    accounts = {"ours": spec("gina", "ours"), "npm": spec("hank", "npm")}
    result = lime(
        lime_server, console_dir, "unknownRecipient", accounts=accounts, to="nobody@localhost"
    )
    views = [
        normalize(side["failed"], {side["id"]: "<id>", side["node"]: "<self>"})
        for side in sides(result)
    ]
    assert views[0] == views[1]
    assert views[0]["event"] == "failed"
    assert views[0]["id"] == "<id>"
    assert views[0]["reason"]["code"] == 42


# -- Feedme -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def feed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("console-feedme"),
        args=["--app", "tests.conformance.console_feed_app:app"],
    )
    server.start()
    yield server
    server.stop()


STEPS = ["numbers", "strings", "flags", "arrays", "values", "root"]


def expected_documents() -> list[dict[str, Any]]:
    """The document after each step, by the server's own delta code (a third implementation
    beside the two clients)."""
    documents = [START]
    for step in STEPS:
        deltas = [msgspec.convert(delta, Delta) for delta in BATCHES[step]]
        documents.append(apply_deltas(documents[-1], deltas))
    return documents


def test_feedme_clients_agree(feed_server: ServerProcess, console_dir: Path) -> None:
    """feedme.js and feedme-client open the same feed; the server reveals six batches of
    deltas (all 14 operations, unicode strings, keys whose order differs by code unit), each
    invoked by one client in turn: both log the same actions with the same old and new data,
    which is what the server's own delta code computes. A revelation with a wrong FeedMd5:
    both close the feed (BAD_ACTION_REVELATION), report INVALID_HASH, in that order, and
    reopen it with the server's document, and revelations apply again. A failing action and a
    refused feed give both the server's code and data; a termination closes the feed for both
    with TERMINATED and the server's code and data."""
    payload = {
        "ws": feed_server.ws_url,
        "consoleDir": str(console_dir),
        "timeoutMs": 5000,
        "room": "r1",
        "steps": STEPS,
    }
    result = drive("compare_feedme.mjs", "", payload)
    ours, npm = sides(result)
    assert ours["log"] == npm["log"]
    log = ours["log"]
    events = [entry["event"] for entry in log]
    after = ["close", "badServerMessage", "open", "action", "close"]
    assert events == ["open", *(["action"] * len(STEPS)), *after]
    documents = expected_documents()
    assert log[0]["data"] == documents[0]
    for n, step in enumerate(STEPS):
        action = log[1 + n]
        assert (action["name"], action["actionData"]) == (step, {"room": "r1"})
        assert action["oldData"] == documents[n]
        assert action["newData"] == documents[n + 1], step
    assert ours["dataBeforeBadHash"] == npm["dataBeforeBadHash"] == documents[-1]
    bad_close, bad_message, reopened, count, terminated = log[len(STEPS) + 1 :]
    assert bad_close == {
        "event": "close",
        "code": "BAD_ACTION_REVELATION",
        "serverCode": None,
        "serverData": None,
    }
    assert bad_message == {"event": "badServerMessage", "code": "INVALID_HASH"}
    assert reopened["data"] == {**documents[-1], "bad": "hash"}
    assert count["oldData"] == reopened["data"]
    assert count["newData"] == {**reopened["data"], "n": 1, "list": ["again"]}
    assert terminated == {
        "event": "close",
        "code": "TERMINATED",
        "serverCode": "ROOM_CLOSED",
        "serverData": {"room": "r1"},
    }
    assert ours["stateAfterTermination"] == npm["stateAfterTermination"] == "closed"
    # feedme-client wraps a server's refusal as REJECTED: serverErrorCode; feedme.js gives the
    # server's code itself (docs/console.md). The server's code and data are the same.
    assert npm["failed"].pop("code") == npm["refused"].pop("code") == "REJECTED"
    assert ours["failed"] == npm["failed"]
    assert ours["failed"] == {
        "serverCode": "NOPE",
        "serverData": {"why": "asked to fail", "args": {"x": "1"}},
    }
    assert ours["refused"] == npm["refused"]
    assert ours["refused"] == {
        "serverCode": "FORBIDDEN",
        "serverData": {"room": "forbidden", "why": "nobody may read it"},
        "state": "closed",
    }
    assert [(r["by"], r["result"]) for r in result["actionResults"]] == [
        (("ours", "npm")[n % 2], {"data": {"step": step}}) for n, step in enumerate(STEPS)
    ]
