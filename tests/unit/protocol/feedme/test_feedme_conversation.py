"""FeedmeConversation, test classes named after the spec's sections."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tidings.protocol.feedme import (
    Action,
    ActionResponse,
    ActionRevelation,
    ConversationState,
    Delta,
    DeltaOperation,
    FeedClose,
    FeedCloseResponse,
    FeedKey,
    FeedmeConversation,
    FeedOpen,
    FeedOpenResponse,
    FeedState,
    FeedTermination,
    Handshake,
    HandshakeRejected,
    HandshakeResponse,
    HandshakeTimedOut,
    InvalidState,
    LocalProtocolError,
    PeerClosed,
    PeerViolated,
    Role,
    TerminationWindowClosed,
    TimeoutKind,
    ViolationCase,
    ViolationResponse,
    encode_message,
    prepare_revelation,
)

FEED = FeedKey.of("Counter", {"Id": "1"})
OTHER = FeedKey.of("Counter", {"Id": "2"})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame(message: Any) -> str:
    return encode_message(message).decode()


def handshake() -> str:
    return '{"MessageType":"Handshake","Versions":["0.1"]}'


def action(callback_id: str = "1") -> str:
    return frame(Action("Echo", {"x": 1}, callback_id))


def feed_open(feed: FeedKey = FEED) -> str:
    return frame(FeedOpen(feed.name, feed.args_dict()))


def feed_close(feed: FeedKey = FEED) -> str:
    return frame(FeedClose(feed.name, feed.args_dict()))


def sent(conversation: FeedmeConversation) -> list[dict[str, Any]]:
    return [json.loads(item) for item in conversation.data_to_send()]


def new_server(clock: Clock | None = None, **options: Any) -> FeedmeConversation:
    return FeedmeConversation(Role.SERVER, clock=clock or Clock(), **options)


def initiated(clock: Clock | None = None, **options: Any) -> FeedmeConversation:
    server = new_server(clock, **options)
    server.receive_text(handshake())
    server.send(server.accept_handshake())
    server.events_received()
    server.data_to_send()
    return server


def with_feed(state: FeedState, clock: Clock | None = None, **options: Any) -> FeedmeConversation:
    """A server whose FEED is in ``state``, outputs drained."""
    server = initiated(clock, **options)
    if state is FeedState.CLOSED:
        return server
    server.receive_text(feed_open())
    if state is not FeedState.OPENING:
        server.send(FeedOpenResponse.ok(FEED, {"Count": 0}))
        if state is FeedState.CLOSING:
            server.receive_text(feed_close())
        elif state is FeedState.TERMINATED:
            server.send(FeedTermination.of(FEED, "GONE"))
    server.events_received()
    server.data_to_send()
    assert server.feed_state(FEED) is state
    return server


def assert_violation(server: FeedmeConversation, case: ViolationCase, text: str) -> None:
    events = server.events_received()
    assert len(events) == 1 and isinstance(events[0], PeerViolated)
    assert events[0].error.case is case
    assert server.violation is events[0].error
    assert sent(server) == [
        {
            "MessageType": "ViolationResponse",
            "Diagnostics": {"Problem": case.value, "Message": text}
            | ({"Detail": events[0].error.detail} if case is ViolationCase.INVALID_MESSAGE else {}),
        }
    ]


class TestHandshakes:
    """Message Sequencing > Handshakes (reference 4.1)."""

    def test_compatible_handshake(self) -> None:
        server = new_server()
        assert server.state is ConversationState.NOT_INITIATED
        server.receive_text(handshake())
        assert server.events_received() == [Handshake(["0.1"])]
        assert server.state is ConversationState.HANDSHAKING
        assert server.version == "0.1"
        assert server.data_to_send() == []  # the gateway decides
        server.send(server.accept_handshake())
        assert sent(server) == [
            {"MessageType": "HandshakeResponse", "Success": True, "Version": "0.1"}
        ]
        assert server.state is ConversationState.INITIATED

    def test_picks_a_supported_version_among_several(self) -> None:
        server = new_server()
        server.receive_text('{"MessageType":"Handshake","Versions":["9.9","0.1"]}')
        assert server.version == "0.1"

    def test_incompatible_handshake_is_refused_and_may_be_retried(self) -> None:
        server = new_server()
        server.receive_text('{"MessageType":"Handshake","Versions":["9.9"]}')
        assert server.events_received() == [HandshakeRejected(("9.9",))]
        assert sent(server) == [{"MessageType": "HandshakeResponse", "Success": False}]
        assert server.state is ConversationState.NOT_INITIATED
        assert server.pending_timeouts()[0].kind is TimeoutKind.HANDSHAKE  # not cleared
        server.receive_text(handshake())
        assert server.state is ConversationState.HANDSHAKING

    def test_wrong_version_in_response_is_our_bug(self) -> None:
        server = new_server()
        server.receive_text(handshake())
        with pytest.raises(LocalProtocolError):
            server.send(HandshakeResponse.accepted("0.2"))
        assert server.state is ConversationState.HANDSHAKING

    def test_accept_handshake_needs_a_handshake(self) -> None:
        with pytest.raises(InvalidState):
            new_server().accept_handshake()

    def test_nothing_but_handshake_response_or_violation_before_handshake(self) -> None:
        server = new_server()
        with pytest.raises(LocalProtocolError):
            server.send(ActionResponse.ok("1", {}))
        with pytest.raises(LocalProtocolError):
            server.send(HandshakeResponse.accepted("0.1"))
        server.send(ViolationResponse({"Problem": "x"}))
        assert len(server.data_to_send()) == 1

    def test_app_may_reject_a_compatible_handshake(self) -> None:
        server = new_server()
        server.receive_text(handshake())
        server.send(HandshakeResponse.rejected())
        assert server.state is ConversationState.NOT_INITIATED
        assert server.version is None


class TestViolations:
    """Violations: every row of reference 5.1; state is unchanged after each."""

    @pytest.mark.parametrize(
        "text",
        [
            "not json",
            "[]",
            '{"MessageType":"FeedAction"}',
            '{"MessageType":"Handshake","Versions":[]}',
            '{"MessageType":"Action","ActionName":"","ActionArgs":{},"CallbackId":"1"}',
            '{"MessageType":"FeedOpen","FeedName":"F","FeedArgs":{"a":1}}',
            '{"MessageType":"FeedClose","FeedName":"F","FeedArgs":{},"X":1}',
        ],
    )
    @pytest.mark.parametrize("state", ["new", "initiated"])
    def test_invalid_message(self, text: str, state: str) -> None:
        server = new_server() if state == "new" else initiated()
        before = server.state
        server.receive_text(text)
        assert_violation(server, ViolationCase.INVALID_MESSAGE, text)
        assert server.state is before
        assert str(server.violation).startswith("INVALID_MESSAGE: ")

    @pytest.mark.parametrize("state", ["handshaking", "initiated"])
    def test_unexpected_handshake(self, state: str) -> None:
        server = new_server()
        server.receive_text(handshake())
        if state == "initiated":
            server.send(server.accept_handshake())
        server.events_received(), server.data_to_send()
        before = server.state
        server.receive_text(handshake())
        assert_violation(server, ViolationCase.UNEXPECTED_HANDSHAKE, handshake())
        assert server.state is before
        assert str(server.violation) == "UNEXPECTED_MESSAGE: Unexpected Handshake message."

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (action(), "Action message received before successful Handshake."),
            (feed_open(), "FeedOpen message received before successful Handshake."),
            (feed_close(), "FeedClose message received before successful Handshake."),
        ],
    )
    @pytest.mark.parametrize("handshaking", [False, True])
    def test_handshake_required(self, text: str, message: str, handshaking: bool) -> None:
        server = new_server()
        if handshaking:
            server.receive_text(handshake())
            server.events_received()
        server.receive_text(text)
        assert_violation(server, ViolationCase.HANDSHAKE_REQUIRED, text)
        assert str(server.violation) == f"UNEXPECTED_MESSAGE: {message}"
        assert server.feed_state(FEED) is FeedState.CLOSED
        assert not server.pending_callbacks

    def test_callback_id_reused_while_outstanding(self) -> None:
        server = initiated()
        server.receive_text(action("7"))
        assert server.events_received() == [Action("Echo", {"x": 1}, "7")]
        server.receive_text(action("7"))
        assert_violation(server, ViolationCase.CALLBACK_ID_REUSED, action("7"))
        assert set(server.pending_callbacks) == {"7"}
        server.send(ActionResponse.ok("7", {}))
        server.data_to_send()
        server.receive_text(action("7"))  # reusable once answered
        assert server.events_received() == [Action("Echo", {"x": 1}, "7")]

    @pytest.mark.parametrize("state", [FeedState.OPENING, FeedState.OPEN, FeedState.CLOSING])
    def test_unexpected_feed_open(self, state: FeedState) -> None:
        server = with_feed(state)
        server.receive_text(feed_open())
        assert_violation(server, ViolationCase.UNEXPECTED_FEED_OPEN, feed_open())
        assert server.feed_state(FEED) is state
        assert str(server.violation) == (
            "UNEXPECTED_MESSAGE: FeedOpen message referenced a feed"
            " that was not closed or terminated."
        )

    @pytest.mark.parametrize("state", [FeedState.CLOSED, FeedState.OPENING, FeedState.CLOSING])
    def test_unexpected_feed_close(self, state: FeedState) -> None:
        server = with_feed(state)
        server.receive_text(feed_close())
        assert_violation(server, ViolationCase.UNEXPECTED_FEED_CLOSE, feed_close())
        assert server.feed_state(FEED) is state
        assert str(server.violation) == (
            "UNEXPECTED_MESSAGE: FeedClose message referenced a feed"
            " that was not open or terminated."
        )

    def test_violations_are_counted_and_never_raise(self) -> None:
        server = new_server()
        for _ in range(3):
            server.receive_text("junk")
        assert server.violation_count == 3
        assert len(server.data_to_send()) == 3


class TestActions:
    """Message Sequencing > Actions (reference 4.2)."""

    def test_action_round_trip(self) -> None:
        server = initiated()
        server.receive_text(action("1"))
        server.receive_text(action("2"))
        assert set(server.pending_callbacks) == {"1", "2"}
        server.send(ActionResponse.error("2", "NOPE"))  # any order
        server.send(ActionResponse.ok("1", {"y": 2}))
        assert [m["CallbackId"] for m in sent(server)] == ["2", "1"]
        assert not server.pending_callbacks

    def test_response_without_action_is_our_bug(self) -> None:
        server = initiated()
        with pytest.raises(LocalProtocolError):
            server.send(ActionResponse.ok("1", {}))
        server.receive_text(action("1"))
        server.send(ActionResponse.ok("1", {}))
        with pytest.raises(LocalProtocolError):
            server.send(ActionResponse.ok("1", {}))  # exactly one response


class TestFeedSequencingServer:
    """Message Sequencing > Feeds > Server: every row of reference 4.3."""

    def test_closed_feed_open_enters_opening(self) -> None:
        server = initiated()
        server.receive_text(feed_open())
        assert server.events_received() == [FeedOpen("Counter", {"Id": "1"})]
        assert server.feed_state(FEED) is FeedState.OPENING
        assert not server.is_open(FEED)

    def test_opening_success_then_open(self) -> None:
        server = with_feed(FeedState.OPENING)
        server.send(FeedOpenResponse.ok(FEED, {"Count": 0}))
        assert server.feed_state(FEED) is FeedState.OPEN and server.is_open(FEED)

    def test_opening_failure_then_closed(self) -> None:
        server = with_feed(FeedState.OPENING)
        server.send(FeedOpenResponse.error(FEED, "DENIED"))
        assert server.feed_state(FEED) is FeedState.CLOSED
        assert server.feeds() == {}

    def test_exactly_one_feed_open_response(self) -> None:
        server = with_feed(FeedState.OPEN)
        with pytest.raises(LocalProtocolError):
            server.send(FeedOpenResponse.ok(FEED, {}))
        assert server.feed_state(FEED) is FeedState.OPEN

    def test_open_feed_close_enters_closing(self) -> None:
        server = with_feed(FeedState.OPEN)
        server.receive_text(feed_close())
        assert server.events_received() == [FeedClose("Counter", {"Id": "1"})]
        assert server.feed_state(FEED) is FeedState.CLOSING
        server.send(FeedCloseResponse.of(FEED))
        assert server.feed_state(FEED) is FeedState.CLOSED

    @pytest.mark.parametrize(
        "state", [FeedState.CLOSED, FeedState.OPENING, FeedState.CLOSING, FeedState.TERMINATED]
    )
    def test_revelation_only_when_open(self, state: FeedState) -> None:
        server = with_feed(state)
        with pytest.raises(LocalProtocolError):
            server.send(ActionRevelation.of(FEED, "Inc", {}))
        prepared = prepare_revelation(ActionRevelation.of(FEED, "Inc", {}))
        assert server.send_prepared(prepared) is False
        assert server.data_to_send() == []
        assert server.feed_state(FEED) is state

    def test_revelation_when_open(self) -> None:
        server = with_feed(FeedState.OPEN)
        server.send(ActionRevelation.of(FEED, "Inc", {}))
        prepared = prepare_revelation(ActionRevelation.of(FEED, "Inc", {"n": 1}))
        assert server.send_prepared(prepared) is True
        out = server.data_to_send()
        assert out[1] is prepared.payload  # the same bytes object, not re-serialized
        assert server.revelations_sent == 2

    def test_feed_close_response_only_when_closing(self) -> None:
        server = with_feed(FeedState.OPEN)
        with pytest.raises(LocalProtocolError):
            server.send(FeedCloseResponse.of(FEED))

    def test_feed_termination_only_when_open(self) -> None:
        for state in (FeedState.CLOSED, FeedState.OPENING, FeedState.CLOSING):
            with pytest.raises(LocalProtocolError):
                with_feed(state).send(FeedTermination.of(FEED, "X"))

    def test_terminated_feed_open_reopens_and_cancels_window(self) -> None:
        server = with_feed(FeedState.TERMINATED)
        assert server.pending_timeouts()
        server.receive_text(feed_open())
        assert server.events_received() == [FeedOpen("Counter", {"Id": "1"})]
        assert server.feed_state(FEED) is FeedState.OPENING
        assert server.pending_timeouts() == []

    def test_terminated_feed_close_is_answered_without_event(self) -> None:
        server = with_feed(FeedState.TERMINATED)
        server.receive_text(feed_close())
        assert server.events_received() == []
        assert sent(server) == [
            {"MessageType": "FeedCloseResponse", "FeedName": "Counter", "FeedArgs": {"Id": "1"}}
        ]
        assert server.feed_state(FEED) is FeedState.CLOSED
        server.receive_text(feed_close())  # the next FeedClose is a violation again
        assert_violation(server, ViolationCase.UNEXPECTED_FEED_CLOSE, feed_close())

    def test_feeds_are_independent(self) -> None:
        server = with_feed(FeedState.OPEN)
        server.receive_text(feed_open(OTHER))
        assert server.feed_state(OTHER) is FeedState.OPENING
        assert server.feed_state(FEED) is FeedState.OPEN
        reordered = '{"MessageType":"FeedClose","FeedArgs":{"Id":"1"},"FeedName":"Counter"}'
        server.receive_text(reordered)
        assert server.feed_state(FEED) is FeedState.CLOSING


class TestTerminationWindow:
    """terminationMs: TERMINATED lasts the window, then the feed is closed."""

    def test_window_expires(self) -> None:
        clock = Clock()
        server = with_feed(FeedState.TERMINATED, clock, termination_window=30.0)
        [timeout] = server.pending_timeouts()
        assert timeout.kind is TimeoutKind.TERMINATION_WINDOW
        assert timeout.feed == FEED and timeout.deadline == clock.now + 30.0
        assert server.next_deadline() == clock.now + 30.0
        server.expire(clock.now + 29.9)
        assert server.feed_state(FEED) is FeedState.TERMINATED
        server.expire(clock.now + 30.0)
        assert server.events_received() == [TerminationWindowClosed(FEED)]
        assert server.feed_state(FEED) is FeedState.CLOSED
        assert server.next_deadline() is None
        server.receive_text(feed_close())
        assert_violation(server, ViolationCase.UNEXPECTED_FEED_CLOSE, feed_close())

    def test_zero_window_lasts_the_connection(self) -> None:
        clock = Clock()
        server = with_feed(FeedState.TERMINATED, clock, termination_window=0)
        assert server.pending_timeouts() == []
        server.expire(clock.now + 1e9)
        assert server.feed_state(FEED) is FeedState.TERMINATED

    def test_forget_terminated(self) -> None:
        server = with_feed(FeedState.TERMINATED)
        server.forget_terminated(FEED)
        assert server.feed_state(FEED) is FeedState.CLOSED
        assert server.pending_timeouts() == []


class TestFeedTermination:
    """The seed's feedTermination(): by state, and its three usages."""

    def test_opening_gets_a_failed_feed_open_response(self) -> None:
        server = with_feed(FeedState.OPENING)
        message = server.terminate_feed(FEED, "GONE", {"why": "x"})
        assert message == FeedOpenResponse.error(FEED, "GONE", {"why": "x"})
        assert sent(server)[0]["Success"] is False
        assert server.feed_state(FEED) is FeedState.CLOSED

    def test_open_gets_feed_termination(self) -> None:
        server = with_feed(FeedState.OPEN)
        message = server.terminate_feed(FEED, "GONE")
        assert isinstance(message, FeedTermination)
        assert sent(server)[0]["MessageType"] == "FeedTermination"
        assert server.feed_state(FEED) is FeedState.TERMINATED

    def test_closing_gets_feed_close_response(self) -> None:
        server = with_feed(FeedState.CLOSING)
        assert server.terminate_feed(FEED, "GONE") == FeedCloseResponse.of(FEED)
        assert server.feed_state(FEED) is FeedState.CLOSED

    @pytest.mark.parametrize("state", [FeedState.CLOSED, FeedState.TERMINATED])
    def test_closed_or_terminated_gets_nothing(self, state: FeedState) -> None:
        server = with_feed(state)
        assert server.terminate_feed(FEED, "GONE") is None
        assert server.data_to_send() == []

    def test_late_answer_is_detected_with_the_feed_serial(self) -> None:
        server = with_feed(FeedState.OPENING)
        serial = server.feed_serial(FEED)
        server.terminate_feed(FEED, "GONE")
        server.receive_text(feed_open())
        assert server.feed_serial(FEED) != serial  # the app's late answer is stale

    def test_usage_2_all_feeds_of_one_client(self) -> None:
        server = with_feed(FeedState.OPEN)
        server.receive_text(feed_open(OTHER))
        third = FeedKey.of("Third")
        server.receive_text(feed_open(third))
        server.send(FeedOpenResponse.ok(third, {}))
        server.receive_text(feed_close(third))
        server.data_to_send()
        messages = server.terminate_all_feeds("SHUTDOWN")
        assert sorted(type(m).__name__ for m in messages) == [
            "FeedCloseResponse",
            "FeedOpenResponse",
            "FeedTermination",
        ]
        assert server.feed_state(FEED) is FeedState.TERMINATED
        assert server.feed_state(OTHER) is FeedState.CLOSED
        assert server.feed_state(third) is FeedState.CLOSED

    def test_usage_3_one_feed_for_all_clients(self) -> None:
        clients = [with_feed(state) for state in FeedState]
        results = [c.terminate_feed(FEED, "GONE") for c in clients]
        assert [type(r).__name__ for r in results] == [
            "NoneType",
            "FeedOpenResponse",
            "FeedTermination",
            "FeedCloseResponse",
            "NoneType",
        ]

    def test_only_servers_terminate(self) -> None:
        with pytest.raises(InvalidState):
            FeedmeConversation(Role.CLIENT).terminate_feed(FEED, "X")


