"""One connection and the LIME session on it.

A ``Link`` drives the sans-I/O ``ClientSession`` with the frames of one ``Connection``: it
establishes the session, answers what the protocol alone decides (the server's ``/ping``,
command responses matched to their requests) and reports the rest through ``LinkHandlers``.
The client makes a new link for every (re)connection; nothing on a link survives it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tidings.protocol.lime import (
    ClientSession,
    Command,
    CommandMethod,
    CommandStatus,
    Envelope,
    Message,
    Notification,
    Raw,
    ReasonCode,
    SessionEnded,
    SessionEstablished,
    SessionState,
)

from ._correlation import PendingCommands
from ._exceptions import (
    AuthenticationFailed,
    ConnectError,
    ConnectionLost,
    SessionFailed,
    reason_parts,
)
from ._transport import Connection, Transport

__all__ = ["PING_TYPE", "Link", "LinkHandlers"]

PING_TYPE: Final = "application/vnd.lime.ping+json"


@dataclass(frozen=True, slots=True)
class LinkHandlers:
    """Where a link reports what the application layer must act on."""

    established: Callable[[Link, SessionEstablished], None]
    message: Callable[[Message], None]
    notification: Callable[[Notification], None]
    command: Callable[[Command], None]
    """A command request from the server (responses go to their requests)."""
    ended: Callable[[Link, SessionEnded], None]
    lost: Callable[[Link], None]


class Link:
    """One connection and its session; the client's ``FrameReceiver`` for that connection."""

    def __init__(self, session: ClientSession, handlers: LinkHandlers) -> None:
        loop = asyncio.get_running_loop()
        self.session = session
        self.connection: Connection | None = None
        self.established: asyncio.Future[SessionEstablished] = loop.create_future()
        self.ended: asyncio.Future[SessionEnded] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.commands = PendingCommands()
        self._handlers = handlers

    @property
    def usable(self) -> bool:
        """Whether envelopes can be sent: the session is established and the connection up."""
        return self.session.state is SessionState.ESTABLISHED and not self.lost.done()

    async def open(self, transport: Transport, url: str) -> SessionEstablished:
        """Connect and establish the session; the caller bounds the time this takes.

        Raises ``ConnectError``, ``AuthenticationFailed`` or ``SessionFailed``.
        """
        self.connection = await transport.connect(url, self)
        self.session.start()
        self.write(self.session.data_to_send())
        await first(self.established, self.lost)
        if not self.established.done():
            raise ConnectError("the connection closed during the session establishment")
        return self.established.result()

    def write(self, frames: list[bytes]) -> None:
        if self.connection is not None and not self.lost.done():
            for frame in frames:
                self.connection.send_text(frame)

    def send(self, envelope: Envelope) -> None:
        self.write([self.session.send(envelope)])

    async def request(self, command: Command) -> Command:
        """Send a command request and return its response; ``ConnectionLost`` if the link
        drops first."""
        return await self.commands.request(command, self.send)

    def finish(self) -> None:
        """Ask the server to finish the session (it answers ``finished`` and closes)."""
        self.session.finish()
        self.write(self.session.data_to_send())

    def disconnect(self) -> None:
        if self.connection is not None and not self.lost.done():
            self.connection.disconnect()

    async def wait_disconnected(self, timeout: float) -> None:
        if self.connection is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.connection.wait_disconnected()

    # -- FrameReceiver: events from the connection --------------------------------------------

    def text_received(self, data: bytes) -> None:
        if self.lost.done():
            return
        event = self.session.receive_text(data)
        self.write(self.session.data_to_send())
        if event is None:
            return
        if isinstance(event, Message):
            self._handlers.message(event)
        elif isinstance(event, Notification):
            self._handlers.notification(event)
        elif isinstance(event, Command):
            self._command_received(event)
        elif isinstance(event, SessionEstablished):
            self._handlers.established(self, event)
            if not self.established.done():
                self.established.set_result(event)
        elif isinstance(event, SessionEnded):
            self._session_ended(event)

    def binary_received(self) -> None:
        ended = self.session.receive_binary()
        if ended is not None:
            self._session_ended(ended)

    def connection_lost(self) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.commands.fail_all(ConnectionLost("the connection dropped before the response"))
        self._handlers.lost(self)

    def _command_received(self, command: Command) -> None:
        if command.is_response:
            self.commands.resolve(command)
            return
        if (
            command.method is CommandMethod.GET
            and command.uri == "/ping"
            and isinstance(command.id, str)
            and self.usable
        ):
            self.send(
                Command(
                    id=command.id,
                    to=command.from_,
                    method=CommandMethod.GET,
                    status=CommandStatus.SUCCESS,
                    type=PING_TYPE,
                    resource=Raw(b"{}"),
                )
            )
            return
        self._handlers.command(command)

    def _session_ended(self, ended: SessionEnded) -> None:
        if not self.ended.done():
            self.ended.set_result(ended)
        self._handlers.ended(self, ended)  # before ``established`` settles: it tells which
        if not self.established.done():
            code, description = reason_parts(ended.reason)
            if ended.state is SessionState.FINISHED:
                error: Exception = ConnectError(
                    "the server finished the session during establishment"
                )
            elif code == ReasonCode.SESSION_AUTHENTICATION_FAILED:
                error = AuthenticationFailed(code, description)
            else:
                error = SessionFailed(code, description)
            self.established.set_exception(error)
        self.disconnect()


async def first(*futures: asyncio.Future[Any]) -> None:
    """Wait until one of ``futures`` is done, without cancelling or consuming any of them."""
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
