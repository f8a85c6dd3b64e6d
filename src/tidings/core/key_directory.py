"""The key directory: nodes publish their signed node info, others look it up and follow it.

mm-platform's directory answers "which keys does this identity use" and "whose key is this"
(reference 2.7). Here the server keeps it: a node publishes its own node info (the signature is
checked once, here, never again on reads), the latest publications of each key are kept, and
a key is revoked for good by any node of the identity that owns it.

Publication rules, each with its own error id (the edges map them to wire codes):
- the document verifies (``protocol.e2e.verify_node_info``): ``key-malformed`` or
  ``key-bad-signature``;
- it names the publishing session's own node: ``key-node-mismatch``;
- its times are sane now: ``expires`` after now and at most ``MAX_LIFETIME_MS`` ahead,
  ``published`` at most ``MAX_CLOCK_SKEW_MS`` ahead: ``key-expiry-out-of-range``;
- its ``signId`` was not published by another node: ``key-owned-elsewhere``;
- its ``signId`` is not revoked: ``key-revoked``;
- it is newer than the latest accepted publication of its key: ``key-stale`` (a replay).

Lookups follow ``Resource.KEYS`` in ``core.authz`` (whom the owner accepts messages from).
Subscribers (live sessions) get every accepted publication and revocation of the identities they
follow, through a callback, until they unsubscribe or their session goes (``forget``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Protocol

from ..protocol.e2e import E2EError, NodeInfo, verify_node_info
from .authz import Authorizer, Method, Resource
from .errors import Conflict, ErrorId, Forbidden, Invalid, LimitExceeded, NotFound
from .model import KeyPublication
from .ports import KeyDirectoryStore

__all__ = ["MAX_CLOCK_SKEW_MS", "MAX_LIFETIME_MS", "KeyDirectory", "KeyListener"]

log = logging.getLogger("tidings.keys")
DAY_MS: Final = 86_400_000
MAX_LIFETIME_MS: Final = 365 * DAY_MS
"""How far ahead of now a node info may expire."""
MAX_CURRENT_KEYS: Final = 64
"""Current (unrevoked, unexpired) keys an identity may have: what one sealed message names."""
MAX_CLOCK_SKEW_MS: Final = 5 * 60_000
"""How far ahead of the server's clock a node info may say it was published."""

KeyListener = Callable[[str, dict[str, Any]], None]
"""Called with the identity and the changed node info (``revoked`` added on revocation)."""


class Subscriber(Protocol):
    """Who publishes and follows keys: a live session's identity and instance."""

    @property
    def identity(self) -> str: ...

    @property
    def instance(self) -> str: ...


