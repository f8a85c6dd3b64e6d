"""Feed fan-out goes through the broker port: two hubs sharing one broker behave as two nodes
(each hears the other's revelations once, decoded once, and skips its own), and a hub
subscribes to a feed's channel exactly while one of its clients has the feed open."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tidings.broker.inprocess import InProcessBroker
from tidings.core.feeds import FeedHub, feed_channel
from tidings.protocol.feedme import FeedKey, PreparedRevelation
from tidings.store.memory import MemoryStore

SCORES = FeedKey.of("scores", {"game": "g1"})


@dataclass
class Client:
    """A Feedme client as the hub sees it (the gateway's connection implements the same port)."""

    client_id: str
    identity: str | None = None
    revealed: list[PreparedRevelation] = field(default_factory=list)

    def reveal(self, revelation: PreparedRevelation) -> bool:
        self.revealed.append(revelation)
        return True

    def terminate(self, feed: FeedKey, error_code: str, error_data: dict[str, Any]) -> None:
        pass

    def terminate_all(self, error_code: str, error_data: dict[str, Any]) -> None:
        pass

    def disconnect(self) -> None:
        pass


def node(broker: InProcessBroker, *, shared: bool = False) -> FeedHub:
    hub = FeedHub(MemoryStore(), broker)
    hub.shared = shared
    return hub


class Counting(InProcessBroker):
    """Counts publications (the single-node path must make none)."""

    published = 0

    def publish(self, channel: str, message: bytes) -> None:
        Counting.published += 1
        super().publish(channel, message)


def test_a_revelation_reaches_the_clients_of_every_hub_on_the_broker_once():
    broker = InProcessBroker("here")
    here, there = node(broker, shared=True), node(broker.join("there"), shared=True)
    a, b, c = Client("a"), Client("b"), Client("c")
    here.connected(a)
    there.connected(b)
    there.connected(c)
    here.feed_opened("a", SCORES)
    there.feed_opened("b", SCORES)
    there.feed_opened("c", SCORES)
    for goal in range(3):
        delivered = here.reveal(SCORES, "goal", {"n": goal}, [])
        assert delivered == 1  # this node's deliveries; the other node counts its own
    assert [r.message.action_data for r in a.revealed] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [r.payload for r in b.revealed] == [r.payload for r in a.revealed]
    assert b.revealed[0] is c.revealed[0]  # decoded once per node
    assert there.deliveries == 6 and here.deliveries == 3


def test_alone_a_hub_delivers_without_the_broker():
    Counting.published = 0
    hub = node(Counting("alone"))
    a = Client("a")
    hub.connected(a)
    hub.feed_opened("a", SCORES)
    assert hub.reveal(SCORES, "goal", {}, []) == 1
    assert Counting.published == 0


def test_a_hub_drops_what_does_not_decode():
    broker = InProcessBroker("here")
    hub = node(broker, shared=True)
    hub.connected(Client("a"))
    hub.feed_opened("a", SCORES)
    broker.join("there").publish(feed_channel(SCORES), b"there\n{not json")
    assert hub.undecodable == 1 and hub.deliveries == 0


def test_nobody_listening_costs_nothing():
    broker = InProcessBroker()
    hub = node(broker)
    assert hub.reveal(SCORES, "goal", {}, []) == 0
    assert not broker.listening(feed_channel(SCORES))


def test_the_channel_names_the_feed_and_its_arguments_in_a_stable_order():
    one = FeedKey.of("f", {"a": "1", "b": "2"})
    two = FeedKey.of("f", {"b": "2", "a": "1"})
    assert feed_channel(one) == feed_channel(two)
    assert feed_channel(one) != feed_channel(FeedKey.of("f", {"a": "1"}))


opens = st.lists(
    st.tuples(st.sampled_from(["open", "close", "disconnect"]), st.sampled_from("xyz")),
    max_size=30,
)


@given(opens)
def test_a_hub_listens_exactly_while_a_client_has_the_feed_open(steps):
    broker = InProcessBroker()
    hub = node(broker)
    open_by: set[str] = set()
    for client_id in "xyz":
        hub.connected(Client(client_id))
    for action, client_id in steps:
        if action == "open":
            hub.feed_opened(client_id, SCORES)
            open_by.add(client_id)
        elif action == "close":
            hub.feed_closed(client_id, SCORES)
            open_by.discard(client_id)
        else:
            hub.disconnected(client_id)
            hub.connected(Client(client_id))
            open_by.discard(client_id)
        assert broker.listening(feed_channel(SCORES)) == bool(open_by)
        assert hub.subscribers(SCORES) == len(open_by)
