"""App requests over the memory store: handlers run outside the store's transaction.

Their reads and writes are buffered and committed with the nonce check and the memento in one
transaction, only if what they read is unchanged (else they run again); a refusal or a crash
keeps nothing; a stale nonce changes nothing; a handler that blocks holds up no other write.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tidings.core.app_requests import AppRefused, AppRequest, AppRequestService, AppState
from tidings.core.errors import ErrorId, TidingsError
from tidings.core.model import DeliveryEvent, PersistStep
from tidings.store.memory import MemoryStore

from .test_router_memory import BOB, connect, send, world

SHOP = AppRequest(BOB, "a", "buy", {}, True)


def buy(request: AppRequest, state: AppState) -> dict[str, Any]:
    stock = state.get("stock", 3)
    if stock == 0:
        raise AppRefused("sold out")
    state.put("stock", stock - 1)
    state.put(f"bought/{request.identity}", True)
    return {"left": stock - 1}


async def test_a_persistent_request_commits_its_writes_with_the_memento() -> None:
    store = MemoryStore()
    service = AppRequestService(store, {"buy": buy})
    state = await store.begin_persistence(BOB, "a")
    assert state.nonce is not None
    result = await service.execute(SHOP, PersistStep(BOB, "a", state.nonce, "m1"))
    assert result == {"left": 2}
    assert await store.app_state_get("stock") == "2"
    assert await store.app_state_keys("bought/") == [f"bought/{BOB}"]
    assert (await store.persistence_of(BOB))["a"].memento == "m1"


async def test_a_stale_nonce_changes_nothing_and_runs_no_handler() -> None:
    store = MemoryStore()
    ran = []

    def spy(request: AppRequest, state: AppState) -> None:
        ran.append(request)
        state.put("x", 1)

    service = AppRequestService(store, {"buy": spy})
    await store.begin_persistence(BOB, "a")
    with pytest.raises(TidingsError) as refused:
        await service.execute(SHOP, PersistStep(BOB, "a", "old", "m1"))
    assert refused.value.error_id is ErrorId.STALE_NONCE
    assert not ran and await store.app_state_keys("") == []
    assert (await store.persistence_of(BOB))["a"].memento is None


@pytest.mark.parametrize("failure", [AppRefused("no"), ZeroDivisionError()])
async def test_a_refused_or_crashing_handler_keeps_nothing(failure: Exception) -> None:
    store = MemoryStore()

    def fails(request: AppRequest, state: AppState) -> None:
        state.put("written", True)
        raise failure

    service = AppRequestService(store, {"buy": fails})
    state = await store.begin_persistence(BOB, "a")
    assert state.nonce is not None
    with pytest.raises(AppRefused):
        await service.execute(SHOP, PersistStep(BOB, "a", state.nonce, "m1"))
    assert await store.app_state_keys("") == []
    assert (await store.persistence_of(BOB))["a"].memento is None


async def test_a_handler_whose_reads_changed_runs_again_on_the_new_state() -> None:
    store = MemoryStore()
    first_run = threading.Event()
    go_on = threading.Event()
    runs = []

    def slow_buy(request: AppRequest, state: AppState) -> dict[str, Any]:
        stock = state.get("stock", 3)
        runs.append(stock)
        if len(runs) == 1:
            first_run.set()
            go_on.wait()
        state.put("stock", stock - 1)
        return {"left": stock - 1}

    service = AppRequestService(store, {"slow": slow_buy, "buy": buy})
    slow = asyncio.create_task(service.execute(AppRequest(BOB, "a", "slow", {}, False), None))
    await asyncio.to_thread(first_run.wait)
    assert await service.execute(SHOP, None) == {"left": 2}  # commits while the slow one waits
    go_on.set()
    assert await slow == {"left": 1}  # its first read (3) went stale: it ran again on 2
    assert runs == [3, 2] and await store.app_state_get("stock") == "1"


async def test_a_blocked_handler_holds_up_no_other_durable_write() -> None:
    store, registry, router = world()
    release = threading.Event()
    started = threading.Event()

    def blocked(request: AppRequest, state: AppState) -> dict[str, Any]:
        state.put("k", 1)
        started.set()
        release.wait()
        return {}

    service = AppRequestService(store, {"blocked": blocked})
    request = asyncio.create_task(service.execute(AppRequest(BOB, "a", "blocked", {}, False), None))
    await asyncio.to_thread(started.wait)
    alice, alice_out = await connect(router, registry, "alice@x", "p")
    _, bob_out = await connect(router, registry, BOB, "b")
    await send(router, alice, BOB, "b", "m1")
    await store.barrier()
    assert ("m1", DeliveryEvent.ACCEPTED, None) in alice_out.told  # stored and acknowledged
    assert bob_out.written == [b"alice@x/p:m1"]
    assert not request.done() and await store.app_state_get("k") is None
    release.set()
    assert await request == {}
    assert await store.app_state_get("k") == "1"
