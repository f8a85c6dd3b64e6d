"""The sequencing tables themselves, and random conversations that keep invariants."""

from __future__ import annotations

import json

from feedme_strategies import json_objects
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import tidings.protocol.feedme as feedme
from tidings.protocol.feedme import (
    CONVERSATION_TRANSITIONS,
    FEED_TRANSITIONS,
    Action,
    ActionResponse,
    ActionRevelation,
    ConversationState,
    FeedClose,
    FeedCloseResponse,
    FeedKey,
    FeedmeConversation,
    FeedOpen,
    FeedOpenResponse,
    FeedState,
    FeedTermination,
    Handshake,
    LocalProtocolError,
    PeerViolated,
    Role,
    encode_message,
)


def test_tables_cover_every_role_and_state() -> None:
    for role in Role:
        assert set(CONVERSATION_TRANSITIONS[role]) == set(ConversationState)
        assert set(FEED_TRANSITIONS[role]) == set(FeedState)
        assert CONVERSATION_TRANSITIONS[role][ConversationState.CLOSED] == {}


def test_server_feed_table_matches_reference_4_3() -> None:
    table = FEED_TRANSITIONS[Role.SERVER]
    assert table[FeedState.CLOSED] == {FeedOpen: FeedState.OPENING}
    assert table[FeedState.OPENING] == {
        (FeedOpenResponse, True): FeedState.OPEN,
        (FeedOpenResponse, False): FeedState.CLOSED,
    }
    assert table[FeedState.OPEN] == {
        FeedClose: FeedState.CLOSING,
        ActionRevelation: FeedState.OPEN,
        FeedTermination: FeedState.TERMINATED,
    }
    assert table[FeedState.CLOSING] == {FeedCloseResponse: FeedState.CLOSED}
    assert table[FeedState.TERMINATED] == {
        FeedOpen: FeedState.OPENING,
        FeedClose: FeedState.CLOSING,
    }


def test_only_initiated_conversations_carry_feed_messages() -> None:
    for role in Role:
        for state, row in CONVERSATION_TRANSITIONS[role].items():
            if state is not ConversationState.INITIATED:
                assert not {FeedOpen, FeedClose, Action, ActionRevelation} & set(row)


def test_exports_are_exactly_the_public_names() -> None:
    public = {name for name in vars(feedme) if not name.startswith("_")}
    assert sorted(feedme.__all__) == sorted(public)
    assert len(set(feedme.__all__)) == len(feedme.__all__)


FEEDS = [FeedKey.of("A"), FeedKey.of("A", {"x": "1"}), FeedKey.of("B")]
CALLBACKS = ["1", "2"]


class ServerConversationMachine(RuleBasedStateMachine):
    """Random client frames and server replies; invariants must always hold."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.server = FeedmeConversation(
            clock=lambda: self.now, termination_window=5.0, handshake_timeout=0
        )
        self.handshook = False

    def _receive(self, message: object) -> None:
        self.server.receive_text(encode_message(message))  # type: ignore[arg-type]
        self._drain()

    def _drain(self) -> None:
        for event in self.server.events_received():
            if isinstance(event, PeerViolated):
                assert event.error.case.value == event.error.diagnostics["Problem"]
        for payload in self.server.data_to_send():
            message = json.loads(payload)
            assert message["MessageType"] != "FeedAction"
            if message["MessageType"] == "HandshakeResponse" and message["Success"]:
                assert set(message) == {"MessageType", "Success", "Version"}

    @rule(versions=st.lists(st.sampled_from(["0.1", "9"]), min_size=1, max_size=2))
    def handshake(self, versions: list[str]) -> None:
        self._receive(Handshake(versions))

    @rule()
    def accept(self) -> None:
        if self.server.state is ConversationState.HANDSHAKING:
            self.server.send(self.server.accept_handshake())
            self._drain()

    @rule(callback=st.sampled_from(CALLBACKS), args=json_objects)
    def action(self, callback: str, args: dict[str, object]) -> None:
        self._receive(Action("a", args, callback))

    @rule(callback=st.sampled_from(CALLBACKS), ok=st.booleans())
    def respond(self, callback: str, ok: bool) -> None:
        message = ActionResponse.ok(callback, {}) if ok else ActionResponse.error(callback, "E")
        if (
            callback in self.server.pending_callbacks
            and self.server.state is ConversationState.INITIATED
        ):
            self.server.send(message)
        else:
            try:
                self.server.send(message)
            except LocalProtocolError:
                pass
            else:
                raise AssertionError("answered an Action that was not outstanding")
        self._drain()

    @rule(feed=st.sampled_from(FEEDS))
    def feed_open(self, feed: FeedKey) -> None:
        self._receive(FeedOpen(feed.name, feed.args_dict()))

    @rule(feed=st.sampled_from(FEEDS))
    def feed_close(self, feed: FeedKey) -> None:
        self._receive(FeedClose(feed.name, feed.args_dict()))

    @rule(feed=st.sampled_from(FEEDS), ok=st.booleans())
    def open_response(self, feed: FeedKey, ok: bool) -> None:
        message = FeedOpenResponse.ok(feed, {}) if ok else FeedOpenResponse.error(feed, "E")
        before = self.server.feed_state(feed)
        try:
            self.server.send(message)
        except LocalProtocolError:
            assert before is not FeedState.OPENING
            assert self.server.feed_state(feed) is before
        else:
            assert before is FeedState.OPENING
        self._drain()

    @rule(feed=st.sampled_from(FEEDS))
    def close_response(self, feed: FeedKey) -> None:
        before = self.server.feed_state(feed)
        try:
            self.server.send(FeedCloseResponse.of(feed))
        except LocalProtocolError:
            assert before is not FeedState.CLOSING
        else:
            assert before is FeedState.CLOSING
        self._drain()

    @rule(feed=st.sampled_from(FEEDS))
    def reveal(self, feed: FeedKey) -> None:
        was_open = self.server.is_open(feed)
        queued = self.server.send_prepared(
            feedme.prepare_revelation(ActionRevelation.of(feed, "a", {}))
        )
        assert queued is was_open
        self._drain()

    @rule(feed=st.sampled_from(FEEDS))
    def terminate(self, feed: FeedKey) -> None:
        before = self.server.feed_state(feed)
        message = self.server.terminate_feed(feed, "T")
        assert (message is None) is (before in (FeedState.CLOSED, FeedState.TERMINATED))
        assert self.server.feed_state(feed) in (FeedState.CLOSED, FeedState.TERMINATED)
        self._drain()

    @rule(seconds=st.floats(min_value=0, max_value=10))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.server.expire(self.now)
        self._drain()

    @rule(junk=st.text(max_size=20))
    def junk(self, junk: str) -> None:
        self.server.receive_text(junk)
        self._drain()

    @invariant()
    def invariants(self) -> None:
        server = self.server
        if server.state is not ConversationState.INITIATED:
            assert not server.feeds()
            assert not server.pending_callbacks
        assert FeedState.CLOSED not in server.feeds().values()
        windows = {t.feed for t in server.pending_timeouts() if t.feed is not None}
        terminated = {f for f, s in server.feeds().items() if s is FeedState.TERMINATED}
        assert windows == terminated
        for timeout in server.pending_timeouts():
            assert timeout.deadline > self.now
        if server.state is ConversationState.CLOSED:
            return
        if server.state is not ConversationState.NOT_INITIATED:
            assert server.version == "0.1"


ServerConversationMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None
)
TestServerConversation = ServerConversationMachine.TestCase
