"""The app the feedme-client conformance scenario runs against (loaded with --app)."""

from __future__ import annotations

from tidings.app import ActionRequest, App, FeedOpenRequest, Responder
from tidings.protocol.feedme import feed_md5

app = App()
counter = {"n": 0}


@app.action("echo")
def echo(request: ActionRequest, response: Responder) -> None:
    response.success({"echo": request.action_args})


@app.action("fail")
async def fail(request: ActionRequest, response: Responder) -> None:
    response.failure("NOPE", {"why": "asked to fail"})


@app.feed("counter")
def open_counter(request: FeedOpenRequest, response: Responder) -> None:
    response.success({"n": counter["n"], "who": request.identity or "anonymous"})


def _reveal(md5: str | None) -> None:
    app.reveal(
        "counter",
        {},
        "bump",
        {"to": counter["n"]},
        [{"Operation": "Set", "Path": ["n"], "Value": counter["n"]}],
        md5,
    )


@app.action("bump")
def bump(request: ActionRequest, response: Responder) -> None:
    counter["n"] += 1
    response.success({})
    _reveal(feed_md5({"n": counter["n"], "who": request.identity or "anonymous"}))


@app.action("badhash")
def badhash(request: ActionRequest, response: Responder) -> None:
    counter["n"] += 1
    response.success({})
    _reveal("AAAAAAAAAAAAAAAAAAAAAA==")


@app.action("terminate")
def terminate(request: ActionRequest, response: Responder) -> None:
    response.success({})
    app.terminate(feed_name="counter", error_code="GAME_OVER", error_data={"final": counter["n"]})


@app.action("kick")
def kick(request: ActionRequest, response: Responder) -> None:
    response.success({})
    app.disconnect(request.client_id)
