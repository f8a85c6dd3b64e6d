"""Persistent-session load generator: bench/loadgen.py's ``acked`` run, with every sender in a
persistent session and every message a persistent-session request.

    python bench/persistgen.py --url ws://... [--server-pid PID] [--pairs 100] [--window 8] ...

Exactly the ``acked`` mode of bench/loadgen.py (same pairs, content, window, receipts,
``received`` answers, counting, drain, JSON line), except that:

- after ``/receipt``, each sender (``s{i}@localhost/b``) begins a persistent session on its own
  instance: ``set /sessions/b/persistence`` -> ``{"nonce", "memento", "crashed"}``;
- every message carries ``metadata: {"tidings.nonce": <nonce>, "tidings.memento": <its id>}``,
  so the server checks the nonce and commits the message (stored in the receiver's queue) and
  the memento in one transaction before ``accepted``;
- after the drain each sender begins again and checks the answer: ``crashed`` must be true (it
  never ended) and ``memento`` must be the id of the last message it sent (commits in order,
  none lost); mismatches are reported as ``memento_mismatches``.

A request counts once its sender has seen ``accepted`` and the receiver's forwarded
``received`` (as in ``acked``), so requests/s is directly comparable to acknowledged msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import common
import loadgen
from loadgen import TEXT

INSTANCE = "b"  # loadgen's nodes are name@localhost/b
BEGIN = (
    b'{"id":"p","method":"set","uri":"/sessions/' + INSTANCE.encode() + b'/persistence",'
    b'"type":"application/vnd.tidings.persistence+json","resource":{}}'
)
senders: list[PersistConn] = []


class PersistConn(loadgen.Conn):
    nonce = ""
    begun: dict[str, Any] | None = None

    def set_receipt(self) -> None:
        super().set_receipt()  # its answer goes to _receipt below, which then begins
        senders.append(self)

    def _receipt(self, data: bytes) -> None:
        env = loadgen.decode(data)
        if env.id == "r" and env.status:
            if env.status == "success":
                self.begin()
            else:
                self.handler = self._idle
                self.ready.set_exception(RuntimeError(f"/receipt: {data[:300]!r}"))

    def begin(self) -> None:
        """``set /sessions/b/persistence``; ``self.ready`` resolves with the answer."""
        assert self.transport is not None
        if self.ready.done():
            self.ready = asyncio.get_running_loop().create_future()
        self.handler = self._begun
        self.transport.send(TEXT, BEGIN)

    def _begun(self, data: bytes) -> None:
        env = json.loads(data)
        if env.get("id") != "p" or "status" not in env:
            return  # a late notification of the measured run
        self.handler = self._acked_notified
        if env["status"] == "success":
            self.begun = env["resource"]
            self.nonce = self.nonce or env["resource"]["nonce"]
            self.ready.set_result(None)
        else:
            self.ready.set_exception(RuntimeError(f"begin: {data[:300]!r}"))

    @property
    def last_id(self) -> str:
        """The id of the last message sent (ids count up per sender), '' before the first."""
        return self.prefix + str(self.seq) if self.seq else ""

    def message(self, mid: str) -> bytes:
        """A persistent-session request: the session's nonce, and its own id as the memento."""
        m = mid.encode()
        return (
            self.head
            + m
            + self.tail[:-1]
            + b',"metadata":{"tidings.nonce":"'
            + self.nonce.encode()
            + b'","tidings.memento":"'
            + m
            + b'"}}'
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result = await loadgen.run(args, PersistConn)
    result["mode"] = "persist"
    # every sender begins again: crashed must be true and the memento its last message's id
    for s in senders:
        s.begin()
    mismatches: list[str] = []
    try:
        await asyncio.wait_for(asyncio.gather(*(s.ready for s in senders)), 20)
    except Exception as exc:
        mismatches.append(f"re-begin failed: {exc}")
    for s in senders:
        got = s.begun or {}
        if got.get("crashed") is not True or got.get("memento") != s.last_id:
            mismatches.append(f"{s.name}: {got} (last sent {s.last_id})")
    result["memento_mismatches"] = len(mismatches)
    result["memento_samples"] = mismatches[:3]
    return result


def main() -> None:
    p = loadgen.pairs_parser(__doc__, "requests in flight per sender")
    p.set_defaults(mode="acked", rate=0.0, window_cap=1000)  # loadgen's acked, unpaced
    args = p.parse_args()
    deadline = args.warmup + args.duration + args.drain + 60
    common.print_result(common.run_bounded(run(args), "persist", deadline))


if __name__ == "__main__":
    main()
