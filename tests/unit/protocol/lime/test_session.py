"""The LIME session state machine, sans I/O: every transition and reason code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol import InvalidState
from tidings.protocol.lime import (
    AuthenticationRequested,
    ClientSession,
    Message,
    Node,
    Reason,
    ReasonCode,
    ServerSession,
    SessionEnded,
    SessionEstablished,
    SessionState,
    parse_node,
)
from tidings.protocol.lime._session import (
    _MEDIA_TYPE,
    _MEDIA_TYPES_KEPT,
    _MEDIA_TYPES_SEEN,
    _media_type,
)

SERVER = Node("postmaster", "localhost", "server")


def server(**kwargs: Any) -> ServerSession:
    return ServerSession(SERVER, ["plain", "guest"], new_session_id=lambda: "sid", **kwargs)


def feed(session: ServerSession | ClientSession, envelope: dict[str, Any]) -> Any:
    return session.receive_text(json.dumps(envelope).encode())


def sent(session: ServerSession | ClientSession) -> list[dict[str, Any]]:
    return [json.loads(data) for data in session.data_to_send()]


def authentication_request(node: str = "a@localhost", **fields: Any) -> dict[str, Any]:
    """The client's `authenticating` envelope: guest unless ``fields`` say otherwise."""
    return {"id": "sid", "state": "authenticating", "from": node, "scheme": "guest", **fields}


def authenticating(session: ServerSession) -> ServerSession:
    """``session`` taken to AUTHENTICATING, output drained."""
    assert feed(session, {"state": "new"}) is None
    sent(session)
    return session


def established(session: ServerSession, node: str = "alice@localhost/home") -> ServerSession:
    """``session`` taken to ESTABLISHED as the guest ``node``, output drained."""
    authenticating(session)
    event = feed(session, authentication_request(node))
    assert isinstance(event, AuthenticationRequested)
    session.establish(parse_node(node))
    sent(session)
    return session


