"""The session tables themselves, and every (role, state, input) run through the machine.

Each case is read off the tables (like h11's ``test_state.py``): a machine is driven to the
state, given a well-formed envelope of the key, and must do what the entry says: a ``Refusal``
fails the session with exactly that reason, a ``Step`` gives its event and next state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeAlias

import pytest

from tidings.protocol.lime import (
    AWAITING_DECISION,
    SESSION_ID_RULES,
    SESSION_TRANSITIONS,
    AuthenticationRequested,
    ClientSession,
    Command,
    IdRule,
    Message,
    Node,
    Notification,
    Reason,
    Refusal,
    Role,
    ServerSession,
    Session,
    SessionEnded,
    SessionEstablished,
    SessionState,
    Step,
    decode_envelope,
)

S = SessionState
SERVER_NODE = Node("postmaster", "localhost", "server")
CLIENT_NODE = Node("bob", "localhost", "tv")
FINAL = (S.FINISHED, S.FAILED)
DECIDING = "deciding"
"""The server's AUTHENTICATING while the application checks credentials (AWAITING_DECISION)."""

Key: TypeAlias = Any
Machine: TypeAlias = ServerSession | ClientSession
ALL_KEYS: frozenset[Key] = frozenset(
    {(Session, state) for state in SessionState} | {Message, Notification, Command}
)


def key_name(key: Key) -> str:
    return f"session-{key[1]}" if isinstance(key, tuple) else key.__name__.lower()


def feed(machine: Machine, envelope: dict[str, Any]) -> Any:
    return machine.receive_text(json.dumps(envelope).encode())


def sent(machine: Machine) -> list[dict[str, Any]]:
    return [json.loads(data) for data in machine.data_to_send()]


# -- machines in every state ------------------------------------------------------------------


def server_in(state: SessionState | str) -> ServerSession:
    """A server (offering a negotiation, so that NEGOTIATING is reachable) in ``state``."""
    session = ServerSession(
        SERVER_NODE,
        ["guest", "plain"],
        compression_options=["none", "gzip"],
        new_session_id=lambda: "sid",
    )
    path: list[dict[str, Any]] = [
        {"state": "new"},
        {"id": "sid", "state": "negotiating", "compression": "none", "encryption": "none"},
        {"id": "sid", "state": "authenticating", "from": "a@localhost/x", "scheme": "guest"},
    ]
    steps = {S.NEW: 0, S.NEGOTIATING: 1, S.AUTHENTICATING: 2, DECIDING: 3, S.ESTABLISHED: 3}
    for envelope in path[: steps[state]]:
        feed(session, envelope)
    if state is S.ESTABLISHED:
        session.establish(Node("a", "localhost", "x"))
    sent(session)
    assert session.state == (S.AUTHENTICATING if state == DECIDING else state)
    return session


def client_in(state: SessionState) -> ClientSession:
    client = ClientSession(CLIENT_NODE, "guest", {"scheme": "guest"})
    client.start()
    path: list[dict[str, Any]] = [
        {"id": "sid", "state": "negotiating", **OPTIONS},
        {"id": "sid", "state": "authenticating", "schemeOptions": ["guest"]},
        {"id": "sid", "state": "established", "from": SERVER_NODE.text, "to": CLIENT_NODE.text},
    ]
    steps = {S.NEW: 0, S.NEGOTIATING: 1, S.AUTHENTICATING: 2, S.ESTABLISHED: 3, S.FINISHING: 3}
    for envelope in path[: steps[state]]:
        feed(client, envelope)
    if state is S.FINISHING:
        client.finish()
    sent(client)
    assert client.state is state
    return client


def machine_in(role: Role, state: SessionState | str) -> Machine:
    if role is Role.SERVER:
        return server_in(state)
    assert isinstance(state, SessionState)
    return client_in(state)


# -- a well-formed envelope for each key ------------------------------------------------------

OPTIONS = {"compressionOptions": ["none", "gzip"], "encryptionOptions": ["none"]}
OTHER_ENVELOPES: dict[Key, dict[str, Any]] = {
    Message: {"id": "m", "to": "bob@localhost", "type": "text/plain", "content": "hi"},
    Notification: {"id": "n", "to": "bob@localhost", "event": "received"},
    Command: {"id": "c", "method": "get", "uri": "/ping"},
}


