"""HTTP routes for published feeds: the server keeps the document, validates and reveals."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from ..core.authz import Authorizer
from ..core.errors import ErrorId, Invalid, NotFound
from ..core.feeds import FeedHub
from ..protocol.feedme import Delta, FeedKey, check_json_value, feed_md5
from .guard import bearer_guard


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


def router(hub: FeedHub, authz: Authorizer) -> APIRouter:
    routes = APIRouter(prefix="/feeds", tags=["feeds"])
    authorized = bearer_guard(authz)

    @routes.post(
        "/{feed_name}/actions",
        response_model=Revealed,
        dependencies=[Depends(authorized)],
        summary="Reveal an action on a feed, updating its stored document",
    )
    async def publish(feed_name: str, publication: Publication) -> Revealed:
        feed = _feed(feed_name, publication.feed_args)
        deltas = None
        if publication.deltas is not None:
            try:
                deltas = [msgspec.convert(d, Delta) for d in publication.deltas]
            except (msgspec.ValidationError, ValueError) as exc:
                raise Invalid(ErrorId.INVALID_ARGUMENT, f"Invalid delta: {exc}") from None
        for name, value in (
            ("action_data", publication.action_data),
            ("feed_data", publication.feed_data),
        ):
            if value is not None:
                try:
                    check_json_value(value)
                except ValueError as exc:
                    raise Invalid(ErrorId.INVALID_ARGUMENT, f"{name}: {exc}") from None
        result = await hub.publish(
            feed,
            publication.action_name,
            publication.action_data,
            deltas=deltas,
            feed_data=publication.feed_data,
        )
        return Revealed(
            feed_name=feed.name,
            feed_args=feed.args_dict(),
            feed_md5=result.feed_md5 or "",
            delivered=result.delivered,
        )

    @routes.get("/{feed_name}", response_model=FeedDocument, summary="A published feed's data")
    async def read(feed_name: str, request: Request) -> FeedDocument:
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


def _feed(name: str, args: dict[str, str]) -> FeedKey:
    try:
        return FeedKey.of(name, args)
    except (ValueError, TypeError) as exc:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"Invalid feed: {exc}") from None