class TestEstablishment:
    def test_new_goes_to_authenticating_with_scheme_options(self):
        session = server()
        assert feed(session, {"state": "new"}) is None
        assert sent(session) == [
            {
                "id": "sid",
                "from": "postmaster@localhost/server",
                "state": "authenticating",
                "schemeOptions": ["plain", "guest"],
            }
        ]
        assert session.state is SessionState.AUTHENTICATING

    def test_negotiation_only_with_more_than_one_option(self):
        session = server(compression_options=["none", "gzip"])
        feed(session, {"state": "new"})
        [offer] = sent(session)
        assert offer["state"] == "negotiating"
        assert offer["compressionOptions"] == ["none", "gzip"]
        assert offer["encryptionOptions"] == ["none"]
        feed(
            session,
            {"id": "sid", "state": "negotiating", "compression": "none", "encryption": "none"},
        )
        confirmation, auth = sent(session)
        assert confirmation["compression"] == "none" and confirmation["state"] == "negotiating"
        assert auth["state"] == "authenticating"

    def test_invalid_negotiation_choice_fails_with_17(self):
        session = server(compression_options=["none", "gzip"])
        feed(session, {"state": "new"})
        sent(session)
        ended = feed(
            session,
            {"id": "sid", "state": "negotiating", "compression": "brotli", "encryption": "none"},
        )
        assert ended == SessionEnded(SessionState.FAILED, session.failure)
        assert sent(session)[0]["reason"]["code"] == 17

    def test_authentication_request_carries_node_scheme_and_credentials(self):
        session = authenticating(server())
        event = feed(
            session,
            authentication_request(
                "Alice@LocalHost/Home",
                scheme="plain",
                authentication={"scheme": "plain", "password": "cHc="},
            ),
        )
        assert event == AuthenticationRequested(
            node=Node("alice", "localhost", "Home"),
            scheme="plain",
            authentication={"scheme": "plain", "password": "cHc="},
        )
        session.establish(Node("alice", "localhost", "Home"))
        [ok] = sent(session)
        assert ok == {
            "id": "sid",
            "from": "postmaster@localhost/server",
            "to": "alice@localhost/Home",
            "state": "established",
        }

    def test_scheme_may_come_only_inside_authentication(self):
        session = authenticating(server())
        event = feed(
            session,
            {
                "id": "sid",
                "state": "authenticating",
                "from": "a@localhost",
                "authentication": {"scheme": "guest"},
            },
        )
        assert isinstance(event, AuthenticationRequested) and event.scheme == "guest"

    @pytest.mark.parametrize(
        ("envelope", "code"),
        [
            (
                {
                    "id": "other",
                    "state": "authenticating",
                    "from": "a@localhost",
                    "scheme": "guest",
                },
                ReasonCode.SESSION_ERROR,
            ),
            ({"id": "sid", "state": "authenticating", "scheme": "guest"}, ReasonCode.SESSION_ERROR),
            (
                {"id": "sid", "state": "authenticating", "from": "a@b@c", "scheme": "guest"},
                ReasonCode.SESSION_ERROR,
            ),
            (
                {"id": "sid", "state": "authenticating", "from": "a@localhost", "scheme": "key"},
                ReasonCode.SESSION_AUTHENTICATION_FAILED,
            ),
            (
                {"id": "sid", "state": "established", "from": "a@localhost"},
                ReasonCode.SESSION_ERROR,
            ),
            (
                {"id": "sid", "to": "a@localhost", "type": "text/plain", "content": "early"},
                ReasonCode.SESSION_INVALID_ACTION_FOR_STATE,
            ),
        ],
    )
    def test_authenticating_failures(self, envelope, code):
        session = authenticating(server())
        ended = feed(session, envelope)
        assert isinstance(ended, SessionEnded) and ended.state is SessionState.FAILED
        [failed] = sent(session)
        assert failed["state"] == "failed" and failed["reason"]["code"] == code

    def test_new_with_an_id_fails_with_11(self):
        session = server()
        feed(session, {"id": "mine", "state": "new"})
        assert sent(session)[0]["reason"]["code"] == ReasonCode.SESSION_ERROR

    def test_first_envelope_must_be_a_session(self):
        session = server()
        feed(session, {"id": "1", "method": "get", "uri": "/ping"})
        assert sent(session)[0]["reason"]["code"] == ReasonCode.SESSION_INVALID_ACTION_FOR_STATE

    def test_envelopes_while_deciding_fail_with_15(self):
        session = authenticating(server())
        feed(session, authentication_request())
        feed(session, authentication_request())
        assert sent(session)[0]["reason"]["code"] == ReasonCode.SESSION_INVALID_ACTION_FOR_STATE

    def test_establish_outside_authenticating_is_invalid_state(self):
        with pytest.raises(InvalidState):
            server().establish(Node("a", "localhost", "x"))

    def test_fail_by_the_application(self):
        session = authenticating(server())
        feed(session, authentication_request())
        session.fail(Reason(code=13, description="nope"))
        [failed] = sent(session)
        assert failed == {
            "id": "sid",
            "from": "postmaster@localhost/server",
            "state": "failed",
            "reason": {"code": 13, "description": "nope"},
        }
        assert session.is_closed
        session.fail(Reason(code=1))
        assert sent(session) == []


