"""LIME resources of named sessions (``/sessions``) and the LIME encoding of server notices.

| resource | methods |
|---|---|
| ``/sessions`` | get: collection of ``application/vnd.tidings.session+json`` |
| ``/sessions/{name}`` | get (with a queue snapshot), set/merge ``{"limit", "policy"}``, delete |
| ``/sessions/{name}/persistence`` | set: begin -> ``{"nonce", "memento", "crashed"}``; delete: end
  (nonce in ``metadata["tidings.nonce"]`` or the resource ``{"nonce"}``) |
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..core.authz import Resource
from ..core.errors import ErrorId, Invalid, TidingsError
from ..core.model import PersistStep
from ..core.queues import GAP_TYPE
from ..core.session_registry import LiveSession
from ..protocol.lime import (
    UNSET,
    Command,
    CommandMethod,
    Message,
    Notification,
    NotificationEvent,
    Reason,
    encode_envelope,
    scoped_metadata,
)
from .context import LimeContext
from .errors import lime_reason
from .lime_resource import (
    authorize,
    collection,
    no_method,
    no_resource,
    resource_of,
)

SESSION: Final = "application/vnd.tidings.session+json"
PERSISTENCE: Final = "application/vnd.tidings.persistence+json"
NONCE_KEY: Final = "tidings.nonce"
MEMENTO_KEY: Final = "tidings.memento"


class LimeNotices:
    """``NoticeFactory`` for LIME: gap markers, kept failures, server-side notify messages.

    The server's own messages are ``public`` (the server is no node of anyone's circles); the
    router does not stamp them again."""

    def __init__(self, server_node: str) -> None:
        self.server_node = server_node

    def gap(self, node: str, gap_id: str, dropped: int, lost: list[dict[str, str]]) -> bytes:
        return encode_envelope(
            Message(
                id=gap_id,
                from_=self.server_node,
                to=node,
                metadata=scoped_metadata(None),
                type=GAP_TYPE,
                content=msgspec.Raw(msgspec.json.encode({"dropped": dropped, "lost": lost})),
            )
        )

    def dispatched(self, node: str, message_id: str) -> bytes:
        return encode_envelope(
            Notification(
                id=message_id,
                from_=self.server_node,
                to=node,
                event=NotificationEvent.DISPATCHED,
            )
        )

    def failed(self, node: str, message_id: str, error: TidingsError) -> bytes:
        return encode_envelope(
            Notification(
                id=message_id,
                from_=self.server_node,
                to=node,
                event=NotificationEvent.FAILED,
                reason=lime_reason(error),
            )
        )

    def message(
        self, node: str, message_id: str, type_: str, content: Any, *, sender: str | None = None
    ) -> bytes:
        return encode_envelope(
            Message(
                id=message_id,
                from_=sender if sender is not None else self.server_node,
                to=node,
                metadata=scoped_metadata(None),
                type=type_,
                content=msgspec.Raw(msgspec.json.encode(content)),
            )
        )

    def notification(
        self, node: str, to: str, message_id: str, event: str, reason: tuple[int, str] | None
    ) -> bytes:
        return encode_envelope(
            Notification(
                id=message_id,
                from_=node,
                to=to,
                event=NotificationEvent(event),
                reason=UNSET if reason is None else Reason(code=reason[0], description=reason[1]),
            )
        )


def persist_step(live: LiveSession, metadata: Any) -> PersistStep | None:
    """The persistent-session part of an envelope's metadata, if it has one."""
    if not isinstance(metadata, dict) or NONCE_KEY not in metadata:
        return None
    nonce = metadata[NONCE_KEY]
    memento = metadata.get(MEMENTO_KEY)
    if not isinstance(nonce, str) or not (memento is None or isinstance(memento, str)):
        raise Invalid(
            ErrorId.INVALID_ARGUMENT, f"'{NONCE_KEY}' and '{MEMENTO_KEY}' must be strings"
        )
    if "\x00" in nonce or (memento is not None and "\x00" in memento):
        raise Invalid(  # both are stored as text, which PostgreSQL's cannot hold NUL in
            ErrorId.INVALID_ARGUMENT, f"'{NONCE_KEY}' and '{MEMENTO_KEY}' may not contain NUL"
        )
    return PersistStep(live.identity, live.instance, nonce, memento)


def without_persistence(metadata: Any) -> Any:
    """Metadata as forwarded: the nonce (a capability of the sender) stays at the server."""
    if not isinstance(metadata, dict) or (
        NONCE_KEY not in metadata and MEMENTO_KEY not in metadata
    ):
        return metadata
    rest = {k: v for k, v in metadata.items() if k not in (NONCE_KEY, MEMENTO_KEY)}
    return rest if rest else UNSET


async def sessions_resource(
    ctx: LimeContext, live: LiveSession, owner: str, rest: list[str], command: Command
) -> Any:
    service = ctx.sessions
    await authorize(ctx, live, Resource.SESSIONS, owner, command)
    method = command.method
    if not rest:
        if method is CommandMethod.GET:
            return collection(SESSION, await service.sessions_of(owner))
    elif len(rest) == 1:
        name = rest[0]
        if method is CommandMethod.GET:
            info = await service.info(owner, name)
            for entry in info["queue"]:
                entry["envelope"] = msgspec.Raw(entry["envelope"])
            return SESSION, info
        if method in (CommandMethod.SET, CommandMethod.MERGE):
            return SESSION, await service.configure(owner, name, resource_of(command))
        if method is CommandMethod.DELETE:
            await service.delete(owner, name)
            return None
    elif len(rest) == 2 and rest[1] == "persistence":
        name = rest[0]
        if method is CommandMethod.SET:
            state = await service.begin(owner, name)
            return PERSISTENCE, {
                "nonce": state.nonce,
                "memento": state.memento,
                "crashed": state.crashed,
            }
        if method is CommandMethod.DELETE:
            nonce: Any = None
            if isinstance(command.metadata, dict):
                nonce = command.metadata.get(NONCE_KEY)
            if nonce is None and command.resource is not UNSET:
                document = resource_of(command)
                nonce = document.get("nonce") if isinstance(document, dict) else None
            await service.end(owner, name, nonce)
            return None
    else:
        raise no_resource(command)
    raise no_method(command)
