"""Property tests of the consent validators and service inputs: whatever a client sends, the
answer is a value or a ``TidingsError`` (never another exception), and what is accepted fits
the bounds."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.core.consent import (
    MAX_PERMISSIONS,
    ConsentService,
    parse_features,
    parse_language_map,
    parse_permissions,
)
from tidings.core.consent_model import Level
from tidings.core.errors import TidingsError
from tidings.core.grants import covers
from tidings.store.memory import MemoryStore
from tidings.store.sqlite import SqliteStore

ANY_TEXT = st.text(st.characters(exclude_categories=[]), max_size=20)
"""Lone surrogates included: they cannot be stored, so they must be refused."""
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
RESOURCES = (
    st.sampled_from(["presence", "account", "messages", "feed:a*", "feed:x"])
    | st.text(max_size=12).map(lambda s: "feed:" + s)
    | st.text(max_size=12)
)
LEVELS = st.sampled_from(["read", "contribute", "manage"]) | st.text(max_size=8)
PERMISSION = st.fixed_dictionaries({"resource": RESOURCES, "level": LEVELS}) | JSON
PERMISSIONS = st.lists(PERMISSION, max_size=70) | JSON
NOW = 1_764_500_000.0


def outcome(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except TidingsError as error:
        return error


@given(PERMISSIONS)
def test_permissions_parse_or_fail_cleanly(value: Any) -> None:
    parsed = outcome(parse_permissions, value)
    if not isinstance(parsed, TidingsError):
        assert 1 <= len(parsed) <= MAX_PERMISSIONS
        assert len({p.resource for p in parsed}) == len(parsed)
        assert all(isinstance(p.level, Level) for p in parsed)


@given(st.dictionaries(st.text(max_size=4), st.text(max_size=40) | JSON, max_size=35) | JSON)
def test_language_maps_parse_or_fail_cleanly(value: Any) -> None:
    parsed = outcome(parse_language_map, value, "consent")
    if not isinstance(parsed, TidingsError):
        assert 1 <= len(parsed) <= 32
        assert all(len(k) in (2, 3) and k.islower() for k in parsed)


@given(st.dictionaries(st.text(max_size=16), JSON, max_size=4) | JSON)
def test_features_parse_or_fail_cleanly(value: Any) -> None:
    parsed = outcome(parse_features, value)
    if not isinstance(parsed, TidingsError):
        assert set(parsed) == {"chat", "system_messaging"}


@given(PERMISSIONS, st.text(max_size=20), st.sampled_from(list(Level)))
def test_covers_never_raises(value: Any, name: str, level: Level) -> None:
    parsed = outcome(parse_permissions, value)
    if not isinstance(parsed, TidingsError):
        for permission in parsed:
            assert isinstance(covers(permission, "feed:" + name, level), bool)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    app_code=JSON | st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True),
    display_name=JSON,
    consent=JSON,
    permissions=PERMISSIONS,
    mode=st.sampled_from(["single-use", "open-link"]) | JSON,
    features=JSON,
    expires_at=st.none() | st.floats() | st.integers() | JSON,
)
def test_create_invite_never_fails_with_anything_but_tidings_errors(**args: Any) -> None:
    async def run() -> None:
        service = ConsentService(MemoryStore(), lambda: NOW)
        try:
            invite, token = await service.create_invite("alice@x", **args)
        except TidingsError:
            return
        assert (await service.read_offer(token)).id == invite.id

    asyncio.run(run())


@contextlib.asynccontextmanager
async def sqlite_store() -> AsyncIterator[SqliteStore]:
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder))
        store.open(asyncio.get_running_loop())
        try:
            yield store
        finally:
            store.close()


@contextlib.asynccontextmanager
async def memory_store() -> AsyncIterator[MemoryStore]:
    yield MemoryStore()


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    text=JSON,
    level=JSON,
    title=JSON,
    ack=JSON,
    token=JSON,
    since=JSON,
    granted=PERMISSIONS,
    adapter=st.sampled_from([memory_store, sqlite_store]),
)
def test_relationship_inputs_never_fail_with_anything_but_tidings_errors(
    text: Any,
    level: Any,
    title: Any,
    ack: Any,
    token: Any,
    since: Any,
    granted: Any,
    adapter: Any,
) -> None:
    async def run() -> None:
        async with adapter() as store:
            await exercise(ConsentService(store, lambda: NOW))

    async def exercise(service: ConsentService) -> None:
        _, good = await service.create_invite(
            "alice@x",
            app_code="a",
            display_name="A",
            consent={"en": "x"},
            permissions=[{"resource": "presence", "level": "read"}],
            mode="open-link",
        )
        calls = [
            service.read_offer(token),
            service.accept(good, "bob@x", granted=granted),
            service.refuse(token, "carol@x", reason=text),
        ]
        for call in calls:
            with contextlib.suppress(TidingsError):
                await call
        relationship = await service.accept(good, "dave@x")
        calls = [
            service.chat(relationship.id, "dave@x", text),
            service.alert(relationship.id, "dave@x", level=level, title=title, body=title),
            service.ack(str(text), "alice@x", ack),
            service.relationship(str(text), "alice@x"),
            service.invite(str(text), "alice@x"),
            service.invalidate(str(text), "alice@x"),
            service.decide_scope(str(text), "dave@x", accept=True),
            service.inbox("dave@x", since=since),
            service.chat_history(relationship.id, "alice@x", since=since, limit=since),
            service.request_scope(relationship.id, "alice@x", granted, message=title),
            service.revoke(relationship.id, "dave@x", reason=text),
        ]
        for call in calls:
            with contextlib.suppress(TidingsError):
                await call

    asyncio.run(run())
