"""Command requests matched to their responses by id.

LIME lets a server answer commands in any order, so each request waits on a future of its own,
keyed by its id. The futures belong to one connection: when it drops, every request still
waiting fails (``ConnectionLost``) instead of being re-sent, since commands need not be
idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tidings.protocol.lime import Command

__all__ = ["PendingCommands"]


class PendingCommands:
    """Requests sent on one connection and not yet answered."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Command]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._waiting

    async def request(self, command: Command, send: Callable[[Command], None]) -> Command:
        """Send ``command`` with ``send`` and return its response (success or failure alike).

        Raises whatever ``fail_all()`` is given while it waits. A cancelled request (a
        timeout, say) is forgotten, and its late response ignored.
        """
        command_id = command.id
        if not isinstance(command_id, str):
            raise ValueError("a command request needs an id to match its response")
        if command_id in self._waiting:
            raise ValueError(f"a command with id {command_id!r} is already waiting")
        future: asyncio.Future[Command] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        try:
            send(command)
            return await future
        finally:
            if self._waiting.get(command_id) is future:
                del self._waiting[command_id]

    def resolve(self, response: Command) -> bool:
        """Hand a response to its request; False if nothing waits for that id."""
        future = self._waiting.get(response.id) if isinstance(response.id, str) else None
        if future is None or future.done():
            return False
        future.set_result(response)
        return True

    def fail_all(self, error: BaseException) -> None:
        """Make every waiting request raise ``error``."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
