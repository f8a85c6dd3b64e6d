"""Persistent sessions (exactly-once requests from a stateless client) and gap-aware backlogs.

::

    async with Client(url, "me@example.org", instance="buyer", password=...) as client:
        async with PersistentSession(client) as session:
            start = 0 if session.memento is None else int(session.memento) + 1
            for index in range(start, len(items)):
                await session.send_message("shop@example.org", items[index], memento=str(index))

``begin`` (entering the block) returns the last committed memento; ``crashed`` tells that the
previous instance never ended. Each ``send_message`` carries the nonce and the new memento, and
the server stores the message and the memento in one transaction, so after a crash the memento
says exactly which requests took effect. Leaving the block normally ends the session (nonce and
memento cleared); leaving it with an exception does not, so that the next ``begin`` reports the
crash and the memento. A request refused because another instance began meanwhile raises
``MessageFailed`` with code 125 (``SESSION_NONCE_STALE``): stop, and begin again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from ._client import Client, WaitFor
from ._iterators import Messages
from ._types import ReceivedMessage

__all__ = ["Backlog", "Gap", "PersistentSession", "backlog"]

PERSISTENCE_TYPE: Final = "application/vnd.tidings.persistence+json"
GAP_TYPE: Final = "application/vnd.tidings.gap+json"
NONCE_KEY: Final = "tidings.nonce"
MEMENTO_KEY: Final = "tidings.memento"


class PersistentSession:
    """begin / send with nonce and memento / end, on the client's own session (or ``name``)."""

    def __init__(self, client: Client, name: str | None = None) -> None:
        self.client = client
        self.name = name if name is not None else client.node.rpartition("/")[2]
        self.nonce: str | None = None
        self.memento: str | None = None
        """The last committed memento (updated by each accepted ``send_message``)."""
        self.crashed = False

    @property
    def _uri(self) -> str:
        return f"/sessions/{self.name}/persistence"

    async def begin(self) -> PersistentSession:
        result = await self.client.command("set", self._uri)
        document: dict[str, Any] = result.resource
        self.nonce = document["nonce"]
        self.memento = document["memento"]
        self.crashed = bool(document["crashed"])
        return self

    async def end(self) -> None:
        if self.nonce is None:
            return
        await self.client.command("delete", self._uri, {"nonce": self.nonce}, type=PERSISTENCE_TYPE)
        self.nonce = None
        self.memento = None

    async def send_message(
        self,
        to: str,
        content: Any,
        type: str = "text/plain",
        *,
        memento: str | None,
        id: str | None = None,
        wait: WaitFor = "accepted",
        timeout: float | None = 30.0,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Send a request of this session; ``memento`` (or ``None`` to keep the committed one)
        is committed with it. Raises ``MessageFailed`` 125 when the nonce is stale."""
        if self.nonce is None:
            raise RuntimeError("begin the persistent session first")
        carried = dict(metadata or {})
        carried[NONCE_KEY] = self.nonce
        if memento is not None:
            carried[MEMENTO_KEY] = memento
        message_id = await self.client.send_message(
            to, content, type, id=id, wait=wait, timeout=timeout, metadata=carried
        )
        if memento is not None and wait is not None:
            self.memento = memento
        return message_id

    async def __aenter__(self) -> PersistentSession:
        return await self.begin()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.end()


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages were dropped from this session's full drop-oldest queue before it read them.

    ``dropped`` counts them (since the last gap this session took); ``lost`` names up to 100
    of them as (sender, id)."""

    dropped: int
    lost: list[tuple[str, str]]
    message: ReceivedMessage


class Backlog:
    """``async for item in backlog(client)``: messages in order, and ``Gap`` where some were
    dropped; each exactly once (taking an item acknowledges it, as ``client.messages()``)."""

    def __init__(self, client: Client, auto_ack: bool = True) -> None:
        self._messages: Messages = client.messages(auto_ack=auto_ack)

    def __aiter__(self) -> Backlog:
        return self

    async def __anext__(self) -> ReceivedMessage | Gap:
        message = await self._messages.__anext__()
        content = message.content
        if message.type == GAP_TYPE and isinstance(content, dict) and "dropped" in content:
            lost = [
                (str(item.get("from", "")), str(item.get("id", "")))
                for item in content.get("lost", [])
                if isinstance(item, dict)
            ]
            return Gap(int(content["dropped"]), lost, message)
        return message


def backlog(client: Client, *, auto_ack: bool = True) -> Backlog:
    return Backlog(client, auto_ack)
