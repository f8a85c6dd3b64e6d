"""Forged, replayed, stale and tampered server-to-server requests between two real servers
(issue 13): each is refused with its reason and changes nothing. Requests are built by hand
with alpha's real server key, the way an attacker holding a copy of one would, or with a
tampered part.

"Changes nothing" is checked by order, not by waiting: after each refusal a marker message goes
the honest way (alice on alpha, through alpha's relay) and must be the next message bob gets.
A refused request's envelopes would have been routed before its answer came back, so they
would reach bob before the marker.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.federation.support import (
    ALPHA,
    BETA,
    STEP,
    Server,
    make_server,
    pair,
    signed_in,
)
from tests.lime_wire import WireClient
from tests.server_process import TIDINGS
from tidings.protocol.federation import SigningKey, read_server_document, sign_request
from tidings.store.server_keys import SERVER_KEYS_FILE, ServerKeys

pytestmark = pytest.mark.integration

ENVELOPES = "/federation/v1/envelopes"
DOCUMENT = "/.well-known/tidings/server"


@pytest.fixture
async def ends(servers: tuple[Server, Server]) -> tuple[WireClient, WireClient]:
    """alice on alpha (the honest path) and bob on beta."""
    alpha, beta = servers
    return await signed_in(alpha, "alice"), await signed_in(beta, "bob")


def key_of(server: Server) -> SigningKey:
    """The key the server signs with (its file, as the running server read it)."""
    return ServerKeys.load_or_create(server.process.data_dir, server.domain, time.time()).current


def message(content: str, sender: str = "alice@alpha.test/x") -> dict[str, Any]:
    return {
        "id": f"{content}-{uuid.uuid4().hex[:8]}",
        "from": sender,
        "to": "bob@beta.test",
        "type": "text/plain",
        "content": content,
    }


def batch(*envelopes: dict[str, Any]) -> bytes:
    return json.dumps({"envelopes": [{"e": e, "x": None} for e in envelopes]}).encode()


def signed(
    url: str,
    body: bytes,
    key: SigningKey,
    *,
    now: float | None = None,
    origin: str = ALPHA,
    destination: str = BETA,
) -> dict[str, str]:
    headers = sign_request(
        "POST",
        url,
        body,
        origin=origin,
        destination=destination,
        key=key,
        now=time.time() if now is None else now,
    )
    return {**headers, "Content-Type": "application/json"}


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=STEP) as http:
        return await http.post(url, content=body, headers=headers)


def refused(response: httpx.Response, status: int, error_id: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    problem: dict[str, Any] = response.json()
    assert problem["error_id"] == error_id, problem
    return problem


async def next_message(bob: WireClient) -> dict[str, Any]:
    return await bob.expect(lambda e: "content" in e, timeout=STEP)


async def marker_is_next(alice: WireClient, bob: WireClient, to: str = "bob@beta.test") -> None:
    """The honest path still works, and nothing reached bob before its marker."""
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    alice.send({"id": marker, "to": to, "type": "text/plain", "content": marker})
    got = await next_message(bob)
    assert got["id"] == marker, got


async def test_a_correctly_signed_batch_is_delivered(
    servers: tuple[Server, Server], ends: tuple[WireClient, WireClient]
) -> None:
    alpha, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    sent = message("by-hand")
    body = batch(sent)
    response = await post(url, body, signed(url, body, key_of(alpha)))
    assert response.status_code == 200, response.text
    assert response.json() == {"taken": 1, "failed": 0}
    got = await next_message(bob)
    assert (got["id"], got["from"], got["content"]) == (sent["id"], sent["from"], "by-hand")
    await marker_is_next(alice, bob)


async def test_a_batch_sent_again_is_taken_once_envelopes_without_ids_too(
    servers: tuple[Server, Server], ends: tuple[WireClient, WireClient]
) -> None:
    """The sender's answer was lost and it sends the batch again (a new signature): what the
    receiver took is skipped by its place in the sender's run, not only by message id."""
    alpha, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    no_id = message("no-id")
    del no_id["id"]
    run = f"run-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"envelopes": [{"e": no_id, "x": None, "s": 7}], "run": run}).encode()
    for _ in range(2):
        response = await post(url, body, signed(url, body, key_of(alpha)))
        assert response.status_code == 200, response.text
    got = await next_message(bob)
    assert got["content"] == "no-id" and "id" not in got
    await marker_is_next(alice, bob)  # the second copy never came


