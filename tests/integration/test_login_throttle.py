"""Failed logins are throttled per identity and per client address, on a real ``tidings serve``.

Each test connects from loopback addresses of its own (127.0.0.x, bound on the client side), so
the per-address counts of one test do not reach another. Waiting is always for the time the
server's reason advertises ("try again in N s"), never a guessed sleep.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from picows import ws_connect
from tests.lime_wire import WireClient, _Listener
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

FREE = 2
FREE_PER_ADDRESS = 4
BASE_S = 2.0
"""Large enough that the next attempt surely comes within the wait, small for a quick test."""
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"}
THROTTLED = re.compile(r"Too many failed logins: try again in (\d+(?:\.\d)?) s")
QUOTA, AUTHENTICATION_FAILED = 34, 13


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("throttle")
    config = data_dir / "tidings.toml"
    config.write_text(
        f"login_failures_free = {FREE}\n"
        f"login_failures_free_per_address = {FREE_PER_ADDRESS}\n"
        f"login_backoff_base_s = {BASE_S}\n"
        f"login_backoff_max_s = {2 * BASE_S}\n"
    )
    process = ServerProcess(data_dir, args=["--config", str(config)])
    process.add_accounts(PASSWORDS)
    process.start()
    yield process
    process.stop()


async def attempt(server: ServerProcess, source: str, name: str, password: str) -> dict[str, Any]:
    """One login on a connection of its own from ``source``; the final session envelope."""
    transport, listener = await ws_connect(
        _Listener,
        server.ws_url,
        extra_headers={"Sec-WebSocket-Protocol": "lime"},
        local_addr=(source, 0),
    )
    client = WireClient(transport, listener)
    WireClient._open.add(client)
    return await client.establish(f"{name}@localhost/throttle", password=password)


def refused_with(session: dict[str, Any], code: int) -> str:
    assert session["state"] == "failed", session
    assert session["reason"]["code"] == code, session
    return str(session["reason"]["description"])


def advertised_wait(session: dict[str, Any]) -> float:
    """The N of a throttled refusal (asserted to be one)."""
    found = THROTTLED.fullmatch(refused_with(session, QUOTA))
    assert found is not None, session
    return float(found.group(1))


async def test_after_the_free_failures_even_the_right_password_waits_then_works(server):
    source = "127.0.0.11"
    for _ in range(FREE + 1):
        refused_with(await attempt(server, source, "alice", "guess"), AUTHENTICATION_FAILED)
    wait = advertised_wait(await attempt(server, source, "alice", "alice-pw"))
    assert 0 < wait <= BASE_S
    await asyncio.sleep(wait)
    assert (await attempt(server, source, "alice", "alice-pw"))["state"] == "established"
    # The success cleared the identity: a wrong password is a plain failure again.
    refused_with(await attempt(server, source, "alice", "guess"), AUTHENTICATION_FAILED)


async def test_an_unknown_name_gets_the_same_answers_as_an_account(server):
    answers = {}
    for name, source in (("bob", "127.0.0.12"), ("nobody", "127.0.0.13")):
        sessions = [await attempt(server, source, name, "guess") for _ in range(FREE + 2)]
        answers[name] = [
            (s["state"], s["reason"]["code"], THROTTLED.sub("N", s["reason"]["description"]))
            for s in sessions
        ]
        advertised_wait(sessions[-1])
    assert answers["bob"] == answers["nobody"]
    assert [code for _, code, _ in answers["bob"]] == [13] * (FREE + 1) + [34]


async def test_a_throttled_address_does_not_lock_the_owner_out_elsewhere(server):
    attacker, owner = "127.0.0.21", "127.0.0.22"
    # One address sprays names (none of them carol's) until the address is throttled...
    for n in range(FREE_PER_ADDRESS + 1):
        refused_with(await attempt(server, attacker, f"user{n}", "guess"), AUTHENTICATION_FAILED)
    advertised_wait(await attempt(server, attacker, "carol", "carol-pw"))
    # ... and carol, from another address, gets in at once.
    assert (await attempt(server, owner, "carol", "carol-pw"))["state"] == "established"


async def test_the_owner_elsewhere_waits_only_the_identity_backoff(server):
    attacker, owner = "127.0.0.31", "127.0.0.32"
    for _ in range(FREE + 1):
        refused_with(await attempt(server, attacker, "dave", "guess"), AUTHENTICATION_FAILED)
    wait = advertised_wait(await attempt(server, owner, "dave", "dave-pw"))
    assert 0 < wait <= BASE_S  # the identity's first backoff, nothing for the owner's address
    await asyncio.sleep(wait)
    assert (await attempt(server, owner, "dave", "dave-pw"))["state"] == "established"


async def feedme_upgrade(server: ServerProcess, source: str, token: str) -> int:
    """The HTTP status of a Feedme upgrade with ``?token=`` from ``source``."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.ws_port, local_addr=(source, 0)
    )
    writer.write(
        f"GET /?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: feedme\r\n\r\n".encode()
    )
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status.split()[1])


async def test_feedme_token_guesses_are_throttled_per_address(server):
    made = server.tidings("account", "key", "carol")
    assert made.returncode == 0, made.stderr
    key = made.stdout.split()[-1]
    guesser = "127.0.0.41"
    guesses = FREE_PER_ADDRESS + 1  # the free ones, then the one that starts the backoff
    statuses = [await feedme_upgrade(server, guesser, "tdk_guess") for _ in range(guesses)]
    assert statuses == [401] * guesses
    assert await feedme_upgrade(server, guesser, key) == 429  # even the right key waits there
    assert await feedme_upgrade(server, "127.0.0.42", key) == 101  # another address is not held