class TestTimeouts:
    """handshakeMs: the caller owns the timer, the conversation names the deadline."""

    def test_handshake_timeout(self) -> None:
        clock = Clock()
        server = new_server(clock, handshake_timeout=30.0)
        [timeout] = server.pending_timeouts()
        assert timeout.kind is TimeoutKind.HANDSHAKE and timeout.deadline == 130.0
        server.expire(129.0)
        assert server.state is ConversationState.NOT_INITIATED
        server.expire(130.0)
        assert server.events_received() == [HandshakeTimedOut()]
        assert server.state is ConversationState.CLOSED
        with pytest.raises(InvalidState):
            server.receive_text(handshake())
        with pytest.raises(InvalidState):
            server.send(ViolationResponse({}))

    def test_compatible_handshake_clears_the_timer(self) -> None:
        server = new_server(handshake_timeout=30.0)
        server.receive_text(handshake())
        assert server.pending_timeouts() == []
        server.expire(1e12)
        assert server.state is ConversationState.HANDSHAKING

    def test_zero_disables_the_handshake_timer(self) -> None:
        assert new_server(handshake_timeout=0).pending_timeouts() == []


class TestClose:
    def test_receive_close(self) -> None:
        server = with_feed(FeedState.TERMINATED)
        server.receive_close()
        assert server.events_received() == [PeerClosed()]
        assert server.state is ConversationState.CLOSED
        assert server.pending_timeouts() == []
        server.receive_close()  # idempotent
        assert server.events_received() == []
        assert server.send_prepared(prepare_revelation(ActionRevelation.of(FEED, "a", {}))) is False


