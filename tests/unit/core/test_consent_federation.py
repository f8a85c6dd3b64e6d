"""Consent across two servers, in process: two ``ConsentService``s (alpha.test, beta.test)
over memory stores, each with its ``ConsentFederation``; queries go straight to the other's
handlers (as JSON), and operations are read from the outbox rows the operation's own
transaction wrote and handed to the other side when the test says (in order, or twice).

Checked: the accept from beta with the id beta chose, idempotent by that id; what each side
keeps; the grant only on the accepter's server; a lost answer completed by the outbox;
copies dropped; operations a server may not send refused (D12); and, with hypothesis, that
any interleaving of both sides' operations and deliveries ends with both copies agreeing."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.core.consent import ConsentService
from tidings.core.consent_federation import ConsentFederation, remote_relationship_id
from tidings.core.consent_model import InboxKind, Level, RelationshipState, ScopeState
from tidings.core.errors import ErrorId, TidingsError, Unavailable
from tidings.core.federation import outbox_of
from tidings.core.model import OUTBOX_INSTANCE
from tidings.protocol.lime import Message, decode_envelope
from tidings.store.memory import MemoryStore

NOW = 1_764_500_000.0
ALPHA, BETA = "alpha.test", "beta.test"
ALICE, BOB, DAVE = "alice@alpha.test", "bob@beta.test", "dave@alpha.test"
PRESENCE = {"resource": "presence", "level": "read"}
ACCOUNT = {"resource": "account", "level": "read"}
BASES = {ALPHA: "http://127.0.0.1:7001", BETA: "http://127.0.0.1:7002"}


@dataclass
class Side:
    domain: str
    store: MemoryStore
    consent: ConsentService
    federation: ConsentFederation
    peers: FakePeers
    taken: int = 0
    """Outbox rows handed to the other side so far."""


@dataclass
class FakePeers:
    """``Peers``: queries answered by the other side's handlers, through JSON."""

    domain: str
    sides: dict[str, Side] = field(default_factory=dict)
    lose_answers: set[str] = field(default_factory=set)
    """Query kinds whose answer is lost after the other side did the work."""

    async def ask(self, domain: str, kind: str, actor: str, **fields: Any) -> Any:
        body = json.loads(json.dumps({"kind": kind, "actor": actor, **fields}))
        answer = await self.sides[domain].federation.queries()[kind](self.domain, body)
        if kind in self.lose_answers:
            raise Unavailable(ErrorId.STORAGE_UNAVAILABLE, "the answer was lost")
        return json.loads(json.dumps(answer))

    def queued(self, domain: str, count: int) -> None:
        pass


def make_side(domain: str, sides: dict[str, Side]) -> Side:
    store = MemoryStore()
    consent = ConsentService(store, lambda: NOW, domain=domain)
    peers = FakePeers(domain, sides)
    others = {d: base for d, base in BASES.items() if d != domain}
    federation = ConsentFederation(consent, peers, others, f"postmaster@{domain}/server")
    consent.outbound = consent.remote = federation
    side = Side(domain, store, consent, federation, peers)
    sides[domain] = side
    return side


@pytest.fixture
def sides() -> tuple[Side, Side]:
    shared: dict[str, Side] = {}
    return make_side(ALPHA, shared), make_side(BETA, shared)


async def ops_of(side: Side, peer: str) -> list[Message]:
    """The operations ``side`` queued for ``peer`` not handed over yet."""
    rows = await side.store.backlog(outbox_of(peer), OUTBOX_INSTANCE, 0, 10_000)
    envelopes = [decode_envelope(row.payload) for row in rows][side.taken :]
    assert all(isinstance(e, Message) for e in envelopes)
    return envelopes  # type: ignore[return-value]


async def deliver(source: Side, target: Side, count: int | None = None) -> list[bool]:
    """Hand ``count`` (default: all) of the next operations of ``source`` to ``target``."""
    pending = await ops_of(source, target.domain)
    applied = []
    for message in pending[:count]:
        content = json.loads(bytes(message.content))
        applied.append(
            await target.consent.apply_remote(
                source.domain, str(message.to), content["seq"], content
            )
        )
        source.taken += 1
    return applied


