"""Command requests matched to responses by id."""

from __future__ import annotations

import asyncio

import pytest

from tidings.protocol.lime import Command, CommandMethod, CommandStatus
from tidings.sdk import ConnectionLost
from tidings.sdk._correlation import PendingCommands


def request(command_id: str) -> Command:
    return Command(id=command_id, method=CommandMethod.GET, uri=f"/{command_id}")


def response(command_id: str) -> Command:
    return Command(id=command_id, method=CommandMethod.GET, status=CommandStatus.SUCCESS)


async def start(pending: PendingCommands, command_id: str) -> asyncio.Task[Command]:
    """A request task, returned once it has sent its command."""
    sent: asyncio.Future[Command] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(pending.request(request(command_id), sent.set_result))
    await sent
    return task


async def test_responses_in_any_order_reach_their_requests() -> None:
    pending = PendingCommands()
    tasks = [await start(pending, command_id) for command_id in "abc"]
    assert len(pending) == 3
    for command_id in "cab":
        assert pending.resolve(response(command_id))
    assert [(await task).id for task in tasks] == ["a", "b", "c"]
    assert len(pending) == 0


async def test_an_unknown_or_repeated_response_is_not_matched() -> None:
    pending = PendingCommands()
    assert not pending.resolve(response("nobody"))
    task = await start(pending, "a")
    assert pending.resolve(response("a"))
    assert not pending.resolve(response("a"))
    await task


async def test_fail_all_makes_every_request_raise() -> None:
    pending = PendingCommands()
    tasks = [await start(pending, command_id) for command_id in "ab"]
    pending.fail_all(ConnectionLost("gone"))
    for task in tasks:
        with pytest.raises(ConnectionLost):
            await task
    assert len(pending) == 0


async def test_a_cancelled_request_is_forgotten() -> None:
    pending = PendingCommands()
    task = await start(pending, "a")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "a" not in pending
    assert not pending.resolve(response("a"))


async def test_requests_need_distinct_ids() -> None:
    pending = PendingCommands()
    task = await start(pending, "a")
    with pytest.raises(ValueError, match="already waiting"):
        await pending.request(request("a"), lambda _: None)
    with pytest.raises(ValueError, match="needs an id"):
        await pending.request(Command(method=CommandMethod.GET, uri="/x"), lambda _: None)
    pending.resolve(response("a"))
    await task
