"""How the client reaches a server: the ``Transport`` port and its WebSocket adapter.

The ``Client`` takes a ``Transport`` (``Client(..., transport=...)``, as httpx's
``AsyncClient(transport=...)``) and asks it for one ``Connection`` per session attempt. A
connection carries LIME envelopes, one per text frame, and reports what arrives to a
``FrameReceiver``. ``WebSocketTransport`` (picows, subprotocol ``lime``) is the default; tests
use ``tidings.sdk.testing.MemoryTransport``, and other links (a local bus, a direct node link)
plug in the same way.

The contract, which the client relies on:

- ``connect()`` returns an open connection or raises ``ConnectError``;
- the receiver's methods are called synchronously from the event loop, never from inside
  ``send_text()``, in the order the peer sent the frames;
- ``connection_lost()`` comes exactly once per connection (after ``disconnect()`` too), and
  nothing comes after it.
"""

from __future__ import annotations

from typing import Protocol

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from ._exceptions import ConnectError

__all__ = ["SUBPROTOCOL", "Connection", "FrameReceiver", "Transport", "WebSocketTransport"]

SUBPROTOCOL = "lime"


class FrameReceiver(Protocol):
    """Where a connection reports what arrives (the client's side of one connection)."""

    def text_received(self, data: bytes) -> None:
        """One whole text message (a LIME envelope), reassembled from its frames."""

    def binary_received(self) -> None:
        """A binary message arrived; LIME over WebSocket allows none."""

    def connection_lost(self) -> None:
        """The connection is gone, whichever side closed it; the last call."""


class Connection(Protocol):
    """One open connection to a server."""

    def send_text(self, data: bytes) -> None:
        """Queue one text message; never blocks and never calls the receiver."""

    def disconnect(self) -> None:
        """Close the connection now; ``connection_lost()`` follows."""

    async def wait_disconnected(self) -> None:
        """Return once the connection is fully closed."""


class Transport(Protocol):
    """Opens connections; one ``Client`` asks for a new one at every (re)connection."""

    async def connect(self, url: str, receiver: FrameReceiver) -> Connection:
        """Open a connection to ``url`` reporting to ``receiver``; raise ``ConnectError``."""
        ...


class WebSocketTransport:
    """LIME over WebSocket with picows: subprotocol ``lime``, text frames only.

    ``ping_interval`` (seconds, ``None`` for none) is how long the connection may stay idle
    before picows pings, and how long it waits for the pong before dropping the connection.
    """

    def __init__(
        self, *, ping_interval: float | None = 20.0, max_frame_size: int = 8 * 1024 * 1024
    ) -> None:
        self.ping_interval = ping_interval
        self.max_frame_size = max_frame_size

    async def connect(self, url: str, receiver: FrameReceiver) -> Connection:
        """Open a WebSocket to ``url`` offering the ``lime`` subprotocol, which it must pick."""
        try:
            transport, _ = await ws_connect(
                lambda: _Listener(receiver),
                url,
                extra_headers={"Sec-WebSocket-Protocol": SUBPROTOCOL},
                enable_auto_ping=self.ping_interval is not None,
                auto_ping_idle_timeout=self.ping_interval or 10.0,
                auto_ping_reply_timeout=self.ping_interval or 10.0,
                max_frame_size=self.max_frame_size,
                websocket_handshake_timeout=None,  # the client bounds the whole establishment
            )
        except OSError as exc:
            raise ConnectError(f"cannot connect to {url}: {exc}") from exc
        except Exception as exc:  # picows.WSError and its handshake subclasses
            raise ConnectError(f"WebSocket handshake with {url} failed: {exc}") from exc
        chosen = transport.response.headers.get("Sec-WebSocket-Protocol")
        if chosen != SUBPROTOCOL:
            transport.send_close(WSCloseCode.PROTOCOL_ERROR)
            transport.disconnect()
            raise ConnectError(
                f"the server at {url} did not accept the 'lime' subprotocol ({chosen!r})"
            )
        return _WebSocketConnection(transport)


class _WebSocketConnection:
    def __init__(self, transport: WSTransport) -> None:
        self._transport = transport

    def send_text(self, data: bytes) -> None:
        self._transport.send(WSMsgType.TEXT, data)

    def disconnect(self) -> None:
        self._transport.disconnect()

    async def wait_disconnected(self) -> None:
        await self._transport.wait_disconnected()


class _Listener(WSListener):
    """Reassembles text messages from frames and reports them, and the disconnection."""

    def __init__(self, receiver: FrameReceiver) -> None:
        self._receiver = receiver
        self._parts: list[bytes] | None = None
        self._binary = False

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            self._binary = kind is WSMsgType.BINARY
            if frame.fin:
                self._deliver([frame.get_payload_as_bytes()])
            else:
                self._parts = [frame.get_payload_as_bytes()]
        elif kind is WSMsgType.CONTINUATION and self._parts is not None:
            self._parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                parts, self._parts = self._parts, None
                self._deliver(parts)

    def _deliver(self, parts: list[bytes]) -> None:
        if self._binary:
            self._receiver.binary_received()
        else:
            self._receiver.text_received(parts[0] if len(parts) == 1 else b"".join(parts))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._receiver.connection_lost()
