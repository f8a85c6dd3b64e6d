"""A test app whose Feedme action notifies a LIME session (issue 4, scope 4)."""

from __future__ import annotations

from tidings.app import ActionRequest, App, Responder

app = App()


@app.action("order")
async def order(request: ActionRequest, response: Responder) -> None:
    item = request.action_args.get("item")
    outcome = await app.notify(
        "bob@localhost",
        {"ordered": item},
        message_id=f"order-{item}",
        session="phone",
    )
    response.success({"sessions": outcome.sessions})
