"""The SDK's consent helpers that need no server: capability tokens and error ids."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tidings.protocol.lime import Command, CommandMethod, Raw, ReasonCode
from tidings.sdk import CommandFailed, ConsentError, InboxEvent, capability_token
from tidings.sdk.testing import FakeServer

from .harness import bounded, connected


@pytest.mark.parametrize(
    ("capability", "token"),
    [
        ("http://127.0.0.1:8766/consent/offers/AbC-_9", "AbC-_9"),
        ("http://127.0.0.1:8766/consent/offers/AbC-_9/", "AbC-_9"),
        ("https://tidings.example/c/AbC-_9?x=1", "AbC-_9"),
        ("AbC-_9", "AbC-_9"),
    ],
)
def test_capability_token(capability: str, token: str) -> None:
    assert capability_token(capability) == token


def test_consent_error_reads_the_id_off_the_description() -> None:
    failure = CommandFailed(66, "cmc-capability-consumed: Already accepted", "c1")
    error = ConsentError.from_failure(failure)
    assert isinstance(error, CommandFailed)
    assert error.error_id == "cmc-capability-consumed"
    assert error.description == "Already accepted"
    assert error.code == ReasonCode.COMMAND_NOT_ALLOWED
    assert error.command_id == "c1"
    assert "cmc-capability-consumed" in str(error)


def test_a_failure_without_a_consent_id_keeps_its_description() -> None:
    error = ConsentError.from_failure(CommandFailed(64, "'text' is required", "c2"))
    assert error.error_id == ""
    assert error.description == "'text' is required"
    assert error.code == ReasonCode.COMMAND_INVALID_ARGUMENT


def test_inbox_event_from_its_document() -> None:
    event = InboxEvent.from_document(
        {"seq": 3, "kind": "chat", "data": {"relationshipId": "r"}, "at": 17}
    )
    assert event == InboxEvent(3, "chat", {"relationshipId": "r"}, 17)


# -- the live inbox against the in-memory fake server -----------------------------------------

EVENT = "application/vnd.tidings.consent-event+json"


def observe(seq: int, kind: str = "chat") -> Command:
    return Command(
        method=CommandMethod.OBSERVE,
        uri="lime://bob@localhost/consent/inbox",
        type=EVENT,
        resource=Raw(msgspec.json.encode({"seq": seq, "kind": kind, "data": {}, "at": 1})),
    )


async def test_the_inbox_subscribes_from_its_cursor_and_skips_repeats() -> None:
    server = FakeServer()
    async with connected(server) as (client, peer):
        inbox = client.consent.inbox(since=4)
        first = asyncio.ensure_future(anext(inbox))
        request = await bounded(peer.expect(Command))
        assert (request.method, request.uri) == (CommandMethod.SUBSCRIBE, "/consent/inbox?since=4")
        peer.send(observe(5))
        peer.send(observe(5))  # a backlog and a live push that crossed
        peer.send(observe(6))
        peer.respond(request, {"cursor": 6})
        assert (await bounded(first)).seq == 5
        assert (await bounded(anext(inbox))).seq == 6
        other = Command(method=CommandMethod.OBSERVE, uri="lime://x@localhost/presence",
                        type="application/json", resource=Raw(b"{}"))  # fmt: skip
        peer.send(other)
        seen = await bounded(anext(aiter(client.envelopes())))
        assert isinstance(seen, Command) and seen.uri == other.uri
        closing = asyncio.ensure_future(inbox.aclose())
        unsubscribe = await bounded(peer.expect(Command))
        assert (unsubscribe.method, unsubscribe.uri) == (
            CommandMethod.UNSUBSCRIBE,
            "/consent/inbox",
        )
        peer.respond(unsubscribe)
        await bounded(closing)
        with pytest.raises(StopAsyncIteration):
            await bounded(anext(inbox))


async def test_the_inbox_subscribes_again_after_a_reconnection() -> None:
    server = FakeServer()
    async with connected(server) as (client, peer):
        inbox = client.consent.inbox(since=0)
        first = asyncio.ensure_future(anext(inbox))
        request = await bounded(peer.expect(Command))
        peer.send(observe(1))
        peer.respond(request, {"cursor": 1})
        assert (await bounded(first)).seq == 1
        waiting = asyncio.ensure_future(anext(inbox))
        peer.drop()
        again = await bounded(server.next_connection())
        request = await bounded(again.expect(Command))
        assert request.uri == "/consent/inbox?since=1"
        again.send(observe(1))
        again.send(observe(2))
        again.respond(request, {"cursor": 2})
        assert (await bounded(waiting)).seq == 2
        closing = asyncio.ensure_future(inbox.aclose())
        again.respond(await bounded(again.expect(Command)))
        await bounded(closing)
