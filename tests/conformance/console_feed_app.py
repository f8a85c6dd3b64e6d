"""The app the console's feedme.js and the npm feedme-client are compared on (``--app``).

Feed ``doc`` (args ``{"room": ...}``) holds one document per room; action ``step`` reveals one
named batch of deltas on it (every one of the 14 delta operations appears in some batch) with
the FeedMd5 of the new document, ``badhash`` reveals a change with a wrong FeedMd5,
``terminate`` ends the room's feed for everyone, ``fail`` fails. Room ``forbidden`` refuses
to open.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tidings.app import ActionRequest, App, Delta, FeedOpenRequest, Responder
from tidings.protocol.feedme import apply_deltas, feed_md5

app = App()

START: dict[str, Any] = {
    "n": 1,
    "s": "b",
    "flag": False,
    "list": [1, 2, 2, 3],
    "obj": {"a": 1, "b": 2, "c": 2, "Z": "upper first", "é": "sorted by code unit"},
}


def op(operation: str, path: list[str | int], *value: Any) -> dict[str, Any]:
    return {"Operation": operation, "Path": path, **({"Value": value[0]} if value else {})}


STEPS: dict[str, list[dict[str, Any]]] = {
    "numbers": [op("Increment", ["n"], 5), op("Decrement", ["n"], 2.5)],
    "strings": [op("Prepend", ["s"], "¡"), op("Append", ["s"], " é✓🎉")],
    "flags": [op("Toggle", ["flag"])],
    "arrays": [
        op("InsertFirst", ["list"], 0),
        op("InsertLast", ["list"], {"k": [9]}),
        op("InsertBefore", ["list", 1], "before"),
        op("InsertAfter", ["list", 1], "after"),
        op("DeleteFirst", ["list"]),
        op("DeleteLast", ["list"]),
    ],
    "values": [
        op("DeleteValue", ["list"], 2),
        op("DeleteValue", ["obj"], 2),
        op("Delete", ["obj", "a"]),
        op("Set", ["obj", "new"], {"deep": [1, {"z": 1, "a": None}]}),
        op("Set", ["list", 0], "first"),
    ],
    "root": [op("Set", [], {"replaced": True, "n": 0}), op("Set", ["list"], [])],
    "count": [op("Increment", ["n"], 1), op("InsertLast", ["list"], "again")],
}

rooms: dict[str, dict[str, Any]] = {}


def document(room: str) -> dict[str, Any]:
    return rooms.setdefault(room, msgspec.json.decode(msgspec.json.encode(START)))


def reveal(room: str, name: str, deltas: list[dict[str, Any]], md5: str | None) -> None:
    typed = [msgspec.convert(delta, Delta) for delta in deltas]
    rooms[room] = apply_deltas(document(room), typed)
    app.reveal("doc", {"room": room}, name, {"room": room}, deltas, md5 or feed_md5(rooms[room]))


@app.feed("doc")
def open_doc(request: FeedOpenRequest, response: Responder) -> None:
    room = request.feed_args.get("room", "")
    if room == "forbidden":
        response.failure("FORBIDDEN", {"room": room, "why": "nobody may read it"})
    else:
        response.success(document(room))


@app.action("step")
def step(request: ActionRequest, response: Responder) -> None:
    room, name = request.action_args["room"], request.action_args["step"]
    response.success({"step": name})
    reveal(room, name, STEPS[name], None)


@app.action("badhash")
def badhash(request: ActionRequest, response: Responder) -> None:
    room = request.action_args["room"]
    response.success({})
    reveal(room, "badhash", [op("Set", ["bad"], "hash")], "AAAAAAAAAAAAAAAAAAAAAA==")


@app.action("terminate")
def terminate(request: ActionRequest, response: Responder) -> None:
    room = request.action_args["room"]
    response.success({})
    app.terminate(
        feed_name="doc",
        feed_args={"room": room},
        error_code="ROOM_CLOSED",
        error_data={"room": room},
    )


@app.action("fail")
def fail(request: ActionRequest, response: Responder) -> None:
    response.failure("NOPE", {"why": "asked to fail", "args": request.action_args})
