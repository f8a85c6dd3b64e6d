"""Keeping one logical session up across connections: when to reconnect, and how.

When a link drops, or the server ends the session for a reason retrying can cure (11 on a
shutdown, say), the ``Reconnector`` establishes a new link as the same node, with ``Backoff``
between attempts. It stops on the reasons retrying cannot cure (``PERMANENT_SESSION_FAILURES``),
when reconnection is off, when the backoff runs out of attempts, and when the client closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from tidings.protocol.lime import ReasonCode, SessionEnded, SessionState

from ._backoff import Backoff
from ._exceptions import (
    CommandFailed,
    ConnectError,
    ConnectionLost,
    SessionFailed,
    TidingsClientError,
    reason_parts,
)
from ._link import Link

__all__ = ["PERMANENT_SESSION_FAILURES", "Reconnector", "stop_reason"]

logger = logging.getLogger("tidings.sdk")

PERMANENT_SESSION_FAILURES: Final = frozenset(
    {
        ReasonCode.SESSION_REGISTRATION_ERROR,
        ReasonCode.SESSION_AUTHENTICATION_FAILED,
        ReasonCode.VALIDATION_INVALID_IDENTITY,
        ReasonCode.AUTHORIZATION_ERROR,
        ReasonCode.AUTHORIZATION_UNAUTHORIZED_SENDER,
        ReasonCode.AUTHORIZATION_PERMISSION_REQUIRED,
    }
)
"""Session failures after which reconnecting cannot help (or would fight a newer connection)."""


def stop_reason(*, reconnect: bool, ended: SessionEnded | None) -> TidingsClientError | None:
    """Why a lost link must not be replaced (``ended`` is how its session ended, if it did)."""
    if not reconnect:
        return ConnectionLost("the connection was lost and reconnect=False")
    if ended is not None and ended.state is SessionState.FAILED:
        code, description = reason_parts(ended.reason)
        if code in PERMANENT_SESSION_FAILURES:
            return SessionFailed(code, description)
    return None


class Reconnector:
    """Watches the current link and replaces it when it drops, until told or forced to stop.

    ``establish`` opens a live link (or raises), ``give_up`` ends the client with an error,
    ``stopping`` says the client is closing; ``label`` names the client in log lines.
    """

    def __init__(
        self,
        *,
        url: str,
        backoff: Backoff,
        reconnect: bool,
        establish: Callable[[], Awaitable[Link]],
        give_up: Callable[[TidingsClientError], Awaitable[None]],
        stopping: Callable[[], bool],
        label: Callable[[], str],
    ) -> None:
        self.url = url
        self.backoff = backoff
        self.reconnect = reconnect
        self._establish = establish
        self._give_up = give_up
        self._stopping = stopping
        self._label = label
        self._task: asyncio.Task[None] | None = None

    def start(self, link: Link) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(link), name=f"tidings-sdk {self._label()}"
        )

    async def stop(self) -> None:
        """Cancel the watch and wait for it (a no-op from inside it, as when it gives up)."""
        task = self._task
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("%s: the reconnection task failed", self._label())

    async def _run(self, link: Link) -> None:
        while True:
            await asyncio.wait({link.lost})
            if self._stopping():
                return
            ended = link.ended.result() if link.ended.done() else None
            stop = stop_reason(reconnect=self.reconnect, ended=ended)
            if stop is not None:
                await self._give_up(stop)
                return
            logger.info("%s: connection lost, reconnecting", self._label())
            replacement = await self._replace()
            if replacement is None:
                return
            link = replacement

    async def _replace(self) -> Link | None:
        for delay in self.backoff.delays():
            await asyncio.sleep(delay)
            if self._stopping():
                return None
            try:
                return await self._establish()
            except SessionFailed as exc:
                if exc.code in PERMANENT_SESSION_FAILURES:
                    await self._give_up(exc)
                    return None
                logger.info("%s: reconnection refused: %s", self._label(), exc)
            except (ConnectError, CommandFailed) as exc:
                logger.info("%s: reconnection failed: %s", self._label(), exc)
            except Exception:
                logger.exception("%s: unexpected error while reconnecting", self._label())
        await self._give_up(ConnectError(f"gave up reconnecting to {self.url}"))
        return None
