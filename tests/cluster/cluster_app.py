"""The app every node of the cluster tests loads (``--app tests.cluster.cluster_app:app``).

Feed ``ticker``: its data is ``{"n": last}``, the same on every node whatever it revealed
(``n`` comes in the action, not from a counter of one process), so a revelation's FeedMd5 is
right on every node and feedme-client verifies each one.
"""

from __future__ import annotations

from tidings.app import ActionRequest, App, FeedOpenRequest, Responder
from tidings.protocol.feedme import feed_md5

app = App()


@app.feed("ticker")
def open_ticker(request: FeedOpenRequest, response: Responder) -> None:
    response.success({"n": -1})


@app.action("tick")
def tick(request: ActionRequest, response: Responder) -> None:
    """Reveal tick ``n`` on ``ticker`` (from whichever node the action reached)."""
    n = int(request.action_args["n"])
    response.success({})
    app.reveal(
        "ticker",
        {},
        "tick",
        {"n": n},
        [{"Operation": "Set", "Path": ["n"], "Value": n}],
        feed_md5({"n": n}),
    )


@app.action("end")
def end(request: ActionRequest, response: Responder) -> None:
    """Reveal ``end`` (the data stays ``{"n": last}``): watchers stop at it."""
    last = int(request.action_args["n"])
    response.success({})
    app.reveal("ticker", {}, "end", {}, [], feed_md5({"n": last}))
