"""Accounts' own feeds (``~name/FEED``) at the service level: names, publications, who may
publish and read (through the Authorizer and a fake GrantChecker), and open feeds terminated
with ``ACCESS_REVOKED`` as soon as their reader's grant goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.unit.core.grants_fake import FakeGrants
from tidings.broker.inprocess import InProcessBroker
from tidings.core.authz import Authorizer
from tidings.core.errors import ErrorId, Forbidden, Invalid, NotFound
from tidings.core.feeds import FeedHub
from tidings.core.owner_feeds import (
    ACCESS_REVOKED,
    OwnerFeed,
    OwnerFeeds,
    parse_owner_feed,
    parse_publication,
)
from tidings.protocol.feedme import FeedKey, PreparedRevelation
from tidings.store.memory import MemoryStore

BOB = "bob@localhost"
ANN = "ann@localhost"
CAROL = "carol@localhost"
ACCOUNTS = {BOB, ANN, CAROL}


@dataclass
class Client:
    """A Feedme client as the hub sees it, recording what it is sent."""

    client_id: str
    identity: str | None
    revealed: list[PreparedRevelation] = field(default_factory=list)
    terminated: list[tuple[FeedKey, str, dict[str, Any]]] = field(default_factory=list)

    def reveal(self, revelation: PreparedRevelation) -> bool:
        self.revealed.append(revelation)
        return True

    def terminate(self, feed: FeedKey, error_code: str, error_data: dict[str, Any]) -> None:
        self.terminated.append((feed, error_code, error_data))

    def terminate_all(self, error_code: str, error_data: dict[str, Any]) -> None:
        raise AssertionError("not used")

    def disconnect(self) -> None:
        raise AssertionError("not used")


class Roster:
    async def shares_presence_with(self, owner: str, viewer: str) -> bool:
        return False

    async def is_delegate(self, owner: str, delegate: str, envelope_type: str) -> bool:
        return False


class Trust:
    async def accepts(self, sender: str, recipient: str) -> bool:
        return True


@dataclass
class World:
    grants: FakeGrants
    hub: FeedHub
    feeds: OwnerFeeds

    def client(self, client_id: str, identity: str | None) -> Client:
        client = Client(client_id, identity)
        self.hub.connected(client)
        return client

    async def open(self, client: Client, feed_name: str) -> dict[str, Any]:
        key = FeedKey.of(feed_name)
        opening = await self.feeds.open(client.identity, key)
        self.hub.feed_opened(client.client_id, key)
        self.feeds.opened(opening, client.identity)
        return opening.document


@pytest.fixture
def world() -> World:
    grants = FakeGrants()
    authz = Authorizer(Roster(), Trust(), api_token="s3cret", grants=grants)
    hub = FeedHub(MemoryStore(), InProcessBroker())

    async def exists(identity: str) -> bool:
        return identity in ACCOUNTS

    feeds = OwnerFeeds(hub, authz, "localhost", exists)
    feeds.start()
    return World(grants, hub, feeds)


# -- names and publications -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "owner", "name"),
    [
        ("~bob/heart-rate", BOB, "heart-rate"),
        ("~Bob/x", BOB, "x"),  # account names compare in lower case
        ("~b.o_b-1/A.b_c-9", "b.o_b-1@localhost", "A.b_c-9"),
        ("~bob/" + "x" * 128, BOB, "x" * 128),
    ],
)
def test_owner_feed_names(text, owner, name):
    feed = parse_owner_feed(text, "localhost")
    assert feed == OwnerFeed(owner, name)
    assert feed.feed_name == text.lower() if text.startswith("~Bob") else feed.feed_name == text


@pytest.mark.parametrize(
    "text",
    [
        "~bob",
        "~bob/",
        "~/x",
        "~bob/x/y",
        "~bob/*",
        "~bob/heart*",
        "~bob/.hidden",
        "~bob/" + "x" * 129,
        "~" + "b" * 65 + "/x",
        "~bo b/x",
        "bob/x",
        "~bob/x y",
    ],
)
def test_malformed_owner_feed_names_are_invalid(text):
    with pytest.raises(Invalid) as refusal:
        parse_owner_feed(text, "localhost")
    assert refusal.value.error_id is ErrorId.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "document",
    [
        {"action_name": "", "feed_data": {}},
        {"action_name": "x" * 257, "feed_data": {}},
        {"action_name": "a"},  # neither deltas nor feed_data
        {"action_name": "a", "feed_data": {}, "deltas": []},  # both
        {"action_name": "a", "feed_data": {}, "extra": 1},
        {"action_name": "a", "deltas": [{"Operation": "Fly", "Path": []}]},
        {"action_name": "a", "feed_data": {"x": float("nan")}},
        {"action_name": "a", "feed_data": {}, "feed_args": {"n": 1}},
        [],
    ],
)
def test_malformed_publications_are_invalid(document):
    with pytest.raises(Invalid) as refusal:
        parse_publication(document)
    assert refusal.value.error_id is ErrorId.INVALID_ARGUMENT


# -- publish and read -------------------------------------------------------------------------

SET_BPM = parse_publication({"action_name": "beat", "feed_data": {"bpm": 61}})


async def test_the_owner_publishes_and_reads_its_feed(world):
    feed = world.feeds.of("bob", "heart-rate")
    assert await world.feeds.read(BOB, feed) == {}  # never published
    revealed = await world.feeds.publish(BOB, feed, SET_BPM)
    assert revealed.feed == FeedKey.of("~bob/heart-rate")
    assert await world.feeds.read(BOB, feed) == {"bpm": 61}


async def test_strangers_and_clients_without_identity_are_refused(world):
    feed = world.feeds.of("bob", "heart-rate")
    await world.feeds.publish(BOB, feed, SET_BPM)
    for call in (world.feeds.read, lambda *a: world.feeds.publish(*a, SET_BPM)):
        with pytest.raises(Forbidden) as refusal:
            await call(ANN, feed)
        assert refusal.value.error_id is ErrorId.NOT_GRANTED
        with pytest.raises(Forbidden) as anonymous:
            await call(None, feed)
        assert anonymous.value.error_id is ErrorId.FORBIDDEN


async def test_a_grantee_reads_and_a_contributor_publishes(world):
    feed = world.feeds.of("bob", "heart-rate")
    world.grants.grant(BOB, ANN, "feed:heart-*", "read")
    world.grants.grant(BOB, CAROL, "feed:heart-rate", "contribute")
    await world.feeds.publish(CAROL, feed, SET_BPM)
    assert await world.feeds.read(ANN, feed) == {"bpm": 61}
    with pytest.raises(Forbidden) as refusal:
        await world.feeds.publish(ANN, feed, SET_BPM)
    assert refusal.value.error_id is ErrorId.NOT_GRANTED
    with pytest.raises(Forbidden):
        await world.feeds.read(ANN, world.feeds.of("bob", "steps"))


async def test_the_server_publishes_to_accounts_only(world):
    await world.feeds.publish(None, world.feeds.of("bob", "x"), SET_BPM, server=True)
    with pytest.raises(NotFound) as refusal:
        await world.feeds.publish(None, world.feeds.of("nobody", "x"), SET_BPM, server=True)
    assert refusal.value.error_id is ErrorId.ACCOUNT_NOT_FOUND
    guest = "guest-1@localhost"  # signed in, but no account: owns no feeds
    with pytest.raises(NotFound):
        await world.feeds.publish(guest, world.feeds.of("guest-1", "x"), SET_BPM)


async def test_revelations_reach_the_owner_and_grantees_with_the_feed_open(world):
    world.grants.grant(BOB, ANN, "feed:heart-rate")
    bob, ann = world.client("c1", BOB), world.client("c2", ANN)
    await world.open(bob, "~bob/heart-rate")
    await world.open(ann, "~bob/heart-rate")
    revealed = await world.feeds.publish(BOB, world.feeds.of("bob", "heart-rate"), SET_BPM)
    assert revealed.delivered == 2
    assert len(bob.revealed) == len(ann.revealed) == 1


# -- revocation -------------------------------------------------------------------------------


async def test_a_revoked_reader_s_open_feeds_of_that_owner_are_terminated(world):
    world.grants.grant(BOB, ANN, "feed:*")
    world.grants.grant(CAROL, ANN, "feed:*")
    world.grants.grant(BOB, CAROL, "feed:*")
    ann, ann_too = world.client("a1", ANN), world.client("a2", ANN)
    bob, carol = world.client("b", BOB), world.client("c", CAROL)
    for client, feed in (
        (ann, "~bob/heart-rate"),
        (ann_too, "~bob/steps"),
        (ann, "~carol/mood"),
        (bob, "~bob/heart-rate"),
        (carol, "~bob/heart-rate"),
    ):
        await world.open(client, feed)
    world.grants.revoke(BOB, ANN)
    await world.feeds.settled()
    assert [(f.name, code) for f, code, _ in ann.terminated] == [
        ("~bob/heart-rate", ACCESS_REVOKED)
    ]
    assert [(f.name, code) for f, code, _ in ann_too.terminated] == [("~bob/steps", ACCESS_REVOKED)]
    data = ann.terminated[0][2]
    assert data["errorId"] == "not-granted" and "heart-rate" in data["message"]
    assert bob.terminated == carol.terminated == []
    assert world.hub.subscribers(FeedKey.of("~bob/heart-rate")) == 2  # bob and carol
    assert world.hub.is_open(FeedKey.of("~carol/mood"), "a1")
    assert world.feeds.terminated == 2


async def test_a_narrowed_grant_terminates_only_what_it_no_longer_covers(world):
    world.grants.grant(BOB, ANN, "feed:*")
    ann = world.client("a", ANN)
    await world.open(ann, "~bob/heart-rate")
    await world.open(ann, "~bob/steps")
    world.grants.revoke(BOB, ANN)  # a scope update: the old grant replaced by a narrower one
    world.grants.grant(BOB, ANN, "feed:heart-*")
    await world.feeds.settled()
    assert [f.name for f, _, _ in ann.terminated] == ["~bob/steps"]


async def test_a_revocation_racing_an_open_still_terminates_it(world):
    """The open was checked before the revocation and answered after it: checked again."""
    world.grants.grant(BOB, ANN, "feed:heart-rate")
    ann = world.client("a", ANN)
    key = FeedKey.of("~bob/heart-rate")
    opening = await world.feeds.open(ANN, key)
    world.grants.revoke(BOB, ANN)
    await world.feeds.settled()  # nothing open yet: nothing to terminate
    assert ann.terminated == []
    world.hub.feed_opened("a", key)
    world.feeds.opened(opening, ANN)
    await world.feeds.settled()
    assert [(f, code) for f, code, _ in ann.terminated] == [(key, ACCESS_REVOKED)]


async def test_after_stop_grant_changes_are_not_followed(world):
    world.grants.grant(BOB, ANN, "feed:x")
    ann = world.client("a", ANN)
    await world.open(ann, "~bob/x")
    await world.feeds.settled()
    world.feeds.stop()
    world.grants.revoke(BOB, ANN)
    await world.feeds.settled()
    assert ann.terminated == []
