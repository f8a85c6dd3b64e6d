"""Per-message cost of the LIME session machine: decode + dispatch of one message envelope.

    PYTHONPATH=src .venv/bin/python bench/session_dispatch.py [--calls 1000000] [--repeat 5]

``ServerSession.receive_text`` for an established session's message is the per-message path of
the LIME gateway, so a change to the machine is measured here before and after (best of
``--repeat`` runs, microseconds per call). The envelope is 300 bytes, like the bench loads.
"""

from __future__ import annotations

import argparse
import json
import timeit

from tidings.protocol.lime import Node, ServerSession, decode_envelope


def established_session() -> ServerSession:
    session = ServerSession(Node("postmaster", "localhost", "server"), ["guest"])
    session.receive_text(b'{"state":"new"}')
    [offer] = session.data_to_send()
    session_id = json.loads(offer)["id"]
    request = {"id": session_id, "state": "authenticating", "from": "a@localhost/x"}
    session.receive_text(json.dumps({**request, "scheme": "guest"}).encode())
    session.establish(Node("a", "localhost", "x"))
    session.data_to_send()
    return session


def message_of(size: int) -> bytes:
    envelope = {"id": "m-0001", "to": "bob@localhost/phone", "type": "text/plain", "content": ""}
    padding = size - len(json.dumps(envelope, separators=(",", ":")))
    envelope["content"] = "x" * padding
    data = json.dumps(envelope, separators=(",", ":")).encode()
    assert len(data) == size
    return data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    session = established_session()
    data = message_of(300)
    receive = session.receive_text
    assert receive(data) is not None and session.data_to_send() == []
    # The decoder alone is the baseline: measured in the same run, alternating, because
    # absolute figures drift on a shared machine; the difference is the machine's own cost.
    best = {"decode_envelope": float("inf"), "receive_text": float("inf")}
    for _ in range(args.repeat):
        for name, call in (
            ("decode_envelope", lambda: decode_envelope(data)),
            ("receive_text", lambda: receive(data)),
        ):
            best[name] = min(best[name], timeit.timeit(call, number=args.calls) / args.calls * 1e6)
    decode, total = best["decode_envelope"], best["receive_text"]
    print(
        f"300-byte message, established, best of {args.repeat} x {args.calls}: "
        f"receive_text {total:.3f} us, decode_envelope alone {decode:.3f} us, "
        f"machine {total - decode:.3f} us"
    )


if __name__ == "__main__":
    main()
