"""Two peer nodes chat: directly, then through the server, then across an absence.

    python -m examples.peer_chat            # starts its own tidings server on free ports
    python -m examples.peer_chat --server ws://127.0.0.1:8080/   # or uses yours (accounts
                                            # alice/alice-pw and bob/bob-pw must exist)

1. Alice's laptop and Bob's phone find each other through the server's key directory and chat
   over a direct, encrypted link (Noise), the server out of the path.
2. Bob's phone stops taking direct connections (it restarts without ``listen``): the same
   ``send`` calls now go through the server, sealed; the application code does not change.
3. Bob's phone goes offline; Alice keeps writing (the server stores the sealed messages);
   when the phone comes back it gets them, each once, in order.

Every line printed says which path a message took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tidings.sdk import Platform

READY = re.compile(r"tidings ready (ws://\S+) ")


def node(folder: Path, server: str, name: str, instance: str, *, listen: bool) -> Platform:
    return Platform(
        f"{name}@localhost",
        instance=instance,
        data_dir=folder / f"{name}-{instance}",
        key_dir=folder / "keys",
        server=server,
        password=f"{name}-pw",
        listen=("127.0.0.1", 0) if listen else None,
        flush_interval=1.0,
    )


def show(who: str) -> Any:
    def handler(topic: str, sender: str, payload: Any) -> None:
        print(f"  {who} got {topic} from {sender[:8]}…: {payload['text']}", flush=True)

    return handler


async def say(platform: Platform, to: str, text: str) -> None:
    delivered = await platform.messaging.send("chat.line", to, {"text": text})
    print(f"  alice -> bob ({delivered.path}): {text}", flush=True)


async def chat(server: str, folder: Path) -> None:
    async with node(folder, server, "alice", "laptop", listen=True) as alice:
        phone = node(folder, server, "bob", "phone", listen=True)
        await phone.start()
        bob = phone.sign_id
        phone.messaging.on("*.chat.line", show("bob"))
        print("1. direct", flush=True)
        for text in ("hello Bob", "this goes straight to your phone"):
            await say(alice, bob, text)
        await phone.bus.drained()

        print("2. the direct link is cut: through the server", flush=True)
        await phone.close()
        phone = node(folder, server, "bob", "phone", listen=False)
        phone.messaging.on("*.chat.line", show("bob"))
        await phone.start()
        for text in ("still there?", "sealed: the server cannot read this"):
            await say(alice, bob, text)
        await phone.wait_sent()

        print("3. Bob's phone goes offline; Alice keeps writing", flush=True)
        await phone.close()
        got = asyncio.Event()
        for text in ("are you back?", "three messages wait for you", "see you"):
            await say(alice, bob, text)
        phone = node(folder, server, "bob", "phone", listen=False)
        lines: list[str] = []

        def collect(topic: str, sender: str, payload: Any) -> None:
            show("bob")(topic, sender, payload)
            lines.append(payload["text"])
            if len(lines) == 3:
                got.set()

        phone.messaging.on("*.chat.line", collect)
        print("   Bob's phone is back", flush=True)
        async with phone:
            await asyncio.wait_for(got.wait(), 30)
        print("done", flush=True)


@contextlib.asynccontextmanager
async def own_server(folder: Path) -> AsyncIterator[str]:
    """A throwaway ``tidings serve`` (SQLite in ``folder``) with the accounts of the demo."""
    tidings = [sys.executable, "-m", "tidings"]
    data = ["--data-dir", str(folder / "server")]
    for name in ("alice", "bob"):
        subprocess.run(
            [*tidings, "account", "add", name, "--password", f"{name}-pw", *data],
            check=True,
            capture_output=True,
        )
    process = await asyncio.create_subprocess_exec(
        *tidings, "serve", *data, "--ws-port", "0", "--http-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise RuntimeError("tidings serve ended before it was ready")
            ready = READY.search(line)
            if ready is not None:
                break
        yield ready.group(1)
    finally:
        process.terminate()
        await process.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="a running server's ws:// URL (default: start one)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peer-chat-") as folder:
        if arguments.server is not None:
            await chat(arguments.server, Path(folder))
            return
        async with own_server(Path(folder)) as server:
            await chat(server, Path(folder))


if __name__ == "__main__":
    asyncio.run(main())
