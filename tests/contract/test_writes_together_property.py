"""Property: a batch of appends and acknowledgements run together (``_writer.Kind``) answers
and leaves the queue exactly as the same operations one commit each, on PostgreSQL, for any mix of
new messages, resends (in the batch and of earlier ones), acknowledgements of stored messages,
of unknown ones and repeated ones. (An acknowledgement of a message appended in its own batch is
left out: only a committed message can have been written to its recipient; the ranking that
runs acknowledgements first relies on it, ``_sql.SqlStore._acknowledgements_together``.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.contract.test_writes_together import HeldWriter
from tests.postgres import PostgresDatabases
from tidings.core.model import QueueEntry
from tidings.core.ports import settling
from tidings.store.postgresql import PostgresStore

STORED = [("bob@x", "alice@x/a", f"s{n}") for n in range(4)]
"""Messages stored (committed) before the batch: what acknowledgements may name."""

operation = st.one_of(
    st.tuples(
        st.just("append"),
        st.sampled_from(["bob@x", "carol@x"]),
        st.sampled_from(["alice@x/a", "dave@x/a"]),
        st.sampled_from(["n1", "n2", "n3", "s0", "s1"]),  # new ones, and resends of stored ones
    ),
    st.tuples(
        st.just("acknowledge"),
        st.just("bob@x"),
        st.just("alice@x/a"),
        st.sampled_from(["s0", "s1", "s2", "s3", "never"]),
    ),
)


def submit(store: PostgresStore, op: tuple[str, str, str, str]) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    kind, identity, sender, message_id = op
    if kind == "append":
        entry = QueueEntry(identity, "a", sender, message_id, True, message_id.encode())
        store.append([entry], (sender, message_id), settling(future))
    else:
        store.acknowledge(identity, "a", sender, message_id, settling(future))
    return future


async def run(
    url: str, ops: list[tuple[str, str, str, str]], together: bool
) -> tuple[list[Any], Any]:
    store = PostgresStore(url)
    store.open(asyncio.get_running_loop())
    try:
        for identity, sender, message_id in STORED:
            await submit(store, ("append", identity, sender, message_id))
        if together:  # hold the writer so that every operation lands in one batch
            held = HeldWriter(store)
            futures = [submit(store, op) for op in ops]
            await held.release()
            results = list(await asyncio.gather(*futures))
        else:
            results = [await submit(store, op) for op in ops]
        answers = [r if isinstance(r, int) else (r.duplicate, len(r.seqs)) for r in results]
        queues = {
            identity: [(e.sender, e.message_id) for e in await store.backlog(identity, "a", 0, 99)]
            for identity in ("bob@x", "carol@x")
        }
        return answers, queues
    finally:
        store.close()


@pytest.fixture(scope="module")
def two(postgres: PostgresDatabases) -> Iterator[tuple[str, str]]:
    """Two databases, emptied before each example."""
    urls = (postgres.fresh(), postgres.fresh())
    yield urls
    for url in urls:
        postgres.drop(url)


@settings(max_examples=30, deadline=None)
@given(ops=st.lists(operation, min_size=1, max_size=14))
def test_together_answers_as_one_at_a_time(
    postgres: PostgresDatabases, two: tuple[str, str], ops: list[tuple[str, str, str, str]]
) -> None:
    for url in two:
        postgres.clear(url)
    alone = asyncio.run(run(two[0], ops, together=False))
    batched = asyncio.run(run(two[1], ops, together=True))
    assert batched == alone
