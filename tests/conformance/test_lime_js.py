"""LIME conformance: the unmodified npm clients against a real ``tidings serve`` process.

Each test runs ``node tests/conformance/lime/scenario.js <scenario> '<json>'``; the script drives
``lime-js@3.0.1`` + ``lime-transport-websocket@2.0.3`` (pinned in ``lime/package-lock.json``)
exactly as an application would and prints one JSON line with what the client saw. The tests
assert on that. "Reference" below is /work/shared/reference/lime.md (copied facts are cited by
section in each docstring).

One server serves the whole module; accounts are made with the CLI before it starts. Tests do not
depend on each other: each one uses its own accounts, or its own instance names, wherever
server state (rosters, queues, delegations) could leak from one test to another.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.server_process import ServerProcess

pytestmark = pytest.mark.conformance

LIME_DIR = Path(__file__).parent / "lime"
DOMAIN = "localhost"
SERVER_NODE = f"postmaster@{DOMAIN}/server"
NODE = shutil.which("node")
NPM = shutil.which("npm")
SCENARIO_TIMEOUT_S = 40

# name -> password. Several tests need an account nobody else touched (an empty roster, no
# delegation yet, a recipient that never connected), hence the number of them.
ACCOUNTS = {
    "alice": "alice-pw",  # general sender
    "bob": "bob-pw",  # general recipient
    "carol": "carol-pw",  # offline delivery: never connected before that test
    "dave": "dave-pw",  # presence: the watcher
    "erin": "erin-pw",  # presence: the owner (its roster starts empty)
    "frank": "frank-pw",  # contacts: a roster that starts empty
    "gina": "gina-pw",  # delegation owner (no delegation before that test)
    "hank": "hank-pw",  # redelivery: a recipient that never connected before that test
    "ivan": "ivan-pw",  # key authentication
}
KEY_ACCOUNT = "ivan"


@dataclass
class Server:
    ws: str
    data_dir: Path
    key: str
    output: deque[str] = field(default_factory=deque)


Scenario = Callable[..., dict[str, Any]]
"""``lime(scenario, **args)``: run one scenario.js scenario against the module's server."""


def account(name: str, **extra: Any) -> dict[str, Any]:
    """A client description for scenario.js: plain authentication by default."""
    return {"name": name, "password": ACCOUNTS[name], **extra}


def alice_to(recipient: str, to: str | None = None) -> dict[str, Any]:
    """Arguments of the message scenarios: alice sends to ``recipient`` (its identity unless
    ``to`` says otherwise)."""
    return {
        "sender": account("alice"),
        "recipient": account(recipient),
        "to": to if to is not None else f"{recipient}@{DOMAIN}",
    }