async def test_an_unsigned_request_is_refused(
    servers: tuple[Server, Server], ends: tuple[WireClient, WireClient]
) -> None:
    _, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    body = batch(message("unsigned"))
    headers = {"Content-Type": "application/json", "Tidings-Origin": ALPHA}
    refused(await post(url, body, headers), 401, "federation-unsigned")
    await marker_is_next(alice, bob)


async def test_the_same_request_sent_again_is_refused_as_replayed(
    servers: tuple[Server, Server], ends: tuple[WireClient, WireClient]
) -> None:
    alpha, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    sent = message("once")
    body = batch(sent)
    headers = signed(url, body, key_of(alpha))
    assert (await post(url, body, headers)).status_code == 200
    assert (await next_message(bob))["id"] == sent["id"]
    refused(await post(url, body, headers), 401, "federation-replayed")
    await marker_is_next(alice, bob)


@pytest.mark.parametrize("age_s", [600.0, -600.0], ids=["ten-minutes-old", "ten-minutes-ahead"])
async def test_a_request_created_out_of_the_clock_window_is_stale(
    servers: tuple[Server, Server], ends: tuple[WireClient, WireClient], age_s: float
) -> None:
    alpha, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    body = batch(message("stale"))
    headers = signed(url, body, key_of(alpha), now=time.time() - age_s)
    refused(await post(url, body, headers), 401, "federation-stale")
    await marker_is_next(alice, bob)


async def test_a_body_changed_after_signing_is_refused(
    servers: tuple[Server, Server], ends: tuple[WireClient, WireClient]
) -> None:
    alpha, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    honest = batch(message("signed"))
    headers = signed(url, honest, key_of(alpha))
    tampered = batch(message("tampered"))
    refused(await post(url, tampered, headers), 401, "federation-digest-mismatch")
    await marker_is_next(alice, bob)


@pytest.mark.parametrize(
    ("change", "status", "error_id"),
    [
        ({"Tidings-Destination": "gamma.test"}, 421, "federation-wrong-destination"),
        ({"Tidings-Origin": "gamma.test"}, 403, "federation-denied"),  # no peer of beta
        ({"route": "/federation/v1/hello"}, 401, "federation-bad-signature"),
    ],
    ids=["destination", "origin", "signed-for-another-route"],
)
async def test_a_changed_signed_part_is_refused(
    servers: tuple[Server, Server],
    ends: tuple[WireClient, WireClient],
    change: dict[str, str],
    status: int,
    error_id: str,
) -> None:
    alpha, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    body = batch(message("changed"))
    route = change.get("route")
    headers = signed(beta.http_url + route if route else url, body, key_of(alpha))
    headers.update({k: v for k, v in change.items() if k != "route"})
    refused(await post(url, body, headers), status, error_id)
    await marker_is_next(alice, bob)


@pytest.mark.parametrize(
    ("impostor", "error_id"),
    [("a-new-key-id", "federation-unknown-key"), ("alpha-key-id", "federation-bad-signature")],
)
async def test_a_key_that_is_not_alphas_is_refused(
    servers: tuple[Server, Server],
    ends: tuple[WireClient, WireClient],
    impostor: str,
    error_id: str,
) -> None:
    alpha, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    fresh = SigningKey.generate(ALPHA)
    if impostor == "alpha-key-id":  # a fresh secret under the id of alpha's real key
        fresh = SigningKey(key_of(alpha).key_id, fresh.seed)
    body = batch(message("impostor"))
    refused(await post(url, body, signed(url, body, fresh)), 401, error_id)
    await marker_is_next(alice, bob)


