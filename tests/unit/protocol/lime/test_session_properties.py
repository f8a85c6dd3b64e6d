"""Random envelope sequences through the server session machine (hypothesis)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.protocol.lime import (
    AuthenticationRequested,
    Node,
    Reason,
    ServerSession,
    SessionEnded,
    SessionState,
)

SESSION_STATES = [
    "new",
    "negotiating",
    "authenticating",
    "established",
    "finishing",
    "finished",
    "failed",
    "bogus",
]

envelopes = st.one_of(
    st.fixed_dictionaries(
        {"state": st.sampled_from(SESSION_STATES)},
        optional={
            "id": st.sampled_from(["sid", "other"]),
            "from": st.sampled_from(["a@localhost/x", "bad", "a@localhost"]),
            "scheme": st.sampled_from(["guest", "plain", "transport"]),
            "compression": st.sampled_from(["none", "gzip"]),
            "encryption": st.sampled_from(["none", "tls"]),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text/plain", "bad"]), "content": st.text(max_size=5)},
        optional={"id": st.text(max_size=4), "to": st.sampled_from(["b@localhost", "x@y@z"])},
    ),
    st.fixed_dictionaries(
        {"event": st.sampled_from(["received", "consumed", "nope"])},
        optional={"id": st.text(max_size=4)},
    ),
    st.fixed_dictionaries(
        {"method": st.sampled_from(["get", "set", "observe", "wrong"])},
        optional={
            "id": st.text(max_size=4),
            "uri": st.sampled_from(["/ping", ""]),
            "status": st.sampled_from(["success", "failure", "odd"]),
        },
    ),
    st.binary(max_size=20).map(lambda b: {"__raw__": b.hex()}),
)


@settings(max_examples=400)
@given(st.lists(envelopes, max_size=12), st.booleans(), st.booleans())
def test_random_sequences_keep_the_invariants(sequence, negotiate, accept):
    session = ServerSession(
        Node("postmaster", "localhost", "server"),
        ["guest", "plain"],
        compression_options=["none", "gzip"] if negotiate else ["none"],
        new_session_id=lambda: "sid",
    )
    ended = False
    for envelope in sequence:
        before = session.state
        data = (
            bytes.fromhex(envelope["__raw__"])
            if "__raw__" in envelope
            else json.dumps(envelope).encode()
        )
        event = session.receive_text(data)
        for frame in session.data_to_send():
            out = json.loads(frame)
            for value in out.values():
                assert value is not None  # never emit nulls
            if "method" in out:
                assert "status" in out and "uri" not in out  # responses only
        if isinstance(event, AuthenticationRequested):
            if accept:
                session.establish(event.node.with_instance(event.node.instance or "default"))
            else:
                session.fail(Reason(code=13))
            session.data_to_send()
        if ended:
            assert event is None and session.state is before
        if isinstance(event, SessionEnded):
            ended = True
            assert session.state in (SessionState.FINISHED, SessionState.FAILED)
        if session.state is SessionState.ESTABLISHED:
            assert session.remote is not None
    if session.state is SessionState.FAILED:
        assert session.failure is not None
