"""A test app whose handshake and feedClose listeners hold the response until they return."""

from __future__ import annotations

import asyncio

from tidings.app import (
    ActionRequest,
    App,
    FeedCloseRequest,
    FeedOpenRequest,
    HandshakeRequest,
    Responder,
)

app = App()
closes: list[str] = []


@app.on("handshake")
async def members_only(request: HandshakeRequest) -> None:
    await asyncio.sleep(0)  # async work before deciding (a lookup, say)
    if request.identity is None:
        app.disconnect(request.client_id)


@app.on("feedClose")
async def record_close(request: FeedCloseRequest) -> None:
    await asyncio.sleep(0.2)  # slow async work: the FeedCloseResponse must wait for it
    closes.append(f"{request.identity}:{request.feed_name}")


@app.feed("lobby")
def lobby(request: FeedOpenRequest, response: Responder) -> None:
    response.success({"members": 1})


@app.action("closes")
def list_closes(request: ActionRequest, response: Responder) -> None:
    response.success({"closes": closes})
