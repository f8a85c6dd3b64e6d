"""Schemathesis over the whole HTTP API of a real ``tidings serve``: every operation in its
``/openapi.json``, each with the token that opens it (the api_token, an account's API key or
the admin_token), valid and invalid inputs, and each answer must be no 5xx, of a documented
status and content type, with a body that conforms to the documented schema.

Path parameters are drawn by Hypothesis from the schema or from things that exist (accounts,
sessions, a published key, feeds, consent objects: ``test_consent_schemathesis`` seeds those
and drives each operation). Bounded: ``MAX_EXAMPLES`` cases per operation.

The ``/federation/v1/*`` routes are left out: each request must carry an RFC 9421 signature of
a peer server's key, so generated requests only ever meet the signature check. Their tests,
with signed requests from real peers, are in ``tests/federation``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from tests.integration.test_consent_schemathesis import _seed, fuzz, path_parameters_hook
from tests.server_process import ServerProcess
from tests.unit.protocol.e2e.signers import TestSigner

from tidings.protocol.e2e import sign_node_info

pytestmark = pytest.mark.integration

API = "api-whole-fuzz"
ADMIN = "admin-whole-fuzz"
NAMES = ("alice", "bob", "carol", "zed")
DAY_MS = 86_400_000
SIGNED = "/federation/v1/"


class Target:
    def __init__(self, process: ServerProcess, keys: dict[str, str], ids: dict[str, list[str]]):
        self.process = process
        self.keys = keys
        self.ids = ids


def _publish_key(process: ServerProcess, keys: dict[str, str]) -> str:
    """carol publishes a node info over LIME (through the SDK); its signId."""
    import asyncio

    from tidings.sdk import Client

    signer = TestSigner()
    now = int(time.time() * 1000)
    document = sign_node_info(signer, "carol@localhost", "laptop", now, now + 30 * DAY_MS, None)

    async def publish() -> None:
        async with Client(
            process.ws_url, "carol@localhost", instance="laptop", password="carol-pw"
        ) as carol:
            await carol.command(
                "set", "/keys", document, type="application/vnd.tidings.node-info+json"
            )

    asyncio.run(publish())
    return signer.sign_id


def _seed_the_rest(url: str, keys: dict[str, str]) -> None:
    """A session with a queued message, and feeds with documents."""
    with httpx.Client(base_url=url, timeout=30.0) as http:
        for path, headers, body in (
            ("/messages", keys["alice"], {"to": "bob@localhost/phone", "content": "queued"}),
            ("/feeds/news/actions", API, {"action_name": "a", "feed_data": {"n": 1}}),
            ("/feeds/~alice/news/actions", keys["alice"], {"action_name": "a", "feed_data": {}}),
        ):
            answer = http.post(path, json=body, headers={"Authorization": f"Bearer {headers}"})
            assert answer.status_code in (200, 202), answer.text


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    process = ServerProcess(
        tmp_path_factory.mktemp("api-schemathesis"),
        args=["--api-token", API, "--admin-token", ADMIN],
    )
    process.add_accounts({name: f"{name}-pw" for name in NAMES})
    for name in NAMES:
        process.new_key(name)
    keys = process.keys
    process.start()
    try:
        ids = _seed(process.http_url, keys)
        _seed_the_rest(process.http_url, keys)
        ids.update(
            {
                "identity": ["alice@localhost", "bob@localhost", "carol@localhost"],
                "name": ["phone", "http", "zed"],
                "owner": ["alice"],
                "feed_name": ["news"],
                "sign_id": [_publish_key(process, keys)],
                "instance": ["default"],
            }
        )
        yield Target(process, keys, ids)
    finally:
        process.stop()


def token_for(operation: Any, keys: dict[str, str]) -> str:
    """The token that opens the operation (its docs say which)."""
    path, method = operation.path, operation.method.upper()
    if path.startswith("/admin"):
        return ADMIN
    if path.startswith("/consent"):
        accepter = "/scope-requests/" in path or "/ack" in path
        return keys["bob" if accepter else "alice"]
    if path == "/identities/{identity}/notifications" or path.startswith("/federation/status"):
        return API
    if path.startswith("/feeds/{") and method == "POST":
        return API
    return keys["alice"]


def _last(operation: Any) -> tuple[bool, bool]:
    """Admin last (it deletes accounts), what deletes or invalidates just before it."""
    path = operation.path
    ending = operation.method.upper() == "DELETE" or path.endswith("/invalidate")
    return path.startswith("/admin"), ending


def test_every_route_answers_no_5xx_and_conforms(target: Target) -> None:
    url = target.process.http_url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.config.base_url = url
    schema.hook(path_parameters_hook(target.ids))
    everything = [result.ok() for result in schema.get_all_operations()]
    operations = [o for o in everything if not o.path.startswith(SIGNED)]
    assert len(everything) - len(operations) == 3
    assert {o.path.split("/")[1] for o in operations} >= {
        "feeds",
        "identities",
        "messages",
        "keys",
        "consent",
        "federation",
        ".well-known",
        "admin",
        "console",
        "healthz",
        "metrics",
    }
    operations.sort(key=_last)
    failures: dict[str, str] = {}
    for operation in operations:
        headers = {"Authorization": f"Bearer {token_for(operation, target.keys)}"}
        try:
            fuzz(operation, schema, headers)
        except (Exception, BaseExceptionGroup) as error:
            failures[operation.label] = f"{type(error).__name__}: {error}"
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
