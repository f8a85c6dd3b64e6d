"""Consent over SQLite: single-use under concurrency (20 accepts at once, exactly one wins),
open links under concurrency, durability across reopening, and no half-made acceptance after a
``kill -9`` of a process in the middle of accepting."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tidings.core.consent import ConsentService
from tidings.core.consent_model import InviteStatus
from tidings.core.errors import ErrorId, TidingsError
from tidings.store.sqlite import DATABASE_FILE, SqliteStore

ALICE = "alice@x"
OFFER: dict[str, Any] = {
    "app_code": "study",
    "display_name": "Study",
    "consent": {"en": "yes"},
    "permissions": [{"resource": "feed:heart*", "level": "read"}],
}


async def test_twenty_concurrent_accepts_of_a_single_use_invite(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    try:
        service = ConsentService(store)
        invite, token = await service.create_invite(ALICE, mode="single-use", **OFFER)
        accepters = [f"user{n}@x" for n in range(20)]
        outcomes = await asyncio.gather(
            *(service.accept(token, who) for who in accepters), return_exceptions=True
        )
        won = [o for o in outcomes if not isinstance(o, BaseException)]
        lost = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(won) == 1
        assert len(lost) == 19
        assert all(isinstance(e, TidingsError) for e in lost)
        assert {e.error_id for e in lost if isinstance(e, TidingsError)} == {
            ErrorId.CAPABILITY_CONSUMED
        }
        relationships = [r for who in accepters for r in await service.relationships(who)]
        assert relationships == won
        seen = await service.invite(invite.id, ALICE)
        assert seen.status is InviteStatus.ACCEPTED
        assert [a.relationship_id for a in seen.accepted_by] == [won[0].id]
        kinds = [e.kind.value for e in await service.inbox(ALICE)]
        assert kinds == ["invite-created", "invite-accepted", "relationship-created"]
    finally:
        store.close()


async def test_concurrent_open_link_accepts(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    try:
        service = ConsentService(store)
        invite, token = await service.create_invite(ALICE, mode="open-link", **OFFER)
        many = await asyncio.gather(*(service.accept(token, f"u{n}@x") for n in range(20)))
        assert len({r.id for r in many}) == 20
        same = await asyncio.gather(
            *(service.accept(token, "Same@x" if n % 2 else "same@x") for n in range(10)),
            return_exceptions=True,
        )
        errors = [o for o in same if isinstance(o, TidingsError)]
        assert len(errors) == 9
        assert {e.error_id for e in errors} == {ErrorId.CAPABILITY_ALREADY_ACCEPTED_BY_YOU}
        assert len((await service.invite(invite.id, ALICE)).accepted_by) == 21
    finally:
        store.close()


async def test_consent_survives_reopening(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    service = ConsentService(store)
    _, token = await service.create_invite(ALICE, **OFFER)
    relationship = await service.accept(token, "bob@x")
    await service.chat(relationship.id, "bob@x", "hi")
    store.close()
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    try:
        service = ConsentService(store)
        assert await service.relationship(relationship.id, ALICE) == relationship
        assert [m.text for m in await service.chat_history(relationship.id, ALICE)] == ["hi"]
        assert len(await service.inbox(ALICE)) == 4
        assert await service.grants.allows(ALICE, "bob@x", "feed:heart", "read")
    finally:
        store.close()


_ACCEPTER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tidings.core.consent import ConsentService
    from tidings.store.sqlite import SqliteStore

    OFFER = {"app_code": "s", "display_name": "S", "consent": {"en": "y"},
             "permissions": [{"resource": "presence", "level": "read"}]}

    async def main() -> None:
        store = SqliteStore(Path(sys.argv[1]), commit_window=0.0)
        store.open(asyncio.get_running_loop())
        service = ConsentService(store)
        tokens = []
        for n in range(200):
            tokens.append((await service.create_invite("alice@x", **OFFER))[1])
        print("ready", flush=True)
        n = 0
        while True:  # accept forever, many at a time, until killed
            batch = tokens[n % 200 : n % 200 + 10]
            await asyncio.gather(*(service.accept(t, f"u{n}-{i}@x") for i, t in
                                   enumerate(batch)), return_exceptions=True)
            n += 10
            if n % 200 == 0:
                tokens = [(await service.create_invite("alice@x", **OFFER))[1]
                          for _ in range(200)]
            print(n, flush=True)

    asyncio.run(main())
    """
)


def test_kill_9_never_leaves_half_an_acceptance(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen(
        [sys.executable, "-c", _ACCEPTER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        for _ in range(30):  # let it commit a few hundred accepts, then kill it mid-way
            child.stdout.readline()
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    connection = sqlite3.connect(tmp_path / DATABASE_FILE)
    try:
        relationships = dict(
            connection.execute("SELECT id, invite_id FROM consent_relationships").fetchall()
        )
        acceptances = dict(
            connection.execute(
                "SELECT relationship_id, invite_id FROM consent_acceptances"
            ).fetchall()
        )
        accepted = {
            row[0]
            for row in connection.execute(
                "SELECT id FROM consent_invites WHERE status='accepted'"
            ).fetchall()
        }
        created = {
            row[0]
            for row in connection.execute(
                "SELECT json_extract(data, '$.relationshipId') FROM consent_inbox"
                " WHERE kind='relationship-created'"
            ).fetchall()
        }
        told = connection.execute(
            "SELECT count(*) FROM consent_inbox WHERE kind='relationship-created'"
        ).fetchone()[0]
    finally:
        connection.close()
    assert len(relationships) >= 200
    assert relationships == acceptances
    assert set(relationships.values()) == accepted
    assert created == set(relationships)
    assert told == 2 * len(relationships)  # both sides, for every relationship
