"""DESIGN.md section 3.4: kill -9 the server while messages flow; nothing accepted is lost,
and the application (through the SDK) sees each accepted message exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from tests.server_process import ServerProcess

from tidings.sdk import Backoff, Client, TidingsClientError

pytestmark = pytest.mark.integration

TOTAL = 400
IN_FLIGHT = 16
KILL_AFTER = 120
FAST = Backoff(initial=0.02, maximum=0.3)


async def test_kill_9_while_messages_flow_loses_and_duplicates_nothing(tmp_path: Path):
    server = ServerProcess(tmp_path / "data", args=["--allow-guests"]).start()
    receiver = Client(
        server.ws_url,
        "crash-bob@localhost",
        instance="app",
        guest=True,
        backoff=FAST,
        dedupe_path=tmp_path / "bob-seen",
    )
    sender = Client(
        server.ws_url, "crash-alice@localhost", instance="app", guest=True, backoff=FAST
    )
    try:
        await receiver.connect()
        await sender.connect()
        delivered: list[str] = []
        accepted: set[str] = set()
        all_in = asyncio.Event()
        enough_accepted = asyncio.Event()

        async def receive() -> None:
            async for message in receiver.messages():
                assert message.id is not None
                delivered.append(message.id)
                if accepted and accepted <= set(delivered) and len(accepted) == TOTAL:
                    all_in.set()

        async def send(numbers: range) -> None:
            for n in numbers:
                message_id = f"crash-{n}"
                while True:
                    try:
                        await sender.send_message(
                            "crash-bob@localhost/app", f"#{n}", id=message_id, timeout=20
                        )
                        break
                    except TidingsClientError:
                        continue  # not accepted yet: the same id again is stored once
                accepted.add(message_id)
                if len(accepted) >= KILL_AFTER:
                    enough_accepted.set()

        receiving = asyncio.create_task(receive())
        step = TOTAL // IN_FLIGHT
        senders = [
            asyncio.create_task(
                send(range(i * step, TOTAL if i == IN_FLIGHT - 1 else (i + 1) * step))
            )
            for i in range(IN_FLIGHT)
        ]
        async with asyncio.timeout(60):
            await enough_accepted.wait()
        server.kill()
        server.restart()
        async with asyncio.timeout(120):
            await asyncio.gather(*senders)
        assert len(accepted) == TOTAL
        if accepted <= set(delivered):
            all_in.set()
        async with asyncio.timeout(60):
            await all_in.wait()
        assert sorted(delivered) == sorted(accepted), "each accepted message exactly once"
        assert sender.reconnections >= 1 and receiver.reconnections >= 1
        receiving.cancel()
    finally:
        for client in (sender, receiver):
            with contextlib.suppress(Exception):
                await client.close(timeout=2)
        server.stop()
