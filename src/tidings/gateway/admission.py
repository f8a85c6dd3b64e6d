"""Admission of TCP connections: one budget for every listening port, a small reserve to answer
beyond it, and an accept loop that backs off when the process is out of files.

The accept loops of asyncio and uvloop take every connection the kernel offers and, when the
process has no file left (EMFILE), log a traceback per attempt while the listening socket stays
readable. ``Listener`` accepts instead, on a non-blocking listening socket:

- while the ``Budget`` (and the listener's own limit) has room, a connection is admitted: it is
  handed to ``loop.connect_accepted_socket`` with a protocol that holds a ``Slot``, released
  once, when its transport closes;
- beyond it, up to ``Budget.reserve`` connections wait in a reserve, where they are read only to
  answer the request head (``exempt`` may serve it, say a health check, else ``refusal``, a
  503) and closed; a slot freed before their first bytes arrive admits them after all; a head
  that does not arrive within ``header_timeout`` closes them;
- beyond the reserve, a connection is reset at once (no file is kept for it);
- when accepting fails for want of files or memory, the listening socket is not watched for
  ``backoff`` seconds, and one line is logged (at most one per ``REPORT_EVERY_S`` for the whole
  budget, saying how many pauses it did not report).

Only the accept path runs here: an admitted connection's reads and writes are its protocol's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from picows import WSAutoPingStrategy
from picows.picows import WSProtocol  # type: ignore[attr-defined]

log = logging.getLogger("tidings")

ACCEPT_BATCH = 128
"""Connections accepted per readiness of a listening socket, so a flood cannot starve the rest."""
BACKOFF_S = 0.5
"""How long a listening socket is not watched after accepting failed for want of files."""
REPORT_EVERY_S = 60.0
"""At most one log line about paused accepting per this many seconds."""
HEAD_MAX = 8192
"""A reserve connection's request head is answered once complete or this long, whichever first."""
BACKLOG = 1024
READ_BUFFER = 2048
"""picows' first read buffer per connection (its smallest; picows' default is 16 KiB). It
doubles as a busy connection's reads fill it and is never shrunk, so an idle connection keeps
2 KiB instead of 16 (issue 15: memory per idle connection)."""

OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
GONE_BEFORE_ACCEPT = frozenset({errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EPERM})
"""Accept errors about one connection only (it went away, or a firewall refused it)."""
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)

Exempt = Callable[[bytes], bytes | None]
"""Given a reserve connection's request line, the response to serve it anyway, or None."""