@pytest.fixture(scope="module")
def lime_js() -> Path:
    """The Node package, installed from the lockfile (``npm ci``) when node_modules is missing."""
    if NODE is None or NPM is None:
        pytest.fail("Node.js and npm are needed for the lime-js conformance suite")
    installed = all(
        (LIME_DIR / "node_modules" / package / "package.json").is_file()
        for package in ("lime-js", "lime-transport-websocket")
    )
    if not installed:
        done = subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund"],
            cwd=LIME_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci failed in {LIME_DIR}:\n{done.stdout}\n{done.stderr}")
    for package, version in (("lime-js", "3.0.1"), ("lime-transport-websocket", "2.0.3")):
        manifest = json.loads((LIME_DIR / "node_modules" / package / "package.json").read_text())
        assert manifest["version"] == version, f"{package} {manifest['version']} != {version}"
    return LIME_DIR


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``tidings serve`` on free loopback ports (port 0, read back from the ready line)."""
    data_dir = tmp_path_factory.mktemp("tidings-lime-js")
    process = ServerProcess(data_dir, args=["--domain", DOMAIN, "--allow-guests"])
    process.add_accounts(ACCOUNTS)
    key = process.new_key(KEY_ACCOUNT)
    try:
        process.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield Server(ws=process.ws_url, data_dir=data_dir, key=key, output=process.output)
    finally:
        process.stop()


def run(lime_js: Path, server: Server, scenario: str, **args: Any) -> dict[str, Any]:
    """Run one scenario in a fresh Node process and return its JSON result."""
    assert NODE is not None
    payload = {"ws": server.ws, "domain": DOMAIN, "timeoutMs": 5000, **args}
    done = subprocess.run(
        [NODE, "scenario.js", scenario, json.dumps(payload)],
        cwd=lime_js,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    context = (
        f"scenario {scenario} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n"
        f"{done.stderr}\nserver output (tail):\n{''.join(list(server.output)[-30:])}"
    )
    assert lines, context
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("ok") is True, f"{result.get('error')}\n{context}"
    return result


@pytest.fixture
def lime(lime_js: Path, server: Server) -> Scenario:
    def run_scenario(scenario: str, **args: Any) -> dict[str, Any]:
        return run(lime_js, server, scenario, **args)

    return run_scenario


# -- session establishment ----------------------------------------------------------------------


def test_establish_plain(lime: Scenario) -> None:
    """Reference §3.2, §3.3 A/B, §3.4 (plain: base64 password, lime-js adds `scheme` inside
    `authentication`), §12 MUST 3, 5, 6: new → authenticating → established with `to`."""
    result = lime("establish", client=account("alice", instance="home"))
    established = result["established"]
    assert established["state"] == "established"
    assert established["to"] == "alice@localhost/home"
    assert established["from"] == SERVER_NODE
    assert isinstance(established["id"], str) and established["id"]
    assert result["localNode"] == "alice@localhost/home"
    assert result["remoteNode"] == SERVER_NODE


def test_establish_key(lime: Scenario, server: Server) -> None:
    """Reference §3.4 (key: `{"key": base64(key)}`, passed through unchanged by lime-js),
    §10 (`Lime.KeyAuthentication`), §12 MUST 5."""
    client = {"name": KEY_ACCOUNT, "key": server.key, "instance": "bot"}
    result = lime("establish", client=client)
    assert result["established"]["state"] == "established"
    assert result["established"]["to"] == f"{KEY_ACCOUNT}@localhost/bot"


def test_establish_guest(lime: Scenario) -> None:
    """Reference §3.3 B (guest trace, `authentication: {"scheme":"guest"}`), §3.4 (guest: any
    name, a fresh GUID by client convention)."""
    result = lime("establish", client={"guest": True, "instance": "web"})
    to = result["established"]["to"]
    assert to.startswith("guest-") and to.endswith("@localhost/web")
    assert result["localNode"] == to


def test_establish_identity_without_domain(lime: Scenario) -> None:
    """Reference §2.3 (an identity without a domain gives e.g. `guest/chat`; the server must
    cope), §9.2 (the go ws-chat lime-js client establishes as a bare nickname), §12 MUST 5."""
    client = {"guest": True, "identity": "nick-7d1c2f", "instance": "chat"}
    result = lime("establish", client=client)
    assert result["established"]["to"] == "nick-7d1c2f@localhost/chat"


def test_establish_wrong_password_fails_13(lime: Scenario) -> None:
    """Reference §3.2 step 3 (failed {13}), §3.5 (`establishSession()` rejects with the failed
    session envelope itself, not an Error), §12 MUST 6."""
    client = {"name": "alice", "password": "not-the-password", "instance": "bad"}
    result = lime("establishFails", client=client)
    assert result["rejected"] is True
    assert result["isError"] is False, result
    session = result["session"]
    assert session["state"] == "failed"
    assert session["reason"]["code"] == 13
    assert session["from"] == SERVER_NODE


def test_instance_undefined_becomes_default(lime: Scenario) -> None:
    """Reference §2.3 (lime-js puts `name@domain/undefined` on the wire when the app passes no
    instance), §3.2 registration (a missing instance becomes `default`), §12 MUST 5, 6."""
    result = lime("establish", client=account("alice", instance=None))
    assert result["established"]["to"] == "alice@localhost/default"
    assert result["localNode"].endswith("/default")


def test_finishing_session(lime: Scenario) -> None:
    """Reference §1.3, §3.2 (`finishing` → `finished` + close), §3.5 (`sendFinishingSession()`
    resolves with the finished envelope), §12 MUST 7."""
    result = lime("establish", client=account("alice", instance="leaving"))
    finished = result["finished"]
    assert finished["state"] == "finished"
    assert finished["id"] == result["established"]["id"]
    assert finished["to"] == "alice@localhost/leaving"
    assert result["stateAfterFinish"] == "finished"


# -- messages and notifications ----------------------------------------------------------------


def test_message_between_two_lime_js_clients(lime: Scenario) -> None:
    """Reference §4 (`from` MUST be stamped with the sender's full node; lime-js sends none),
    §5 (`received` from the destination forwarded with `from` = its node), §8.2 (default
    receipt: no accepted/dispatched), §10.1, §12 MUST 8."""
    result = lime("sendReceive", **alice_to("bob"), content="hello, bob")
    delivered = result["delivered"]
    assert delivered["from"] == result["senderNode"] == "alice@localhost/sender"
    assert delivered["type"] == "text/plain"
    assert delivered["content"] == "hello, bob"
    assert delivered["id"] == result["id"]
    received = result["receivedNotification"]
    assert received["from"] == result["recipientNode"] == "bob@localhost/recipient"
    # Without /receipt only `failed` is sent by the server; `received` comes from bob.
    events = [n["event"] for n in result["senderNotifications"]]
    assert events == ["received"], result["senderNotifications"]


def test_receipt_accepted_dispatched_received(lime: Scenario) -> None:
    """Reference §8.2 (/receipt {events:[accepted,dispatched]}), §5 (events, server ones from the
    server, destination ones with `from` = destination node), §10.1 wire trace."""
    result = lime(
        "sendReceive",
        **alice_to("bob"),
        receipt=["accepted", "dispatched"],
        consume=True,
    )
    assert result["receiptResponse"]["status"] == "success"
    notifications = result["senderNotifications"]
    events = [n["event"] for n in notifications]
    assert events[:2] == ["accepted", "dispatched"], notifications
    assert set(events[2:]) == {"received", "consumed"}, notifications
    for notification in notifications[:2]:
        assert notification.get("from", SERVER_NODE) == SERVER_NODE
        assert notification.get("to", "alice@localhost/sender") == "alice@localhost/sender"
    for notification in notifications[2:]:
        assert notification["from"] == "bob@localhost/recipient"
        assert notification["to"] == "alice@localhost/sender"


def test_json_content_and_unicode_relayed_untouched(lime: Scenario) -> None:
    """Reference §4 (`content` is a JSON value for JSON types), §8.8/§8.9 (relay unknown types
    untouched), §1.2 (UTF-8 text frames)."""
    content = {"state": "composing", "note": "héllo ✓ 🎉", "n": 3, "nested": {"a": [1, None]}}
    result = lime(
        "sendReceive",
        **alice_to("bob"),
        type="application/vnd.lime.chatstate+json",
        content=content,
    )
    assert result["delivered"]["type"] == "application/vnd.lime.chatstate+json"
    assert result["delivered"]["content"] == content


def test_message_to_full_node(lime: Scenario) -> None:
    """Reference §2.3, §4 (`to` may name the instance), §9.1 (routing by node)."""
    result = lime("sendReceive", **alice_to("bob", to="bob@localhost/recipient"))
    assert result["delivered"]["from"] == "alice@localhost/sender"
    assert result["receivedNotification"]["from"] == "bob@localhost/recipient"


def test_message_to_unknown_account_fails_42(lime: Scenario) -> None:
    """Reference §5 (failed notification shape), §7 (42 ROUTING_DESTINATION_NOT_FOUND), §9.1,
    §12 MUST 10."""
    result = lime("unknownDestination", sender=account("alice"), to="nobody@localhost")
    failed = result["failed"]
    assert failed["event"] == "failed"
    assert failed["id"] == result["id"]
    assert failed["reason"]["code"] == 42
    assert failed.get("to", result["senderNode"]) == result["senderNode"]


def test_offline_delivery(lime: Scenario) -> None:
    """Reference §4, §8.2, §9.3 (accepted when taken in; dispatched when handed to the
    destination): the recipient connects after the send and gets the message on connect."""
    result = lime("offlineDelivery", **alice_to("carol"))
    assert result["accepted"]["event"] == "accepted"
    delivered = result["delivered"]
    assert delivered["from"] == "alice@localhost/sender"
    assert delivered["content"] == "while you were out"
    assert result["dispatched"]["event"] == "dispatched"
    assert result["receivedNotification"]["from"] == "carol@localhost/recipient"


def test_unacknowledged_message_is_redelivered(lime: Scenario) -> None:
    """Reference §8.2 / §5 (`received` is the destination's acknowledgement; lime-js sends it only
    with autoNotifyReceipt), §10 (`autoNotifyReceipt`): without `received` the message comes back
    on the next session of the node; after it, never again."""
    result = lime("redelivery", **alice_to("hank"))
    assert result["first"]["id"] == result["second"]["id"] == result["id"]
    assert result["receivedNotification"]["from"] == "hank@localhost/inbox"
    assert result["thirdSessionMessageIds"] == [result["marker"]]


def test_fire_and_forget_message(lime: Scenario) -> None:
    """Reference §2.2 / §4 (no `id`: fire-and-forget, no notifications)."""
    result = lime("fireAndForget", **alice_to("bob"))
    delivered = result["delivered"]
    assert "id" not in delivered
    assert delivered["from"] == result["senderNode"]
    assert result["accepted"]["event"] == "accepted"
    assert result["notificationsWithoutId"] == []


def test_delegation(lime: Scenario) -> None:
    """Reference §2.4 (`pp`: the delegate node sending on behalf of `from`), §7 (32
    AUTHORIZATION_UNAUTHORIZED_SENDER), §8.6 (`set /delegations {target}`)."""
    result = lime(
        "delegation",
        owner=account("gina"),
        delegate=account("bob"),
        recipient=account("alice"),
    )
    assert result["denied"]["reason"]["code"] == 32
    assert result["granted"]["status"] == "success"
    delivered = result["delivered"]
    assert delivered["from"] == "gina@localhost"
    assert delivered["pp"] == result["delegateNode"] == "bob@localhost/delegate"


# -- commands -----------------------------------------------------------------------------------


def test_ping(lime: Scenario) -> None:
    """Reference §6.1, §8.3, §12 MUST 9: `get /ping` → success, ping type, `{}`, no `uri`."""
    response = lime("ping", client=account("alice"))["response"]
    assert response["status"] == "success"
    assert response["method"] == "get"
    assert response["type"] == "application/vnd.lime.ping+json"
    assert response["resource"] == {}
    assert "uri" not in response


def test_presence_set_get(lime: Scenario) -> None:
    """Reference §8.1 (presence document), §6 (set → success; get → type + resource)."""
    presence = {"status": "available", "routingRule": "identity", "message": "at my desk"}
    result = lime("presence", client=account("alice"), presence=presence)
    assert result["set"]["status"] == "success"
    assert "uri" not in result["set"]
    get = result["get"]
    assert get["status"] == "success"
    assert get["type"] == "application/vnd.lime.presence+json"
    for key, value in presence.items():
        assert get["resource"][key] == value


def test_contacts(lime: Scenario) -> None:
    """Reference §8.5 (get /contacts → collection with `items: []` when empty; set then get
    /contacts/{identity}), §8.8 (collection: itemType, items, total as an int), §7 (67)."""
    contact = {"identity": "erin@localhost", "name": "Erin", "sharePresence": False}
    result = lime("contacts", client=account("frank"), contact=contact, missing="zed@localhost")
    empty = result["empty"]
    assert empty["status"] == "success"
    assert empty["type"] == "application/vnd.lime.collection+json"
    assert empty["resource"]["items"] == []
    assert empty["resource"]["itemType"] == "application/vnd.lime.contact+json"
    assert result["set"]["status"] == "success"
    one = result["one"]
    assert one["status"] == "success"
    assert one["type"] == "application/vnd.lime.contact+json"
    for key, value in contact.items():
        assert one["resource"][key] == value
    listing = result["list"]["resource"]
    assert [item["identity"] for item in listing["items"]] == ["erin@localhost"]
    assert listing.get("total", 1) == 1 and not isinstance(listing.get("total", 1), str)
    assert result["missing"]["status"] == "failure"
    assert result["missing"]["reason"]["code"] == 67


def test_unknown_resource_62(lime: Scenario) -> None:
    """Reference §7 (62 COMMAND_RESOURCE_NOT_SUPPORTED), §6 (failure carries `reason`, echoes
    `id` and `method`, no `uri`), §12 MUST 9."""
    result = lime(
        "commands",
        client=account("alice"),
        commands=[{"method": "get", "uri": "/no-such-resource"}],
    )
    (response,) = result["responses"]
    assert response["status"] == "failure"
    assert response["reason"]["code"] == 62
    assert response["method"] == "get"
    assert "uri" not in response


def test_bad_method_63_and_bad_argument_64(lime: Scenario) -> None:
    """Reference §7 (63 COMMAND_METHOD_NOT_SUPPORTED, 64 COMMAND_INVALID_ARGUMENT), §6 (the
    response echoes the request method), §8.1 (presence `status` values), §12 MUST 9."""
    presence = "application/vnd.lime.presence+json"
    result = lime(
        "commands",
        client=account("alice"),
        commands=[
            {"method": "delete", "uri": "/ping"},
            {"method": "set", "uri": "/presence", "type": presence, "resource": {"status": "x"}},
        ],
    )
    bad_method, bad_argument = result["responses"]
    assert bad_method["status"] == "failure"
    assert bad_method["method"] == "delete"
    assert bad_method["reason"]["code"] == 63
    assert bad_argument["status"] == "failure"
    assert bad_argument["method"] == "set"
    assert bad_argument["reason"]["code"] == 64


def test_command_responses_are_not_answered(lime: Scenario) -> None:
    """Reference §2.1 (a response has `status`), §6.1 (lime-js answers server pings with a
    response command), §9.1 ("never answer a response"), §12 MUST 9 (answer every *request*)."""
    result = lime("responsesNotAnswered", client=account("alice"), serverNode=SERVER_NODE)
    assert result["after"]["status"] == "success"
    assert result["unexpected"] == []
    assert result["unexpectedNotifications"] == []


def test_command_between_clients_ping(lime: Scenario) -> None:
    """Reference §6.1 (lime-js auto-replies to `get /ping` addressed to it), §9.1 (commands to
    another node are forwarded with `from` = sender node; responses flow back the same way),
    §12 MUST 8."""
    result = lime(
        "clientPing",
        caller=account("alice"),
        callee=account("bob"),
        calleeIdentity="bob@localhost",
    )
    for response in (result["byNode"], result["byIdentity"]):
        assert response["status"] == "success"
        assert response["type"] == "application/vnd.lime.ping+json"
        assert response["from"] == result["calleeNode"] == "bob@localhost/callee"
    requests = result["calleeSaw"]
    assert [r["from"] for r in requests] == [result["callerNode"]] * 2
    assert all(r["uri"] == "/ping" and "status" not in r for r in requests)


def test_presence_subscribe_observe(lime: Scenario) -> None:
    """Reference §8.1 (observe pushes with an absolute `lime://identity/presence` URI), §8.5
    (`sharePresence` gates who may see it), §6 (`observe` is one-way: no `status`)."""
    result = lime("presenceSubscribe", owner=account("erin"), watcher=account("dave"))
    assert result["refused"]["status"] == "failure"
    assert result["share"]["status"] == "success"
    assert result["subscribed"]["status"] == "success"
    for push in (result["initial"], result["pushed"]):
        assert push["method"] == "observe"
        assert push["uri"] == "lime://erin@localhost/presence"
        assert push["type"] == "application/vnd.lime.presence+json"
        assert "status" not in push
        assert push.get("to", "dave@localhost/watcher") == "dave@localhost/watcher"
    assert result["initial"]["resource"]["status"] == "available"
    assert result["pushed"]["resource"]["status"] == "busy"
