"""A test app whose request handler commits a purchase with the persistent session's memento."""

from __future__ import annotations

from typing import Any

from tidings.app import App, AppRefused, AppRequest, AppState

app = App()


@app.request("buy")
def buy(request: AppRequest, state: AppState) -> dict[str, Any]:
    item = request.args.get("item")
    if not isinstance(item, str):
        raise AppRefused("'item' must be a string")
    stock = state.get(f"stock/{item}", 3)
    if stock <= 0:
        raise AppRefused(f"{item} is sold out")
    state.put(f"stock/{item}", stock - 1)
    bought = state.get(f"bought/{request.identity}", [])
    state.put(f"bought/{request.identity}", [*bought, item])
    return {"item": item, "left": stock - 1, "bought": len(bought) + 1}


@app.request("basket")
def basket(request: AppRequest, state: AppState) -> dict[str, Any]:
    return {"bought": state.get(f"bought/{request.identity}", [])}


@app.request("crash")
def crash(request: AppRequest, state: AppState) -> dict[str, Any]:
    state.put("crash/written", True)
    return {"value": 1 / 0}
