"""Chaos: the persistent_buy example's buyer is ``kill -9``ed at random points, many times
(a bounded count), and the server is ``kill -9``ed and restarted once during the run. At the end
the shop sold every item exactly once, and every receipt queued for the buyer reached the
buyer's application exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections import Counter
from pathlib import Path

import pytest
from examples.persistent_buy.buyer import items
from examples.persistent_buy.shop import serve
from tests.server_process import ServerProcess

from tidings.sdk import Backoff, Client, Gap, backlog

pytestmark = pytest.mark.integration

ITEMS = 40
BUYER_KILLS = 8
SERVER_KILL_AT = 3
BUYER = "chaos-buyer@localhost"
SHOP = "chaos-shop@localhost/till"
FAST = Backoff(initial=0.02, maximum=0.3)


async def start_buyer(server: ServerProcess) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.persistent_buy.buyer",
        "--url",
        server.ws_url,
        "--identity",
        BUYER,
        "--instance",
        "buy",
        "--shop",
        SHOP,
        "--items",
        str(ITEMS),
        stdout=asyncio.subprocess.PIPE,
    )


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(60):
        return (await process.stdout.readline()).decode().strip()


async def test_kill_9_buyer_and_server_every_item_bought_once(tmp_path: Path):
    rng = random.Random(4)
    server = ServerProcess(tmp_path / "data", args=["--allow-guests"]).start()
    shop = Client(
        server.ws_url,
        SHOP.rpartition("/")[0],
        instance="till",
        guest=True,
        backoff=FAST,
        dedupe_path=tmp_path / "shop-seen",
    )
    counts: Counter[str] = Counter()
    resumed: list[str] = []
    try:
        await shop.connect()
        selling = asyncio.create_task(serve(shop, counts, stop_after=ITEMS))
        for kill in range(BUYER_KILLS):
            buyer = await start_buyer(server)
            begin = await read_line(buyer)
            assert begin.startswith("begin "), begin
            resumed.append(begin)
            for _ in range(rng.randint(0, 4)):  # kill after a random number of purchases
                line = await read_line(buyer)
                if line == "done" or not line:
                    break
            buyer.kill()  # SIGKILL
            await buyer.wait()
            if kill == SERVER_KILL_AT:
                server.kill()
                server.restart()
        buyer = await start_buyer(server)
        while (line := await read_line(buyer)) != "done":
            assert line, "the last buyer exited before finishing"
            if line.startswith("begin "):
                resumed.append(line)
        assert await buyer.wait() == 0
        async with asyncio.timeout(60):
            await selling
        assert set(counts) == set(items(ITEMS))
        assert all(count == 1 for count in counts.values()), counts
        assert any("crashed=True" in line for line in resumed), resumed

        receipts: list[str] = []
        reader = Client(
            server.ws_url,
            BUYER,
            instance="buy",
            guest=True,
            backoff=FAST,
            dedupe_path=tmp_path / "buyer-seen",
        )
        async with reader:
            async with asyncio.timeout(60):
                async for item in backlog(reader):
                    assert not isinstance(item, Gap), "reject-new queues never have gaps"
                    receipts.append(str(item.content))
                    if len(receipts) == ITEMS:
                        break
        assert sorted(receipts) == sorted(f"receipt for {item}" for item in items(ITEMS))
    finally:
        with contextlib.suppress(Exception):
            await shop.close(timeout=2)
        server.stop()
