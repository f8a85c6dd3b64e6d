"""A sending node in its own process, for the kill -9 test: ``python peer_sender.py DATA KEYS
PEER_JSON COUNT FLUSH``. It learns its peer from PEER_JSON (a ``transports.nodeInfo``), sends
COUNT messages ``{"i": i}`` (ids ``m-<i>``; the first half realtime, the second deferred to
the next flush, every FLUSH seconds) and prints ``stored <i>`` once each is in its durable
outbox, then ``idle`` when its outbox is empty. With COUNT 0 it only resumes its outbox."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tidings.sdk import Platform


async def main(data: Path, keys: Path, peer: dict[str, object], count: int, flush: float) -> None:
    async with Platform(
        "alice@localhost",
        instance="sender",
        data_dir=data,
        key_dir=keys,
        flush_interval=flush,
        connect_timeout=2.0,
        max_connection_attempts=1000,
    ) as platform:
        platform.messaging.send("transports.nodeInfo", "local", peer)
        for i in range(count):
            sending = platform.messaging.send(
                "n", str(peer["signId"]), {"i": i}, id=f"m-{i}", realtime=i < count // 2
            )
            await sending.stored
            print(f"stored {i}", flush=True)
        await platform.wait_sent()
        print("idle", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    data, keys, peer, count, flush = sys.argv[1:]
    asyncio.run(main(Path(data), Path(keys), json.loads(peer), int(count), float(flush)))