async def replay(source: Side, target: Side) -> list[bool]:
    """Hand every operation of ``source`` to ``target`` again (a batch sent twice)."""
    rows = await source.store.backlog(outbox_of(target.domain), OUTBOX_INSTANCE, 0, 10_000)
    applied = []
    for row in rows[: source.taken]:
        message = decode_envelope(row.payload)
        assert isinstance(message, Message)
        content = json.loads(bytes(message.content))
        applied.append(
            await target.consent.apply_remote(
                source.domain, str(message.to), content["seq"], content
            )
        )
    return applied


async def kinds(side: Side, identity: str) -> list[str]:
    return [e.kind.value for e in await side.consent.inbox(identity, 0, 1000)]


async def accepted(alpha: Side, beta: Side, **invite: Any) -> tuple[str, str]:
    """An invite of alice's accepted by bob from beta: (capability URL, relationship id)."""
    arguments: dict[str, Any] = {
        "app_code": "study",
        "display_name": "A study",
        "consent": {"en": "Presence"},
        "permissions": [PRESENCE],
        **invite,
    }
    _, token = await alpha.consent.create_invite(ALICE, **arguments)
    url = f"{BASES[ALPHA]}/consent/offers/{token}"
    relationship = await beta.consent.accept(token, BOB, capability=url)
    return url, relationship.id


async def test_an_accept_from_beta_makes_one_relationship_kept_on_both(
    sides: tuple[Side, Side],
) -> None:
    alpha, beta = sides
    url, rel = await accepted(alpha, beta)
    token = url.rpartition("/")[2]
    assert rel == remote_relationship_id(ALPHA, token, BOB)
    on_alpha = await alpha.consent.relationship(rel, ALICE)
    on_beta = await beta.consent.relationship(rel, BOB)
    assert (on_alpha.requester, on_alpha.accepter) == (on_beta.requester, on_beta.accepter)
    assert on_alpha.permissions == on_beta.permissions
    assert await kinds(alpha, ALICE) == [
        "invite-created",
        "invite-accepted",
        "relationship-created",
    ]
    assert await kinds(alpha, BOB) == []  # bob's inbox is on beta
    assert await kinds(beta, BOB) == ["relationship-created"]
    assert await kinds(beta, ALICE) == []
    assert await beta.consent.grants.allows(ALICE, BOB, "presence", Level.READ)
    assert [op.to for op in await ops_of(alpha, BETA)] == [BOB]  # the "created" confirmation
    assert await deliver(alpha, beta) == [True]
    assert await kinds(beta, BOB) == ["relationship-created"]  # not twice


async def test_accepting_again_with_the_same_relationship_id_answers_the_same(
    sides: tuple[Side, Side],
) -> None:
    alpha, _ = sides
    _, token = await alpha.consent.create_invite(
        ALICE, app_code="s", display_name="S", consent={"en": "x"}, permissions=[PRESENCE]
    )
    first = await alpha.consent.accept(token, BOB, relationship_id="a" * 32)
    again = await alpha.consent.accept(token, BOB, relationship_id="a" * 32)
    assert again.id == first.id and again.created_at == first.created_at
    assert await kinds(alpha, ALICE) == [
        "invite-created",
        "invite-accepted",
        "relationship-created",
    ]
    with pytest.raises(TidingsError) as consumed:
        await alpha.consent.accept(token, BOB, relationship_id="b" * 32)
    assert consumed.value.error_id is ErrorId.CAPABILITY_CONSUMED
    with pytest.raises(TidingsError) as taken:
        await alpha.consent.accept(token, "carol@beta.test", relationship_id="a" * 32)
    assert taken.value.error_id is ErrorId.INVALID_ARGUMENT
    with pytest.raises(TidingsError) as malformed:
        await alpha.consent.accept(token, BOB, relationship_id="not-hex")
    assert malformed.value.error_id is ErrorId.INVALID_ARGUMENT


