"""The interfaces the core needs from storage, so that SQLite and PostgreSQL can stand behind it.

Hot-path calls (``append``, ``acknowledge``, ``discard``) take a completion callback rather than
returning an awaitable: the router submits thousands of them a second and a task per message
would cost more than the message. Everything else is a coroutine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from .model import (
    Account,
    AppendResult,
    OverflowPolicy,
    PersistenceState,
    PersistStep,
    QueueBound,
    QueuedEnvelope,
    QueueEntry,
    QueueSnapshotEntry,
    SessionRecord,
    TrimResult,
)
from .queues import NoticeFactory

Done = Callable[[Any], None]
"""Called on the event loop with the result, or with the exception when the write failed."""


def settling(future: asyncio.Future[Any]) -> Done:
    """A completion that settles ``future`` with the result or the exception (once)."""

    def done(result: Any) -> None:
        if future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    return done


class MessageStore(Protocol):
    def append(
        self,
        entries: Sequence[QueueEntry],
        dedupe: tuple[str, str] | None,
        done: Callable[[AppendResult | BaseException], None],
    ) -> None:
        """Store entries atomically, once per ``dedupe`` key (sender, message id)."""

    def acknowledge(
        self,
        identity: str,
        instance: str,
        sender: str,
        message_id: str,
        done: Callable[[int | BaseException], None],
    ) -> None:
        """Remove an acknowledged message from a session's queue; reports rows removed."""

    def discard(self, seqs: Sequence[int]) -> None:
        """Remove delivered entries that need no acknowledgement."""

    def touch_session(self, identity: str, instance: str, last_seen: float) -> None:
        """Record when a session was last connected (idle collection counts from there)."""

    def was_stored(self, sender: str, message_id: str) -> bool:
        """Whether (sender, id) was stored and committed (a fast indexed read, no await)."""

    async def barrier(self) -> None:
        """Wait until every write submitted before this call is committed."""

    async def backlog(
        self, identity: str, instance: str, after_seq: int, limit: int
    ) -> list[QueuedEnvelope]: ...
    async def claim_unclaimed(self, identity: str, instance: str) -> int: ...
    async def load_sessions(self) -> list[SessionRecord]: ...
    async def save_session(self, record: SessionRecord) -> None: ...
    async def forget_message_ids(self, older_than: float) -> int: ...


@runtime_checkable
class SessionQueueStore(Protocol):
    """Bounded queues and persistent sessions (issue 4), beside ``MessageStore``."""

    def append_bounded(
        self,
        entries: Sequence[QueueEntry],
        dedupe: tuple[str, str] | None,
        bounds: Sequence[QueueBound],
        persist: PersistStep | None,
        notices: NoticeFactory,
        server_node: str,
        done: Callable[[TrimResult | BaseException], None],
    ) -> None: ...
    async def delete_session(
        self, identity: str, instance: str, notices: NoticeFactory, server_node: str
    ) -> TrimResult: ...
    async def queue_snapshot(
        self, identity: str, instance: str, limit: int
    ) -> list[QueueSnapshotEntry]: ...
    async def begin_persistence(self, identity: str, instance: str) -> PersistenceState: ...
    async def end_persistence(self, identity: str, instance: str, nonce: str) -> bool: ...
    async def persistence_of(self, identity: str) -> dict[str, PersistenceState]: ...
    async def save_session(self, record: SessionRecord) -> None: ...


class AccountStore(Protocol):
    async def create_account(self, name: str, password_hash: str | None) -> None: ...
    async def get_account(self, name: str) -> Account | None: ...
    def has_account(self, name: str) -> bool:
        """A fast indexed read, usable on the hot path (no await)."""

    async def list_accounts(self) -> list[Account]: ...
    async def delete_account(self, name: str) -> bool: ...
    async def update_account(
        self, name: str, *, password_hash: str | None = None, profile: dict[str, Any] | None = None
    ) -> None: ...
    async def add_key(self, name: str, key_hash: bytes, label: str) -> None: ...
    async def account_for_key(self, key_hash: bytes) -> str | None: ...
    def key_owner(self, key_hash: bytes) -> str | None:
        """A fast indexed read, usable where no await is possible (WebSocket upgrade)."""


class RosterStore(Protocol):
    async def contacts(self, owner: str) -> list[dict[str, Any]]: ...
    async def put_contact(self, owner: str, contact: dict[str, Any]) -> None: ...
    async def delete_contact(self, owner: str, identity: str) -> bool: ...
    async def delegations(self, owner: str) -> list[dict[str, Any]]: ...
    async def put_delegation(self, owner: str, delegation: dict[str, Any]) -> None: ...
    async def delete_delegation(self, owner: str, target: str) -> bool: ...


__all__ = [
    "AccountStore",
    "Done",
    "MessageStore",
    "OverflowPolicy",
    "RosterStore",
    "SessionQueueStore",
]
