"""The durable peer outbox: FIFO per destination, group commit, all-or-nothing batches, and
nothing lost to a kill -9 once ``add`` returned."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections import OrderedDict
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tidings.sdk._exceptions import ClientClosed, OutboxFull
from tidings.sdk._peer_outbox import SCHEMA_VERSION, Outgoing, PeerOutbox

T = TypeVar("T")


def item(n: int, destination: str = "dest-a", *, expires_ms: int = 10**13) -> Outgoing:
    return Outgoing(
        id=f"m{n}",
        destination=destination,
        topic=f"chat.{n}",
        protocol="ms",
        payload=bytes([n % 256]) * (n % 7),
        created_ms=1_000 + n,
        expires_ms=expires_ms,
        realtime=n % 2 == 0,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite"


async def test_pending_is_fifo_per_destination_and_remove_forgets(path: Path) -> None:
    outbox = PeerOutbox(path)
    for n in range(6):
        await outbox.add(item(n, "dest-b" if n % 3 == 0 else "dest-a"))
    assert [i.id for i in outbox.pending()] == ["m0", "m1", "m2", "m3", "m4", "m5"]
    assert [i.id for i in outbox.pending("dest-a")] == ["m1", "m2", "m4", "m5"]
    assert [i.id for i in outbox.pending("dest-b")] == ["m0", "m3"]
    assert outbox.pending("nobody") == []
    assert outbox.destinations() == ["dest-b", "dest-a"]  # the one with the oldest message first
    await outbox.remove(["m0", "m4", "unknown"])
    assert [i.id for i in outbox.pending()] == ["m1", "m2", "m3", "m5"]
    assert outbox.destinations() == ["dest-a", "dest-b"]
    await outbox.remove(["m3"])
    assert outbox.destinations() == ["dest-a"]
    assert len(outbox) == 3
    assert "m1" in outbox and "m0" not in outbox
    await outbox.remove([])
    await outbox.close()


async def test_expired_uses_the_given_time_or_the_clock(path: Path) -> None:
    now = [5.0]
    outbox = PeerOutbox(path, clock=lambda: now[0])
    await outbox.add(item(1, expires_ms=5_000))
    await outbox.add(item(2, expires_ms=9_000))
    assert [i.id for i in outbox.expired(4_999)] == []
    assert [i.id for i in outbox.expired(5_000)] == ["m1"]
    assert [i.id for i in outbox.expired()] == ["m1"]
    now[0] = 9.0
    assert [i.id for i in outbox.expired()] == ["m1", "m2"]
    await outbox.close()


async def test_reopening_restores_everything(path: Path) -> None:
    outbox = PeerOutbox(path)
    written = [item(n, f"dest-{n % 3}") for n in range(20)]
    for one in written:
        await outbox.add(one)
    await outbox.remove(["m4", "m5"])
    await outbox.close()
    again = PeerOutbox(path)
    assert again.pending() == [one for one in written if one.id not in {"m4", "m5"}]
    assert again.destinations() == ["dest-0", "dest-1", "dest-2"]
    await again.add(item(99))
    assert again.pending()[-1].id == "m99"
    await again.close()
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()


async def test_an_id_already_held_is_refused(path: Path) -> None:
    outbox = PeerOutbox(path)
    await outbox.add(item(1))
    with pytest.raises(ValueError, match="already holds"):
        await outbox.add(item(1))
    results = await asyncio.gather(outbox.add(item(2)), outbox.add(item(2)), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], ValueError)
    assert [i.id for i in outbox.pending()] == ["m1", "m2"]
    await outbox.close()


async def test_max_items_counts_adds_in_flight(path: Path) -> None:
    outbox = PeerOutbox(path, max_items=3)
    results = await asyncio.gather(*(outbox.add(item(n)) for n in range(5)), return_exceptions=True)
    assert results[:3] == [None, None, None]
    assert all(isinstance(r, OutboxFull) for r in results[3:])
    await outbox.remove(["m0"])
    await outbox.add(item(7))
    assert len(outbox) == 3
    await outbox.close()


async def test_group_commit_takes_a_loop_turn_per_transaction(path: Path) -> None:
    outbox = PeerOutbox(path)
    await asyncio.gather(*(outbox.add(item(n, f"dest-{n % 5}")) for n in range(1000)))
    assert len(outbox) == 1000
    assert outbox.commits < 10  # one, or a few: never one per message
    assert [i.id for i in outbox.pending()] == [f"m{n}" for n in range(1000)]
    before = outbox.commits
    await asyncio.gather(
        outbox.remove([f"m{n}" for n in range(0, 1000, 2)]),
        outbox.remove([f"m{n}" for n in range(1, 1000, 4)]),
        outbox.add(item(1000)),
    )
    assert outbox.commits == before + 1
    assert len(outbox) == 251
    await outbox.close()


async def test_a_failed_commit_fails_its_whole_batch_and_applies_nothing(path: Path) -> None:
    outbox = PeerOutbox(path)
    await outbox.add(item(0))
    poison = sqlite3.connect(path)  # a trigger stands in for a disk error mid-transaction
    poison.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON outbox WHEN NEW.id = 'm2'"
        " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    )
    poison.commit()
    poison.close()
    results = await asyncio.gather(
        outbox.add(item(1)),
        outbox.add(item(2)),
        outbox.remove(["m0"]),
        outbox.add(item(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, sqlite3.Error) and "poisoned" in str(r) for r in results)
    assert [i.id for i in outbox.pending()] == ["m0"]
    await outbox.add(item(1))  # the outbox goes on; the ids of the failed batch are free again
    await outbox.close()
    again = PeerOutbox(path)
    assert [i.id for i in again.pending()] == ["m0", "m1"]
    await again.close()


async def test_a_newer_schema_is_refused_clearly(path: Path) -> None:
    await PeerOutbox(path).close()
    connection = sqlite3.connect(path)
    connection.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,)
    )
    connection.commit()
    connection.close()
    with pytest.raises(RuntimeError, match="newer Tidings SDK"):
        PeerOutbox(path)


async def test_a_closed_outbox_refuses_writes_but_still_reads(path: Path) -> None:
    outbox = PeerOutbox(path)
    await outbox.add(item(1))
    await outbox.close()
    await outbox.close()
    with pytest.raises(ClientClosed):
        await outbox.add(item(2))
    with pytest.raises(ClientClosed):
        await outbox.remove(["m1"])
    assert [i.id for i in outbox.pending()] == ["m1"]
    never_written = PeerOutbox(path)
    await never_written.close()


async def test_close_commits_what_was_submitted(path: Path) -> None:
    outbox = PeerOutbox(path)
    adds = [asyncio.ensure_future(outbox.add(item(n))) for n in range(10)]
    await asyncio.sleep(0)  # the adds are submitted (one turn), not yet committed
    await outbox.close()
    await asyncio.gather(*adds)
    again = PeerOutbox(path)
    assert len(again) == 10
    await again.close()


async def test_a_cancelled_add_is_still_mirrored(path: Path) -> None:
    outbox = PeerOutbox(path)
    add = asyncio.ensure_future(outbox.add(item(1)))
    await asyncio.sleep(0)  # submitted
    add.cancel()
    await outbox.add(item(2))  # committed after the cancelled one's batch
    assert [i.id for i in outbox.pending()] == ["m1", "m2"]
    await outbox.close()


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from tidings.sdk._peer_outbox import Outgoing, PeerOutbox

    async def main() -> None:
        outbox = PeerOutbox(sys.argv[1])
        for n in range(100_000):
            await outbox.add(Outgoing(f"m{n}", f"d{n % 3}", "t", "ms", b"x" * (n % 50),
                                      n, 10**13, True))
            print(n, flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("k", [0, 57])
def test_kill_9_after_add_returned_loses_nothing(tmp_path: Path, k: int) -> None:
    path = tmp_path / "outbox.sqlite"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout is not None
        for expected in range(k + 1):
            assert child.stdout.readline().strip() == str(expected)
        child.send_signal(signal.SIGKILL)  # right after add(k) returned; add(k+1) is under way
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    async def reopen() -> list[Outgoing]:
        outbox = PeerOutbox(path)
        pending = outbox.pending()
        await outbox.close()
        return pending

    pending = asyncio.run(reopen())
    ids = [one.id for one in pending]
    assert len(ids) >= k + 1
    assert ids == [f"m{n}" for n in range(len(ids))]  # items 0..k, perhaps more, no holes
    assert all(one.payload == b"x" * (n % 50) for n, one in enumerate(pending))


class OutboxMachine(RuleBasedStateMachine):
    """The outbox against an ordered dict, across writes in one turn and reopenings."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = tempfile.mkdtemp(prefix="outbox-")
        self.path = os.path.join(self.folder, "outbox.sqlite")
        self.outbox = PeerOutbox(self.path, max_items=12)
        self.model: OrderedDict[str, Outgoing] = OrderedDict()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    @rule(n=st.integers(0, 20), destination=st.sampled_from(["a", "b", "c"]))
    def add(self, n: int, destination: str) -> None:
        one = item(n, destination)
        if one.id in self.model:
            with pytest.raises(ValueError):
                self.run(self.outbox.add(one))
        elif len(self.model) >= 12:
            with pytest.raises(OutboxFull):
                self.run(self.outbox.add(one))
        else:
            self.run(self.outbox.add(one))
            self.model[one.id] = one

    @rule(
        adds=st.lists(st.integers(0, 20), unique=True, max_size=5),
        removes=st.lists(st.integers(0, 22), max_size=5),
    )
    def one_turn(self, adds: list[int], removes: list[int]) -> None:
        """Removes then adds submitted in one loop turn: one transaction, applied in order."""
        fresh = [n for n in adds if f"m{n}" not in self.model][: 12 - len(self.model)]
        before = self.outbox.commits

        async def together() -> None:
            await asyncio.gather(
                self.outbox.remove([f"m{n}" for n in removes]),
                *(self.outbox.add(item(n, "abc"[n % 3])) for n in fresh),
            )

        self.run(together())
        for n in removes:
            self.model.pop(f"m{n}", None)
        for n in fresh:
            self.model[f"m{n}"] = item(n, "abc"[n % 3])
        assert self.outbox.commits == before + (1 if removes or fresh else 0)

    @rule(removes=st.lists(st.integers(0, 22), max_size=6))
    def remove(self, removes: list[int]) -> None:
        self.run(self.outbox.remove([f"m{n}" for n in removes]))
        for n in removes:
            self.model.pop(f"m{n}", None)

    @rule()
    def reopen(self) -> None:
        self.run(self.outbox.close())
        self.outbox = PeerOutbox(self.path, max_items=12)

    @invariant()
    def mirrors_the_model(self) -> None:
        assert self.outbox.pending() == list(self.model.values())
        for destination in "abc":
            assert self.outbox.pending(destination) == [
                one for one in self.model.values() if one.destination == destination
            ]
        assert self.outbox.destinations() == list(
            dict.fromkeys(one.destination for one in self.model.values())
        )
        assert len(self.outbox) == len(self.model)

    def teardown(self) -> None:
        self.run(self.outbox.close())
        self.loop.close()
        shutil.rmtree(self.folder, ignore_errors=True)


OutboxMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
TestOutboxMachine = OutboxMachine.TestCase
