"""Feed fan-out goes through the broker port: two hubs sharing one broker behave as two nodes,
and a hub subscribes to a feed's channel exactly while one of its clients has the feed open."""

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


def node(broker: InProcessBroker) -> FeedHub:
    return FeedHub(MemoryStore(), broker)


def test_a_revelation_reaches_the_clients_of_every_hub_on_the_broker():
    broker = InProcessBroker()
    here, there = node(broker), node(broker)
    a, b = Client("a"), Client("b")
    here.connected(a)
    there.connected(b)
    here.feed_opened("a", SCORES)
    there.feed_opened("b", SCORES)
    delivered = here.reveal(SCORES, "goal", {}, [])
    assert delivered == 2  # in process, the broker counts every hub's deliveries
    assert len(a.revealed) == len(b.revealed) == 1
    assert a.revealed[0] is b.revealed[0]  # serialized once


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
