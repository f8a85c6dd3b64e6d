"""Testing with the SDK and no server: an in-memory transport and a scripted LIME server.

``FakeServer`` plays the server's side of LIME inside the test's event loop. It establishes
sessions with the real server-side session machine (``tidings.protocol.lime.ServerSession``),
answers ``set /receipt`` and, with ``auto_accept``, notifies ``accepted`` for every message;
everything else a client sends waits in ``FakeConnection.receive()`` for the test to look at
and answer. It routes nothing and stores nothing: the test is the rest of the world.

::

    from tidings.sdk import Client
    from tidings.sdk.testing import FakeServer

    async def test_the_bot_answers() -> None:
        server = FakeServer()
        async with Client("memory://", "bot@localhost", guest=True,
                          transport=server.transport()) as client:
            bot = asyncio.create_task(run_bot(client))
            peer = await server.next_connection()
            peer.deliver("hello", sender="alice@localhost/phone")
            await peer.expect(Notification)  # "received": the bot took it
            reply = await peer.expect(Message)
            assert reply.to == "alice@localhost/phone"

Frames travel through the event loop (``loop.call_soon``), never within the sender's call, in
order, so a test sees what a network would show, only at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any, Final, TypeAlias, TypeVar

from tidings.protocol.lime import (
    UNSET,
    AuthenticationRequested,
    Command,
    CommandMethod,
    CommandStatus,
    Envelope,
    Message,
    Node,
    Notification,
    NotificationEvent,
    Reason,
    ReasonCode,
    ServerSession,
)

from ._exceptions import ConnectError
from ._signal import Signal
from ._transport import Connection, FrameReceiver
from ._types import encode_document

__all__ = ["FakeConnection", "FakeServer", "MemoryTransport"]

Item: TypeAlias = Message | Notification | Command
_T = TypeVar("_T", Message, Notification, Command)

SCHEMES: Final = ("plain", "key", "guest")


class FakeServer:
    """A scripted LIME server for one test: every connection to it is a ``FakeConnection``.

    - ``refusal``: when set, authentication fails with this reason (13 for bad credentials,
      12 for a session taken over...);
    - ``down``: connecting raises ``ConnectError``;
    - ``unresponsive``: connections open but the session is never established (for timeouts);
    - ``auto_receipt``: answer ``set /receipt`` with success (else it waits in ``receive()``);
    - ``auto_accept``: notify ``accepted`` for every message with an id (it still shows in
      ``receive()``).

    Any credentials are accepted; an instance-less node gets the instance ``default``.
    """

    def __init__(
        self, *, domain: str = "localhost", auto_accept: bool = True, auto_receipt: bool = True
    ) -> None:
        self.node = Node("postmaster", domain)
        self.auto_accept = auto_accept
        self.auto_receipt = auto_receipt
        self.refusal: Reason | None = None
        self.down = False
        self.unresponsive = False
        self.connections: list[FakeConnection] = []
        """Every connection made, in order, whatever became of it."""
        self._established: asyncio.Queue[FakeConnection] = asyncio.Queue()

    def transport(self) -> MemoryTransport:
        """A transport for ``Client(..., transport=...)`` that connects here."""
        return MemoryTransport(self)

    def refuse(self, code: int, description: str = "") -> None:
        """Fail the authentication of the sessions that follow with ``code``."""
        self.refusal = Reason(code=code, description=description or UNSET)

    async def next_connection(self) -> FakeConnection:
        """Wait for the next connection whose session gets established (in order).

        It returns when the server has answered the client's ``set /receipt`` (with
        ``auto_receipt``, else when it sent ``established``): the client's last step before
        it goes live. ``await connection.ping()`` then makes sure the client has handled it.
        """
        return await self._established.get()

    def _accept(self, receiver: FrameReceiver) -> _MemoryConnection:
        if self.down:
            raise ConnectError("the fake server is down")
        connection = FakeConnection(self, receiver)
        self.connections.append(connection)
        return connection._client_end


class MemoryTransport:
    """A ``Transport`` to a ``FakeServer`` in the same event loop (the URL is ignored)."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server

    async def connect(self, url: str, receiver: FrameReceiver) -> Connection:
        return self.server._accept(receiver)


