"""A raw LIME-over-WebSocket test client: JSON dicts in, JSON dicts out, nothing hidden.

Tests use it to see exactly what the server puts on the wire. Waiting is event-driven: every
``expect`` waits for a matching envelope with a deadline and fails the test when none comes.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any, ClassVar

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

DEADLINE = 10.0


class _Listener(WSListener):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.gone = asyncio.Event()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            self.inbox.put_nowait(json.loads(frame.get_payload_as_bytes()))
        elif frame.msg_type is WSMsgType.CLOSE:
            self.inbox.put_nowait({"__close__": frame.get_close_code().value})

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.inbox.put_nowait({"__disconnected__": True})
        self.gone.set()


class WireClient:
    _open: ClassVar[set[WireClient]] = set()
    """Clients not yet closed: a test's leftovers would otherwise live on into the next test
    (sharing the module's server) as extra sessions of the same identity."""

    def __init__(self, transport: WSTransport, listener: _Listener) -> None:
        self.transport = transport
        self._listener = listener
        self.held: list[dict[str, Any]] = []
        self._loop = asyncio.get_running_loop()
        self.session_id: str | None = None
        self.node: str | None = None

    @classmethod
    async def connect(cls, url: str, subprotocol: str = "lime") -> WireClient:
        transport, listener = await ws_connect(
            _Listener, url, extra_headers={"Sec-WebSocket-Protocol": subprotocol}
        )
        client = cls(transport, listener)
        cls._open.add(client)
        return client

    @classmethod
    async def close_all(cls) -> None:
        """Disconnect every client still open and wait until the server has let each go."""
        clients, cls._open = cls._open, set()
        loop = asyncio.get_running_loop()
        for client in clients:
            if client._loop is not loop:
                continue  # made under a loop of its own (asyncio.run), closed with it
            if not client._listener.gone.is_set():
                client.transport.disconnect()
            async with asyncio.timeout(DEADLINE):
                await client._listener.gone.wait()

    def send(self, envelope: dict[str, Any]) -> None:
        self.transport.send(WSMsgType.TEXT, json.dumps(envelope).encode())

    def send_raw(self, data: bytes, binary: bool = False) -> None:
        self.transport.send(WSMsgType.BINARY if binary else WSMsgType.TEXT, data)

    async def expect(
        self, match: Callable[[dict[str, Any]], bool] = lambda e: True, timeout: float = DEADLINE
    ) -> dict[str, Any]:
        """The first envelope (held or new) that matches; others are held for later."""
        for index, envelope in enumerate(self.held):
            if match(envelope):
                return self.held.pop(index)
        async with asyncio.timeout(timeout):
            while True:
                envelope = await self._listener.inbox.get()
                if match(envelope):
                    return envelope
                self.held.append(envelope)

    async def expect_id(self, envelope_id: str, **fields: Any) -> dict[str, Any]:
        return await self.expect(
            lambda e: e.get("id") == envelope_id and all(e.get(k) == v for k, v in fields.items())
        )

    async def closed(self) -> None:
        await self.expect(lambda e: "__disconnected__" in e)

    async def establish(
        self,
        node: str,
        *,
        password: str | None = None,
        key: str | None = None,
        scheme: str | None = None,
    ) -> dict[str, Any]:
        """Run new -> authenticating -> established/failed; returns the final session."""
        self.send({"state": "new"})
        authenticating = await self.expect(lambda e: "state" in e)
        assert authenticating["state"] == "authenticating", authenticating
        self.session_id = authenticating["id"]
        if password is not None:
            authentication = {"scheme": "plain", "password": _b64(password)}
        elif key is not None:
            authentication = {"scheme": "key", "key": _b64(key)}
        else:
            authentication = {"scheme": scheme or "guest"}
        self.send(
            {
                "id": self.session_id,
                "state": "authenticating",
                "from": node,
                "scheme": authentication["scheme"],
                "authentication": authentication,
            }
        )
        result = await self.expect(lambda e: "state" in e)
        if result["state"] == "established":
            self.node = result["to"]
        return result

    @classmethod
    async def guest(cls, url: str, node: str) -> WireClient:
        """A client with an established ``guest`` session as ``node`` (asserted)."""
        client = await cls.connect(url)
        session = await client.establish(node, scheme="guest")
        assert session["state"] == "established", session
        return client

    async def command(self, **command: Any) -> dict[str, Any]:
        self.send(command)
        return await self.expect(lambda e: e.get("id") == command["id"] and "status" in e)

    async def set_receipt(self, *events: str) -> None:
        response = await self.command(
            id="receipt-" + "-".join(events),
            method="set",
            uri="/receipt",
            type="application/vnd.lime.receipt+json",
            resource={"events": list(events)},
        )
        assert response["status"] == "success", response

    async def finish(self) -> dict[str, Any]:
        self.send({"id": self.session_id, "state": "finishing"})
        return await self.expect(lambda e: e.get("state") in ("finished", "failed"))

    def drop(self) -> None:
        """Vanish without finishing the session (a network drop)."""
        self.transport.disconnect(graceful=False)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
