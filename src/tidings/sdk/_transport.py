"""One WebSocket connection speaking LIME: picows on the running asyncio loop, text frames only."""

from __future__ import annotations

from collections.abc import Callable

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from ._exceptions import ConnectError

__all__ = ["SUBPROTOCOL", "open_connection"]

SUBPROTOCOL = "lime"


class _Listener(WSListener):
    """Reassembles text messages from frames and reports them, and the disconnection."""

    def __init__(
        self,
        on_text: Callable[[bytes], None],
        on_binary: Callable[[], None],
        on_closed: Callable[[], None],
    ) -> None:
        self._on_text = on_text
        self._on_binary = on_binary
        self._on_closed = on_closed
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
            self._on_binary()
        else:
            self._on_text(parts[0] if len(parts) == 1 else b"".join(parts))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._on_closed()


async def open_connection(
    url: str,
    *,
    on_text: Callable[[bytes], None],
    on_binary: Callable[[], None],
    on_closed: Callable[[], None],
    ping_interval: float | None,
    max_frame_size: int = 8 * 1024 * 1024,
) -> WSTransport:
    """Open a WebSocket to ``url`` offering the ``lime`` subprotocol; the server must pick it."""
    try:
        transport, _ = await ws_connect(
            lambda: _Listener(on_text, on_binary, on_closed),
            url,
            extra_headers={"Sec-WebSocket-Protocol": SUBPROTOCOL},
            enable_auto_ping=ping_interval is not None,
            auto_ping_idle_timeout=ping_interval or 10.0,
            auto_ping_reply_timeout=ping_interval or 10.0,
            max_frame_size=max_frame_size,
            websocket_handshake_timeout=None,  # the caller bounds the whole establishment
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
    return transport