def envelope_for(role: Role, state: SessionState | str, key: Key) -> dict[str, Any]:
    """Valid for the key's step, with the id the row's id rule wants."""
    if not isinstance(key, tuple):
        return dict(OTHER_ENVELOPES[key])
    wanted: SessionState = key[1]
    envelope: dict[str, Any] = {"state": wanted}
    if not (role is Role.SERVER and state is S.NEW):
        envelope["id"] = "sid"
    if role is Role.SERVER:
        envelope |= {"compression": "none", "encryption": "none"}
        envelope |= {"from": "a@localhost/x", "scheme": "guest"}
    else:
        envelope |= {"from": SERVER_NODE.text, "to": CLIENT_NODE.text, **OPTIONS}
        if wanted is S.FAILED:
            envelope["reason"] = {"code": 13, "description": "nope"}
    return envelope


# -- what each step does ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    event: type | None
    """The class of what ``receive_text`` returns (the envelope itself for ACCEPT)."""
    state: SessionState | None
    """The state after; None: the state the envelope carried (client END), or unchanged."""
    emitted: tuple[str, ...]
    """States of the session envelopes we send, in order."""


STEP_OUTCOMES: dict[tuple[Role, Step], Outcome] = {
    (Role.SERVER, Step.START): Outcome(None, S.NEGOTIATING, ("negotiating",)),
    (Role.SERVER, Step.NEGOTIATE): Outcome(
        None, S.AUTHENTICATING, ("negotiating", "authenticating")
    ),
    (Role.SERVER, Step.AUTHENTICATE): Outcome(AuthenticationRequested, S.AUTHENTICATING, ()),
    (Role.SERVER, Step.FINISH): Outcome(SessionEnded, S.FINISHED, ("finished",)),
    (Role.SERVER, Step.ACCEPT): Outcome(Session, None, ()),  # Session: "the envelope"
    (Role.CLIENT, Step.NEGOTIATE): Outcome(None, S.NEGOTIATING, ("negotiating",)),
    (Role.CLIENT, Step.AUTHENTICATE): Outcome(None, S.AUTHENTICATING, ("authenticating",)),
    (Role.CLIENT, Step.ESTABLISH): Outcome(SessionEstablished, S.ESTABLISHED, ()),
    (Role.CLIENT, Step.END): Outcome(SessionEnded, None, ()),
    (Role.CLIENT, Step.ACCEPT): Outcome(Session, None, ()),
}

CASES = [
    pytest.param(role, state, key, entry, id=f"{role}-{state}-{key_name(key)}")
    for role, rows in SESSION_TRANSITIONS.items()
    for state, row in rows.items()
    for key, entry in row.items()
] + [
    pytest.param(Role.SERVER, DECIDING, key, entry, id=f"server-{DECIDING}-{key_name(key)}")
    for key, entry in AWAITING_DECISION.items()
]


# -- the tables' shape ------------------------------------------------------------------------


def test_every_live_row_names_every_input_and_final_rows_are_empty() -> None:
    for role, rows in SESSION_TRANSITIONS.items():
        for state, row in rows.items():
            assert set(row) == (set() if state in FINAL else ALL_KEYS), (role, state)
    assert set(AWAITING_DECISION) == ALL_KEYS


def test_the_server_never_is_in_finishing_and_the_client_may_be() -> None:
    assert set(SESSION_TRANSITIONS[Role.SERVER]) == set(SessionState) - {S.FINISHING}
    assert set(SESSION_TRANSITIONS[Role.CLIENT]) == set(SessionState)


def test_every_role_has_a_handler_for_every_step_it_names() -> None:
    for role, rows in SESSION_TRANSITIONS.items():
        for row in rows.values():
            for entry in row.values():
                assert isinstance(entry, Refusal) or (role, entry) in STEP_OUTCOMES


def test_id_rules_cover_every_state_of_each_table() -> None:
    for role, rows in SESSION_TRANSITIONS.items():
        assert set(rows) <= set(SESSION_ID_RULES[role])


def test_only_established_sessions_carry_messages_notifications_and_commands() -> None:
    for role, rows in SESSION_TRANSITIONS.items():
        carrying = {state for state, row in rows.items() if row and row[Message] is Step.ACCEPT}
        for row in rows.values():
            if row:
                assert row[Message] == row[Notification] == row[Command]
        expected = {S.ESTABLISHED} if role is Role.SERVER else {S.ESTABLISHED, S.FINISHING}
        assert carrying == expected
    assert all(isinstance(entry, Refusal) for entry in AWAITING_DECISION.values())


def test_an_established_server_accepts_only_finishing_among_session_envelopes() -> None:
    row = SESSION_TRANSITIONS[Role.SERVER][S.ESTABLISHED]
    steps = {key for key, entry in row.items() if isinstance(key, tuple) and entry is Step.FINISH}
    assert steps == {(Session, S.FINISHING)}
    for state in SessionState:
        if state is not S.FINISHING:
            entry = row[(Session, state)]
            assert isinstance(entry, Refusal) and entry.code == 15


