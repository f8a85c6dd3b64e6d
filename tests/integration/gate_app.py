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
close_delay = {"seconds": 0.2}


@app.on("handshake")
async def members_only(request: HandshakeRequest) -> None:
    await asyncio.sleep(0)  # async work before deciding (a lookup, say)
    if request.identity == "crash@localhost":
        raise RuntimeError("the member database is down")
    if request.identity is None:
        app.disconnect(request.client_id)


@app.on("feedClose")
async def record_close(request: FeedCloseRequest) -> None:
    await asyncio.sleep(close_delay["seconds"])  # slow work: the FeedCloseResponse waits for it
    closes.append(f"{request.identity}:{request.feed_name}")


@app.feed("lobby")
def lobby(request: FeedOpenRequest, response: Responder) -> None:
    response.success({"members": 1})


@app.action("kick")
def kick(request: ActionRequest, response: Responder) -> None:
    app.terminate(feed_name="lobby", feed_args={}, client_id=request.client_id, error_code="KICKED")
    response.success({})


@app.action("close_delay")
def set_close_delay(request: ActionRequest, response: Responder) -> None:
    close_delay["seconds"] = float(request.action_args["seconds"])
    response.success({})


@app.action("closes")
def list_closes(request: ActionRequest, response: Responder) -> None:
    response.success({"closes": closes})
