"""Exceptions and violation cases of the Feedme protocol layer.

Hierarchy (each class also subclasses its namesake in ``tidings.protocol``,
so ``except ProtocolError`` catches every one of them)::

    FeedmeError (ProtocolError)
    ├── LocalProtocolError      we tried to do something Feedme forbids (our bug)
    │   └── InvalidState        the call does not fit the conversation's state
    ├── RemoteProtocolError     the peer broke the spec; never raised by the
    │                           conversation, only recorded and reported
    └── DeltaError (ValueError) a feed delta cannot apply to a document

A peer's misbehaviour never escapes as an exception from ``receive_text``:
the conversation records a ``RemoteProtocolError`` and, on the server side,
queues the ``ViolationResponse`` the client is owed.
"""

from __future__ import annotations

from enum import StrEnum

from .. import _errors as _shared

__all__ = [
    "DeltaError",
    "DeltaErrorCode",
    "FeedmeError",
    "InvalidState",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ViolationCase",
]


class FeedmeError(_shared.ProtocolError):
    """Base class of every error raised by ``tidings.protocol.feedme``."""


class LocalProtocolError(FeedmeError, _shared.LocalProtocolError):
    """We tried to send something the peer would reject or that breaks sequencing."""


class InvalidState(LocalProtocolError, _shared.InvalidState):
    """The call is not allowed in the conversation's current state (e.g. after close)."""


class ViolationCase(StrEnum):
    """Why a peer message was refused.

    Each value is the ``Diagnostics.Problem`` string the reference server
    (feedme-server-core 0.0.4) sends, so logs and clients see familiar text.
    """

    INVALID_MESSAGE = "Invalid JSON or schema violation."
    UNEXPECTED_HANDSHAKE = "Unexpected Handshake message."
    HANDSHAKE_REQUIRED = "Handshake required."
    CALLBACK_ID_REUSED = "Action message reused an outstanding CallbackId."
    UNEXPECTED_FEED_OPEN = "Unexpected FeedOpen message."
    UNEXPECTED_FEED_CLOSE = "Unexpected FeedClose message."
    # Client role only: the server sent something out of sequence.
    UNEXPECTED_SERVER_MESSAGE = "Unexpected server message."

    @property
    def kind(self) -> str:
        """The reference error family: ``INVALID_MESSAGE`` or ``UNEXPECTED_MESSAGE``."""
        if self is ViolationCase.INVALID_MESSAGE:
            return "INVALID_MESSAGE"
        return "UNEXPECTED_MESSAGE"


class RemoteProtocolError(FeedmeError, _shared.RemoteProtocolError):
    """The peer sent an invalid or out-of-sequence message.

    ``diagnostics`` is exactly what the server put (or would put) in the
    ``ViolationResponse``; ``detail`` says precisely what was wrong and
    ``raw`` is the offending frame (possibly truncated when oversized).
    """

    def __init__(self, case: ViolationCase, detail: str, raw: str) -> None:
        super().__init__(f"{case.kind}: {detail}")
        self.case = case
        self.detail = detail
        self.raw = raw
        self.diagnostics: dict[str, str] = {"Problem": case.value, "Message": raw}
        if case is ViolationCase.INVALID_MESSAGE:
            self.diagnostics["Detail"] = detail


class DeltaErrorCode(StrEnum):
    """Why a delta cannot apply; values are the client's own error texts.

    The two ``STRICT_*`` codes mark deltas that feedme-util 0.2.2 silently
    accepts with JavaScript quirks; a server must never send them.
    """

    ROOT_NOT_OBJECT = "The feed data root must be an object."
    ROOT_HAS_NO_CONTAINER = "The feed data root does not have a container."
    ROOT_NOT_DELETABLE = "Cannot delete the feed data root."
    NOT_A_CONTAINER = "Path references an element of a non-array or a member of a non-object."
    NON_EXISTENT = "Path references a non-existent location in the feed data."
    NON_CONTIGUOUS = "Cannot write non-contiguous elements to an array."
    NOT_DELETABLE_FROM = "Can only delete from arrays and objects."
    NOT_A_STRING = "Can only prepend or append to strings."
    NOT_A_NUMBER = "Can only increment or decrement numbers."
    NOT_A_BOOLEAN = "Can only toggle booleans."
    NOT_AN_ARRAY = "Can only insert into or delete elements from arrays."
    EMPTY_ARRAY = "Cannot delete elements from empty arrays."
    STRICT_PATH_TYPE = "Path uses a string index on an array or an integer key on an object."
    STRICT_NON_FINITE = "The result is not a finite number."

    @property
    def strict_only(self) -> bool:
        """True when the real client would not reject the delta (a JS quirk)."""
        return self in (DeltaErrorCode.STRICT_PATH_TYPE, DeltaErrorCode.STRICT_NON_FINITE)


class DeltaError(FeedmeError, ValueError):
    """A delta is contextually invalid for the document it is applied to."""

    def __init__(self, code: DeltaErrorCode, path: tuple[str | int, ...], index: int = 0) -> None:
        super().__init__(f"INVALID_OPERATION: {code.value} (path {list(path)!r})")
        self.code = code
        self.path = path
        self.index = index
