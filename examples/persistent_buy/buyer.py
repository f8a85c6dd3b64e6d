"""A stateless buyer: buys a list of items exactly once, however often it is killed.

    python -m examples.persistent_buy.buyer --url ws://127.0.0.1:8765/ --items 20

Each purchase is a message to the shop carrying the persistent session's nonce and the index of
the item as memento; the server stores the message and the memento in one transaction. Killed
(even with ``kill -9``) and started again, the buyer begins the session again, reads the memento
(``crashed`` is true), and resumes at the next item: nothing is bought twice, nothing skipped.
The buyer keeps no state of its own.
"""

from __future__ import annotations

import argparse
import asyncio

from tidings.sdk import Backoff, Client, PersistentSession


def items(count: int) -> list[str]:
    return [f"item-{index:03d}" for index in range(count)]


async def buy(url: str, identity: str, instance: str, shop: str, count: int) -> None:
    async with (
        Client(url, identity, instance=instance, guest=True, backoff=Backoff(0.05, 0.5)) as client,
        PersistentSession(client) as session,
    ):
        start = 0 if session.memento is None else int(session.memento) + 1
        print(f"begin crashed={session.crashed} resume={start}", flush=True)
        wanted = items(count)
        for index in range(start, count):
            await session.send_message(shop, wanted[index], memento=str(index), timeout=60)
            print(f"bought {index}", flush=True)
    print("done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="ws://127.0.0.1:8765/")
    parser.add_argument("--identity", default="buyer@localhost")
    parser.add_argument("--instance", default="buy")
    parser.add_argument("--shop", default="shop@localhost/till")
    parser.add_argument("--items", type=int, default=20)
    options = parser.parse_args()
    asyncio.run(buy(options.url, options.identity, options.instance, options.shop, options.items))


if __name__ == "__main__":
    main()
