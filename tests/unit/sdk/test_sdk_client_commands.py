"""Commands through the in-memory transport: correlation, failures, timeouts, lost links."""

from __future__ import annotations

import asyncio

import pytest

from tidings.protocol.lime import Command, CommandMethod
from tidings.sdk import CommandFailed, ConnectionLost, RequestTimeout
from tidings.sdk.testing import FakeServer

from .harness import bounded, connected


async def test_responses_out_of_order_reach_their_own_requests() -> None:
    server = FakeServer()
    async with connected(server) as (client, peer):
        first = asyncio.create_task(client.command("get", "/a"))
        second = asyncio.create_task(client.command("set", "/b", {"x": 1}))
        request_a = await bounded(peer.expect(Command))
        request_b = await bounded(peer.expect(Command))
        assert (request_a.uri, request_b.uri, request_b.type) == ("/a", "/b", "application/json")
        assert request_a.id != request_b.id
        peer.respond(request_b, {"b": True})
        peer.respond(request_a, "for a", type="text/plain")
        result_a, result_b = await bounded(asyncio.gather(first, second))
        assert (result_a.type, result_a.resource) == ("text/plain", "for a")
        assert (result_b.type, result_b.resource) == ("application/json", {"b": True})


async def test_a_failure_response_raises_command_failed() -> None:
    server = FakeServer()
    async with connected(server) as (client, peer):
        asking = asyncio.create_task(client.command("delete", "/contacts/x"))
        request = await bounded(peer.expect(Command))
        assert request.method is CommandMethod.DELETE
        peer.respond_failure(request, 67, "no such resource")
        with pytest.raises(CommandFailed) as caught:
            await bounded(asking)
        assert (caught.value.code, caught.value.command_id) == (67, request.id)


async def test_an_unanswered_command_times_out_and_its_late_answer_is_ignored() -> None:
    server = FakeServer()
    async with connected(server) as (client, peer):
        with pytest.raises(RequestTimeout, match="no response to get /slow"):
            await client.command("get", "/slow", timeout=0.01)
        request = await bounded(peer.expect(Command))
        peer.respond(request)
        await peer.ping()
        asking = asyncio.create_task(client.command("get", "/next"))
        peer.respond(await bounded(peer.expect(Command)), "ok", type="text/plain")
        assert (await bounded(asking)).resource == "ok"


async def test_a_command_in_flight_when_the_link_drops_fails_and_is_not_re_sent() -> None:
    server = FakeServer()
    async with connected(server) as (client, peer):
        asking = asyncio.create_task(client.command("set", "/once"))
        await bounded(peer.expect(Command))
        peer.drop()
        with pytest.raises(ConnectionLost):
            await bounded(asking)
        again = await bounded(server.next_connection())
        await again.ping()
        assert again.pending() == []


async def test_a_command_waits_for_the_connection() -> None:
    server = FakeServer()
    async with connected(server) as (client, peer):
        peer.drop()
        await bounded(peer.wait_closed())
        asking = asyncio.create_task(client.command("get", "/later"))
        again = await bounded(server.next_connection())
        request = await bounded(again.expect(Command))
        assert request.uri == "/later"
        again.respond(request)
        assert (await bounded(asking)).resource is None
