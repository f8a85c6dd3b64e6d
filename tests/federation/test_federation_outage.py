"""A peer that is down (issue 13): what is sent meanwhile is accepted at once, kept on disk,
delivered once and in order when the peer is back (the sender's server killed meanwhile too),
and failed for each message when the peer stays away past the retry bound."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.federation.support import PASSWORDS, STEP, Server, pair
from tests.lime_wire import WireClient
from tests.server_process import TIDINGS

pytestmark = pytest.mark.integration
TOKEN = "federation-test-token"


async def signed_in(server: Server, name: str, instance: str) -> WireClient:
    wire = await WireClient.connect(server.ws_url)
    node = f"{name}@{server.domain}/{instance}"
    session = await wire.establish(node, password=PASSWORDS[name])
    assert session["state"] == "established", session
    return wire


def send(wire: WireClient, message_id: str, to: str) -> None:
    wire.send({"id": message_id, "to": to, "type": "text/plain", "content": message_id})


async def events_of(wire: WireClient, message_id: str, *events: str) -> list[dict]:
    found = []
    for event in events:
        found.append(
            await wire.expect(
                lambda e, i=message_id, v=event: e.get("id") == i and e.get("event") == v,
                timeout=STEP,
            )
        )
    return found


def peer_metric(server: Server, name: str, peer: str) -> float:
    text = httpx.get(f"{server.http_url}/metrics").text
    found = re.search(rf'^tidings_{name}\{{peer="{re.escape(peer)}"\}} (\S+)$', text, re.M)
    assert found is not None, f"no {name} for {peer} in /metrics"
    return float(found.group(1))


async def test_messages_wait_for_a_peer_that_is_down_and_come_once_in_order(
    tmp_path: Path,
) -> None:
    alpha, beta = pair(tmp_path, settings={"api_token": TOKEN})
    alpha.start()
    try:
        alice = await signed_in(alpha, "alice", "phone")
        await alice.set_receipt("accepted", "dispatched", "received")
        ids = [f"m{i}-{uuid.uuid4().hex[:6]}" for i in range(25)]
        for message_id in ids:
            send(alice, message_id, "bob@beta.test/desk")
        for message_id in ids:  # beta has never been up: the outbox took them, durably
            await events_of(alice, message_id, "accepted")

        status = await _status(alpha)
        peer = next(p for p in status["peers"] if p["domain"] == "beta.test")
        assert peer["outbox"] == len(ids)
        assert peer["oldestWaitingS"] is not None
        assert peer["lastError"]  # connection refused, said plainly
        assert peer_metric(alpha, "federation_outbox_depth", "beta.test") == len(ids)
        cli = _cli_status(alpha)
        assert cli["peers"][0]["outbox"] == len(ids)

        alpha.process.kill()  # kill -9 with everything still in the outbox
        alpha.start()
        beta.start()
        bob = await signed_in(beta, "bob", "desk")
        got = []
        for _ in ids:
            message = await bob.expect(lambda e: "content" in e, timeout=STEP)
            got.append(message["id"])
            bob.send({"id": message["id"], "to": message["from"], "event": "received"})
        assert got == ids
        alice = await signed_in(alpha, "alice", "phone")
        await alice.set_receipt("accepted", "dispatched", "received")
        last = ids[-1]
        received = await alice.expect(
            lambda e: e.get("id") == last and e.get("event") == "received", timeout=STEP
        )
        assert received["from"].startswith("bob@beta.test/desk")
        # each once: a marker sent now is the next message bob gets
        send(alice, "marker", "bob@beta.test/desk")
        after = await bob.expect(lambda e: "content" in e, timeout=STEP)
        assert after["id"] == "marker"
        status = await _status(alpha)
        assert next(p for p in status["peers"] if p["domain"] == "beta.test")["outbox"] == 0
    finally:
        await WireClient.close_all()
        alpha.stop()
        beta.stop()


async def test_a_peer_away_past_the_retry_bound_fails_each_waiting_message(
    tmp_path: Path,
) -> None:
    alpha, beta = pair(
        tmp_path,
        settings={"expiry_sweep_interval_s": 0.2},
        federation={"retry_bound_s": 1.0},
    )
    alpha.start()
    try:
        alice = await signed_in(alpha, "alice", "phone")
        await alice.set_receipt("accepted")
        ids = [f"late{i}" for i in range(3)]
        for message_id in ids:
            send(alice, message_id, "bob@beta.test")
        for message_id in ids:
            accepted, failed = await events_of(alice, message_id, "accepted", "failed")
            assert accepted["from"] == f"postmaster@{alpha.domain}/server"
            assert failed["reason"]["code"] == 123  # expired: the peer never came
        beta.start()
        bob = await signed_in(beta, "bob", "desk")
        send(alice, "after", "bob@beta.test/desk")
        first = await bob.expect(lambda e: "content" in e, timeout=STEP)
        assert first["id"] == "after"  # none of the failed ones came late
    finally:
        await WireClient.close_all()
        alpha.stop()
        beta.stop()


async def _status(server: Server) -> dict:
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            f"{server.http_url}/federation/status", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _cli_status(server: Server) -> dict:
    import subprocess

    done = subprocess.run(
        [
            *TIDINGS,
            "federation",
            "status",
            "--config",
            str(server.config),
            "--url",
            server.http_url,
            "--token",
            TOKEN,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