class TestClientRole:
    """Message Sequencing, client side (reference 4.4): the SDK runs the same class."""

    def client(self) -> FeedmeConversation:
        client = FeedmeConversation(Role.CLIENT)
        client.send(Handshake(["0.1"]))
        client.receive_text(frame(HandshakeResponse.accepted("0.1")))
        client.events_received(), client.data_to_send()
        return client

    def test_handshake(self) -> None:
        client = FeedmeConversation(Role.CLIENT)
        assert client.pending_timeouts() == []
        with pytest.raises(LocalProtocolError):
            client.send(Action("a", {}, "1"))
        client.send(Handshake(["0.1"]))
        assert client.state is ConversationState.HANDSHAKING
        client.receive_text(frame(HandshakeResponse.accepted("0.1")))
        assert client.state is ConversationState.INITIATED and client.version == "0.1"

    def test_unoffered_version_is_a_violation(self) -> None:
        client = FeedmeConversation(Role.CLIENT)
        client.send(Handshake(["0.1"]))
        client.data_to_send()
        client.receive_text(frame(HandshakeResponse.accepted("0.2")))
        [event] = client.events_received()
        assert isinstance(event, PeerViolated)
        assert client.data_to_send() == []  # clients never send ViolationResponse

    def test_rejected_handshake(self) -> None:
        client = FeedmeConversation(Role.CLIENT)
        client.send(Handshake(["0.1"]))
        client.receive_text(frame(HandshakeResponse.rejected()))
        assert client.state is ConversationState.NOT_INITIATED

    def test_actions(self) -> None:
        client = self.client()
        client.send(Action("a", {}, "1"))
        with pytest.raises(LocalProtocolError):
            client.send(Action("a", {}, "1"))
        client.receive_text(frame(ActionResponse.ok("2", {})))
        assert isinstance(client.events_received()[0], PeerViolated)
        client.receive_text(frame(ActionResponse.ok("1", {})))
        assert client.events_received() == [ActionResponse.ok("1", {})]
        assert not client.pending_callbacks

    def test_feed_lifecycle(self) -> None:
        client = self.client()
        client.send(FeedOpen(FEED.name, FEED.args_dict()))
        assert client.feed_state(FEED) is FeedState.OPENING
        client.receive_text(frame(ActionRevelation.of(FEED, "a", {})))
        assert isinstance(client.events_received()[0], PeerViolated)  # not open yet
        client.receive_text(frame(FeedOpenResponse.ok(FEED, {"n": 0})))
        assert client.is_open(FEED)
        revelation = ActionRevelation.of(
            FEED, "a", {}, [Delta(DeltaOperation.INCREMENT, ("n",), 1)]
        )
        client.receive_text(frame(revelation))
        assert client.events_received()[-1] == revelation
        client.send(FeedClose(FEED.name, FEED.args_dict()))
        client.receive_text(frame(revelation))  # legal while closing
        client.receive_text(frame(FeedTermination.of(FEED, "X")))
        assert client.feed_state(FEED) is FeedState.TERMINATED
        client.receive_text(frame(FeedCloseResponse.of(FEED)))
        assert client.feed_state(FEED) is FeedState.CLOSED

    def test_termination_of_open_feed_closes_it(self) -> None:
        client = self.client()
        client.send(FeedOpen(FEED.name, FEED.args_dict()))
        client.receive_text(frame(FeedOpenResponse.ok(FEED, {})))
        client.receive_text(frame(FeedTermination.of(FEED, "X")))
        assert client.feed_state(FEED) is FeedState.CLOSED
