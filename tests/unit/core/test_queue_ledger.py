"""The queue ledger over the memory store: depth equals the stored rows after any writes.

Each step submits one kind of write the core makes (plain and bounded appends, duplicates,
failed and refused writes, acknowledgements, discards, claims of the unclaimed inbox, session
deletion) and settles the ledger from its result only, as the router does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.errors import TidingsError
from tidings.core.model import UNCLAIMED, AppendResult, PersistStep, QueueBound, QueueEntry
from tidings.core.ports import QueueTransaction, settling
from tidings.core.queue_ledger import QueueLedger
from tidings.core.queue_policy import QueuePolicy
from tidings.core.session_registry import SessionRegistry
from tidings.store.memory import MemoryStore

SERVER = "postmaster@x/server"
BOB = "bob@x"
NAMES = ["a", "b", UNCLAIMED]
SENDERS = ["s0@x/p", "s1@x/p"]


class Notices:
    def gap(self, node: str, gap_id: str, dropped: int, lost: list[dict[str, str]]) -> bytes:
        return json.dumps({"gap": gap_id, "dropped": dropped}).encode()

    def failed(self, node: str, message_id: str, error: TidingsError) -> bytes:
        return json.dumps({"failed": message_id}).encode()

    def message(self, node: str, message_id: str, type_: str, content: Any) -> bytes:
        return b"{}"


class Boom(Exception):
    pass


targets = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), targets, st.booleans(), st.integers(0, 1)),
        st.tuples(st.just("bounded"), targets, st.integers(1, 3), st.integers(0, 1)),
        st.tuples(st.just("failed"), targets, st.just(0), st.just(0)),
        st.tuples(st.just("refused"), targets, st.just(0), st.just(0)),
        st.tuples(st.just("ack"), st.sampled_from(NAMES), st.integers(0, 4), st.just(0)),
        st.tuples(st.just("discard"), st.sampled_from(NAMES), st.integers(0, 4), st.just(0)),
        st.tuples(st.just("claim"), st.sampled_from(NAMES[:2]), st.just(0), st.just(0)),
        st.tuples(st.just("delete"), st.sampled_from(NAMES[:2]), st.just(0), st.just(0)),
        st.tuples(st.just("expire"), st.sampled_from(NAMES), st.integers(0, 30), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(script=steps)
def test_depth_equals_stored_rows_after_every_write(script: list[tuple[Any, ...]]) -> None:
    asyncio.run(_run(script))


async def _transact(store: MemoryStore, work: Any) -> Any:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    store.transact(work, settling(future))
    try:
        return await future
    except Boom as exc:
        return exc


async def _run(script: list[tuple[Any, ...]]) -> None:
    store = MemoryStore()
    registry = SessionRegistry()
    ledger = QueueLedger(registry)
    policy = QueuePolicy(Notices(), SERVER)
    counter = 0
    for action, arg, flag, sender_index in script:
        sender = SENDERS[sender_index]
        if action in ("append", "bounded", "failed", "refused"):
            names: list[str] = arg
            records = [registry.record(BOB, name) for name in names]
            counter += 1
            mid = "same" if action == "append" and flag else f"m{counter}"  # same: duplicates
            # each entry expires at its step number: "expire" sweeps up to a step
            entries = [
                QueueEntry(BOB, n, sender, mid, True, mid.encode(), float(counter)) for n in names
            ]
            ledger.reserve(records)
            result: Any
            if action == "append":
                future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
                store.append(entries, (sender, mid), settling(future))
                result = await future
            elif action == "failed":

                def fails(tx: QueueTransaction, entries: Any = entries) -> None:
                    tx.insert(entries, None)
                    raise Boom

                result = await _transact(store, fails)
            else:
                persist = PersistStep(BOB, names[0], "stale", None) if action == "refused" else None
                bounds = [QueueBound(BOB, n, flag) for n in names] if action == "bounded" else []
                work = policy.bounded_append(entries, (sender, mid), bounds, persist)
                result = await _transact(store, work)
            ledger.settle_append(records, result)
        elif action in ("ack", "discard"):
            record = registry.record(BOB, arg)
            rows = await store.backlog(BOB, arg, 0, 100)
            if rows:
                row = rows[min(flag, len(rows) - 1)]
                if action == "discard":
                    store.discard([row.seq])
                    ledger.settle_removal(record, 1)
                elif row.message_id is not None:
                    removed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                    store.acknowledge(BOB, arg, row.sender, row.message_id, settling(removed))
                    ledger.settle_removal(record, await removed)
        elif action == "claim":
            moved = await store.claim_unclaimed(BOB, arg)
            ledger.settle_claim(registry.record(BOB, UNCLAIMED), registry.record(BOB, arg), moved)
        elif action == "delete":
            ledger.settle(await _transact(store, policy.session_deletion(BOB, arg)))
        elif action == "expire":
            if flag % 2:  # the sweep, over every session
                swept = await _transact(store, policy.expiry(float(flag), (-1.0, 0), 1000, {}))
                ledger.settle(swept.result)
            else:  # what a write found expired in one session
                work = policy.session_expiry(BOB, arg, float(flag), 0, 1000)
                ledger.settle(await _transact(store, work))
        await store.barrier()
        for record in list(registry.all_records()):
            rows = await store.backlog(record.identity, record.instance, 0, 1000)
            assert record.depth == len(rows), (action, record)
