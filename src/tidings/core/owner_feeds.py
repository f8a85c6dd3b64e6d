"""An identity's own feeds, ``~name/FEED``: the data an account can grant others.

``~bob/heart-rate`` belongs to the account ``bob`` of this server. Bob publishes it with his
own credentials (HTTP with his API key, LIME ``set /feeds/heart-rate``); the server keeps its
document like any published feed (same store, same deltas, same ``FeedMd5``). Bob reads it,
and so does whoever bob granted ``feed:heart-rate`` (``read``; ``contribute`` also publishes);
the server's api_token acts as the server and may do both. Every decision is the
``Authorizer``'s (``Resource.OWNER_FEEDS``), which asks the ``GrantChecker``.

A grant that goes takes effect at once on open feeds: the service listens to the grants and,
when what ``owner`` granted ``requester`` changes, re-checks every ``~owner/...`` feed that a
Feedme client of ``requester`` has open and terminates those no longer allowed with
``ACCESS_REVOKED``. A FeedOpen whose check straddles a change is checked again once open, so
a revocation racing an open cannot leave the feed open.

A feed never published has the document ``{}`` (a first delta publication starts from it).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from ..protocol.feedme import Delta, FeedKey, check_json_value
from .accounts import ACCOUNT_NAME
from .authz import Authorizer, Method, Resource
from .errors import ErrorId, Invalid, NotFound, TidingsError
from .feeds import FeedHub, Revealed

log = logging.getLogger("tidings.feeds")

OWNER_MARK: Final = "~"
OWNER_NAME: Final = ACCOUNT_NAME
"""An account name (``core.accounts.ACCOUNT_NAME``)."""
FEED_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""The name of an owner's feed: 1-128 of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit
(no ``/``, no ``*``: grants name feeds with ``*`` patterns)."""
ACCESS_REVOKED: Final = "ACCESS_REVOKED"
"""The Feedme ``FeedTermination`` error code of a feed whose reader lost its grant."""
MAX_ACTION_NAME: Final = 256


def is_owner_feed(feed_name: str) -> bool:
    """Names starting with ``~`` are owners' feeds (and nothing else may use them)."""
    return feed_name.startswith(OWNER_MARK)


@dataclass(frozen=True, slots=True)
class OwnerFeed:
    """``~name/FEED`` parsed: the owner's identity (``name@domain``) and the feed's name."""

    owner: str
    name: str

    @property
    def owner_name(self) -> str:
        return self.owner.partition("@")[0]

    @property
    def feed_name(self) -> str:
        """The Feedme ``FeedName``: ``~name/FEED``."""
        return f"{OWNER_MARK}{self.owner_name}/{self.name}"

    def key(self, args: dict[str, str] | None = None) -> FeedKey:
        return FeedKey.of(self.feed_name, args)


def owner_feed(owner_name: str, name: str, domain: str) -> OwnerFeed:
    """An owner's feed from its parts (an account name, a feed name); raises ``Invalid``."""
    owner_name = owner_name.lower() if isinstance(owner_name, str) else owner_name
    if not isinstance(owner_name, str) or not OWNER_NAME.fullmatch(owner_name):
        raise Invalid(
            ErrorId.INVALID_ARGUMENT,
            f"Invalid owner {owner_name!r} in an owner's feed: an account name (1-64 of "
            "a-z 0-9 . _ -)",
        )
    if not isinstance(name, str) or not FEED_NAME.fullmatch(name):
        raise Invalid(
            ErrorId.INVALID_ARGUMENT,
            f"Invalid feed name {name!r}: use 1-128 of A-Z a-z 0-9 . _ - starting with a "
            "letter or digit",
        )
    return OwnerFeed(f"{owner_name}@{domain}", name)


def parse_owner_feed(feed_name: str, domain: str) -> OwnerFeed:
    """``~name/FEED`` (a Feedme ``FeedName``); raises ``Invalid``."""
    if not is_owner_feed(feed_name):
        raise Invalid(
            ErrorId.INVALID_ARGUMENT, f"{feed_name!r} is not an owner's feed (~name/FEED)"
        )
    owner_name, slash, name = feed_name[len(OWNER_MARK) :].partition("/")
    if not slash:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"An owner's feed is ~name/FEED, not {feed_name!r}")
    return owner_feed(owner_name, name, domain)


