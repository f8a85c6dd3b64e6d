"""The key directory over raw LIME against a real ``tidings serve``: publication refusals with
their exact codes, lookups and who may make them, subscribe/observe, revocation, and
publications that outlive a restart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from tests.integration.conftest import PASSWORDS
from tests.lime_wire import WireClient
from tests.server_process import ServerProcess
from tests.unit.protocol.e2e.signers import TestSigner

from tidings.protocol.e2e import sign_node_info

pytestmark = pytest.mark.integration

NODE_INFO = "application/vnd.tidings.node-info+json"
COLLECTION = "application/vnd.lime.collection+json"
DAY_MS = 86_400_000
DOMAIN = "localhost"
CLOSED = "dave"
"""An account with ``allowUnknownSender: false`` that has bob as a contact, carol pending."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("tidings-keys"), args=["--allow-guests"])
    process.add_accounts({**PASSWORDS, CLOSED: "dave-pw"})
    process.start()
    yield process
    process.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def node_info(signer: TestSigner, node: str, **times: int) -> dict[str, Any]:
    identity, _, instance = node.partition("/")
    published = times.get("published", now_ms())
    expires = times.get("expires", published + 30 * DAY_MS)
    return sign_node_info(signer, identity, instance, published, expires, [{"hint": "lan"}])


def fresh_guest(instance: str = "dev") -> str:
    return f"guest-{uuid.uuid4().hex[:12]}@{DOMAIN}/{instance}"


async def login(server: ServerProcess, node: str) -> WireClient:
    name = node.partition("@")[0]
    if name in PASSWORDS or name == CLOSED:
        client = await WireClient.connect(server.ws_url)
        password = PASSWORDS.get(name, "dave-pw")
        session = await client.establish(node, password=password)
        assert session["state"] == "established", session
        return client
    return await WireClient.guest(server.ws_url, node)


async def command(client: WireClient, method: str, uri: str, **fields: Any) -> dict[str, Any]:
    return await client.command(id=str(uuid.uuid4()), method=method, uri=uri, **fields)


async def publish(client: WireClient, document: dict[str, Any]) -> dict[str, Any]:
    return await command(client, "set", "/keys", type=NODE_INFO, resource=document)


def key_uri(sign_id: str, owner: str | None = None) -> str:
    prefix = f"lime://{owner}" if owner else ""
    return f"{prefix}/keys/{quote(sign_id, safe='')}"


def assert_code(response: dict[str, Any], code: int) -> None:
    assert response["status"] == "failure", response
    assert response["reason"]["code"] == code, response


def assert_success(response: dict[str, Any]) -> None:
    assert response["status"] == "success", response


async def test_publish_then_look_up_by_identity_and_by_key(server: ServerProcess) -> None:
    node = fresh_guest("laptop")
    identity = node.partition("/")[0]
    owner = await login(server, node)
    signer = TestSigner()
    document = node_info(signer, node)
    assert_success(await publish(owner, document))

    viewer = await login(server, fresh_guest())
    listed = await command(viewer, "get", f"lime://{identity}/keys")
    assert_success(listed)
    assert listed["type"] == COLLECTION
    assert listed["resource"] == {"itemType": NODE_INFO, "items": [document], "total": 1}
    one = await command(viewer, "get", key_uri(signer.sign_id))
    assert_success(one)
    assert (one["type"], one["resource"]) == (NODE_INFO, document)
    named = await command(viewer, "get", key_uri(signer.sign_id, identity))
    assert named["resource"] == document
    unencoded = await command(viewer, "get", "/keys/" + signer.sign_id)
    assert unencoded["resource"] == document
    assert_code(await command(viewer, "get", key_uri(signer.sign_id, "bob@localhost")), 67)
    assert_code(await command(viewer, "get", key_uri(TestSigner().sign_id)), 67)
    empty = await command(viewer, "get", "lime://nobody@localhost/keys")
    assert empty["resource"] == {"itemType": NODE_INFO, "items": []}


