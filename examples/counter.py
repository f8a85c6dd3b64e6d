"""A counter feed: `increment` adds to a shared counter and reveals it to everyone watching.

tidings serve --app examples.counter:app
"""

from __future__ import annotations

from tidings.app import ActionRequest, App, FeedOpenRequest, Responder

app = App()
state = {"value": 0}


@app.feed("counter")
def open_counter(request: FeedOpenRequest, response: Responder) -> None:
    response.success({"value": state["value"]})


@app.action("increment")
def increment(request: ActionRequest, response: Responder) -> None:
    by = request.action_args.get("by", 1)
    if not isinstance(by, int) or isinstance(by, bool) or not 1 <= by <= 1000:
        response.failure("INVALID_ARGUMENT", {"message": "'by' must be an integer 1..1000"})
        return
    state["value"] += by
    response.success({"value": state["value"]})
    app.reveal(
        "counter",
        {},
        "increment",
        {"by": by},
        [{"Operation": "Increment", "Path": ["value"], "Value": by}],
    )


@app.action("reset")
async def reset(request: ActionRequest, response: Responder) -> None:
    if request.identity is None:
        response.failure("UNAUTHORIZED", {"message": "only signed-in clients may reset"})
        return
    state["value"] = 0
    response.success({})
    app.terminate(feed_name="counter", error_code="RESET", error_data={"by": request.identity})