class TestEstablished:
    def test_messages_pass_through_as_typed_envelopes(self):
        session = established(server())
        event = feed(
            session, {"id": "m", "to": "bob@localhost", "type": "text/plain", "content": "hi"}
        )
        assert isinstance(event, Message) and event.to == "bob@localhost"

    def test_finishing_sends_finished_with_to(self):
        session = established(server())
        ended = feed(session, {"id": "sid", "state": "finishing"})
        assert ended == SessionEnded(SessionState.FINISHED, None)
        assert sent(session) == [
            {
                "id": "sid",
                "from": "postmaster@localhost/server",
                "to": "alice@localhost/home",
                "state": "finished",
            }
        ]
        assert (
            feed(session, {"id": "m", "to": "b@localhost", "type": "text/plain", "content": "x"})
            is None
        )

    def test_other_session_states_fail_with_15(self):
        session = established(server())
        feed(session, {"id": "sid", "state": "new"})
        assert sent(session)[0]["reason"]["code"] == ReasonCode.SESSION_INVALID_ACTION_FOR_STATE

    def test_finishing_with_a_wrong_id_fails_with_11(self):
        session = established(server())
        feed(session, {"id": "zzz", "state": "finishing"})
        assert sent(session)[0]["reason"]["code"] == ReasonCode.SESSION_ERROR

    @pytest.mark.parametrize(
        ("envelope", "code"),
        [
            (
                {"id": "m", "to": "b@localhost", "type": "plain", "content": "x"},
                ReasonCode.VALIDATION_INVALID_RESOURCE,
            ),
            (
                {"id": "m", "to": "b@localhost", "type": "text/plain", "content": None},
                ReasonCode.VALIDATION_EMPTY_DOCUMENT,
            ),
            (
                {"id": "m", "to": 3, "type": "text/plain", "content": "x"},
                ReasonCode.VALIDATION_ERROR,
            ),
        ],
    )
    def test_invalid_messages_with_an_id_get_a_failed_notification(self, envelope, code):
        session = established(server())
        assert feed(session, envelope) is None
        [answer] = sent(session)
        assert answer["event"] == "failed" and answer["id"] == "m"
        assert answer["reason"]["code"] == code
        assert session.state is SessionState.ESTABLISHED

    def test_an_overlong_id_cannot_be_answered_so_the_session_fails(self):
        session = established(server())
        ended = feed(
            session, {"id": "x" * 300, "to": "b@localhost", "type": "text/plain", "content": "x"}
        )
        assert isinstance(ended, SessionEnded)
        assert sent(session)[0]["reason"]["code"] == ReasonCode.VALIDATION_ERROR

    @pytest.mark.parametrize(
        "envelope",
        [
            {"id": "a\u0000b", "to": "b@localhost", "type": "text/plain", "content": "x"},
            {"id": "a\u0000b", "method": "get", "uri": "/ping"},
            {"id": "a\u0000b", "event": "received", "to": "b@localhost"},
        ],
        ids=["message", "command", "notification"],
    )
    def test_an_id_holding_nul_is_refused_on_that_id(self, envelope):
        """PostgreSQL text cannot hold NUL: such an id never reaches a store."""
        session = established(server())
        event = feed(session, envelope)
        [answer] = sent(session)
        assert answer["reason"]["code"] == ReasonCode.VALIDATION_ERROR
        assert "NUL" in answer["reason"]["description"]
        if "event" in envelope:  # a notification is never answered: the session fails
            assert isinstance(event, SessionEnded)
            assert answer["state"] == "failed"
        else:
            assert event is None
            assert answer["id"] == "a\u0000b"
            assert session.state is SessionState.ESTABLISHED

    @pytest.mark.parametrize(
        "uri", ["/sessions/a%00b", "/sessions/a\u0000b", "/feeds/f?team=%00", "lime://a%00@b/x"]
    )
    def test_a_command_uri_holding_nul_is_refused_with_27(self, uri):
        """Its segments and query values name stored things (session names, key and consent
        ids), and PostgreSQL text cannot hold NUL: as is or percent-encoded, it is refused."""
        session = established(server())
        assert feed(session, {"id": "c", "method": "get", "uri": uri}) is None
        [answer] = sent(session)
        assert answer["status"] == "failure" and answer["id"] == "c"
        assert answer["reason"] == {
            "code": 27,
            "description": "A command 'uri' may not hold NUL (or %00)",
        }
        assert session.state is SessionState.ESTABLISHED

    def test_an_encoded_percent_before_00_is_no_nul(self):
        session = established(server())
        command = feed(session, {"id": "c", "method": "get", "uri": "/sessions/a%2500"})
        assert command is not None and command.uri == "/sessions/a%2500"
        assert sent(session) == []

    @pytest.mark.parametrize(
        ("envelope", "code"),
        [
            ({"id": "c", "method": "get"}, 27),
            ({"id": "c", "method": "fetch", "uri": "/x"}, ReasonCode.VALIDATION_ERROR),
        ],
    )
    def test_invalid_command_requests_get_a_failure_response(self, envelope, code):
        session = established(server())
        assert feed(session, envelope) is None
        [answer] = sent(session)
        assert answer["status"] == "failure" and answer["reason"]["code"] == code
        assert "uri" not in answer

    @pytest.mark.parametrize(
        "envelope",
        [
            {"to": "b@localhost", "type": "text/plain", "content": None},
            {"event": "received", "to": "b@localhost"},
            {"method": "get", "uri": "/ping"},
            {"id": "r", "method": "get", "status": "done"},
        ],
    )
    def test_invalid_envelopes_without_an_answerable_id_fail_the_session(self, envelope):
        session = established(server())
        ended = feed(session, envelope)
        assert isinstance(ended, SessionEnded)
        assert sent(session)[0]["state"] == "failed"

    @pytest.mark.parametrize("data", [b"{", b"[]", b'"x"', b'{"foo": 1}', b"\xff\xfe"])
    def test_undecodable_frames_fail_with_21(self, data):
        session = established(server())
        session.receive_text(data)
        [failed] = sent(session)
        assert failed["reason"]["code"] == ReasonCode.VALIDATION_ERROR

    def test_oversized_frame_fails_with_21(self):
        session = established(server(max_envelope_size=1024))
        session.receive_text(b"{" + b" " * 2000 + b"}")
        [failed] = sent(session)
        assert "limit" in failed["reason"]["description"]

    def test_binary_frame_fails(self):
        session = established(server())
        assert isinstance(session.receive_binary(), SessionEnded)

    def test_send_outside_established_is_invalid_state(self):
        with pytest.raises(InvalidState):
            server().send(Message(type="text/plain", content=b'"x"'))  # type: ignore[arg-type]


