"""HTTP routes for published feeds: the server keeps the document, validates and reveals.

``/feeds/{feed_name}``: feeds the server API publishes (write with the api_token, read by
anyone). ``/feeds/~{owner}/{name}``: an account's own feeds (``core.owner_feeds``), written and
read with the owner's API key, a grantee's, or the api_token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from ..core.authz import Authorizer
from ..core.errors import ErrorId, Invalid, NotFound
from ..core.feeds import FeedHub
from ..core.owner_feeds import OwnerFeeds, is_owner_feed, parse_publication
from ..protocol.feedme import FeedKey, feed_md5
from .guard import Caller, Identify, bearer_guard, caller_guard
from .problems import PROBLEM_RESPONSES
from .text import Text


class Publication(BaseModel):
    """An action revealed on a feed, with either deltas or the whole new feed data."""

    action_name: str = Field(min_length=1, max_length=256)
    action_data: dict[str, Any] = Field(default_factory=dict)
    feed_args: dict[str, str] = Field(default_factory=dict)
    deltas: list[dict[str, Any]] | None = Field(
        default=None, description="Feedme deltas (Operation, Path, Value), applied in order"
    )
    feed_data: dict[str, Any] | None = Field(default=None, description="Replaces the document")


class Revealed(BaseModel):
    feed_name: str
    feed_args: dict[str, str]
    feed_md5: str
    delivered: int = Field(description="Clients that had the feed open and got the revelation")


class FeedDocument(BaseModel):
    feed_name: str
    feed_args: dict[str, str]
    feed_data: dict[str, Any]
    feed_md5: str


def router(
    hub: FeedHub,
    authz: Authorizer,
    owner_feeds: OwnerFeeds | None = None,
    identify: Identify | None = None,
) -> APIRouter:
    routes = APIRouter(prefix="/feeds", tags=["feeds"], responses=PROBLEM_RESPONSES)
    authorized = bearer_guard(authz)

    if owner_feeds is not None and identify is not None:
        _owner_routes(routes, owner_feeds, caller_guard(authz, identify))

    @routes.post(
        "/{feed_name}/actions",
        response_model=Revealed,
        dependencies=[Depends(authorized)],
        summary="Reveal an action on a feed, updating its stored document",
    )
    async def publish(feed_name: Text, publication: Publication) -> Revealed:
        parsed = parse_publication(publication.model_dump())
        feed = _feed(feed_name, parsed.feed_args)
        result = await hub.publish(
            feed,
            parsed.action_name,
            parsed.action_data,
            deltas=parsed.deltas,
            feed_data=parsed.feed_data,
        )
        return Revealed(
            feed_name=feed.name,
            feed_args=feed.args_dict(),
            feed_md5=result.feed_md5 or "",
            delivered=result.delivered,
        )

    @routes.get("/{feed_name}", response_model=FeedDocument, summary="A published feed's data")
    async def read(feed_name: Text, request: Request) -> FeedDocument:
        feed = _feed(feed_name, dict(request.query_params))
        document = await hub.document(feed)
        if document is None:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"No published feed {feed_name!r}")
        return FeedDocument(
            feed_name=feed.name,
            feed_args=feed.args_dict(),
            feed_data=document,
            feed_md5=feed_md5(document),
        )

    return routes


def _owner_routes(routes: APIRouter, owner_feeds: OwnerFeeds, caller: Any) -> None:
    # ``Depends(caller)`` as a default: the guard is built per app, and an ``Annotated`` alias
    # local to this function would not resolve under postponed annotations (FastAPI evaluates
    # them in the module's globals, and would take ``who`` for a query parameter).
    @routes.post(
        "/~{owner}/{feed_name}/actions",
        response_model=Revealed,
        summary="Reveal an action on an account's own feed (its API key, a contributor's, or "
        "the api_token)",
    )
    async def publish_owned(
        owner: str,
        feed_name: str,
        publication: Publication,
        who: Caller = Depends(caller),  # noqa: B008
    ) -> Revealed:
        feed = owner_feeds.of(owner, feed_name)
        parsed = parse_publication(publication.model_dump())
        result = await owner_feeds.publish(who.identity, feed, parsed, server=who.server)
        return Revealed(
            feed_name=feed.feed_name,
            feed_args=parsed.feed_args,
            feed_md5=result.feed_md5 or "",
            delivered=result.delivered,
        )

    @routes.get(
        "/~{owner}/{feed_name}",
        response_model=FeedDocument,
        summary="An account's own feed's data (its API key, a grantee's, or the api_token)",
    )
    async def read_owned(
        owner: str,
        feed_name: str,
        request: Request,
        who: Caller = Depends(caller),  # noqa: B008
    ) -> FeedDocument:
        feed = owner_feeds.of(owner, feed_name)
        args = dict(request.query_params)
        document = await owner_feeds.read(who.identity, feed, args, server=who.server)
        return FeedDocument(
            feed_name=feed.feed_name,
            feed_args=args,
            feed_data=document,
            feed_md5=feed_md5(document),
        )


def _feed(name: str, args: dict[str, str]) -> FeedKey:
    if is_owner_feed(name):
        raise Invalid(
            ErrorId.INVALID_ARGUMENT,
            f"Names starting with '~' are accounts' own feeds: /feeds/~name/FEED, not {name!r}",
        )
    try:
        return FeedKey.of(name, args)
    except (ValueError, TypeError) as exc:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"Invalid feed: {exc}") from None