class Budget:
    """Connections open on all listeners together, against one limit, plus a reserve."""

    def __init__(
        self,
        limit: int,
        reserve: int,
        *,
        report_every: float = REPORT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.reserve = reserve
        self.open = 0
        """Admitted connections (counted until their transport closes)."""
        self.waiting = 0
        """Connections in the reserve, beyond ``limit``, being answered."""
        self.refused = 0
        """Connections not admitted and not served anyway (503, reset, or silent too long)."""
        self.backoffs = 0
        """Times a listening socket was paused because accepting failed for want of files."""
        self._report_every = report_every
        self._clock = clock
        self._reported_at: float | None = None
        self._unreported = 0

    def report_backoff(self, where: str, error: OSError, pause: float) -> None:
        self.backoffs += 1
        now = self._clock()
        if self._reported_at is not None and now - self._reported_at < self._report_every:
            self._unreported += 1
            return
        since = f"; {self._unreported} more since the last report" if self._unreported else ""
        log.warning(
            "accepting paused for %.1f s on the %s port: %s (%d connections open%s)",
            pause,
            where,
            error.strerror or error,
            self.open,
            since,
        )
        self._reported_at = now
        self._unreported = 0


class Slot:
    """An admitted connection's place in the budget; ``release`` once its transport closed."""

    __slots__ = ("_listener", "peer")

    def __init__(self, listener: Listener, peer: object = None) -> None:
        self._listener: Listener | None = listener
        self.peer = peer
        """The client's address (``getpeername()``), for rules that count per address."""

    def release(self) -> None:
        """Idempotent: the place is given back once, however often this is called."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.open -= 1
            listener.budget.open -= 1


ProtocolFactory = Callable[[Slot], asyncio.BaseProtocol]
"""Makes the protocol of an admitted connection; it must release the slot in connection_lost."""
Connect = Callable[
    [asyncio.AbstractEventLoop, Callable[[], asyncio.BaseProtocol], socket.socket],
    Awaitable[object],
]
"""Makes a transport for an accepted socket and connects the protocol to it."""


def loop_connect(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    sock: socket.socket,
) -> Awaitable[object]:
    """The event loop's own transports (what ``loop.create_server`` would have made)."""
    return loop.connect_accepted_socket(protocol_factory, sock)


websocket_connect: Connect = loop_connect
"""The WebSocket port's transports: the event loop's own too (uvloop's TCP transport), not the
aiofastnet ones ``picows.ws_create_server`` would make. picows reads and writes through either;
aiofastnet's holds a 4 KiB iovec array inline, a write deque and an fd watcher per connection,
about 5 KB more per idle connection (issue 15: memory per idle connection)."""


class Listener:
    """Accepts on one listening socket against a shared ``Budget`` (see the module doc)."""

    def __init__(
        self,
        name: str,
        sock: socket.socket,
        budget: Budget,
        protocols: ProtocolFactory,
        *,
        refusal: bytes,
        header_timeout: float,
        limit: int | None = None,
        exempt: Exempt | None = None,
        connect: Connect = loop_connect,
        backoff: float = BACKOFF_S,
    ) -> None:
        self.name = name
        self.budget = budget
        self.limit = budget.limit if limit is None else limit
        self.open = 0
        """Admitted connections of this listener."""
        self.refusal = refusal
        self.exempt = exempt
        self.header_timeout = header_timeout
        self._sock = sock
        self._protocols = protocols
        self._connect = connect
        self._backoff = backoff
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._handovers: set[asyncio.Task[None]] = set()
        self._waiting: set[_Waiting] = set()
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "start() first"
        return self._loop

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def has_room(self) -> bool:
        return self.open < self.limit and self.budget.open < self.budget.limit

    def close(self) -> None:
        """Stop accepting; reserve connections and hand-overs under way are dropped.

        Admitted connections stay open: closing them is their owners' business.
        """
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            if self._resume is not None:
                self._resume.cancel()
            else:
                self._loop.remove_reader(self._sock.fileno())
        for waiting in list(self._waiting):
            waiting.finish(refused=False)
        for task in self._handovers:
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        """For callers that treat this like an ``asyncio.Server`` (uvicorn's shutdown)."""
        if self._handovers:
            await asyncio.gather(*self._handovers, return_exceptions=True)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in GONE_BEFORE_ACCEPT:
                    continue
                self._pause(error)
                return
            if self.has_room():
                self.admit(conn)
            elif self.budget.waiting < self.budget.reserve:
                self._waiting.add(_Waiting(self, conn))
            else:
                self.budget.refused += 1
                _reset(conn)

    def _pause(self, error: OSError) -> None:
        self.loop.remove_reader(self._sock.fileno())
        self._resume = self.loop.call_later(self._backoff, self._resume_accepting)
        self.budget.report_backoff(self.name, error, self._backoff)

    def _resume_accepting(self) -> None:
        self._resume = None
        if not self._closed:
            self.loop.add_reader(self._sock.fileno(), self._accept)

    def admit(self, conn: socket.socket) -> None:
        try:
            peer: object = conn.getpeername()
        except OSError:
            peer = None  # already gone: the hand-over fails at once
        slot = Slot(self, peer)
        self.open += 1
        self.budget.open += 1
        task = self.loop.create_task(self._hand_over(conn, slot))
        self._handovers.add(task)
        task.add_done_callback(self._handovers.discard)

    async def _hand_over(self, conn: socket.socket, slot: Slot) -> None:
        try:
            conn.setblocking(False)
            await self._connect(self.loop, lambda: self._protocols(slot), conn)
        except BaseException as error:
            slot.release()  # if connection_made never ran, connection_lost will not either
            conn.close()  # the transport's own close detaches or closes it: no double close
            if not isinstance(error, Exception):
                raise
            log.debug("a connection on the %s port failed at once: %s", self.name, error)

    def forget(self, waiting: _Waiting) -> None:
        self._waiting.discard(waiting)


class _Waiting:
    """A connection beyond the limit, in the reserve: read only to answer it, then closed."""

    __slots__ = ("_conn", "_fd", "_head", "_listener", "_read_any", "_timer")

    def __init__(self, listener: Listener, conn: socket.socket) -> None:
        conn.setblocking(False)
        self._listener = listener
        self._conn = conn
        self._fd = conn.fileno()
        self._head = b""
        self._read_any = False
        listener.budget.waiting += 1
        listener.loop.add_reader(self._fd, self._readable)
        self._timer = listener.loop.call_later(listener.header_timeout, self._expire)

    def _readable(self) -> None:
        listener = self._listener
        if not self._read_any and listener.has_room():
            # A slot was freed since the accept (say a client just closed): nothing is read
            # yet, so the protocol gets the connection as if admitted at once.
            self._leave()
            listener.admit(self._conn)
            return
        self._read_any = True
        try:
            data = self._conn.recv(HEAD_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.finish(refused=True)
            return
        if not data:
            self.finish(refused=True)
            return
        self._head += data
        if b"\r\n\r\n" not in self._head and len(self._head) < HEAD_MAX:
            return
        request_line = self._head.partition(b"\r\n")[0]
        response = None
        if listener.exempt is not None:
            try:
                response = listener.exempt(request_line)
            except Exception:
                log.exception("answering a request on the %s port from the reserve", listener.name)
        refused = response is None
        with contextlib.suppress(OSError):
            self._conn.send(listener.refusal if response is None else response)
            self._conn.shutdown(socket.SHUT_WR)
        self.finish(refused=refused, reset=False)

    def _expire(self) -> None:
        self.finish(refused=True)

    def _leave(self) -> None:
        self._listener.loop.remove_reader(self._fd)
        self._timer.cancel()
        self._listener.budget.waiting -= 1
        self._listener.forget(self)

    def finish(self, *, refused: bool, reset: bool = True) -> None:
        self._leave()
        if refused:
            self._listener.budget.refused += 1
        if reset:
            _reset(self._conn)
        else:
            self._conn.close()


def _reset(conn: socket.socket) -> None:
    """Close at once with a reset: the kernel keeps nothing of it (no FIN_WAIT, no TIME_WAIT)."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    conn.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP listening socket (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def http_response(
    status: int,
    reason: str,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _WebSocketProtocol(WSProtocol):  # type: ignore[misc]
    """picows' server protocol, counted: its slot is released when the connection is lost."""

    __slots__ = ("slot",)  # no instance dict: attribute lookups on the read path stay as fast
    slot: Slot

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.slot.release()


def websocket_protocols(
    route: Callable[[Any, object], Any],
    *,
    handshake_timeout: float,
    max_frame_size: int,
) -> ProtocolFactory:
    """What ``picows.ws_create_server`` makes per connection, for ``Listener``.

    ``handshake_timeout`` closes a connection that has not asked for its upgrade in time.
    """
    # picows makes each connection a child logging.Logger of a Logger it is given (a name, a
    # dict, lists: ~0.7 KB per connection, kept for its life); any other logger-like object
    # is used as it is. An adapter over the same logger logs the same records, under
    # "picows.server" instead of "picows.server.<fd>" (issue 15: memory per idle connection).
    logger = logging.LoggerAdapter(logging.getLogger("picows.server"))

    def make(slot: Slot) -> asyncio.BaseProtocol:
        protocol = _WebSocketProtocol(
            None,  # host and port: a client's
            None,  # path: a client's
            False,  # is_client_side
            lambda request: route(request, slot.peer),
            logger,
            True,  # disconnect_on_exception
            handshake_timeout,
            False,  # enable_auto_ping
            20.0,  # auto_ping_idle_timeout
            20.0,  # auto_ping_reply_timeout
            WSAutoPingStrategy.PING_WHEN_IDLE,
            False,  # enable_auto_pong: the gateways answer pings after checking them
            max_frame_size,
            None,  # extra_headers: a client's
            READ_BUFFER,  # read_buffer_init_size
        )
        protocol.slot = slot
        assert isinstance(protocol, asyncio.BaseProtocol)
        return protocol

    return make