async def test_a_lost_answer_is_completed_by_the_outbox_and_a_retry(
    sides: tuple[Side, Side],
) -> None:
    alpha, beta = sides
    beta.peers.lose_answers.add("consent.accept")
    _, token = await alpha.consent.create_invite(
        ALICE, app_code="s", display_name="S", consent={"en": "x"}, permissions=[PRESENCE]
    )
    url = f"{BASES[ALPHA]}/consent/offers/{token}"
    with pytest.raises(Unavailable):
        await beta.consent.accept(token, BOB, capability=url)
    assert await beta.consent.relationships(BOB) == []
    assert len(await alpha.consent.relationships(ALICE)) == 1  # alpha took it
    assert await deliver(alpha, beta) == [True]  # its "created" completes beta's side
    [kept] = await beta.consent.relationships(BOB)
    assert await beta.consent.grants.allows(ALICE, BOB, "presence", Level.READ)
    beta.peers.lose_answers.clear()
    assert (await beta.consent.accept(token, BOB, capability=url)).id == kept.id  # a retry
    assert await kinds(beta, BOB) == ["relationship-created"]


async def test_operations_reach_the_other_copy_once_each(sides: tuple[Side, Side]) -> None:
    alpha, beta = sides
    _, rel = await accepted(alpha, beta)
    await deliver(alpha, beta)
    await alpha.consent.chat(rel, ALICE, "hello bob")
    alert = await alpha.consent.alert(
        rel, ALICE, level="info", title={"en": "T"}, body={"en": "B"}, ack_id="k"
    )
    request = await alpha.consent.request_scope(rel, ALICE, [PRESENCE, ACCOUNT])
    assert await deliver(alpha, beta) == [True, True, True]
    assert await replay(alpha, beta) == [False] * 4  # copies change nothing
    assert await kinds(beta, BOB) == ["relationship-created", "chat", "alert", "scope-requested"]
    await beta.consent.chat(rel, BOB, "hello alice")
    await beta.consent.ack(alert.id, BOB, "k")
    await beta.consent.decide_scope(request.id, BOB, accept=True)
    assert await beta.consent.grants.allows(ALICE, BOB, "account", Level.READ)
    assert await deliver(beta, alpha) == [True, True, True]
    assert (await kinds(alpha, ALICE))[-3:] == ["chat", "alert-acked", "scope-accepted"]
    on_alpha = await alpha.consent.relationship(rel, ALICE)
    assert on_alpha.permissions == (await beta.consent.relationship(rel, BOB)).permissions
    assert [m.text for m in await alpha.consent.chat_history(rel, ALICE)] == [
        "hello bob",
        "hello alice",
    ]
    await alpha.consent.revoke(rel, ALICE, reason="done")
    assert await deliver(alpha, beta) == [True]
    on_beta = await beta.consent.relationship(rel, BOB)
    assert (on_beta.state, on_beta.revoked_by) == (RelationshipState.REVOKED, ALICE)
    assert not await beta.consent.grants.allows(ALICE, BOB, "presence", Level.READ)


async def forged(alpha: Side, beta: Side, rel: str, **op: Any) -> bool:
    content = {"relationshipId": rel, "seq": 1000, **op}
    return await beta.consent.apply_remote(ALPHA, BOB, 1000, content)


async def test_operations_a_server_may_not_send_change_nothing(sides: tuple[Side, Side]) -> None:
    alpha, beta = sides
    _, rel = await accepted(alpha, beta)
    request = await alpha.consent.request_scope(rel, ALICE, [PRESENCE, ACCOUNT])
    await deliver(alpha, beta)
    before = await kinds(beta, BOB)
    # the accepter's decision, claimed by the requester's server: the grant must not widen
    assert not await forged(
        alpha, beta, rel, op="scope-decision", author=ALICE, scopeRequestId=request.id, accept=True
    )
    # an author of another domain than the sender's, or not a side of the relationship
    assert not await forged(alpha, beta, rel, op="chat", author="eve@gamma.test", text="hi")
    assert not await forged(alpha, beta, rel, op="chat", author=DAVE, text="hi")
    # a relationship bob never accepted (D12): no pending accept on beta
    assert not await forged(
        alpha,
        beta,
        "c" * 32,
        op="created",
        author=ALICE,
        inviteId="d" * 32,
        requester=ALICE,
        accepter=BOB,
    )
    assert not await forged(alpha, beta, rel, op="nonsense", author=ALICE)
    assert await kinds(beta, BOB) == before
    assert (await beta.consent.relationship(rel, BOB)).permissions[0].resource == "presence"
    assert len((await beta.consent.relationship(rel, BOB)).permissions) == 1
    assert [r.id for r in await beta.consent.relationships(BOB)] == [rel]