class _KeyedLocks:
    """One lock per key (a signId), dropped when nobody holds or waits for it: publications of
    one key are checked and stored one at a time, different keys in parallel."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            _, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


_E2E_ERRORS: Final = {"bad-signature": ErrorId.KEY_BAD_SIGNATURE}


class KeyDirectory:
    def __init__(
        self,
        store: KeyDirectoryStore,
        authz: Authorizer,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._authz = authz
        self._clock = clock
        self._locks = _KeyedLocks()
        self._subscribers: dict[str, dict[Subscriber, KeyListener]] = {}
        self._followed: dict[Subscriber, set[str]] = {}
        self.announce: KeyListener | None = None
        """Told each change after this node's subscribers (``core.cluster``: the other
        nodes' subscribers hear of it through ``tell``)."""

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- publishing and revoking --------------------------------------------------------------

    async def publish(self, publisher: Subscriber, document: Any) -> dict[str, Any]:
        """Accept the node info ``document`` from the session ``publisher``; the document as
        kept. Raises ``Invalid``, ``Forbidden`` or ``Conflict`` with the ids listed above."""
        info = _verified(document)
        if info.identity != publisher.identity or info.instance != publisher.instance:
            raise Forbidden(
                ErrorId.KEY_NODE_MISMATCH,
                f"The node info is for {info.node}; this session is "
                f"{publisher.identity}/{publisher.instance}",
            )
        self._check_times(info)
        async with self._locks.hold(info.sign_id):
            latest = await self._store.key_publication(info.sign_id)
            if latest is not None:
                if (latest.identity, latest.instance) != (info.identity, info.instance):
                    raise Conflict(
                        ErrorId.KEY_OWNED_ELSEWHERE,
                        f"The key {info.sign_id} belongs to another node",
                    )
                if latest.revoked is not None:
                    raise Conflict(
                        ErrorId.KEY_REVOKED,
                        f"The key {info.sign_id} was revoked: publish a new key",
                    )
                if info.published <= latest.published:
                    raise Conflict(
                        ErrorId.KEY_STALE,
                        f"A publication of {info.sign_id} as recent as {info.published} was "
                        f"accepted already ({latest.published})",
                    )
            else:
                await self._check_room(info.identity)
            kept = info.document()
            await self._store.add_key_publication(
                KeyPublication(
                    info.sign_id,
                    info.identity,
                    info.instance,
                    info.published,
                    info.expires,
                    json.dumps(kept, ensure_ascii=False, separators=(",", ":")),
                )
            )
        await self._changed(info.identity, kept)
        return kept

    def _check_times(self, info: NodeInfo) -> None:
        now = self.now_ms()
        if info.expires <= now:
            raise Invalid(
                ErrorId.KEY_EXPIRY_OUT_OF_RANGE,
                f"The node info expired at {info.expires} (now {now})",
            )
        if info.expires > now + MAX_LIFETIME_MS:
            raise Invalid(
                ErrorId.KEY_EXPIRY_OUT_OF_RANGE,
                f"A node info may expire at most 365 days ahead ({now + MAX_LIFETIME_MS})",
            )
        if info.published > now + MAX_CLOCK_SKEW_MS:
            raise Invalid(
                ErrorId.KEY_EXPIRY_OUT_OF_RANGE,
                f"The node info is published at {info.published}, ahead of the server's clock "
                f"({now}) by more than 5 minutes",
            )

    async def revoke(self, revoker: Subscriber, sign_id: str) -> dict[str, Any]:
        """Revoke ``sign_id`` for good (any node of the identity that owns it); the latest
        publication with ``revoked``. Revoking again changes nothing. ``NotFound`` when it was
        never published, ``Forbidden`` for another identity's key."""
        async with self._locks.hold(sign_id):
            latest = await self._store.key_publication(sign_id)
            if latest is None:
                raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"The key {sign_id} was never published")
            await self._authz.check(revoker.identity, Resource.KEYS, Method.DELETE, latest.identity)
            if latest.revoked is not None:
                return _document(latest)
            revoked = await self._store.revoke_key(
                sign_id, self.now_ms(), f"{revoker.identity}/{revoker.instance}"
            )
        document = _document(latest, revoked)
        await self._changed(latest.identity, document)
        return document

    # -- lookups ------------------------------------------------------------------------------

    async def keys_of(self, viewer: str | None, identity: str) -> list[dict[str, Any]]:
        """The current node infos of ``identity``: one per node (instance), its latest
        published key that is unrevoked and unexpired, as published. A node that published a
        new key (rotation) is listed with that one: senders seal for the new key, while the old
        one still verifies what it signed until it is revoked. ``Forbidden`` (``not-shared``)
        when ``identity`` does not accept ``viewer``."""
        await self._authz.check(viewer, Resource.KEYS, Method.READ, identity)
        now = self.now_ms()
        latest: dict[str, KeyPublication] = {}
        for publication in await self._store.key_publications_of(identity):
            if publication.revoked is not None or publication.expires <= now:
                continue
            known = latest.get(publication.instance)
            if known is None or publication.published > known.published:
                latest[publication.instance] = publication
        return [_document(publication) for publication in latest.values()]

    async def key(self, viewer: str | None, sign_id: str) -> dict[str, Any]:
        """The latest publication of ``sign_id`` (``revoked`` added when revoked), expired or
        not; ``NotFound`` when never published. Any identity may ask (``KEY_OWNERS``): a
        recipient checks the key of a sealed message's sender whoever that sender accepts."""
        latest = await self._store.key_publication(sign_id)
        if latest is None:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"The key {sign_id} was never published")
        await self._authz.check(viewer, Resource.KEY_OWNERS, Method.READ, latest.identity)
        return _document(latest)

    async def history(self, sign_id: str) -> list[dict[str, Any]]:
        """Every accepted publication of ``sign_id``, oldest first (for operators and tests)."""
        return [_document(publication) for publication in await self._store.key_history(sign_id)]

    async def _check_room(self, identity: str) -> None:
        """A new key only while the identity has room: a sealed message names at most
        ``MAX_CURRENT_KEYS`` devices, and nobody may grow the directory without end."""
        now = self.now_ms()
        current = [
            p
            for p in await self._store.key_publications_of(identity)
            if p.revoked is None and p.expires > now
        ]
        if len(current) >= MAX_CURRENT_KEYS:
            raise LimitExceeded(
                ErrorId.KEY_LIMIT_REACHED,
                f"{identity} has {len(current)} current keys, the most there may be: revoke "
                "some (lost or retired devices) first",
            )

    # -- subscriptions ------------------------------------------------------------------------

    async def subscribe(self, subscriber: Subscriber, identity: str, listener: KeyListener) -> None:
        """Call ``listener`` with every change to ``identity``'s keys from now on (replacing
        an earlier subscription of the same subscriber to the same identity)."""
        await self._authz.check(subscriber.identity, Resource.KEYS, Method.SUBSCRIBE, identity)
        self._subscribers.setdefault(identity, {})[subscriber] = listener
        self._followed.setdefault(subscriber, set()).add(identity)

    def unsubscribe(self, subscriber: Subscriber, identity: str) -> None:
        listeners = self._subscribers.get(identity)
        if listeners is not None:
            listeners.pop(subscriber, None)
            if not listeners:
                del self._subscribers[identity]
        followed = self._followed.get(subscriber)
        if followed is not None:
            followed.discard(identity)
            if not followed:
                del self._followed[subscriber]

    def forget(self, subscriber: Subscriber) -> None:
        """The session is gone: drop every subscription it had."""
        for identity in list(self._followed.get(subscriber, ())):
            self.unsubscribe(subscriber, identity)

    def subscriptions(self) -> int:
        """Subscriptions held now (for tests and metrics)."""
        return sum(len(listeners) for listeners in self._subscribers.values())

    async def _changed(self, identity: str, document: dict[str, Any]) -> None:
        await self.tell(identity, document)
        if self.announce is not None:
            self.announce(identity, document)

    async def tell(self, identity: str, document: dict[str, Any]) -> None:
        """Tell this node's subscribers of the identity, each still allowed to look its keys
        up (a contact removed since it subscribed hears nothing more)."""
        listeners = self._subscribers.get(identity)
        if not listeners:
            return
        for subscriber, listener in list(listeners.items()):
            # the change is stored already: one subscriber's failure is logged, not the
            # publisher's error, and does not keep the others from hearing of it
            try:
                allowed = await self._authz.allows(
                    subscriber.identity, Resource.KEYS, Method.READ, identity
                )
                if allowed:
                    listener(identity, document)
            except Exception:
                log.exception("telling %s of %s's keys failed", subscriber.identity, identity)


def _verified(document: Any) -> NodeInfo:
    try:
        return verify_node_info(document)
    except E2EError as exc:
        raise Invalid(
            _E2E_ERRORS.get(exc.kind, ErrorId.KEY_MALFORMED), str(exc), {"kind": exc.kind}
        ) from None


def _document(publication: KeyPublication, revoked: int | None = None) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(publication.document)
    revoked = revoked if revoked is not None else publication.revoked
    if revoked is not None:
        document["revoked"] = revoked
    return document