async def test_each_refused_publication_has_its_code(server: ServerProcess) -> None:
    node = fresh_guest("laptop")
    identity = node.partition("/")[0]
    client = await login(server, node)
    signer = TestSigner()

    forged = node_info(signer, node)
    forged["signature"] = node_info(TestSigner(), node)["signature"]
    assert_code(await publish(client, forged), 130)
    tampered = node_info(signer, node)
    tampered["connectionInfo"] = [{"hint": "evil"}]
    assert_code(await publish(client, tampered), 130)

    malformed = node_info(signer, node)
    del malformed["boxId"]
    assert_code(await publish(client, malformed), 64)
    assert_code(await publish(client, {**node_info(signer, node), "boxId": "x"}), 64)
    assert_code(await command(client, "set", "/keys", type=NODE_INFO), 64)  # no resource

    assert_code(await publish(client, node_info(signer, f"{identity}/phone")), 131)
    assert_code(await publish(client, node_info(signer, "bob@localhost/laptop")), 131)

    now = now_ms()
    assert_code(
        await publish(client, node_info(signer, node, published=now - 2 * DAY_MS, expires=now)),
        135,
    )
    assert_code(await publish(client, node_info(signer, node, expires=now + 400 * DAY_MS)), 135)
    assert_code(await publish(client, node_info(signer, node, published=now + DAY_MS)), 135)

    first = node_info(signer, node, published=now - 1000)
    assert_success(await publish(client, first))
    assert_code(await publish(client, first), 133)  # the same one again
    assert_code(await publish(client, node_info(signer, node, published=now - 2000)), 133)
    newer = node_info(signer, node, published=now)
    assert_success(await publish(client, newer))

    other_node = fresh_guest("thief")
    thief = await login(server, other_node)
    assert_code(await publish(thief, node_info(signer, other_node)), 132)
    sibling = await login(server, f"{identity}/phone")
    assert_code(await publish(sibling, node_info(signer, f"{identity}/phone")), 132)

    assert_code(
        await command(client, "set", "lime://bob@localhost/keys", type=NODE_INFO, resource=newer),
        35,
    )

    listed = await command(client, "get", "/keys")
    assert listed["resource"]["items"] == [newer]


async def test_revocation_by_any_node_of_the_identity_is_final(server: ServerProcess) -> None:
    node = fresh_guest("laptop")
    identity = node.partition("/")[0]
    laptop = await login(server, node)
    signer = TestSigner()
    document = node_info(signer, node, published=now_ms() - 1000)
    assert_success(await publish(laptop, document))

    stranger = await login(server, fresh_guest())
    assert_code(await command(stranger, "delete", key_uri(signer.sign_id)), 35)
    assert_code(await command(stranger, "delete", key_uri(TestSigner().sign_id)), 67)

    phone = await login(server, f"{identity}/phone")
    before = now_ms()
    assert_success(await command(phone, "delete", key_uri(signer.sign_id)))
    assert_success(await command(phone, "delete", key_uri(signer.sign_id)))  # again: no change

    looked_up = await command(stranger, "get", key_uri(signer.sign_id))
    revoked = looked_up["resource"].pop("revoked")
    assert looked_up["resource"] == document and revoked >= before
    listed = await command(stranger, "get", f"lime://{identity}/keys")
    assert listed["resource"]["items"] == []
    assert_code(await publish(laptop, node_info(signer, node)), 134)


