"""The shop: counts each purchase it receives and sends the buyer a receipt.

    python -m examples.persistent_buy.shop --url ws://127.0.0.1:8765/

Purchases arrive as messages, each exactly once (the SDK drops redeliveries, and remembers
what it took in ``--seen``). The receipt's id is derived from the item, so a receipt sent again
after a reconnection is stored once in the buyer's queue.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter

from tidings.sdk import Client


async def serve(client: Client, counts: Counter[str], stop_after: int | None = None) -> None:
    async for message in client.messages():
        item = str(message.content)
        counts[item] += 1
        await client.send_message(message.sender, f"receipt for {item}", id=f"receipt-{item}")
        print(f"sold {item} (x{counts[item]})", flush=True)
        if stop_after is not None and sum(counts.values()) >= stop_after:
            return


async def main_async(url: str, identity: str, instance: str, seen: str) -> None:
    counts: Counter[str] = Counter()
    async with Client(url, identity, instance=instance, guest=True, dedupe_path=seen) as client:
        await serve(client, counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="ws://127.0.0.1:8765/")
    parser.add_argument("--identity", default="shop@localhost")
    parser.add_argument("--instance", default="till")
    parser.add_argument("--seen", default="shop-seen.log")
    options = parser.parse_args()
    asyncio.run(main_async(options.url, options.identity, options.instance, options.seen))


if __name__ == "__main__":
    main()
