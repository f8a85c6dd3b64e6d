"""The Tidings app the fan-out benchmark runs: one feed, one action that reveals on it.

    tidings serve --app bench.fanout_app:app        (with the repository root on PYTHONPATH)

- feed ``bench`` (no args): opens with ``{"seq": <last revealed seq>}``.
- action ``burst`` ``{"count": N, "size": BYTES}``: reveals action ``tick`` N times on the feed,
  each with ``{"seq": i, "pad": "x" * BYTES}`` and one delta (``Set ["seq"] i``), then answers
  ``{"seq": <last seq>, "delivered": <deliveries of this burst>}``. ``seq`` counts up across
  bursts from 1, so a client can check it got every revelation, once, in order.
- action ``pub`` (any args): reveals action ``pub`` once on the feed with the action's args as
  its data, no delta, and answers ``{}``: what loadgen.c's ``proto=feedme scen=fanout`` sends
  (``{"lg": "<payload>"}``) and times (bench/cluster.py).

The hub serializes each revelation once for the feed and writes the same bytes to every client
that has it open; the action handler runs the N reveals back to back on the event loop.
"""

from __future__ import annotations

from tidings.app import ActionRequest, App, FeedOpenRequest, Responder

app = App()
state = {"seq": 0}
MAX_COUNT = 10_000
MAX_SIZE = 64 * 1024


@app.feed("bench")
def open_bench(request: FeedOpenRequest, response: Responder) -> None:
    response.success({"seq": state["seq"]})


@app.action("burst")
def burst(request: ActionRequest, response: Responder) -> None:
    count = request.action_args.get("count", 1)
    size = request.action_args.get("size", 0)
    if not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        response.failure("INVALID_ARGUMENT", {"message": f"'count' must be 1..{MAX_COUNT}"})
        return
    if not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        response.failure("INVALID_ARGUMENT", {"message": f"'size' must be 0..{MAX_SIZE}"})
        return
    pad = "x" * size
    delivered = 0
    seq = state["seq"]
    for _ in range(count):
        seq += 1
        delivered += app.reveal(
            "bench",
            {},
            "tick",
            {"seq": seq, "pad": pad},
            [{"Operation": "Set", "Path": ["seq"], "Value": seq}],
        )
    state["seq"] = seq
    response.success({"seq": seq, "delivered": delivered})


@app.action("pub")
def pub(request: ActionRequest, response: Responder) -> None:
    app.reveal("bench", {}, "pub", request.action_args)
    response.success({})