async def test_an_envelope_from_a_third_domain_refuses_the_whole_batch(
    servers: tuple[Server, Server], ends: tuple[WireClient, WireClient]
) -> None:
    alpha, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    body = batch(
        message("before"), message("foreign", sender="carol@gamma.test/x"), message("after")
    )
    problem = refused(
        await post(url, body, signed(url, body, key_of(alpha))), 403, "federation-foreign-sender"
    )
    assert "carol@gamma.test" in problem["detail"]
    await marker_is_next(alice, bob)


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"envelopes": 5}', b"[]", b'{"envelopes": [{"x": null}]}'],
    ids=["not-json", "not-a-list", "not-an-object", "no-envelope"],
)
async def test_a_malformed_batch_is_refused_with_a_problem_naming_it(
    servers: tuple[Server, Server], ends: tuple[WireClient, WireClient], body: bytes
) -> None:
    alpha, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    problem = refused(
        await post(url, body, signed(url, body, key_of(alpha))), 422, "invalid-argument"
    )
    assert "envelope batch" in problem["detail"], problem
    await marker_is_next(alice, bob)


async def test_a_body_over_the_http_limit_is_refused(
    servers: tuple[Server, Server], ends: tuple[WireClient, WireClient]
) -> None:
    alpha, beta = servers
    alice, bob = ends
    url = beta.http_url + ENVELOPES
    big = message("big")
    big["content"] = "x" * (1024 * 1024)  # the default http_max_body: 1 MiB
    body = batch(big)
    refused(await post(url, body, signed(url, body, key_of(alpha))), 413, "body-too-large")
    await marker_is_next(alice, bob)


async def test_the_key_document_lists_betas_keys_signed(servers: tuple[Server, Server]) -> None:
    _, beta = servers
    async with httpx.AsyncClient(timeout=STEP) as http:
        response = await http.get(beta.http_url + DOCUMENT)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["domain"] == BETA
    current = key_of(beta)
    keys = read_server_document(document, domain=BETA, pinned=(), now=time.time())
    assert [(kid, raw) for kid, raw, _ in keys] == [(current.key_id, current.public)]


# -- servers of their own: a deny list, a low rate, restarts ---------------------------------


