"""Single-use capabilities under concurrency over HTTP, on a real ``tidings serve``: 20 accounts
accept one capability at the same instant (exactly one relationship, 19
``cmc-capability-consumed``), and the server killed with SIGKILL in the middle of such a burst
leaves, once restarted, no half acceptance: each invite's status, every account's relationships
and both inboxes agree."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

REQUESTER = "rita"
ACCEPTERS = tuple(f"acc{i:02d}" for i in range(20))
INVITES_IN_THE_CRASH = 5
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=0)


class Crowd:
    def __init__(self, process: ServerProcess, keys: dict[str, str]) -> None:
        self.process = process
        self.keys = keys

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.process.http_url, timeout=60.0, limits=LIMITS)

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture(scope="module")
def crowd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crowd]:
    process = ServerProcess(tmp_path_factory.mktemp("consent-crowd"))

    process.add_accounts({name: f"{name}-pw" for name in (REQUESTER, *ACCEPTERS)})

    def account(name: str) -> tuple[str, str]:
        made = process.tidings("account", "key", name)
        assert made.returncode == 0, made.stderr
        return name, made.stdout.strip().splitlines()[-1]

    with ThreadPoolExecutor(max_workers=6) as pool:
        keys = dict(pool.map(account, (REQUESTER, *ACCEPTERS)))
    process.start()
    try:
        yield Crowd(process, keys)
    finally:
        process.stop()


async def create_invite(crowd: Crowd, http: httpx.AsyncClient) -> dict[str, Any]:
    answer = await http.post(
        "/consent/invites",
        headers=crowd.auth(REQUESTER),
        json={
            "appCode": "crowd",
            "displayName": "Crowd study",
            "consent": {"en": "One of you."},
            "requestedPermissions": [{"resource": "presence", "level": "read"}],
        },
    )
    assert answer.status_code == 201, answer.text
    invite: dict[str, Any] = answer.json()
    return invite


async def get(crowd: Crowd, http: httpx.AsyncClient, name: str, path: str) -> Any:
    answer = await http.get(path, headers=crowd.auth(name), params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_twenty_accept_one_single_use_capability_at_once(crowd: Crowd) -> None:
    async with crowd.http() as http:
        invite = await create_invite(crowd, http)
        url = invite["capabilityUrl"]
        answers = await asyncio.gather(
            *(http.post(f"{url}/accept", headers=crowd.auth(name)) for name in ACCEPTERS)
        )
        won = [
            (name, a) for name, a in zip(ACCEPTERS, answers, strict=True) if a.status_code == 201
        ]
        assert len(won) == 1, [a.text for a in answers]
        lost = [a for a in answers if a.status_code != 201]
        assert [(a.status_code, a.json()["error_id"]) for a in lost] == [
            (409, "cmc-capability-consumed")
        ] * 19
        winner, answer = won[0]
        relationship = answer.json()
        status = await get(crowd, http, REQUESTER, f"/consent/invites/{invite['id']}")
        assert status["status"] == "accepted"
        assert [(a["identity"], a["relationshipId"]) for a in status["acceptedBy"]] == [
            (f"{winner}@localhost", relationship["id"])
        ]
        for name in ACCEPTERS:
            mine = (await get(crowd, http, name, "/consent/relationships"))["items"]
            of_invite = [r["id"] for r in mine if r["inviteId"] == invite["id"]]
            assert of_invite == ([relationship["id"]] if name == winner else [])


async def test_a_kill_in_the_middle_of_a_burst_leaves_no_half_acceptance(crowd: Crowd) -> None:
    async with crowd.http() as http:
        invites = [await create_invite(crowd, http) for _ in range(INVITES_IN_THE_CRASH)]
        calls = {
            asyncio.ensure_future(
                http.post(f"{invite['capabilityUrl']}/accept", headers=crowd.auth(name))
            ): (invite["id"], name)
            for invite in invites
            for name in ACCEPTERS
        }
        done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        crowd.process.kill()  # SIGKILL, with the rest of the burst in flight or unsent
        await asyncio.wait(calls)
    answered: dict[str, str] = {}  # invite id -> the accepter a 201 was seen for
    failed_to_answer = 0
    for call, (invite_id, name) in calls.items():
        error = call.exception()
        if error is not None:
            assert isinstance(error, httpx.TransportError), repr(error)
            failed_to_answer += 1
        elif call.result().status_code == 201:
            assert invite_id not in answered
            answered[invite_id] = name
        else:
            assert call.result().json()["error_id"] == "cmc-capability-consumed"
    assert done and answered  # the first answer came before the kill: one acceptance at least

    crowd.process.restart()
    async with crowd.http() as http:
        relationships = {
            name: (await get(crowd, http, name, "/consent/relationships"))["items"]
            for name in (REQUESTER, *ACCEPTERS)
        }
        inboxes = {
            name: (await get(crowd, http, name, "/consent/inbox"))["items"]
            for name in (REQUESTER, *ACCEPTERS)
        }
        accepted = 0
        for invite in invites:
            invite_id = invite["id"]
            status = await get(crowd, http, REQUESTER, f"/consent/invites/{invite_id}")
            made = {
                name: [r for r in found if r["inviteId"] == invite_id]
                for name, found in relationships.items()
            }
            told = {
                name: [e for e in events if e["data"].get("inviteId") == invite_id]
                for name, events in inboxes.items()
            }
            if status["status"] == "pending":
                assert status["acceptedBy"] == [] and invite_id not in answered
                assert not any(made.values()), made
                assert [e["kind"] for e in told[REQUESTER]] == ["invite-created"]
                assert not any(told[name] for name in ACCEPTERS)
                continue
            accepted += 1
            assert status["status"] == "accepted"
            (acceptance,) = status["acceptedBy"]
            winner = acceptance["identity"].partition("@")[0]
            assert answered.get(invite_id, winner) == winner  # a 201 seen is the one kept
            rel = acceptance["relationshipId"]
            for name in (REQUESTER, *ACCEPTERS):
                expected = [rel] if name in (REQUESTER, winner) else []
                assert [r["id"] for r in made[name]] == expected, (name, made)
            (relationship,) = made[winner]
            assert relationship["state"] == "active"
            assert relationship["accepter"] == f"{winner}@localhost"
            assert [(e["kind"], e["data"].get("relationshipId")) for e in told[REQUESTER]] == [
                ("invite-created", None),
                ("invite-accepted", rel),
                ("relationship-created", rel),
            ]
            assert [(e["kind"], e["data"]["relationshipId"]) for e in told[winner]] == [
                ("relationship-created", rel)
            ]
            for name in ACCEPTERS:
                if name != winner:
                    assert told[name] == []
        assert accepted >= len(answered)

        # a capability the kill left pending is still good, and still single-use
        for invite in invites:
            url = invite["capabilityUrl"]
            tries = await asyncio.gather(
                *(http.post(f"{url}/accept", headers=crowd.auth(name)) for name in ACCEPTERS)
            )
            statuses = sorted(t.status_code for t in tries)
            assert statuses in ([201] + [409] * 19, [409] * 20), statuses
            assert {t.json()["error_id"] for t in tries if t.status_code == 409} == {
                "cmc-capability-consumed"
            }