class TestClientAgainstServer:
    """Both machines wired back to back (like h11's ConnectionPair)."""

    def pump(self, a: ServerSession | ClientSession, b: ServerSession | ClientSession) -> list:
        events = []
        for data in a.data_to_send():
            event = b.receive_text(data)
            if event is not None:
                events.append(event)
        return events

    def test_full_lifecycle(self):
        srv = server(compression_options=["none", "gzip"])
        client = ClientSession(Node("bob", "localhost", "tv"), "guest", {"scheme": "guest"})
        client.start()
        self.pump(client, srv)  # new
        self.pump(srv, client)  # negotiating offer
        self.pump(client, srv)  # choice
        self.pump(srv, client)  # confirmation + authenticating
        [request] = self.pump(client, srv)
        assert isinstance(request, AuthenticationRequested)
        srv.establish(request.node)
        [established_event] = self.pump(srv, client)
        assert established_event == SessionEstablished(
            local=Node("bob", "localhost", "tv"), remote=SERVER
        )
        client.finish()
        [ended] = self.pump(client, srv)
        assert ended.state is SessionState.FINISHED
        [client_ended] = self.pump(srv, client)
        assert client_ended == SessionEnded(SessionState.FINISHED, None)


def test_from_without_domain_takes_the_servers_domain():
    """reference/lime.md section 2.3: lime-go's ws-chat client sends `nick/chat`."""
    session = authenticating(server())
    event = feed(session, authentication_request("nick/chat"))
    assert isinstance(event, AuthenticationRequested)
    assert event.node == Node("nick", "localhost", "chat")


@given(st.lists(st.text(max_size=40) | st.sampled_from(["text/plain", "a/b+c; x=1", "x/"])))
def test_a_remembered_message_type_is_one_the_expression_accepts(types: list[str]) -> None:
    """The per-message shortcut (types seen valid) never lets through what the regular
    expression refuses, and refuses what it refuses, seen before or not."""
    for text in types * 2:
        assert _media_type(text) is (_MEDIA_TYPE.fullmatch(text) is not None)
    assert all(_MEDIA_TYPE.fullmatch(seen) for seen in _MEDIA_TYPES_SEEN)
    assert len(_MEDIA_TYPES_SEEN) <= _MEDIA_TYPES_KEPT
