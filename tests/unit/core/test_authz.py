"""The authorization matrix: every actor x resource x method, pinned, over a real roster (SQLite).

Actors, seen from the owner ``owner@localhost``:
- owner: the owner itself
- friend: in the owner's contacts (presence shared), no delegation
- hidden: in the owner's contacts with ``sharePresence: false``
- delegate: delegated messages (not commands) by the owner
- stranger: nothing to do with the owner
- anonymous: no identity at all (a Feedme client without a token)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.core.grants_fake import FakeGrants
from tidings.core.authz import Authorizer, Method, NoGrants, Resource
from tidings.core.errors import ErrorId, Forbidden
from tidings.core.roster import RosterService
from tidings.core.trust import TrustCircles
from tidings.store.sqlite import SqliteStore

OWNER = "owner@localhost"
ACTORS = {
    "owner": OWNER,
    "friend": "friend@localhost",
    "hidden": "hidden@localhost",
    "delegate": "delegate@localhost",
    "stranger": "stranger@localhost",
    "anonymous": None,
}
OK = None

# (resource, method) -> {actor: None when allowed, else the error id}
ANYONE_ELSE_FORBIDDEN = {
    "owner": OK,
    "friend": ErrorId.FORBIDDEN,
    "hidden": ErrorId.FORBIDDEN,
    "delegate": ErrorId.FORBIDDEN,
    "stranger": ErrorId.FORBIDDEN,
    "anonymous": ErrorId.FORBIDDEN,
}
MATRIX: dict[tuple[Resource, Method], dict[str, ErrorId | None]] = {
    **{
        (resource, method): ANYONE_ELSE_FORBIDDEN
        for resource in (
            Resource.ACCOUNT,
            Resource.CONTACTS,
            Resource.DELEGATIONS,
            Resource.SESSIONS,
            Resource.APPS,
        )
        for method in (Method.READ, Method.WRITE, Method.DELETE, Method.SUBSCRIBE)
    },
    **{
        (Resource.PRESENCE, method): {
            "owner": OK,
            "friend": OK,
            "hidden": ErrorId.NOT_SHARED,
            "delegate": ErrorId.NOT_SHARED,
            "stranger": ErrorId.NOT_SHARED,
            "anonymous": ErrorId.FORBIDDEN,
        }
        for method in (Method.READ, Method.SUBSCRIBE)
    },
    **{(Resource.PRESENCE, method): ANYONE_ELSE_FORBIDDEN for method in (Method.WRITE,)},
    # the owner has no account saying otherwise: it accepts messages (and lookups) from anyone
    **{
        (Resource.KEYS, method): {**dict.fromkeys(ACTORS, OK), "anonymous": ErrorId.FORBIDDEN}
        for method in (Method.READ, Method.SUBSCRIBE)
    },
    **{(Resource.KEYS, method): ANYONE_ELSE_FORBIDDEN for method in (Method.WRITE, Method.DELETE)},
    (Resource.KEY_OWNERS, Method.READ): {
        **dict.fromkeys(ACTORS, OK),
        "anonymous": ErrorId.FORBIDDEN,
    },
    (Resource.MESSAGES, Method.SEND): {
        "owner": OK,
        "friend": ErrorId.NOT_DELEGATED,
        "hidden": ErrorId.NOT_DELEGATED,
        "delegate": OK,
        "stranger": ErrorId.NOT_DELEGATED,
        "anonymous": ErrorId.FORBIDDEN,
    },
    (Resource.COMMANDS, Method.SEND): {
        "owner": OK,
        "friend": ErrorId.NOT_DELEGATED,
        "hidden": ErrorId.NOT_DELEGATED,
        "delegate": ErrorId.NOT_DELEGATED,  # delegated messages only
        "stranger": ErrorId.NOT_DELEGATED,
        "anonymous": ErrorId.FORBIDDEN,
    },
}


@pytest.fixture
async def authz(tmp_path: Path) -> AsyncIterator[Authorizer]:
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    trust = TrustCircles(store, store)
    roster = RosterService(store, lambda text: text, changed=trust.forget)
    await roster.put_contact(OWNER, {"identity": "friend@localhost"}, merge=False)
    await roster.put_contact(
        OWNER, {"identity": "hidden@localhost", "sharePresence": False}, merge=False
    )
    await roster.put_delegation(
        OWNER, {"target": "delegate@localhost", "envelopeTypes": ["message"]}
    )
    yield Authorizer(roster, trust, api_token="s3cret")
    store.close()


CASES = [
    (resource, method, actor, expected)
    for (resource, method), row in MATRIX.items()
    for actor, expected in row.items()
]


@pytest.mark.parametrize(
    ("resource", "method", "actor", "expected"),
    CASES,
    ids=[f"{r}-{m}-{a}" for r, m, a, _ in CASES],
)
async def test_matrix(authz, resource, method, actor, expected):
    if expected is None:
        await authz.check(ACTORS[actor], resource, method, OWNER)
        assert await authz.allows(ACTORS[actor], resource, method, OWNER)
    else:
        with pytest.raises(Forbidden) as refusal:
            await authz.check(ACTORS[actor], resource, method, OWNER)
        assert refusal.value.error_id is expected
        assert not await authz.allows(ACTORS[actor], resource, method, OWNER)


@pytest.mark.parametrize(("public", "actor"), [(True, None), (True, "a@b"), (False, "a@b")])
async def test_feeds_open_to_identities_and_public_ones_to_all(authz, public, actor):
    await authz.check(actor, Resource.FEEDS, Method.READ, public=public)


async def test_a_private_feed_refuses_a_client_without_an_identity(authz):
    with pytest.raises(Forbidden):
        await authz.check(None, Resource.FEEDS, Method.READ, public=False)


@pytest.mark.parametrize(
    "header", [None, "", "s3cret", "Bearer ", "Bearer s3cre", "Bearer s3cret ", "bearer s3cret"]
)
def test_the_bearer_token_must_match_exactly(authz, header):
    with pytest.raises(Forbidden):
        authz.bearer(header)


def test_the_bearer_token(authz):
    authz.bearer("Bearer s3cret")


def test_without_a_token_the_server_api_is_closed(tmp_path):
    closed = Authorizer(RosterService(None, str), None, api_token=None)  # type: ignore[arg-type]
    with pytest.raises(Forbidden) as refusal:
        closed.bearer("Bearer ")
    assert "api_token" in refusal.value.message


async def test_keys_of_an_account_closed_to_strangers_only_its_accepted_contacts_read(tmp_path):
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    try:
        trust = TrustCircles(store, store)
        roster = RosterService(store, lambda text: text, changed=trust.forget)
        authz = Authorizer(roster, trust)
        await store.create_account("owner", None)
        await store.create_account("friend", None)  # only accounts are friends
        await roster.put_contact(OWNER, {"identity": "friend@localhost"}, merge=False)
        await roster.put_contact(
            OWNER, {"identity": "asked@localhost", "isPending": True}, merge=False
        )
        assert await authz.allows("stranger@localhost", Resource.KEYS, Method.READ, OWNER)
        await store.update_account("owner", profile={"allowUnknownSender": False})
        trust.forget(OWNER)
        for actor in (OWNER, "friend@localhost"):
            await authz.check(actor, Resource.KEYS, Method.READ, OWNER)
        for actor in ("stranger@localhost", "asked@localhost"):
            with pytest.raises(Forbidden) as refusal:
                await authz.check(actor, Resource.KEYS, Method.SUBSCRIBE, OWNER)
            assert refusal.value.error_id is ErrorId.NOT_SHARED
        await roster.delete_contact(OWNER, "friend@localhost")  # forgets the circle itself
        assert not await authz.allows("friend@localhost", Resource.KEYS, Method.READ, OWNER)
    finally:
        store.close()


# -- grants (consent): an owner's feeds, presence and account, through a GrantChecker ---------

GRANTEE = "grantee@localhost"
CONTRIBUTOR = "contributor@localhost"
GRANTED_ACTORS = {
    "owner": OWNER,
    "grantee": GRANTEE,  # feed:heart-* read, presence read, account read
    "contributor": CONTRIBUTOR,  # feed:heart-rate contribute
    "friend": "friend@localhost",  # a contact sharing presence, nothing granted
    "stranger": "stranger@localhost",
    "anonymous": None,
}
NOT_GRANTED = ErrorId.NOT_GRANTED
# (resource, method, feed) -> {actor: None when allowed, else the error id}
GRANT_MATRIX: dict[tuple[Resource, Method, str | None], dict[str, ErrorId | None]] = {
    **{
        (Resource.OWNER_FEEDS, method, "heart-rate"): {
            "owner": OK,
            "grantee": OK,
            "contributor": OK,  # contribute includes read
            "friend": NOT_GRANTED,
            "stranger": NOT_GRANTED,
            "anonymous": ErrorId.FORBIDDEN,
        }
        for method in (Method.READ, Method.SUBSCRIBE)
    },
    (Resource.OWNER_FEEDS, Method.WRITE, "heart-rate"): {
        "owner": OK,
        "grantee": NOT_GRANTED,  # read only
        "contributor": OK,
        "friend": NOT_GRANTED,
        "stranger": NOT_GRANTED,
        "anonymous": ErrorId.FORBIDDEN,
    },
    (Resource.OWNER_FEEDS, Method.DELETE, "heart-rate"): {
        "owner": OK,
        "grantee": NOT_GRANTED,
        "contributor": NOT_GRANTED,  # manage is above contribute
        "friend": NOT_GRANTED,
        "stranger": NOT_GRANTED,
        "anonymous": ErrorId.FORBIDDEN,
    },
    (Resource.OWNER_FEEDS, Method.READ, "steps"): {  # outside both grants' patterns
        "owner": OK,
        "grantee": NOT_GRANTED,
        "contributor": NOT_GRANTED,
        "friend": NOT_GRANTED,
        "stranger": NOT_GRANTED,
        "anonymous": ErrorId.FORBIDDEN,
    },
    **{
        (Resource.PRESENCE, method, None): {
            "owner": OK,
            "grantee": OK,  # granted, though not a contact
            "contributor": ErrorId.NOT_SHARED,
            "friend": OK,  # the contacts rule still holds
            "stranger": ErrorId.NOT_SHARED,
            "anonymous": ErrorId.FORBIDDEN,
        }
        for method in (Method.READ, Method.SUBSCRIBE)
    },
    (Resource.PRESENCE, Method.WRITE, None): {
        **dict.fromkeys(GRANTED_ACTORS, ErrorId.FORBIDDEN),
        "owner": OK,
    },
    (Resource.ACCOUNT, Method.READ, None): {
        **dict.fromkeys(GRANTED_ACTORS, ErrorId.FORBIDDEN),
        "owner": OK,
        "grantee": OK,
    },
    **{
        (resource, method, None): {**dict.fromkeys(GRANTED_ACTORS, ErrorId.FORBIDDEN), "owner": OK}
        for resource, method in (
            (Resource.ACCOUNT, Method.WRITE),
            (Resource.ACCOUNT, Method.SUBSCRIBE),
            (Resource.CONTACTS, Method.READ),
            (Resource.SESSIONS, Method.READ),
        )
    },
}


@pytest.fixture
async def granted(tmp_path: Path) -> AsyncIterator[Authorizer]:
    store = SqliteStore(tmp_path)
    store.open(asyncio.get_running_loop())
    trust = TrustCircles(store, store)
    roster = RosterService(store, lambda text: text, changed=trust.forget)
    await roster.put_contact(OWNER, {"identity": "friend@localhost"}, merge=False)
    grants = FakeGrants()
    grants.grant(OWNER, GRANTEE, "feed:heart-*", "read")
    grants.grant(OWNER, GRANTEE, "presence", "read")
    grants.grant(OWNER, GRANTEE, "account", "read")
    grants.grant(OWNER, CONTRIBUTOR, "feed:heart-rate", "contribute")
    yield Authorizer(roster, trust, api_token="s3cret", grants=grants)
    store.close()


GRANT_CASES = [
    (resource, method, feed, actor, expected)
    for (resource, method, feed), row in GRANT_MATRIX.items()
    for actor, expected in row.items()
]


@pytest.mark.parametrize(
    ("resource", "method", "feed", "actor", "expected"),
    GRANT_CASES,
    ids=[f"{r}-{m}-{f}-{a}" for r, m, f, a, _ in GRANT_CASES],
)
async def test_grant_matrix(granted, resource, method, feed, actor, expected):
    who = GRANTED_ACTORS[actor]
    if expected is None:
        await granted.check(who, resource, method, OWNER, feed=feed)
        assert await granted.allows(who, resource, method, OWNER, feed=feed)
    else:
        with pytest.raises(Forbidden) as refusal:
            await granted.check(who, resource, method, OWNER, feed=feed)
        assert refusal.value.error_id is expected
        assert not await granted.allows(who, resource, method, OWNER, feed=feed)


async def test_the_grant_checker_is_asked_with_the_consent_vocabulary(granted):
    grants = granted.grants
    assert isinstance(grants, FakeGrants)
    grants.asked.clear()
    await granted.allows(GRANTEE, Resource.OWNER_FEEDS, Method.WRITE, OWNER, feed="heart-rate")
    await granted.allows(GRANTEE, Resource.PRESENCE, Method.SUBSCRIBE, "stranger@localhost")
    await granted.allows(GRANTEE, Resource.ACCOUNT, Method.READ, OWNER)
    assert grants.asked == [
        (GRANTEE, OWNER, "feed:heart-rate", "contribute"),
        (GRANTEE, "stranger@localhost", "presence", "read"),
        (GRANTEE, OWNER, "account", "read"),
    ]


async def test_a_revoked_grant_is_refused_at_the_next_check(granted):
    grants = granted.grants
    assert isinstance(grants, FakeGrants)
    await granted.check(GRANTEE, Resource.OWNER_FEEDS, Method.READ, OWNER, feed="heart-rate")
    grants.revoke(OWNER, GRANTEE)
    for resource, feed in ((Resource.OWNER_FEEDS, "heart-rate"), (Resource.ACCOUNT, None)):
        assert not await granted.allows(GRANTEE, resource, Method.READ, OWNER, feed=feed)


@pytest.mark.parametrize("method", [Method.READ, Method.WRITE])
async def test_the_server_token_acts_on_every_owners_feeds(granted, method):
    await granted.check(None, Resource.OWNER_FEEDS, method, OWNER, feed="x", server=True)


async def test_without_a_grant_checker_nobody_is_granted(authz):
    assert isinstance(authz.grants, NoGrants)
    assert not await authz.grants.allows(GRANTEE, OWNER, "feed:x", "read")
    authz.grants.listen(lambda owner, requester: None)()  # a no-op unsubscribe
    with pytest.raises(Forbidden) as refusal:
        await authz.check(GRANTEE, Resource.OWNER_FEEDS, Method.READ, OWNER, feed="x")
    assert refusal.value.error_id is ErrorId.NOT_GRANTED
    await authz.check(OWNER, Resource.OWNER_FEEDS, Method.WRITE, OWNER, feed="x")


@pytest.mark.parametrize(
    ("resource", "method", "allowed"),
    [
        (Resource.SESSIONS, Method.READ, True),
        (Resource.SESSIONS, Method.DELETE, True),
        (Resource.SESSIONS, Method.WRITE, False),  # acknowledging speaks for the account
        (Resource.MESSAGES, Method.SEND, False),  # the server sends as itself, not as one
        (Resource.KEYS, Method.READ, False),  # keys go to whom their owner accepts
        (Resource.CONTACTS, Method.READ, False),
    ],
)
async def test_the_server_token_may_read_and_delete_sessions_and_nothing_as_an_account(
    authz, resource, method, allowed
):
    checking = authz.check(None, resource, method, "alice@localhost", server=True)
    if allowed:
        await checking
    else:
        with pytest.raises(Forbidden, match="api_token") as refused:
            await checking
        assert refused.value.error_id is ErrorId.FORBIDDEN
