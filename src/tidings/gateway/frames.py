"""The RFC 6455 rules that picows leaves to its user: reserved bits, the order of fragments, and
UTF-8 in text messages (sections 5.2, 5.4 and 8.1). A breach fails the connection with the close
code the RFC names; it never reaches a session, so nothing malformed is stored or relayed."""

from __future__ import annotations

from typing import Final

from picows import WSCloseCode, WSFrame, WSMsgType, WSTransport

from .framing import CorkedWriter


class FrameError(Exception):
    """The client broke the WebSocket protocol: close with ``code``."""

    def __init__(self, code: WSCloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def check_reserved_bits(frame: WSFrame) -> None:
    """No extension is negotiated, so every reserved bit must be 0."""
    if frame.rsv1 or frame.rsv2 or frame.rsv3:
        raise FrameError(
            WSCloseCode.PROTOCOL_ERROR, "A frame has reserved bits set: no extension is in use"
        )


def check_text(payload: bytes) -> None:
    """Text messages must be UTF-8: one that is not would be stored and relayed to clients that
    close on it every time it is redelivered."""
    if payload.isascii():
        return
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(
            WSCloseCode.INVALID_TEXT, f"A text message is not valid UTF-8 (at byte {exc.start})"
        ) from None


class Reassembler:
    """Joins the fragments of one message. A continuation with no message started, or a new
    message before the started one is finished, is a protocol error. A message that grows past
    ``limit`` comes out at once, cut short, for the session to refuse by its size."""

    __slots__ = ("_kind", "_limit", "_parts", "_skipping")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: bytearray | None = None
        self._kind = WSMsgType.TEXT
        self._skipping = False
        """The rest of a message already handed out as too large is read and dropped."""

    @property
    def active(self) -> bool:
        return self._parts is not None or self._skipping

    def add(self, frame: WSFrame) -> tuple[WSMsgType, bytes] | None:
        """Take a data frame; the whole message once its last fragment is in."""
        kind = frame.msg_type
        if kind is WSMsgType.CONTINUATION:
            if not self.active:
                raise FrameError(
                    WSCloseCode.PROTOCOL_ERROR, "A continuation frame with no message started"
                )
            if self._skipping:
                self._skipping = not frame.fin
                return None
        elif self.active:
            raise FrameError(
                WSCloseCode.PROTOCOL_ERROR, "A new message started before the last one ended"
            )
        else:
            self._kind = kind
            self._parts = bytearray()
        assert self._parts is not None
        self._parts += frame.get_payload_as_memoryview()
        if frame.fin:
            data, self._parts = bytes(self._parts), None
            return self._kind, data
        if len(self._parts) > self._limit:
            data, self._parts = bytes(self._parts), None
            self._skipping = True
            return self._kind, data
        return None


_SENDABLE_CODES: Final = frozenset((*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)))
"""Close codes a peer may send (RFC 6455 section 7.4: 1004-1006 and 1015 are never sent)."""


def close_reply(frame: WSFrame) -> WSCloseCode:
    """The code to answer a client's close frame with: 1000 for a proper one (the RFC allows
    any echo), 1002 for a malformed code, 1007 for a reason that is not UTF-8."""
    payload = frame.get_payload_as_bytes()
    if not payload:
        return WSCloseCode.OK
    if len(payload) == 1 or int.from_bytes(payload[:2], "big") not in _SENDABLE_CODES:
        return WSCloseCode.PROTOCOL_ERROR
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return WSCloseCode.INVALID_TEXT
    return WSCloseCode.OK


def check_control(frame: WSFrame) -> None:
    """Control frames (ping, pong, close) are never fragmented (section 5.5)."""
    if not frame.fin:
        raise FrameError(WSCloseCode.PROTOCOL_ERROR, "A control frame is fragmented")


def answer_control(transport: WSTransport, frame: WSFrame, writer: CorkedWriter | None) -> bool:
    """Answer a ping (pong) or a client's close (close, after what was written); True for a
    close, after which the connection must write nothing more. Raises ``FrameError``."""
    check_control(frame)
    if frame.msg_type is WSMsgType.PING:
        transport.send_pong(frame.get_payload_as_bytes())
        return False
    if writer is not None:
        writer.flush()
    transport.send_close(close_reply(frame))
    transport.disconnect()
    return True
