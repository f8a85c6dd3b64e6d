"""The four LIME envelope types, as sent on the wire.

No envelope carries a type field: receivers tell them apart by which key is present, in the
order ``content`` (message), ``event`` (notification), ``method`` (command), ``state`` (session).
Absent keys are ``UNSET`` and are never written, because a stray ``"content": null`` would make
lime-js take a session for a message. Message contents and command resources stay raw JSON
(``msgspec.Raw``) so that the server forwards them byte for byte and parses only what it serves.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeAlias

import msgspec
from msgspec import UNSET, Raw, UnsetType, field

from ._reasons import Reason

__all__ = [
    "UNSET",
    "Command",
    "CommandMethod",
    "CommandStatus",
    "Envelope",
    "Message",
    "Notification",
    "NotificationEvent",
    "Raw",
    "Session",
    "SessionState",
    "UnsetType",
]


class SessionState(StrEnum):
    NEW = "new"
    NEGOTIATING = "negotiating"
    AUTHENTICATING = "authenticating"
    ESTABLISHED = "established"
    FINISHING = "finishing"
    FINISHED = "finished"
    FAILED = "failed"


class NotificationEvent(StrEnum):
    ACCEPTED = "accepted"
    VALIDATED = "validated"
    AUTHORIZED = "authorized"
    DISPATCHED = "dispatched"
    RECEIVED = "received"
    CONSUMED = "consumed"
    FAILED = "failed"


class CommandMethod(StrEnum):
    GET = "get"
    SET = "set"
    MERGE = "merge"
    DELETE = "delete"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    OBSERVE = "observe"


class CommandStatus(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


class _Base(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    id: str | UnsetType = UNSET
    from_: str | UnsetType = field(name="from", default=UNSET)
    to: str | UnsetType = UNSET
    pp: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


class Message(_Base, frozen=True, kw_only=True):
    type: str
    content: Raw


class Notification(_Base, frozen=True, kw_only=True):
    event: NotificationEvent
    reason: Reason | UnsetType = UNSET


class Command(_Base, frozen=True, kw_only=True):
    method: CommandMethod
    uri: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    resource: Raw | UnsetType = UNSET
    status: CommandStatus | UnsetType = UNSET
    reason: Reason | UnsetType = UNSET

    @property
    def is_response(self) -> bool:
        return self.status is not UNSET


class Session(_Base, frozen=True, kw_only=True):
    state: SessionState
    encryptionOptions: list[str] | UnsetType = UNSET
    compressionOptions: list[str] | UnsetType = UNSET
    encryption: str | UnsetType = UNSET
    compression: str | UnsetType = UNSET
    schemeOptions: list[str] | UnsetType = UNSET
    scheme: str | UnsetType = UNSET
    authentication: dict[str, Any] | UnsetType = UNSET
    reason: Reason | UnsetType = UNSET


Envelope: TypeAlias = Message | Notification | Command | Session
