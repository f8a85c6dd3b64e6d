"""The establishment deadline belongs to the machine; the caller owns the clock.

docs/lime.md, Session: "A connection that has not established its session within
``establish_timeout_s`` gets ``failed`` 16." No sleeping: time is whatever number we pass.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tidings.protocol import InvalidState
from tidings.protocol.lime import (
    AuthenticationRequested,
    Node,
    ReasonCode,
    ServerSession,
    SessionEnded,
    SessionState,
)

SERVER = Node("postmaster", "localhost", "server")
T0 = 1000.0


def server(timeout: float | None = 30.0, **kwargs: Any) -> ServerSession:
    return ServerSession(
        SERVER, ["guest"], new_session_id=lambda: "sid", establish_timeout=timeout, now=T0, **kwargs
    )


def feed(session: ServerSession, envelope: dict[str, Any]) -> Any:
    return session.receive_text(json.dumps(envelope).encode())


def sent(session: ServerSession) -> list[dict[str, Any]]:
    return [json.loads(data) for data in session.data_to_send()]


def deciding(session: ServerSession) -> ServerSession:
    feed(session, {"state": "new"})
    request = {"id": "sid", "state": "authenticating", "from": "a@localhost/x", "scheme": "guest"}
    assert isinstance(feed(session, request), AuthenticationRequested)
    sent(session)
    return session


def test_the_deadline_is_named_on_the_callers_clock() -> None:
    assert server().next_deadline() == T0 + 30.0


def test_without_a_timeout_there_is_no_deadline() -> None:
    session = ServerSession(SERVER, ["guest"])
    assert session.next_deadline() is None
    assert session.expire(float("inf")) is None
    assert session.state is SessionState.NEW and sent(session) == []


def test_before_the_deadline_expire_changes_nothing() -> None:
    """A timer may fire a little early: the caller re-arms from next_deadline()."""
    session = server()
    assert session.expire(T0 + 29.999) is None
    assert session.state is SessionState.NEW and sent(session) == []
    assert session.next_deadline() == T0 + 30.0


@pytest.mark.parametrize("late", [0.0, 0.5, 1e6])
def test_at_or_past_the_deadline_the_session_fails_with_16(late: float) -> None:
    session = server()
    ended = session.expire(T0 + 30.0 + late)
    reason = session.failure
    assert reason is not None and reason.code == ReasonCode.SESSION_NEGOTIATION_TIMEOUT
    assert reason.description == "The session was not established within 30 s"
    assert ended == SessionEnded(SessionState.FAILED, reason)
    assert sent(session) == [
        {
            "from": "postmaster@localhost/server",
            "state": "failed",
            "reason": {"code": 16, "description": "The session was not established within 30 s"},
        }
    ]
    assert session.next_deadline() is None


def test_the_description_gives_the_timeout_as_configured() -> None:
    session = server(timeout=2.5)
    session.expire(T0 + 2.5)
    assert session.failure is not None
    assert session.failure.description == "The session was not established within 2.5 s"


def test_the_deadline_runs_through_negotiation_and_authentication() -> None:
    session = server(compression_options=["none", "gzip"])
    feed(session, {"state": "new"})
    assert session.state is SessionState.NEGOTIATING
    assert session.next_deadline() == T0 + 30.0
    feed(
        session, {"id": "sid", "state": "negotiating", "compression": "none", "encryption": "none"}
    )
    assert session.state is SessionState.AUTHENTICATING
    assert session.next_deadline() == T0 + 30.0


def test_the_deadline_runs_while_the_application_checks_credentials() -> None:
    session = deciding(server())
    assert session.next_deadline() == T0 + 30.0
    session.expire(T0 + 30.0)
    [failed] = sent(session)
    assert failed["reason"]["code"] == 16 and failed["id"] == "sid"
    with pytest.raises(InvalidState):
        session.establish(Node("a", "localhost", "x"))  # the late answer finds it failed


def test_an_established_session_has_no_deadline() -> None:
    session = deciding(server())
    session.establish(Node("a", "localhost", "x"))
    sent(session)
    assert session.next_deadline() is None
    assert session.expire(T0 + 1e9) is None
    assert session.state is SessionState.ESTABLISHED and sent(session) == []


def test_a_session_that_ended_otherwise_has_no_deadline_and_says_nothing_more() -> None:
    session = server()
    session.receive_text(b"not json")
    assert session.state is SessionState.FAILED
    first = session.failure
    sent(session)
    assert session.next_deadline() is None
    assert session.expire(T0 + 1e9) is None
    assert sent(session) == [] and session.failure is first


def test_expire_after_expiry_is_a_no_op() -> None:
    session = server()
    session.expire(T0 + 30.0)
    sent(session)
    assert session.expire(T0 + 60.0) is None
    assert sent(session) == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"establish_timeout": 30.0},
        {"establish_timeout": 0.0, "now": T0},
        {"establish_timeout": -1.0, "now": T0},
        {"establish_timeout": float("nan"), "now": T0},
    ],
)
def test_a_timeout_must_be_positive_and_start_somewhere(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ServerSession(SERVER, ["guest"], **arguments)