class Publication(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An action revealed on a feed, with either deltas or the whole new document (the body of
    ``POST /feeds/.../actions`` and the resource of LIME ``set /feeds/FEED``)."""

    action_name: str
    action_data: dict[str, Any] = {}
    feed_args: dict[str, str] = {}
    deltas: list[Delta] | None = None
    feed_data: dict[str, Any] | None = None


def parse_publication(document: Any) -> Publication:
    """A publication from JSON; raises ``Invalid`` naming what does not fit."""
    try:
        publication = msgspec.convert(document, Publication)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"Invalid publication: {exc}") from None
    if not 1 <= len(publication.action_name) <= MAX_ACTION_NAME:
        raise Invalid(
            ErrorId.INVALID_ARGUMENT, f"action_name must be 1-{MAX_ACTION_NAME} characters"
        )
    if (publication.deltas is None) == (publication.feed_data is None):
        raise Invalid(ErrorId.INVALID_ARGUMENT, "give either deltas or feed_data")
    for field_name, value in (
        ("action_data", publication.action_data),
        ("feed_data", publication.feed_data),
    ):
        if value is not None:
            try:
                check_json_value(value)
            except ValueError as exc:
                raise Invalid(ErrorId.INVALID_ARGUMENT, f"{field_name}: {exc}") from None
    return publication


@dataclass(frozen=True, slots=True)
class Opening:
    """A FeedOpen allowed: the document to answer with, and the grant generation checked."""

    feed: OwnerFeed
    document: dict[str, Any]
    generation: int


class OwnerFeeds:
    def __init__(
        self,
        hub: FeedHub,
        authz: Authorizer,
        domain: str,
        account_exists: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._hub = hub
        self._authz = authz
        self.domain = domain
        self._account_exists = account_exists
        self._generation = 0
        """Bumped on every grant change: an open whose check saw another value re-checks."""
        self._unlisten: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[int]] = set()
        self.terminated = 0
        """Open feeds terminated because their reader's grant went."""

    def start(self) -> None:
        """Listen to grant changes (once)."""
        if self._unlisten is None:
            self._unlisten = self._authz.grants.listen(self.grants_changed)

    def stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    def parse(self, feed_name: str) -> OwnerFeed:
        return parse_owner_feed(feed_name, self.domain)

    def of(self, owner_name: str, name: str) -> OwnerFeed:
        return owner_feed(owner_name, name, self.domain)

    # -- publish and read ----------------------------------------------------------------------

    async def publish(
        self,
        actor: str | None,
        feed: OwnerFeed,
        publication: Publication,
        *,
        server: bool = False,
    ) -> Revealed:
        await self._authz.check(
            actor, Resource.OWNER_FEEDS, Method.WRITE, feed.owner, feed=feed.name, server=server
        )
        if not await self._account_exists(feed.owner):
            raise NotFound(
                ErrorId.ACCOUNT_NOT_FOUND,
                f"There is no account {feed.owner_name!r}: only accounts have feeds",
            )
        return await self._hub.publish(
            feed.key(publication.feed_args),
            publication.action_name,
            publication.action_data,
            deltas=publication.deltas,
            feed_data=publication.feed_data,
        )

    async def read(
        self,
        actor: str | None,
        feed: OwnerFeed,
        args: dict[str, str] | None = None,
        *,
        server: bool = False,
    ) -> dict[str, Any]:
        """The feed's document (``{}`` if never published)."""
        await self._authz.check(
            actor, Resource.OWNER_FEEDS, Method.READ, feed.owner, feed=feed.name, server=server
        )
        document = await self._hub.document(feed.key(args))
        return document if document is not None else {}

    # -- Feedme: open, and termination when a grant goes ---------------------------------------

    async def open(self, actor: str | None, key: FeedKey) -> Opening:
        """Check a FeedOpen of ``key`` by ``actor``; raises ``Invalid`` or ``Forbidden``.
        Call ``opened`` once the feed is open."""
        generation = self._generation
        feed = self.parse(key.name)
        document = await self.read(actor, feed, key.args_dict())
        return Opening(feed, document, generation)

    def opened(self, opening: Opening, client_actor: str | None) -> None:
        """The feed is open: if grants changed while it was being checked, check again."""
        if opening.generation != self._generation and client_actor is not None:
            self._spawn(self.recheck(opening.feed.owner, client_actor))

    def grants_changed(self, owner: str, requester: str) -> None:
        """``GrantChecker.listen``'s callback: re-check ``requester``'s open feeds of ``owner``."""
        self._generation += 1
        self._spawn(self.recheck(owner, requester))

    async def recheck(self, owner: str, requester: str) -> int:
        """Terminate the ``~owner/...`` feeds that ``requester``'s clients have open and may no
        longer read; returns how many were terminated."""
        prefix = f"{OWNER_MARK}{owner.partition('@')[0]}/"
        terminated = 0
        for key, client_id in self._hub.open_feeds(prefix, requester):
            feed = self.parse(key.name)
            try:
                allowed = await self._authz.allows(
                    requester, Resource.OWNER_FEEDS, Method.READ, feed.owner, feed=feed.name
                )
            except TidingsError:
                allowed = False  # fail closed: a grant that cannot be confirmed is not kept
            if allowed:
                continue
            if not self._hub.is_open(key, client_id):
                continue  # closed meanwhile
            self._hub.terminate(
                feed=key,
                client_id=client_id,
                error_code=ACCESS_REVOKED,
                error_data={
                    "message": f"{owner} no longer grants {requester} read access to {feed.name}",
                    "errorId": ErrorId.NOT_GRANTED.value,
                },
            )
            terminated += 1
        self.terminated += terminated
        return terminated

    def _spawn(self, coroutine: Coroutine[Any, Any, int]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("re-checking open feeds failed", exc_info=task.exception())

    async def settled(self) -> None:
        """Wait for the re-checks under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
