"""Presence across servers, the rules: the bounded table of remote subscribers (a state
machine against a plain model), what the owner's server answers and pushes, and which pushes
the subscriber's server takes."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tidings.core.authz import Authorizer
from tidings.core.errors import ErrorId, Forbidden, Invalid, LimitExceeded
from tidings.core.federation_presence import PresenceExports, RemoteSubscribers
from tidings.gateway.federation import presence_observe, presence_pushes
from tidings.protocol.lime import Command, CommandMethod, decode_envelope, parse_node

OWNER_NAMES = [f"o{i}@beta.test" for i in range(5)]
SUBSCRIBER_NAMES = [f"s{i}@alpha.test" for i in range(4)]
OWNERS, SUBSCRIBERS = st.sampled_from(OWNER_NAMES), st.sampled_from(SUBSCRIBER_NAMES)


class TableMachine(RuleBasedStateMachine):
    """``RemoteSubscribers`` against a set of pairs and the same bounds."""

    def __init__(self) -> None:
        super().__init__()
        self.table = RemoteSubscribers(per_subscriber=3, total=7)
        self.model: set[tuple[str, str]] = set()

    @rule(owner=OWNERS, subscriber=SUBSCRIBERS)
    def add(self, owner: str, subscriber: str) -> None:
        full = (owner, subscriber) not in self.model and (
            sum(1 for _, s in self.model if s == subscriber) >= 3 or len(self.model) >= 7
        )
        if full:
            with pytest.raises(LimitExceeded):
                self.table.add(owner, subscriber)
        else:
            self.table.add(owner, subscriber)
            self.model.add((owner, subscriber))

    @rule(owner=OWNERS, subscriber=SUBSCRIBERS)
    def remove(self, owner: str, subscriber: str) -> None:
        self.table.remove(owner, subscriber)
        self.model.discard((owner, subscriber))

    @invariant()
    def agrees(self) -> None:
        assert len(self.table) == len(self.model)
        for owner in OWNER_NAMES:
            assert self.table.of(owner) == sorted(s for o, s in self.model if o == owner)
        for subscriber in SUBSCRIBER_NAMES:
            assert self.table.follows(subscriber) == {o for o, s in self.model if s == subscriber}


TestTable = TableMachine.TestCase


class Sharing:
    """Roster and acceptance stand-ins: ``shared`` holds (owner, viewer) pairs."""

    def __init__(self) -> None:
        self.shared: set[tuple[str, str]] = set()

    async def shares_presence_with(self, owner: str, viewer: str) -> bool:
        return (owner, viewer) in self.shared

    async def is_delegate(self, owner: str, delegate: str, envelope_type: str) -> bool:
        return False

    async def accepts(self, sender: str, recipient: str) -> bool:
        return True


class Presences:
    def __init__(self) -> None:
        self.now: dict[str, dict[str, Any]] = {}

    def of_identity(self, identity: str) -> dict[str, Any]:
        return self.now.get(identity, {"status": "unavailable"})


class Outbox:
    def __init__(self) -> None:
        self.relayed: list[tuple[str, bytes]] = []
        self.sent = asyncio.Event()

    def relay(self, to: Any, payload: bytes, expires_at: float | None = None) -> None:
        self.relayed.append((to.text, payload))
        self.sent.set()

    async def ask(self, domain: str, kind: str, actor: str, **fields: Any) -> Any:
        raise AssertionError("the owner's side asks nobody")


def exports() -> tuple[PresenceExports, Sharing, Presences, Outbox]:
    sharing, presences, outbox = Sharing(), Presences(), Outbox()
    authz = Authorizer(sharing, sharing)
    made = PresenceExports(
        "beta.test", presence_observe("postmaster@beta.test/server"), presences, authz, outbox
    )
    return made, sharing, presences, outbox


def ask(actor: str, identity: str = "bob@beta.test") -> dict[str, Any]:
    return {"actor": actor, "identity": identity}


async def test_a_server_speaks_only_for_its_own_users_about_ours() -> None:
    made, sharing, _, _ = exports()
    sharing.shared.add(("bob@beta.test", "alice@gamma.test"))
    with pytest.raises(Forbidden):
        await made.get("alpha.test", ask("alice@gamma.test"))
    with pytest.raises(Forbidden):
        await made.get("alpha.test", ask("alice@alpha.test/phone"))
    with pytest.raises(Invalid):
        await made.get("alpha.test", ask("alice@alpha.test", "bob@gamma.test"))
    with pytest.raises(Invalid):
        await made.get("alpha.test", {"actor": "alice@alpha.test"})


async def test_subscribe_follows_sharing_and_answers_the_presence_now() -> None:
    made, sharing, presences, _ = exports()
    with pytest.raises(Forbidden) as refused:
        await made.subscribe("alpha.test", ask("alice@alpha.test"))
    assert refused.value.error_id is ErrorId.NOT_SHARED
    assert len(made.subscribers) == 0
    sharing.shared.add(("bob@beta.test", "alice@alpha.test"))
    presences.now["bob@beta.test"] = {"status": "busy"}
    assert await made.subscribe("alpha.test", ask("alice@alpha.test")) == {"status": "busy"}
    assert made.subscribers.of("bob@beta.test") == ["alice@alpha.test"]
    await made.unsubscribe("alpha.test", ask("alice@alpha.test"))
    assert len(made.subscribers) == 0


async def test_a_change_is_pushed_as_an_observe_while_still_shared() -> None:
    made, sharing, presences, outbox = exports()
    sharing.shared |= {("bob@beta.test", "alice@alpha.test"), ("bob@beta.test", "dave@alpha.test")}
    for actor in ("alice@alpha.test", "dave@alpha.test"):
        await made.subscribe("alpha.test", ask(actor))
    sharing.shared.discard(("bob@beta.test", "dave@alpha.test"))  # dave no longer sees it
    presences.now["bob@beta.test"] = {"status": "away"}
    made.changed("bob@beta.test")
    made.changed("carol@beta.test")  # nobody elsewhere follows carol
    async with asyncio.timeout(5):
        await outbox.sent.wait()
    await asyncio.gather(*made._tasks)
    assert [to for to, _ in outbox.relayed] == ["alice@alpha.test"]
    command = decode_envelope(outbox.relayed[0][1])
    assert isinstance(command, Command)
    assert command.method is CommandMethod.OBSERVE
    assert (command.from_, command.to) == ("postmaster@beta.test/server", "alice@alpha.test")
    assert command.uri == "lime://bob@beta.test/presence"
    assert command.type == "application/vnd.lime.presence+json"
    assert msgspec.json.decode(command.resource) == {"status": "away"}


def test_the_subscriber_server_takes_presence_pushes_only_from_the_owner_server() -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []
    hook = presence_pushes(lambda viewer, owner, presence: seen.append((viewer, owner, presence)))
    encode = presence_observe("postmaster@beta.test/server")
    alice = parse_node("alice@alpha.test/phone")
    beta_server = parse_node("postmaster@beta.test/server")

    def push(owner: str, **changes: Any) -> None:
        command = decode_envelope(encode(owner, "alice@alpha.test", {"status": "busy"}))
        assert isinstance(command, Command)
        hook(alice, beta_server, msgspec.structs.replace(command, **changes))

    push("bob@beta.test")
    push("eve@gamma.test")  # beta may not speak for gamma's identities
    push("bob@beta.test", uri="lime://bob@beta.test/account")
    push("bob@beta.test", type="application/json")
    push("bob@beta.test", resource=msgspec.Raw(b"[1]"))
    assert seen == [("alice@alpha.test", "bob@beta.test", {"status": "busy"})]