class _MemoryConnection:
    """The client's end of one in-memory connection."""

    def __init__(self, peer: FakeConnection) -> None:
        self._peer = peer

    def send_text(self, data: bytes) -> None:
        self._peer._carry(self._peer._text_from_client, data)

    def disconnect(self) -> None:
        self._peer._close()

    async def wait_disconnected(self) -> None:
        await asyncio.shield(self._peer._gone)


class FakeConnection:
    """The server's end of one client connection: see what the client sends, answer it.

    ``received`` logs every envelope the client sent once established (answered ones too);
    ``receive()`` and ``expect()`` return those the test has to deal with, in order.
    """

    def __init__(self, server: FakeServer, receiver: FrameReceiver) -> None:
        self.server = server
        self.session = ServerSession(server.node, SCHEMES)
        self.node: Node | None = None
        """The client's node once established (``name@domain/instance``)."""
        self.received: list[Item] = []
        self._receiver = receiver
        self._pending: deque[Item] = deque()
        self._arrived = Signal()
        self._loop = asyncio.get_running_loop()
        self._open = True
        self._announced = False
        self._gone: asyncio.Future[None] = self._loop.create_future()
        self._client_end = _MemoryConnection(self)

    @property
    def closed(self) -> bool:
        return not self._open

    async def wait_closed(self) -> None:
        await asyncio.shield(self._gone)

    # -- what the client sent ----------------------------------------------------------------

    async def receive(self) -> Item:
        """The next envelope from the client; ``ConnectionError`` once it is closed and none
        is left."""
        while not self._pending:
            if self._gone.done():
                raise ConnectionError("the connection is closed")
            await self._arrived.wait()
        return self._pending.popleft()

    async def expect(self, kind: type[_T]) -> _T:
        """The next envelope, which must be a ``kind`` (``Message``, ``Notification``...)."""
        item = await self.receive()
        if not isinstance(item, kind):
            raise AssertionError(f"expected a {kind.__name__}, the client sent {item!r}")
        return item

    async def ping(self) -> None:
        """Return once the client answered a ``/ping`` sent now: a barrier for tests.

        The client handles frames in order, so by then it has handled everything sent before
        the ping, and what it sent in reply is in ``pending()``. The answer itself is taken
        out of ``receive()`` (it stays in ``received``).
        """
        ping_id = f"ping-{uuid.uuid4()}"
        self.send(
            Command(
                id=ping_id,
                from_=self.server.node.text,
                to=self._client_node(),
                method=CommandMethod.GET,
                uri="/ping",
            )
        )
        while True:
            for item in self._pending:
                if isinstance(item, Command) and item.is_response and item.id == ping_id:
                    self._pending.remove(item)
                    return
            if self._gone.done():
                raise ConnectionError("the connection closed before the ping was answered")
            await self._arrived.wait()

    def pending(self) -> list[Item]:
        """What ``receive()`` would return now without waiting, oldest first."""
        return list(self._pending)

    # -- answering ---------------------------------------------------------------------------

    def send(self, envelope: Envelope) -> None:
        """Send any envelope of the established session to the client."""
        self._carry_to_client(self.session.send(envelope))

    def deliver(
        self,
        content: Any,
        *,
        sender: str = "alice@localhost/a",
        id: str | None = None,
        type: str = "text/plain",
        metadata: Mapping[str, str] | None = None,
    ) -> Message:
        """Deliver a message from ``sender`` (a new uuid4 id unless given); return it."""
        message = Message(
            id=id if id is not None else str(uuid.uuid4()),
            from_=sender,
            to=self._client_node(),
            type=type,
            content=encode_document(content, type),
            metadata=dict(metadata) if metadata is not None else UNSET,
        )
        self.send(message)
        return message

    def notify(
        self,
        message_id: str,
        event: NotificationEvent | str,
        *,
        code: int | None = None,
        description: str = "",
    ) -> None:
        """Notify a delivery event for a message the client sent (``failed`` needs a code)."""
        self.send(
            Notification(
                id=message_id,
                from_=self.server.node.text,
                to=self._client_node(),
                event=NotificationEvent(event),
                reason=Reason(code=code, description=description or UNSET)
                if code is not None
                else UNSET,
            )
        )

    def respond(self, command: Command, resource: Any = None, *, type: str | None = None) -> None:
        """Answer a command request with success (and a resource, JSON unless ``type``)."""
        if resource is not None and type is None:
            type = "application/json"
        self.send(
            Command(
                id=command.id,
                from_=self.server.node.text,
                to=self._client_node(),
                method=command.method,
                status=CommandStatus.SUCCESS,
                type=type if type is not None else UNSET,
                resource=encode_document(resource, type)
                if resource is not None and type is not None
                else UNSET,
            )
        )

    def respond_failure(self, command: Command, code: int, description: str = "") -> None:
        """Answer a command request with a failure."""
        self.send(
            Command(
                id=command.id,
                from_=self.server.node.text,
                to=self._client_node(),
                method=command.method,
                status=CommandStatus.FAILURE,
                reason=Reason(code=code, description=description or UNSET),
            )
        )

    def fail(self, code: int = ReasonCode.SESSION_ERROR, description: str = "") -> None:
        """End the session with ``failed`` (11 by default, as on a shutdown) and close."""
        self.session.fail(Reason(code=code, description=description or UNSET))
        self._flush()
        self._close()

    def drop(self) -> None:
        """Cut the connection without a word, as a crash or a network failure would."""
        self._close()

    # -- plumbing ----------------------------------------------------------------------------

    def _client_node(self) -> str:
        if self.node is None:
            raise RuntimeError("the session is not established")
        return self.node.text

    def _carry(self, handler: Any, data: bytes) -> None:
        """Frames written while open arrive, in order, through the loop; later ones are lost."""
        if self._open:
            self._loop.call_soon(handler, data)

    def _carry_to_client(self, data: bytes) -> None:
        self._carry(self._to_client, data)

    def _to_client(self, data: bytes) -> None:
        if not self._gone.done():
            self._receiver.text_received(data)

    def _flush(self) -> None:
        for frame in self.session.data_to_send():
            self._carry_to_client(frame)

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._loop.call_soon(self._lost)

    def _lost(self) -> None:
        self._gone.set_result(None)
        self._arrived.notify()
        self._receiver.connection_lost()

    def _text_from_client(self, data: bytes) -> None:
        if self._gone.done():
            return
        event = self.session.receive_text(data)
        if isinstance(event, AuthenticationRequested):
            self._authenticate(event)
        self._flush()
        if self.session.is_closed:  # finished, refused, or failed on a bad frame
            self._close()
        elif isinstance(event, Message | Notification | Command):
            self._client_sent(event)

    def _authenticate(self, request: AuthenticationRequested) -> None:
        if self.server.unresponsive:
            return
        if self.server.refusal is not None:
            self.session.fail(self.server.refusal)
            return
        node = request.node
        self.node = node if node.instance is not None else node.with_instance("default")
        self.session.establish(self.node)
        if not self.server.auto_receipt:
            self._announce()

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            self.server._established.put_nowait(self)

    def _client_sent(self, item: Item) -> None:
        self.received.append(item)
        if (
            self.server.auto_receipt
            and isinstance(item, Command)
            and not item.is_response
            and item.method is CommandMethod.SET
            and item.uri == "/receipt"
        ):
            self.respond(item)
            self._announce()
            return
        if self.server.auto_accept and isinstance(item, Message) and item.id is not UNSET:
            self.notify(item.id, NotificationEvent.ACCEPTED)
        self._pending.append(item)
        self._arrived.notify()
