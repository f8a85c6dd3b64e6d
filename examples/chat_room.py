"""A small chat room: `say` appends a message to the room feed `room` (args: {"room": name}).

Only clients with an identity (a `?token=` API key on the WebSocket URL) may speak; anyone may
read. The room keeps its last 50 messages.

    tidings serve --app examples.chat_room:app
"""

from __future__ import annotations

from tidings.app import ActionRequest, App, FeedOpenRequest, Responder

app = App()
KEEP = 50
rooms: dict[str, list[dict[str, str]]] = {}


@app.feed("room")
def open_room(request: FeedOpenRequest, response: Responder) -> None:
    room = request.feed_args.get("room", "")
    if not room or len(room) > 64:
        response.failure("INVALID_ROOM", {"message": "feed args need a 'room' of 1-64 chars"})
        return
    response.success({"messages": list(rooms.get(room, []))})


@app.action("say")
def say(request: ActionRequest, response: Responder) -> None:
    room = request.action_args.get("room")
    text = request.action_args.get("text")
    if request.identity is None:
        response.failure("UNAUTHORIZED", {"message": "connect with ?token=<api key> to speak"})
        return
    if not isinstance(room, str) or not isinstance(text, str) or not 0 < len(text) <= 1000:
        response.failure("INVALID_ARGUMENT", {"message": "need 'room' and 'text' (1-1000)"})
        return
    line = {"from": request.identity, "text": text}
    messages = rooms.setdefault(room, [])
    messages.append(line)
    deltas = [{"Operation": "InsertLast", "Path": ["messages"], "Value": line}]
    if len(messages) > KEEP:
        messages.pop(0)
        deltas.append({"Operation": "DeleteFirst", "Path": ["messages"]})
    response.success({})
    app.reveal("room", {"room": room}, "say", line, deltas)