async def test_a_disabled_feature_stays_off_on_both_servers(sides: tuple[Side, Side]) -> None:
    alpha, beta = sides
    _, rel = await accepted(alpha, beta, features={"chat": False})
    with pytest.raises(TidingsError) as refused:
        await beta.consent.chat(rel, BOB, "hi")
    assert refused.value.error_id is ErrorId.CHAT_DISABLED
    assert not await forged(alpha, beta, rel, op="chat", author=ALICE, text="hi")


# -- any interleaving converges -------------------------------------------------------------

ACTIONS = st.lists(
    st.sampled_from(
        [
            "alice-chat",
            "bob-chat",
            "alice-alert",
            "bob-ack",
            "alice-scope",
            "bob-accept-scope",
            "bob-refuse-scope",
            "alice-revoke",
            "bob-revoke",
            "to-beta",
            "to-alpha",
            "replay",
        ]
    ),
    max_size=25,
)


async def _act(alpha: Side, beta: Side, rel: str, action: str, step: int) -> None:
    try:
        if action == "alice-chat":
            await alpha.consent.chat(rel, ALICE, f"a{step}")
        elif action == "bob-chat":
            await beta.consent.chat(rel, BOB, f"b{step}")
        elif action == "alice-alert":
            await alpha.consent.alert(
                rel, ALICE, level="info", title={"en": "t"}, body={"en": "b"}, ack_id="k"
            )
        elif action == "bob-ack":
            for event in await beta.consent.inbox(BOB, 0, 1000):
                if event.kind is InboxKind.ALERT:
                    await beta.consent.ack(event.data["alertId"], BOB, "k")
        elif action == "alice-scope":
            await alpha.consent.request_scope(rel, ALICE, [PRESENCE, ACCOUNT])
        elif action in ("bob-accept-scope", "bob-refuse-scope"):
            for request in await beta.store.consent_scope_requests(rel):
                if request.state is ScopeState.PENDING:
                    accept = action == "bob-accept-scope"
                    await beta.consent.decide_scope(request.id, BOB, accept=accept)
        elif action == "alice-revoke":
            await alpha.consent.revoke(rel, ALICE)
        elif action == "bob-revoke":
            await beta.consent.revoke(rel, BOB)
        elif action == "to-beta":
            await deliver(alpha, beta, 1)
        elif action == "to-alpha":
            await deliver(beta, alpha, 1)
        else:
            await replay(alpha, beta)
            await replay(beta, alpha)
    except TidingsError as error:  # refused locally (revoked, decided): nothing changed
        assert error.error_id in {
            ErrorId.RELATIONSHIP_REVOKED,
            ErrorId.SCOPE_REQUEST_DECIDED,
        }, error


async def _converge(actions: list[str]) -> None:
    shared: dict[str, Side] = {}
    alpha, beta = make_side(ALPHA, shared), make_side(BETA, shared)
    _, rel = await accepted(alpha, beta)
    for step, action in enumerate(actions):
        await _act(alpha, beta, rel, action, step)
    await deliver(alpha, beta)
    await deliver(beta, alpha)
    on_alpha = await alpha.consent.relationship(rel, ALICE)
    on_beta = await beta.consent.relationship(rel, BOB)
    assert on_alpha.state is on_beta.state
    if on_beta.state is RelationshipState.ACTIVE:
        assert on_alpha.permissions == on_beta.permissions
        for side, identity in ((alpha, ALICE), (beta, BOB)):
            texts = sorted(m.text for m in await side.consent.chat_history(rel, identity, 0, 1000))
            assert texts == sorted(
                f"{'a' if a == 'alice-chat' else 'b'}{i}"
                for i, a in enumerate(actions)
                if a in ("alice-chat", "bob-chat")
            )
    granted = await beta.consent.grants.allows(ALICE, BOB, "presence", Level.READ)
    assert granted == (on_beta.state is RelationshipState.ACTIVE)
    for side, identity in ((alpha, ALICE), (beta, BOB)):
        seqs = [e.seq for e in await side.consent.inbox(identity, 0, 1000)]
        assert seqs == list(range(1, len(seqs) + 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS)
def test_any_interleaving_ends_with_both_copies_agreeing(actions: list[str]) -> None:
    asyncio.run(_converge(actions))
