"""A client behind reading: nothing is written to it live, nothing is skipped when it catches
up, whatever the order of stalls, resumes and writes (memory store, an outlet like the gateway's:
it takes nothing while stalled and tells the router, as ``LimeConnection.deliver`` does)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.unit.core.test_router_memory import BOB, connect, send, world
from tidings.core.model import EnvelopeKind
from tidings.core.router import Router
from tidings.core.session_registry import LiveSession


class StallingOutlet:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.live: LiveSession | None = None
        self.stalled = False
        self.written: list[bytes] = []

    def deliver(self, payload: bytes, kind: EnvelopeKind = EnvelopeKind.MESSAGE) -> bool:
        if self.stalled:
            if self.live is not None:
                self.router.stall(self.live)
            return False
        self.written.append(payload)
        return True

    def notify(self, *args: Any) -> None: ...
    def observe(self, *args: Any) -> None: ...
    def end(self, *args: Any) -> None: ...


steps = st.lists(st.sampled_from(["send", "stall", "resume", "run"]), max_size=25)


@settings(max_examples=300, deadline=None)
@given(steps)
@example(["stall", "resume", "stall", "run", "send", "run", "send", "resume", "run"])
@example(["stall", "send", "run", "resume", "send", "run"])
def test_every_message_reaches_a_stalling_reader_once_in_order(script: list[str]) -> None:
    async def scenario() -> None:
        store, registry, router = world(limit=1000)
        alice, _ = await connect(router, registry, "alice@x", "p")
        bob, _ = await connect(router, registry, BOB, "a")
        outlet = StallingOutlet(router)
        outlet.live = bob
        bob.outlet = outlet
        tasks: list[asyncio.Task[None]] = []
        sent = 0
        for step in script:
            if step == "send":
                await send(router, alice, BOB, "a", f"m{sent}")
                sent += 1
            elif step == "stall" and not outlet.stalled:
                outlet.stalled = True
                router.stall(bob)
            elif step == "resume" and outlet.stalled:
                outlet.stalled = False
                tasks.append(asyncio.get_running_loop().create_task(router.resume(bob)))
            else:
                await asyncio.sleep(0)  # let the store's completions and catch-up tasks run
        outlet.stalled = False
        await asyncio.gather(*tasks)
        await router.resume(bob)
        await store.barrier()
        await asyncio.gather(*tasks)
        written = [p.decode().rpartition(":")[2] for p in outlet.written]
        assert written == [f"m{n}" for n in range(sent)], script
        assert not bob.replaying

    asyncio.run(scenario())