# -- every entry, run ---------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "state", "key", "entry"), CASES)
def test_entry(role: Role, state: SessionState | str, key: Key, entry: Step | Refusal) -> None:
    machine = machine_in(role, state)
    before = machine.state
    document = envelope_for(role, state, key)
    event = feed(machine, document)
    frames = sent(machine)
    if isinstance(entry, Refusal):
        reason = entry.reason(before, typed(key, document))
        assert machine.state is S.FAILED and machine.failure == reason
        assert event == SessionEnded(S.FAILED, reason)
        if role is Role.SERVER:
            [failed] = frames
            assert failed["state"] == "failed"
            assert failed["reason"] == {"code": reason.code, "description": reason.description}
        else:
            assert frames == []  # only the server changes the session state
        return
    outcome = STEP_OUTCOMES[(role, entry)]
    if outcome.event is Session:
        assert type(event) is key and machine.state is before
    elif outcome.event is None:
        assert event is None
    else:
        assert isinstance(event, outcome.event)
    expected_state = outcome.state or (key[1] if entry is Step.END else before)
    assert machine.state is expected_state
    assert [frame["state"] for frame in frames] == list(outcome.emitted)
    assert all("state" in frame for frame in frames)


def typed(key: Key, document: dict[str, Any]) -> Any:
    envelope = decode_envelope(json.dumps(document).encode())
    assert type(envelope) is (key[0] if isinstance(key, tuple) else key)
    return envelope


def ended(role: Role, final: SessionState) -> Machine:
    """An established machine that reached ``final`` the ordinary way for its role."""
    machine = machine_in(role, S.ESTABLISHED)
    if isinstance(machine, ServerSession) and final is S.FAILED:
        machine.fail(Reason(code=11, description="The server is being shut down"))
    elif isinstance(machine, ServerSession):
        feed(machine, {"id": "sid", "state": "finishing"})
    else:
        feed(machine, {"id": "sid", "state": final})
    assert machine.state is final
    sent(machine)
    return machine


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("final", FINAL)
@pytest.mark.parametrize("key", sorted(ALL_KEYS, key=key_name), ids=key_name)
def test_nothing_is_read_after_the_end(role: Role, final: SessionState, key: Key) -> None:
    machine = ended(role, final)
    assert feed(machine, envelope_for(role, S.ESTABLISHED, key)) is None
    assert machine.receive_text(b"not even json") is None
    assert machine.receive_binary() is None
    assert machine.state is final and sent(machine) == []


# -- the id rules ---------------------------------------------------------------------------------

MATCHING = [
    pytest.param(role, state, key, id=f"{role}-{state}-{key_name(key)}")
    for role, rules in SESSION_ID_RULES.items()
    for state, rule in rules.items()
    if rule is IdRule.MATCH
    for key in sorted(ALL_KEYS, key=key_name)
    if isinstance(key, tuple)
]


@pytest.mark.parametrize(("role", "state", "key"), MATCHING)
@pytest.mark.parametrize("wrong_id", ["other", None])
def test_match_rule_refuses_another_id_before_the_entry(
    role: Role, state: SessionState, key: Key, wrong_id: str | None
) -> None:
    machine = machine_in(role, state)
    envelope = envelope_for(role, state, key)
    envelope.pop("id")
    if wrong_id is not None:
        envelope["id"] = wrong_id
    feed(machine, envelope)
    assert machine.state is S.FAILED
    assert machine.failure is not None and machine.failure.code == 11
    assert machine.failure.description == "Invalid session id"


@pytest.mark.parametrize(
    "key", sorted((key for key in ALL_KEYS if isinstance(key, tuple)), key=key_name), ids=key_name
)
def test_while_deciding_session_envelopes_are_refused_whatever_their_id(key: Key) -> None:
    machine = server_in(DECIDING)
    feed(machine, {**envelope_for(Role.SERVER, DECIDING, key), "id": "other"})
    assert machine.failure is not None and machine.failure.code == 15
    assert machine.failure.description == "The authentication is still being checked"


@pytest.mark.parametrize("state", [S.NEW, S.NEGOTIATING, S.AUTHENTICATING, S.ESTABLISHED])
def test_adopt_rule_echoes_the_servers_latest_id(state: SessionState) -> None:
    client = client_in(state)
    feed(client, {"id": "renamed", "state": "negotiating", **OPTIONS})
    assert client.session_id == "renamed"
    assert sent(client)[0]["id"] == "renamed"


def test_the_new_row_ignores_ids_so_its_refusal_stands() -> None:
    session = server_in(S.NEW)
    feed(session, {"id": "sid", "state": "authenticating"})
    assert session.failure is not None and session.failure.code == 11
    assert "expected 'new'" in str(session.failure.description)
