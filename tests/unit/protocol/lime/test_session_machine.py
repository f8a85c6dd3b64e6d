"""The server session machine against a small model of it (hypothesis, stateful).

Random sequences of session, message, notification and command envelopes, malformed and binary
frames, the application's answers and ``expire(now)`` on a number clock. The model predicts the
next state and, by kind, every frame the machine sends. Whatever the sequence, the machine:
raises nothing but the documented ``InvalidState`` (from ``establish`` and ``send`` out of turn),
ends at most once, sends a failed session with the predicted reason code whenever it ends
abnormally, and sends nothing once it has ended.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tidings.protocol import InvalidState
from tidings.protocol.lime import (
    AuthenticationRequested,
    Command,
    Message,
    Node,
    Notification,
    Raw,
    Reason,
    ServerSession,
    SessionEnded,
    SessionState,
)

SID = "sid"
T0 = 100.0
TIMEOUT = 10.0
MAX_SIZE = 512
LONG_ID = "x" * 300

LIVE = ("new", "negotiating", "authenticating", "deciding", "established")
"""Model phases before the end; "deciding" is AUTHENTICATING with credentials being checked."""
MODEL_STATE = {phase: SessionState(phase) for phase in LIVE if phase != "deciding"} | {
    "deciding": SessionState.AUTHENTICATING,
    "finished": SessionState.FINISHED,
    "failed": SessionState.FAILED,
}

Prediction = tuple[str, list[str], str | None]
"""(phase after, tags of the frames sent, what receive returns: None, "auth", "ended",
"envelope")."""


def failed(code: int) -> Prediction:
    return "failed", [f"session:failed:{code}"], "ended"


def tag(frame: dict[str, Any]) -> str:
    if "state" in frame:
        suffix = f":{frame['reason']['code']}" if frame["state"] == "failed" else ""
        return f"session:{frame['state']}{suffix}"
    if "event" in frame:
        return f"notification:{frame['event']}:{frame['reason']['code']}"
    return f"command:{frame['status']}:{frame['reason']['code']}"


def answer(kind: str, code: int) -> Prediction:
    return "established", [f"{kind}:{code}"], None


live = precondition(lambda self: self.phase in LIVE)
"""Most input ends a session at once; once it has ended, ``after_the_end`` and ``reconnect``
take over, so that the steps go to live sessions."""
ended = precondition(lambda self: self.phase not in LIVE)


class ServerSessionModel(RuleBasedStateMachine):
    @initialize(negotiate=st.booleans(), start_in=st.sampled_from(LIVE))
    def create(self, negotiate: bool, start_in: str) -> None:
        self.fresh(negotiate, start_in)

    @ended
    @rule(negotiate=st.booleans(), start_in=st.sampled_from(LIVE))
    def reconnect(self, negotiate: bool, start_in: str) -> None:
        self.fresh(negotiate, start_in)

    def fresh(self, negotiate: bool, start_in: str) -> None:
        """A new machine taken to ``start_in`` the ordinary way: random input seldom gets far."""
        self.negotiate = negotiate
        self.session = ServerSession(
            Node("postmaster", "localhost", "server"),
            ["guest", "plain"],
            compression_options=["none", "gzip"] if negotiate else ["none"],
            new_session_id=lambda: SID,
            max_envelope_size=MAX_SIZE,
            establish_timeout=TIMEOUT,
            now=T0,
        )
        self.phase = "new"
        self.now = T0
        self.ends = 0
        if start_in == "negotiating" and not negotiate:
            start_in = "authenticating"  # no negotiation without options to choose from
        while self.phase != start_in:
            self.advance()

    # -- driving and checking ------------------------------------------------------------------

    def check(self, prediction: Prediction, event: Any) -> None:
        phase, tags, returns = prediction
        if self.phase not in LIVE:  # ended: nothing more, whatever came
            phase, tags, returns = self.phase, [], None
        frames = [json.loads(data) for data in self.session.data_to_send()]
        for frame in frames:
            assert None not in frame.values()  # never a null on the wire
            if "state" in frame and self.phase != "new":
                assert frame["id"] == SID
        assert [tag(frame) for frame in frames] == tags
        if returns is None:
            assert event is None
        elif returns == "auth":
            assert isinstance(event, AuthenticationRequested)
        elif returns == "envelope":
            assert isinstance(event, Message | Notification | Command)
        else:
            assert event == SessionEnded(MODEL_STATE[phase], self.session.failure)
        if isinstance(event, SessionEnded):
            self.ends += 1
        self.phase = phase
        if phase == "failed":
            assert self.session.failure is not None
            assert tags == [] or self.session.failure.code == int(tags[-1].rsplit(":", 1)[1])

    def receive(self, document: dict[str, Any] | bytes, prediction: Prediction) -> None:
        data = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.check(prediction, self.session.receive_text(data))

    # -- session envelopes ---------------------------------------------------------------------

    @live
    @rule(
        state=st.sampled_from([*SessionState, "bogus"]),
        id_=st.sampled_from([SID, "other", None]),
        from_=st.sampled_from(["a@localhost/x", "a@localhost", "a@@b", None]),
        scheme=st.sampled_from(["guest", "plain", "key", None]),
        compression=st.sampled_from(["none", "gzip", None]),
        encryption=st.sampled_from(["none", "tls", None]),
    )
    def session_envelope(
        self,
        state: str,
        id_: str | None,
        from_: str | None,
        scheme: str | None,
        compression: str | None,
        encryption: str | None,
    ) -> None:
        fields = {
            "id": id_,
            "from": from_,
            "scheme": scheme,
            "compression": compression,
            "encryption": encryption,
        }
        document = {"state": state} | {k: v for k, v in fields.items() if v is not None}
        self.receive(document, self.predict_session(state, id_, from_, scheme, fields))

    def predict_session(
        self, state: str, id_: str | None, from_: str | None, scheme: str | None, fields: Any
    ) -> Prediction:
        phase = self.phase
        if state == "bogus":
            return failed(21)  # not a session state: the envelope does not decode
        if phase == "new":
            if state != "new" or id_ is not None:
                return failed(11)
            if self.negotiate:
                return "negotiating", ["session:negotiating"], None
            return "authenticating", ["session:authenticating"], None
        if phase == "deciding":
            return failed(15)
        if id_ != SID:
            return failed(11)
        if phase == "negotiating":
            if (
                state != "negotiating"
                or fields["compression"] not in ("none", "gzip")
                or fields["encryption"] != "none"
            ):
                return failed(17)
            return "authenticating", ["session:negotiating", "session:authenticating"], None
        if phase == "authenticating":
            if state != "authenticating" or from_ in (None, "a@@b"):
                return failed(11)
            if scheme not in ("guest", "plain"):
                return failed(13)
            return "deciding", [], "auth"
        if state == "finishing":  # established
            return "finished", ["session:finished"], "ended"
        return failed(15)

    @live
    @rule()
    def advance(self) -> None:
        """The envelope (or the answer) that takes the session one step further."""
        if self.phase == "deciding":
            self.establish()
            return
        state = {"new": "new", "negotiating": "negotiating", "established": "finishing"}.get(
            self.phase, "authenticating"
        )
        self.session_envelope(
            state, None if state == "new" else SID, "a@localhost/x", "guest", "none", "none"
        )

    # -- messages, notifications, commands -----------------------------------------------------

    @live
    @rule(
        id_=st.sampled_from(["m", "", LONG_ID, None]),
        media_type=st.sampled_from(["text/plain", "application/vnd.x+json", "plain"]),
        content=st.sampled_from(["hi", None, {"a": 1}]),
    )
    def message(self, id_: str | None, media_type: str, content: Any) -> None:
        document = {"to": "bob@localhost", "type": media_type, "content": content}
        if id_ is not None:
            document["id"] = id_
        problem = None
        if id_ in ("", LONG_ID):
            problem = 21
        elif media_type == "plain":
            problem = 23
        elif content is None:
            problem = 22
        answerable = id_ in ("m", "")
        self.receive(document, self.predict_other(problem, answerable, "notification:failed"))

    @live
    @rule(id_=st.sampled_from(["n", "", LONG_ID, None]))
    def notification(self, id_: str | None) -> None:
        document = {"to": "bob@localhost", "event": "received"}
        if id_ is not None:
            document["id"] = id_
        problem = None if id_ == "n" else 21
        self.receive(document, self.predict_other(problem, False, ""))

    @live
    @rule(
        id_=st.sampled_from(["c", "", LONG_ID, None]),
        method=st.sampled_from(["get", "observe"]),
        uri=st.sampled_from(["/ping", "", None]),
        response=st.booleans(),
    )
    def command(self, id_: str | None, method: str, uri: str | None, response: bool) -> None:
        document: dict[str, Any] = {"method": method}
        for key, value in (("id", id_), ("uri", uri), ("status", "success" if response else None)):
            if value is not None:
                document[key] = value
        problem = None
        needs_an_id = not response and id_ is None and method != "observe"
        if id_ in ("", LONG_ID) or needs_an_id:
            problem = 21
        elif not response and not uri:
            problem = 27
        answerable = not response and id_ in ("c", "")
        self.receive(document, self.predict_other(problem, answerable, "command:failure"))

    def predict_other(self, problem: int | None, answerable: bool, answer_kind: str) -> Prediction:
        if self.phase != "established":
            return failed(15)
        if problem is None:
            return "established", [], "envelope"
        return answer(answer_kind, problem) if answerable else failed(problem)

    # -- frames that are not envelopes ---------------------------------------------------------

    @live
    @rule(
        data=st.one_of(
            st.binary(max_size=40).filter(lambda data: b'"' not in data),
            st.sampled_from(
                [
                    b"",
                    b"[]",
                    b'"x"',
                    b"{}",
                    b'{"foo": 1}',
                    b"\xff\xfe",
                    b'{"state": "new", "x": ' + b"[" * 70 + b"]" * 70 + b"}",
                    b'{"id":"m","to":"b@localhost","type":"text/plain","content":"'
                    + b"x" * MAX_SIZE
                    + b'"}',
                ]
            ),
        )
    )
    def junk(self, data: bytes) -> None:
        self.receive(data, failed(21))

    @live
    @rule(
        document=st.sampled_from(
            [
                {"id": "m", "to": 3, "type": "text/plain", "content": "x"},
                {"id": "c", "method": "fetch", "uri": "/x"},
            ]
        )
    )
    def typed_but_invalid(self, document: dict[str, Any]) -> None:
        """An established server answers these on their id; before, they fail the session."""
        kind = "notification:failed" if "content" in document else "command:failure"
        prediction = answer(kind, 21) if self.phase == "established" else failed(21)
        self.receive(document, prediction)

    @live
    @rule()
    def binary(self) -> None:
        self.check(failed(21), self.session.receive_binary())

    # -- the application and the clock ---------------------------------------------------------

    @rule()
    def establish(self) -> None:
        if self.phase == "deciding":
            self.session.establish(Node("a", "localhost", "x"))
            self.check(("established", ["session:established"], None), None)
        else:
            before = self.session.state
            with pytest.raises(InvalidState):
                self.session.establish(Node("a", "localhost", "x"))
            assert self.session.state is before
            self.check((self.phase, [], None), None)

    @live
    @rule(code=st.sampled_from([11, 13, 34]))
    def fail(self, code: int) -> None:
        self.session.fail(Reason(code=code, description="by the application"))
        if self.phase in LIVE:
            self.ends += 1  # fail() returns nothing: the caller asked for the end
        self.check(("failed", [f"session:failed:{code}"], None), None)

    @rule()
    def send(self) -> None:
        message = Message(to="bob@localhost", type="text/plain", content=Raw(b'"hi"'))
        if self.phase == "established":
            assert json.loads(self.session.send(message))["content"] == "hi"
        else:
            with pytest.raises(InvalidState):
                self.session.send(message)
        self.check((self.phase, [], None), None)

    @live
    @rule(seconds=st.sampled_from([0.0, 0.5, 3.0, 9.999, 10.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        event = self.session.expire(self.now)
        due = self.phase in LIVE and self.phase != "established" and self.now >= T0 + TIMEOUT
        self.check(failed(16) if due else (self.phase, [], None), event)

    @ended
    @rule(
        poke=st.sampled_from(
            ["message", "finishing", "junk", "binary", "tick", "fail", "establish", "send"]
        )
    )
    def after_the_end(self, poke: str) -> None:
        """Whatever comes once the session has ended: no event, no frame, no change."""
        before, failure = self.session.state, self.session.failure
        if poke == "message":
            self.message("m", "text/plain", "hi")
        elif poke == "finishing":
            self.session_envelope("finishing", SID, None, None, None, None)
        elif poke == "junk":
            self.junk(b"{")
        elif poke == "binary":
            self.binary()
        elif poke == "tick":
            self.tick(TIMEOUT * 2)
        elif poke == "fail":
            self.fail(11)
        elif poke == "establish":
            self.establish()
        else:
            self.send()
        assert self.session.state is before and self.session.failure is failure

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def state_follows_the_model(self) -> None:
        session = self.session
        assert session.state is MODEL_STATE[self.phase]
        assert session.is_closed is (self.phase not in LIVE)
        assert self.ends <= 1 and (self.ends == 1) is session.is_closed
        if self.phase == "failed":
            assert session.failure is not None and isinstance(session.failure.code, int)
        if self.phase in LIVE and self.phase != "established":
            assert session.next_deadline() == T0 + TIMEOUT
        else:
            assert session.next_deadline() is None
        if self.phase == "established":
            assert session.remote is not None


ServerSessionModel.TestCase.settings = settings(
    max_examples=1000, stateful_step_count=30, deadline=None
)
TestServerSessionModel = ServerSessionModel.TestCase
