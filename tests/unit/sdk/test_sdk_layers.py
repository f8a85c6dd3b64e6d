"""Message layers: the seam where messages are transformed on their way out and in."""

from __future__ import annotations

import msgspec
import pytest

from tidings.protocol.lime import Message, Notification, NotificationEvent, Raw
from tidings.sdk import MessageLayer
from tidings.sdk._pipeline import Pipeline
from tidings.sdk.testing import FakeServer

from .harness import bounded, connected, take


def text(message: Message) -> str:
    value = msgspec.json.decode(bytes(message.content))
    assert isinstance(value, str)
    return value


def with_text(message: Message, value: str) -> Message:
    return msgspec.structs.replace(message, content=Raw(msgspec.json.encode(value)))


class Wrap:
    """Wraps outgoing text in ``name(...)`` and unwraps it coming in; counts its calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.out = 0
        self.into = 0

    async def outgoing(self, message: Message) -> Message:
        self.out += 1
        return with_text(message, f"{self.name}({text(message)})")

    async def incoming(self, message: Message) -> Message | None:
        self.into += 1
        value = text(message)
        assert value.startswith(f"{self.name}(") and value.endswith(")")
        return with_text(message, value[len(self.name) + 1 : -1])


class Swallow:
    """Takes messages whose text starts with ``control:``; passes the rest."""

    async def outgoing(self, message: Message) -> Message:
        return message

    async def incoming(self, message: Message) -> Message | None:
        return None if text(message).startswith("control:") else message


class Broken:
    """Fails to open messages whose text is ``bad``."""

    async def outgoing(self, message: Message) -> Message:
        return message

    async def incoming(self, message: Message) -> Message | None:
        if text(message) == "bad":
            raise RuntimeError("cannot open")
        return message


class Renumber:
    async def outgoing(self, message: Message) -> Message:
        return msgspec.structs.replace(message, id="other")

    async def incoming(self, message: Message) -> Message | None:
        return msgspec.structs.replace(message, from_="someone@else")


def test_layers_satisfy_the_protocol() -> None:
    layers: list[MessageLayer] = [Wrap("a"), Swallow(), Broken(), Renumber()]
    assert Pipeline(layers) and not Pipeline()


async def test_layers_stack_like_an_onion() -> None:
    inner, outer = Wrap("inner"), Wrap("outer")
    server = FakeServer()
    async with connected(server, layers=[inner, outer]) as (client, peer):
        await client.send_message("alice@localhost", "hi", id="m1")
        assert text(await bounded(peer.expect(Message))) == "outer(inner(hi))"
        peer.deliver("outer(inner(back))", id="r1")
        (got,) = await take(client)
        assert got.content == "back"
        assert text(got.envelope) == "back"


async def test_a_message_is_transformed_once_and_re_sent_as_transformed() -> None:
    layer = Wrap("sealed")
    server = FakeServer(auto_accept=False)
    async with connected(server, layers=[layer]) as (client, peer):
        await client.send_message("alice@localhost", "secret", id="m1", wait=None)
        sent = await bounded(peer.expect(Message))
        peer.drop()
        again = await bounded(server.next_connection())
        assert await bounded(again.expect(Message)) == sent
        assert layer.out == 1
        again.notify("m1", "accepted")


async def test_an_incoming_layer_may_consume_a_message_which_is_then_acknowledged() -> None:
    server = FakeServer()
    async with connected(server, layers=[Swallow()]) as (client, peer):
        peer.deliver("control: rotate keys", id="c1")
        peer.deliver("for the app", id="m1")
        (got,) = await take(client)
        assert got.id == "m1"
        acks = [await bounded(peer.expect(Notification)) for _ in range(2)]
        assert [(a.id, a.event) for a in acks] == [
            ("c1", NotificationEvent.RECEIVED),
            ("m1", NotificationEvent.RECEIVED),
        ]


async def test_a_failing_incoming_layer_raises_and_leaves_the_message_unacknowledged() -> None:
    server = FakeServer()
    async with connected(server, layers=[Broken()]) as (client, peer):
        peer.deliver("bad", id="m1")
        peer.deliver("good", id="m2")
        messages = client.messages()
        with pytest.raises(RuntimeError, match="cannot open"):
            await bounded(anext(messages))
        assert (await bounded(anext(messages))).id == "m2"
        await peer.ping()
        acked = [item.id for item in peer.received if isinstance(item, Notification)]
        assert acked == ["m2"]
        peer.deliver("bad", id="m1")  # redelivered (next session, or now): tried again
        with pytest.raises(RuntimeError):
            await bounded(anext(messages))


async def test_an_outgoing_layer_failure_sends_nothing() -> None:
    class Refuse:
        async def outgoing(self, message: Message) -> Message:
            raise PermissionError("no key for bob")

        async def incoming(self, message: Message) -> Message | None:
            return message

    server = FakeServer()
    async with connected(server, layers=[Refuse()]) as (client, peer):
        with pytest.raises(PermissionError):
            await client.send_message("alice@localhost", "hi")
        await peer.ping()
        assert peer.pending() == [] and client.unaccepted == []


async def test_layers_must_keep_the_keys() -> None:
    server = FakeServer()
    async with connected(server, layers=[Renumber()]) as (client, peer):
        with pytest.raises(ValueError, match="changed the id"):
            await client.send_message("alice@localhost", "hi")
        peer.deliver("hi", id="m1")
        with pytest.raises(ValueError, match="changed the id or sender"):
            await take(client)