@pytest.fixture
def alone(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers a test starts for itself; stopped after it, also on failure."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def own_beta(root: Path, alpha: Server, **federation: Any) -> Server:
    return make_server(root, BETA, {ALPHA: alpha.http_url}, federation=federation)


async def test_an_origin_on_the_deny_list_is_refused(
    servers: tuple[Server, Server], tmp_path: Path, alone: list[Server]
) -> None:
    alpha, _ = servers
    beta = own_beta(tmp_path, alpha, deny=[ALPHA])
    alone.append(beta.start())
    bob, carol = await signed_in(beta, "bob"), await signed_in(beta, "carol")
    url = beta.http_url + ENVELOPES
    body = batch(message("denied"))
    refused(await post(url, body, signed(url, body, key_of(alpha))), 403, "federation-denied")
    await marker_is_next(carol, bob)


async def test_a_peer_over_its_rate_is_refused_with_retry_after(
    servers: tuple[Server, Server], tmp_path: Path, alone: list[Server]
) -> None:
    alpha, _ = servers
    beta = own_beta(tmp_path, alpha, rate_limit=0.01, rate_burst=2)
    alone.append(beta.start())
    bob, carol = await signed_in(beta, "bob"), await signed_in(beta, "carol")
    url = beta.http_url + ENVELOPES
    for _ in range(2):
        sent = message("within-rate")
        body = batch(sent)
        response = await post(url, body, signed(url, body, key_of(alpha)))
        assert response.status_code == 200, response.text
        assert (await next_message(bob))["id"] == sent["id"]
    body = batch(message("over-rate"))
    response = await post(url, body, signed(url, body, key_of(alpha)))
    refused(response, 429, "federation-rate-limited")
    # one token is owed at 0.01 tokens/s: about 100 s to wait, said in whole seconds
    assert 90 <= int(response.headers["Retry-After"]) <= 100, response.headers
    await marker_is_next(carol, bob)


def pinned_expiries(server: Server, domain: str) -> dict[bytes, int | None]:
    """The keys ``server`` pinned for ``domain`` and their expiries (its state row; read while
    it is stopped)."""
    database = sqlite3.connect(f"file:{server.process.data_dir / 'tidings.db'}?mode=ro", uri=True)
    try:
        rows = database.execute(
            "SELECT value FROM app_state WHERE key=?", (f"federation/pinned/{domain}",)
        ).fetchall()
    finally:
        database.close()
    assert len(rows) == 1, f"{server.domain} pinned nothing for {domain}"
    return {base64.b64decode(k): expires for k, expires in json.loads(rows[0][0]).items()}


def pinned_row(server: Server, domain: str) -> list[bytes]:
    return sorted(pinned_expiries(server, domain))


async def send_by_hand(alpha: Server, beta: Server, key: SigningKey) -> httpx.Response:
    url = beta.http_url + ENVELOPES
    body = batch(message("by-hand"))
    return await post(url, body, signed(url, body, key))


async def test_first_contact_pins_alphas_key_and_a_new_unvouched_key_is_refused(
    tmp_path: Path, alone: list[Server]
) -> None:
    alpha, beta = pair(tmp_path)
    alone += [alpha.start(), beta.start()]
    first = key_of(alpha)
    assert (await send_by_hand(alpha, beta, first)).status_code == 200
    beta.stop()
    assert pinned_row(beta, ALPHA) == [first.public]
    # alpha loses its keys (a new identity); beta, started again, still holds the old pin
    alpha.stop()
    (alpha.process.data_dir / SERVER_KEYS_FILE).unlink()
    alpha.start()
    beta.start()
    second = key_of(alpha)
    assert second.key_id != first.key_id
    refused(await send_by_hand(alpha, beta, second), 401, "federation-unknown-key")
    assert (await send_by_hand(alpha, beta, first)).status_code == 200  # the pin still holds
    beta.stop()
    assert pinned_row(beta, ALPHA) == [first.public]
    beta.start()


async def test_a_rotated_key_is_accepted_from_a_document_the_old_key_signed(
    tmp_path: Path, alone: list[Server]
) -> None:
    alpha, beta = pair(tmp_path)
    alone += [alpha.start(), beta.start()]
    bob = await signed_in(beta, "bob")
    old = key_of(alpha)
    assert (await send_by_hand(alpha, beta, old)).status_code == 200  # beta pins the old key
    assert (await next_message(bob))["content"] == "by-hand"
    alpha.stop()
    rotated = subprocess.run(
        [
            *TIDINGS,
            "federation",
            "rotate-key",
            "--overlap-s",
            "3600",
            "--data-dir",
            str(alpha.process.data_dir),
            "--config",
            str(alpha.config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rotated.returncode == 0, rotated.stderr
    new = key_of(alpha)
    assert rotated.stdout.strip() == new.key_id != old.key_id
    alpha.start()
    async with httpx.AsyncClient(timeout=STEP) as http:
        document = (await http.get(alpha.http_url + DOCUMENT)).json()
    assert sorted(document["signatures"]) == sorted([old.key_id, new.key_id])
    for key in (new, old):  # the old key still verifies within the overlap
        assert (await send_by_hand(alpha, beta, key)).status_code == 200
        assert (await next_message(bob))["content"] == "by-hand"
    # and the honest path, signed by the new key now, still delivers
    await marker_is_next(await signed_in(alpha, "alice"), bob)
    beta.stop()
    pins = pinned_expiries(beta, ALPHA)
    assert pins.keys() == {old.public, new.public}
    old_expiry = pins[old.public]
    assert old_expiry is not None and old_expiry <= time.time() + 3600, pins  # the overlap's end
    assert pins[new.public] is None
    beta.start()
