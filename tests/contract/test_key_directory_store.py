"""The key directory part of the store contract (``core.ports.KeyDirectoryStore``): the
latest publications of each key kept, latest per key wins, revocations kept once; memory and
SQLite alike."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.core.errors import Conflict, ErrorId
from tidings.core.model import KEPT_PUBLICATIONS, KeyPublication

ALICE = "alice@x"


def publication(
    sign_id: str, published: int, identity: str = ALICE, instance: str = "laptop"
) -> KeyPublication:
    document = f'{{"signId":"{sign_id}","published":{published}}}'
    return KeyPublication(sign_id, identity, instance, published, published + 1000, document)


async def test_nothing_published_reads_as_nothing(store: Any) -> None:
    assert await store.key_publication("k1") is None
    assert await store.key_publications_of(ALICE) == []
    assert await store.key_history("k1") == []


async def test_publications_are_kept_and_the_latest_wins(store: Any) -> None:
    await store.add_key_publication(publication("k1", 10))
    await store.add_key_publication(publication("k1", 20))
    await store.add_key_publication(publication("k1", 30))
    with pytest.raises(Conflict) as caught:  # checked in the transaction: exact on every node
        await store.add_key_publication(publication("k1", 25))
    assert caught.value.error_id is ErrorId.KEY_STALE
    assert await store.key_publication("k1") == publication("k1", 30)
    assert [p.published for p in await store.key_history("k1")] == [10, 20, 30]
    assert (await store.key_history("k1"))[0].document == publication("k1", 10).document


async def test_the_same_key_and_time_is_kept_once(store: Any) -> None:
    await store.add_key_publication(publication("k1", 10))
    with pytest.raises(Conflict) as caught:
        await store.add_key_publication(publication("k1", 10, instance="other"))
    assert caught.value.error_id is ErrorId.KEY_STALE
    assert await store.key_history("k1") == [publication("k1", 10)]


async def test_an_identitys_keys_are_the_latest_of_each_in_sign_id_order(store: Any) -> None:
    await store.add_key_publication(publication("k2", 10, instance="phone"))
    await store.add_key_publication(publication("k1", 10))
    await store.add_key_publication(publication("k1", 15))
    await store.add_key_publication(publication("k3", 10, identity="bob@x"))
    assert await store.key_publications_of(ALICE) == [
        publication("k1", 15),
        publication("k2", 10, instance="phone"),
    ]
    assert await store.key_publications_of("bob@x") == [publication("k3", 10, identity="bob@x")]


async def test_a_revocation_is_kept_once_and_shows_on_every_read(store: Any) -> None:
    await store.add_key_publication(publication("k1", 10))
    await store.add_key_publication(publication("k2", 10))
    assert await store.revoke_key("k1", 500, "alice@x/laptop") == 500
    assert await store.revoke_key("k1", 900, "alice@x/phone") == 500  # the first one stays
    latest = await store.key_publication("k1")
    assert latest is not None and latest.revoked == 500
    assert [(p.sign_id, p.revoked) for p in await store.key_publications_of(ALICE)] == [
        ("k1", 500),
        ("k2", None),
    ]
    assert [p.revoked for p in await store.key_history("k1")] == [500]


async def test_a_revoked_key_stays_revoked_after_a_later_publication(store: Any) -> None:
    await store.add_key_publication(publication("k1", 10))
    await store.revoke_key("k1", 50, "alice@x/laptop")
    await store.add_key_publication(publication("k1", 60))  # core refuses this; stores keep
    latest = await store.key_publication("k1")
    assert latest is not None and (latest.published, latest.revoked) == (60, 50)


async def test_a_revocation_given_in_a_publication_is_ignored(store: Any) -> None:
    given = KeyPublication("k1", ALICE, "laptop", 10, 20, "{}", revoked=5)
    await store.add_key_publication(given)
    latest = await store.key_publication("k1")
    assert latest is not None and latest.revoked is None


async def test_only_the_latest_publications_of_a_key_are_kept(store: Any) -> None:
    """A node republishing in a loop (one publication per session) costs bounded storage."""
    for n in range(KEPT_PUBLICATIONS + 3):
        await store.add_key_publication(publication("kk", 1000 + n))
    history = await store.key_history("kk")
    assert [p.published for p in history] == [1000 + n for n in range(3, KEPT_PUBLICATIONS + 3)]
    latest = await store.key_publication("kk")
    assert latest is not None and latest.published == 1000 + KEPT_PUBLICATIONS + 2
