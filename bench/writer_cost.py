"""What the SQLite writer spends on one acknowledged message, statement by statement (issue 15).

    .venv/bin/python bench/writer_cost.py [--messages 60000] [--batch 40] [--rounds 3]

No server and no event loop: the writer's own work, on the real schema (``sqlite.migrate``) and
the real statements (``_sql.insert_once`` and the acknowledge's delete), in one thread pinned to
core 1, ``synchronous=FULL``. Each transaction inserts ``--batch`` messages (dedupe key + queue
row) from 100 senders to 100 recipients and deletes the previous transaction's (the
``received`` of each message arrives a commit later, as under load), and commits. Reports the
thread's user and system CPU per message (``getrusage(RUSAGE_THREAD)``: the WAL writes, their
checksums, checkpoints and fsyncs included), the minimum over ``--rounds`` alternated rounds
(the machine is shared: the least disturbed round is the closest to the cost).

Variants, each one change from ``current``:

- ``no dedupe key``: without the ``message_keys`` insert (what duplicate detection costs),
- ``no message index``: without ``queue_by_message`` (acknowledge by ``seq`` instead),
- ``time-ordered key``: the key prefixed by its millisecond stamp (appends instead of one
  random leaf per message; lookups would need another index: only to show the page effect),
- ``recent + merge``: new keys go to a small ``message_keys_recent`` table (checked with the
  big one in one statement) merged into ``message_keys`` in key order every 1024 keys,
- ``together``: each transaction's acknowledgements in one statement (``DELETE ... IN (VALUES
  ...) RETURNING``), its appends in two (the keys, then the fresh ones' rows), what PostgreSQL's
  store does (``postgresql.APPENDS``, ``ACKNOWLEDGEMENTS``) to save round trips.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tidings.core.model import AppendResult, QueueEntry
from tidings.store._sql import appending_arguments, dedupe_key, dedupe_stamp, insert_once
from tidings.store.sqlite import _connect, migrate

PAIRS = 100
PAYLOAD = os.urandom(420)  # a 300-byte message's envelope, about
ACKNOWLEDGE = "DELETE FROM queue WHERE identity=? AND instance=? AND sender=? AND msg_id=?"
MERGE_EVERY = 1024

Insert = Callable[[sqlite3.Connection, QueueEntry, float], int]


def current(connection: sqlite3.Connection, entry: QueueEntry, now: float) -> int:
    seqs = insert_once(connection, [entry], (entry.sender, str(entry.message_id)), now)
    assert seqs is not None
    return seqs[0]


def without_key(connection: sqlite3.Connection, entry: QueueEntry, now: float) -> int:
    seqs = insert_once(connection, [entry], None, now)
    assert seqs is not None
    return seqs[0]


def time_ordered(connection: sqlite3.Connection, entry: QueueEntry, now: float) -> int:
    stamp = dedupe_stamp(now)
    key = stamp.to_bytes(8, "big") + dedupe_key(entry.sender, str(entry.message_id))
    connection.execute("INSERT INTO message_keys (key, stored_at) VALUES (?,?)", (key, stamp))
    return without_key(connection, entry, now)


class RecentThenMerge:
    def __init__(self) -> None:
        self.remembered = 0

    def __call__(self, connection: sqlite3.Connection, entry: QueueEntry, now: float) -> int:
        cursor = connection.execute(
            "INSERT INTO message_keys_recent (key, stored_at) SELECT ?1, ?2 WHERE NOT EXISTS"
            " (SELECT 1 FROM message_keys WHERE key=?1) ON CONFLICT DO NOTHING",
            (dedupe_key(entry.sender, str(entry.message_id)), dedupe_stamp(now)),
        )
        assert cursor.rowcount == 1
        self.remembered += 1
        if self.remembered >= MERGE_EVERY:
            connection.execute(
                "INSERT INTO message_keys (key, stored_at) SELECT key, stored_at"
                " FROM message_keys_recent WHERE true ON CONFLICT DO NOTHING"
            )
            connection.execute("DELETE FROM message_keys_recent")
            self.remembered = 0
        return without_key(connection, entry, now)


_QUEUE_INSERT_HEAD = (
    "INSERT INTO queue (identity, instance, sender, msg_id, needs_ack, payload, enqueued_at,"
    " expires_at) VALUES "
)


def _appended(arguments: list[Any], rows: list[Any]) -> list[AppendResult]:
    seq_of = {(sender, msg_id): seq for seq, sender, msg_id in rows}
    return [
        AppendResult(True)
        if (seq := seq_of.pop((a[4], a[5]), None)) is None
        else AppendResult(False, [seq])
        for a in arguments
    ]


def _values(count: int, width: int) -> str:
    """``(?,?),(?,?)...``: ``count`` rows of ``width`` parameters."""
    row = "(" + ",".join("?" * width) + ")"
    return ",".join([row] * count)


def _appends_together(db: sqlite3.Connection, arguments: list[Any]) -> list[AppendResult]:
    """Several ``_sql.insert_once`` in two statements, not two each: the keys in one insert
    (those already stored, or repeated in the run, come back as not inserted), then the queue
    rows of the messages whose keys went in, in the messages' order (their sequence numbers
    rise with it)."""
    keys = db.execute(
        _KEYS_INSERT + _values(len(arguments), 2) + _KEYS_RETURNING,
        [value for argument in arguments for value in argument[:2]],
    )
    fresh = {key for (key,) in keys.fetchall()}
    queued = []
    for argument in arguments:
        if argument[0] in fresh:
            fresh.discard(argument[0])  # a later equal key is a duplicate
            queued.append(argument)
    if not queued:
        return _appended(arguments, [])
    rows = db.execute(
        _QUEUE_INSERT_HEAD + _values(len(queued), 8) + " RETURNING seq, sender, msg_id",
        [value for argument in queued for value in argument[2:]],
    )
    return _appended(arguments, rows.fetchall())


def _acknowledgements_together(db: sqlite3.Connection, rows: list[Any]) -> list[int]:
    """Several acknowledgements in one statement: how many rows each removed."""
    deleted = db.execute(
        "DELETE FROM queue WHERE (identity, instance, sender, msg_id) IN (VALUES "
        + _values(len(rows), 4)
        + ") RETURNING identity, instance, sender, msg_id",
        [value for row in rows for value in row],
    )
    return [1 if row else 0 for row in deleted.fetchall()]


_KEYS_INSERT = "INSERT INTO message_keys (key, stored_at) VALUES "
_KEYS_RETURNING = " ON CONFLICT DO NOTHING RETURNING key"


def recent_table(connection: sqlite3.Connection) -> None:
    connection.execute(
        "CREATE TABLE message_keys_recent (key BLOB PRIMARY KEY, stored_at INTEGER NOT NULL)"
        " WITHOUT ROWID"
    )


def memory_temp_store(connection: sqlite3.Connection) -> None:
    """The IN list and RETURNING rows go to temporary tables: on files (the default) they
    cost 6-10 us/msg more in system time."""
    connection.execute("PRAGMA temp_store=MEMORY")


def no_message_index(connection: sqlite3.Connection) -> None:
    connection.execute("DROP INDEX queue_by_message")


VARIANTS: dict[str, tuple[Callable[[], Insert], Callable[[sqlite3.Connection], None] | None]] = {
    "current": (lambda: current, None),
    "no dedupe key": (lambda: without_key, None),
    "no message index": (lambda: current, no_message_index),
    "time-ordered key": (lambda: time_ordered, None),
    "recent + merge": (RecentThenMerge, recent_table),
    "together": (lambda: current, memory_temp_store),
}


def run(name: str, messages: int, batch: int) -> tuple[float, float]:
    """User and system CPU (us) per message of one variant, on a new database."""
    make_insert, prepare = VARIANTS[name]
    insert = make_insert()
    with tempfile.TemporaryDirectory(prefix="tidings-writer-cost-") as folder:
        path = Path(folder) / "tidings.db"
        migrate(path)
        connection = _connect(path)
        if prepare is not None:
            prepare(connection)
        by_seq = name == "no message index"
        together = name == "together"
        previous: list[tuple[int, QueueEntry]] = []
        start = resource.getrusage(resource.RUSAGE_THREAD)
        for first in range(0, messages, batch):
            connection.execute("BEGIN IMMEDIATE")
            if together:
                rows = [(e.identity, e.instance, e.sender, e.message_id) for _, e in previous]
                if rows:
                    assert sum(_acknowledgements_together(connection, rows)) == len(rows)
                previous = []
            for seq, entry in previous:
                if by_seq:
                    connection.execute("DELETE FROM queue WHERE seq=?", (seq,))
                else:
                    row = (entry.identity, entry.instance, entry.sender, entry.message_id)
                    connection.execute(ACKNOWLEDGE, row)
            previous = []
            now = time.time()
            for n in range(first, first + batch):
                pair = n % PAIRS
                entry = QueueEntry(
                    f"guest-r{pair}@localhost",
                    "i",
                    f"guest-s{pair}@localhost/i",
                    f"m{pair}-{n}",
                    True,
                    PAYLOAD,
                    now + 3600,
                )
                if together:
                    previous.append((0, entry))
                else:
                    previous.append((insert(connection, entry, now), entry))
            if together:
                run = [
                    appending_arguments(e, (e.sender, str(e.message_id)), now) for _, e in previous
                ]
                assert not any(r.duplicate for r in _appends_together(connection, run))
            connection.execute("COMMIT")
        end = resource.getrusage(resource.RUSAGE_THREAD)
        connection.close()
    return (
        (end.ru_utime - start.ru_utime) / messages * 1e6,
        (end.ru_stime - start.ru_stime) / messages * 1e6,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=60000)
    p.add_argument("--batch", type=int, default=40, help="messages per commit")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args()
    os.sched_setaffinity(0, {1})
    names = args.variants.split(",")
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            runs[name].append(run(name, args.messages, args.batch))
    print(f"<!-- {args.messages} messages, {args.batch} per commit, {args.rounds} rounds -->")
    print("| variant | user us/msg | system us/msg | total (min) | total (median) |")
    print("|---|---:|---:|---:|---:|")
    for name, results in runs.items():
        best = min(results, key=sum)
        middle = statistics.median(sum(r) for r in results)
        print(f"| {name} | {best[0]:.1f} | {best[1]:.1f} | {sum(best):.1f} | {middle:.1f} |")


if __name__ == "__main__":
    main()
