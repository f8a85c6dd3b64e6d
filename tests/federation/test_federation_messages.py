"""Messages between two real servers of different domains (issue 13): receipts both ways
driven by lime-js, order, refusals with the peer's reason, presence across servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.federation.support import (
    BETA,
    STEP,
    Server,
    client,
    lime_js,
    pair,
    signed_in,
)
from tests.lime_wire import WireClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    root: Path = tmp_path_factory.mktemp("federation")
    alpha, beta = pair(root, settings={"allow_guests": True})
    # beta takes smaller envelopes than alpha: what alpha accepted beta may not take
    text = beta.config.read_text()
    beta.config.write_text(
        text.replace("[federation]", "max_envelope_size = 4096\n[federation]", 1)
    )
    alpha.start()
    beta.start()
    yield alpha, beta
    alpha.stop()
    beta.stop()


@pytest.mark.conformance
@pytest.mark.parametrize("direction", ["alpha-to-beta", "beta-to-alpha"])
def test_lime_js_message_with_receipts_across_servers(
    servers: tuple[Server, Server], direction: str
) -> None:
    alpha, beta = servers
    sender, recipient = (alpha, beta) if direction == "alpha-to-beta" else (beta, alpha)
    result = lime_js(
        "sendReceive",
        sender=client(sender, "alice"),
        recipient=client(recipient, "bob"),
        to=recipient.identity("bob"),
        receipt=["accepted", "dispatched", "received", "consumed"],
        consume=True,
    )
    delivered = result["delivered"]
    assert delivered["from"].startswith(sender.identity("alice") + "/")
    assert delivered["to"].startswith(recipient.identity("bob"))
    events = [n["event"] for n in result["senderNotifications"]]
    assert events[0] == "accepted"  # from the sender's own server, once its outbox has it
    assert "dispatched" in events
    assert events.index("dispatched") < events.index("received") < events.index("consumed")
    assert result["receivedNotification"]["from"].startswith(recipient.identity("bob"))
    accepted = result["senderNotifications"][0]
    assert accepted["from"] == f"postmaster@{sender.domain}/server"


async def test_messages_keep_their_order_and_come_once(servers: tuple[Server, Server]) -> None:
    alpha, beta = servers
    bob = await signed_in(beta, "bob", "order")
    alice = await signed_in(alpha, "alice")
    await alice.set_receipt("accepted")
    ids = [f"order-{i}-{uuid.uuid4().hex[:6]}" for i in range(60)]
    for message_id in ids:
        alice.send(
            {
                "id": message_id,
                "to": "bob@beta.test/order",
                "type": "text/plain",
                "content": message_id,
            }
        )
    for message_id in ids:
        accepted = await alice.expect(lambda e, i=message_id: e.get("id") == i, timeout=STEP)
        assert accepted["event"] == "accepted"
    got = []
    for _ in ids:
        message = await bob.expect(lambda e: "content" in e, timeout=STEP)
        got.append(message["id"])
        assert message["from"].startswith("alice@alpha.test/")
        assert message["metadata"]["tidings.scope"] == "public"
    assert got == ids


async def test_a_message_to_nobody_there_fails_with_the_peer_reason(
    servers: tuple[Server, Server],
) -> None:
    alpha, _ = servers
    alice = await signed_in(alpha, "alice")
    message_id = f"nobody-{uuid.uuid4().hex[:6]}"
    alice.send({"id": message_id, "to": "nobody@beta.test", "type": "text/plain", "content": "?"})
    failed = await alice.expect(
        lambda e: e.get("id") == message_id and e.get("event") == "failed", timeout=STEP
    )
    assert failed["reason"]["code"] == 42
    assert "nobody" in failed["reason"]["description"]
    assert failed["from"] == f"postmaster@{BETA}/server"


async def test_a_domain_that_is_no_peer_is_not_found(servers: tuple[Server, Server]) -> None:
    alpha, _ = servers
    alice = await signed_in(alpha, "alice")
    alice.send({"id": "elsewhere", "to": "x@gamma.test", "type": "text/plain", "content": "?"})
    failed = await alice.expect(lambda e: e.get("id") == "elsewhere", timeout=STEP)
    assert failed["event"] == "failed"
    assert failed["reason"]["code"] == 42
    assert "gamma.test" in failed["reason"]["description"]


async def test_messages_from_the_other_domain_get_the_recipients_scope(
    servers: tuple[Server, Server],
) -> None:
    alpha, beta = servers
    carol = await signed_in(beta, "carol", "scope")
    added = await carol.command(
        id="carol-adds-dave",
        method="set",
        uri="/contacts",
        type="application/vnd.lime.contact+json",
        resource={"identity": "dave@alpha.test"},
    )
    assert added["status"] == "success", added
    dave = await signed_in(alpha, "dave")
    dave.send(
        {
            "id": "scoped",
            "to": "carol@beta.test/scope",
            "type": "text/plain",
            "content": "hi",
            "metadata": {"tidings.scope": "self"},
        }
    )
    message = await carol.expect(lambda e: e.get("id") == "scoped", timeout=STEP)
    assert message["metadata"]["tidings.scope"] == "friends"  # claimed "self" overwritten


async def test_an_envelope_the_peer_cannot_take_is_failed_back_not_dropped(
    servers: tuple[Server, Server],
) -> None:
    alpha, _ = servers
    alice = await signed_in(alpha, "alice")
    alice.send({"id": "big", "to": "bob@beta.test", "type": "text/plain", "content": "x" * 8000})
    failed = await alice.expect(
        lambda e: e.get("id") == "big" and e.get("event") == "failed", timeout=STEP
    )
    assert failed["reason"]["code"] == 64  # invalid argument, in beta's words
    assert "4096" in failed["reason"]["description"]


async def test_guests_reach_only_their_own_server(servers: tuple[Server, Server]) -> None:
    alpha, _ = servers
    guest = await WireClient.guest(alpha.ws_url, f"guest-{uuid.uuid4().hex[:8]}@alpha.test/g")
    guest.send({"id": "g1", "to": "bob@beta.test", "type": "text/plain", "content": "hi"})
    failed = await guest.expect(lambda e: e.get("id") == "g1", timeout=STEP)
    assert failed["event"] == "failed" and failed["reason"]["code"] == 35
    answer = await guest.command(id="g2", method="get", uri="/ping", to="bob@beta.test/x")
    assert answer["status"] == "failure" and answer["reason"]["code"] == 35