async def test_lookups_follow_whom_the_owner_accepts(server: ServerProcess) -> None:
    dave = await login(server, f"{CLOSED}@localhost/home")
    assert_success(
        await command(
            dave,
            "merge",
            "/account",
            type="application/vnd.lime.account+json",
            resource={"allowUnknownSender": False},
        )
    )
    for contact in (
        {"identity": "bob@localhost"},
        {"identity": "carol@localhost", "isPending": True},
    ):
        assert_success(
            await command(
                dave, "set", "/contacts", type="application/vnd.lime.contact+json", resource=contact
            )
        )
    signer = TestSigner()
    assert_success(await publish(dave, node_info(signer, f"{CLOSED}@localhost/home")))
    bob = await login(server, "bob@localhost/k1")
    listed = await command(bob, "get", "lime://dave@localhost/keys")
    assert [item["signId"] for item in listed["resource"]["items"]] == [signer.sign_id]
    assert_success(await command(bob, "get", key_uri(signer.sign_id)))
    assert_success(await command(bob, "subscribe", "lime://dave@localhost/keys"))

    carol = await login(server, "carol@localhost/k1")  # a pending contact
    stranger = await login(server, fresh_guest())
    for viewer in (carol, stranger):
        assert_code(await command(viewer, "get", "lime://dave@localhost/keys"), 35)
        assert_success(await command(viewer, "get", key_uri(signer.sign_id)))  # who owns it
        assert_code(await command(viewer, "subscribe", "lime://dave@localhost/keys"), 35)


async def test_subscribers_observe_publications_and_revocations(server: ServerProcess) -> None:
    node = fresh_guest("laptop")
    identity = node.partition("/")[0]
    uri = f"lime://{identity}/keys"
    owner = await login(server, node)
    follower = await login(server, fresh_guest())
    assert_success(await command(follower, "subscribe", uri))

    signer = TestSigner()
    document = node_info(signer, node)
    assert_success(await publish(owner, document))
    observed = await follower.expect(lambda e: e.get("method") == "observe")
    assert observed["uri"] == uri and observed["from"] == identity
    assert observed["type"] == NODE_INFO and observed["resource"] == document
    assert "id" not in observed and "status" not in observed

    assert_success(await command(owner, "delete", key_uri(signer.sign_id)))
    revoked = await follower.expect(lambda e: e.get("method") == "observe")
    assert revoked["resource"]["signId"] == signer.sign_id and "revoked" in revoked["resource"]

    assert_success(await command(follower, "unsubscribe", uri))
    assert_success(await publish(owner, node_info(TestSigner(), node)))
    # The server writes an observe to the follower before it answers the publisher, and answers
    # the follower's ping after anything written to it before: nothing came in between.
    assert_success(await command(follower, "get", "/ping"))
    assert not [e for e in follower.held if e.get("method") == "observe"]


async def test_a_new_session_of_the_same_node_does_not_inherit_a_subscription(
    server: ServerProcess,
) -> None:
    node = fresh_guest("laptop")
    identity = node.partition("/")[0]
    owner = await login(server, node)
    follower_node = fresh_guest()
    follower = await login(server, follower_node)
    assert_success(await command(follower, "subscribe", f"lime://{identity}/keys"))
    await follower.finish()
    await follower.closed()
    back = await login(server, follower_node)  # the same node again: a new session
    assert_success(await publish(owner, node_info(TestSigner(), node)))
    assert_success(await command(back, "get", "/ping"))
    assert not [e for e in back.held if e.get("method") == "observe"]


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", args=["--allow-guests"]).start()
    yield process
    process.stop()


async def test_publications_and_revocations_survive_a_restart(
    restartable: ServerProcess,
) -> None:
    node = fresh_guest("laptop")
    identity = node.partition("/")[0]
    client = await login(restartable, node)
    kept, revoked = TestSigner(), TestSigner()
    first = node_info(kept, node, published=now_ms() - 1000)
    assert_success(await publish(client, first))
    assert_success(await publish(client, node_info(revoked, node)))
    assert_success(await command(client, "delete", key_uri(revoked.sign_id)))
    await client.finish()
    await client.closed()
    assert restartable.stop() == 0

    restartable.restart()
    again = await login(restartable, node)
    listed = await command(again, "get", f"lime://{identity}/keys")
    assert listed["resource"]["items"] == [first]
    gone = await command(again, "get", key_uri(revoked.sign_id))
    assert "revoked" in gone["resource"]
    assert_code(await publish(again, first), 133)  # the history is kept: no replay
    assert_code(await publish(again, node_info(revoked, node)), 134)
