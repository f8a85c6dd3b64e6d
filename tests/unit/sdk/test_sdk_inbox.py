"""The inbox: arrival order, which copies to drop, what to acknowledge; and a state machine of
a server that redelivers whatever it has no acknowledgement for."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tidings.protocol.lime import Command, CommandMethod, Message, Notification, Raw
from tidings.sdk import MessageKey, SeenMessages
from tidings.sdk._inbox import Arrival, Inbox, message_key

ALICE = "alice@localhost/a"


def message(message_id: str | None, sender: str = ALICE) -> Message:
    if message_id is None:
        return Message(from_=sender, type="text/plain", content=Raw(b'"x"'))
    return Message(id=message_id, from_=sender, type="text/plain", content=Raw(b'"x"'))


def note(message_id: str) -> Notification:
    return Notification(id=message_id, event="accepted")  # type: ignore[arg-type]


def test_keys_are_sender_and_id() -> None:
    assert message_key(message("m1")) == (ALICE, "m1")
    assert message_key(message(None)) is None
    bare = Message(id="m1", type="text/plain", content=Raw(b'"x"'))
    assert message_key(bare) == ("", "m1")


def test_items_come_out_in_arrival_order_messages_alone_if_asked() -> None:
    inbox = Inbox(SeenMessages())
    inbox.put_other(note("n1"))
    assert inbox.put_message(message("m1")) is Arrival.NEW
    inbox.put_other(Command(id="c1", method=CommandMethod.GET, uri="/x"))
    assert inbox.put_message(message("m2")) is Arrival.NEW
    first = inbox.pop(messages_only=True)
    assert first is not None and first[1] == message("m1")
    out = []
    while (entry := inbox.pop(messages_only=False)) is not None:
        out.append(entry[1].id)
    assert out == ["n1", "c1", "m2"]


def test_copies_are_dropped_until_handed_over_then_re_acknowledged() -> None:
    inbox = Inbox(SeenMessages())
    assert inbox.put_message(message("m1")) is Arrival.NEW
    assert inbox.put_message(message("m1")) is Arrival.WAITING
    assert inbox.put_message(message("m1", "carol@localhost/c")) is Arrival.NEW
    entry = inbox.pop(messages_only=True)
    assert entry is not None
    assert inbox.put_message(message("m1")) is Arrival.WAITING  # popped, not handed over yet
    assert inbox.hand_over((ALICE, "m1"), auto_ack=True)
    assert inbox.put_message(message("m1")) is Arrival.SEEN


def test_held_messages_wait_for_their_acknowledgement() -> None:
    inbox = Inbox(SeenMessages())
    inbox.put_message(message("m1"))
    inbox.pop(messages_only=True)
    assert not inbox.hand_over((ALICE, "m1"), auto_ack=False)
    assert inbox.unacknowledged == {(ALICE, "m1")}
    assert inbox.put_message(message("m1")) is Arrival.WAITING
    inbox.acknowledge((ALICE, "m1"))
    assert inbox.unacknowledged == frozenset()
    assert inbox.put_message(message("m1")) is Arrival.SEEN


def test_messages_without_id_always_come_through() -> None:
    inbox = Inbox(SeenMessages())
    assert inbox.put_message(message(None)) is Arrival.NEW
    assert inbox.put_message(message(None)) is Arrival.NEW
    assert len(inbox) == 2


def test_a_released_message_is_new_again_and_a_restored_one_keeps_its_place() -> None:
    inbox = Inbox(SeenMessages())
    for message_id in ("m1", "m2", "m3"):
        inbox.put_message(message(message_id))
    first = inbox.pop(messages_only=True)
    second = inbox.pop(messages_only=True)
    assert first is not None and second is not None
    inbox.release((ALICE, "m1"))
    assert inbox.put_message(message("m1")) is Arrival.NEW
    second_message = second[1]
    assert isinstance(second_message, Message)
    inbox.restore(second[0], second_message)
    out = []
    while (entry := inbox.pop(messages_only=True)) is not None:
        out.append(entry[1].id)
    assert out == ["m2", "m3", "m1"]


def test_the_notification_backlog_keeps_the_latest() -> None:
    inbox = Inbox(SeenMessages(), backlog=3)
    for n in range(5):
        inbox.put_other(note(f"n{n}"))
    out = []
    while (entry := inbox.pop(messages_only=False)) is not None:
        out.append(entry[1].id)
    assert out == ["n2", "n3", "n4"]


KEYS = st.tuples(st.sampled_from([ALICE, "carol@localhost/c"]), st.sampled_from("abcdef"))


class RedeliveryMachine(RuleBasedStateMachine):
    """A server that delivers at least once, an inbox, and an application.

    The server keeps every key it has no ``received`` for and may deliver any of them again at
    any time (a reconnection delivers them all). Acknowledgements can be lost on the way, as
    with a connection that drops. Whatever happens, the application gets each key once, in
    first-arrival order, and the server's unacknowledged keys are always ones the client still
    holds, still queues, or has recorded as seen (so a copy will be acknowledged again).
    """

    def __init__(self) -> None:
        super().__init__()
        self.inbox = Inbox(SeenMessages(capacity=100))
        self.server: list[MessageKey] = []  # delivered, not acknowledged, in delivery order
        self.queued: list[MessageKey] = []  # the model of the inbox's message queue
        self.taken: list[MessageKey] = []
        self.held: set[MessageKey] = set()

    def _deliver(self, key: MessageKey) -> None:
        arrival = self.inbox.put_message(message(key[1], key[0]))
        if arrival is Arrival.NEW:
            assert key not in self.taken and key not in self.queued
            self.queued.append(key)
        elif arrival is Arrival.SEEN:
            self._acknowledged(key, lost=False)  # the client acknowledges a copy again
        else:
            assert key in self.queued or key in self.held

    def _acknowledged(self, key: MessageKey, *, lost: bool) -> None:
        if not lost and key in self.server:
            self.server.remove(key)

    @rule(key=KEYS)
    def deliver(self, key: MessageKey) -> None:
        if key not in self.server:
            self.server.append(key)
        self._deliver(key)

    @rule()
    def reconnect(self) -> None:
        for key in list(self.server):
            self._deliver(key)

    @precondition(lambda self: bool(self.queued))
    @rule(auto_ack=st.booleans(), lost=st.booleans())
    def take(self, auto_ack: bool, lost: bool) -> None:
        entry = self.inbox.pop(messages_only=True)
        assert entry is not None
        taken = message_key(entry[1])  # type: ignore[arg-type]
        assert taken == self.queued.pop(0)
        assert taken not in self.taken
        self.taken.append(taken)
        if self.inbox.hand_over(taken, auto_ack=auto_ack):
            self._acknowledged(taken, lost=lost)
        else:
            self.held.add(taken)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), lost=st.booleans())
    def ack(self, data: st.DataObject, lost: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.held)))
        self.held.discard(key)
        self.inbox.acknowledge(key)
        self._acknowledged(key, lost=lost)

    @invariant()
    def the_server_backlog_is_accounted_for(self) -> None:
        assert self.inbox.unacknowledged == self.held
        assert len(self.inbox) == len(self.queued)
        seen = self.inbox.seen
        assert seen is not None
        for key in self.server:
            assert key in self.queued or key in self.held or key in seen


TestRedeliveryMachine = RedeliveryMachine.TestCase
