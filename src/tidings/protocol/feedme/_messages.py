"""Feedme wire messages, shaped exactly as feedme-util 0.2.2 validates them.

Every schema the installed client enforces is ``additionalProperties: false``,
names and ids are non-empty strings and ``FeedArgs`` is an object of strings.
Optional wire keys use ``msgspec.UNSET`` so that an absent key is never
encoded as ``null``. Constructors raise ``ValueError`` for anything the peer
would reject; decoding turns the same checks into schema violations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeAlias

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "MESSAGE_TYPES",
    "Action",
    "ActionResponse",
    "ActionRevelation",
    "ClientMessage",
    "Delta",
    "DeltaOperation",
    "FeedClose",
    "FeedCloseResponse",
    "FeedKey",
    "FeedOpen",
    "FeedOpenResponse",
    "FeedTermination",
    "Handshake",
    "HandshakeResponse",
    "JsonObject",
    "Message",
    "ServerMessage",
    "ViolationResponse",
]

JsonObject: TypeAlias = dict[str, Any]
NonEmpty = Annotated[str, Meta(min_length=1)]
PathElement = str | int


class FeedKey(msgspec.Struct, frozen=True, cache_hash=True):
    """Feed identity: messages with the same name, argument keys and values
    refer to the same feed, whatever the key order."""

    name: str
    args: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, name: str, args: Mapping[str, str] | None = None) -> FeedKey:
        return cls(name, frozenset((args or {}).items()))

    def args_dict(self) -> dict[str, str]:
        return dict(self.args)


def _check_name(field: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} must be a non-empty string")


def _check_object(field: str, value: object) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{field} must be a JSON object")


def _check_feed(name: object, args: object) -> None:
    _check_name("FeedName", name)
    if isinstance(name, str) and "\x00" in name:
        # a feed name keys stored documents, and PostgreSQL's text cannot hold NUL
        raise ValueError("FeedName may not contain NUL")
    if not isinstance(args, dict):
        raise ValueError("FeedArgs must be an object of strings")
    for key, val in args.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise ValueError("FeedArgs must be an object of strings")


class _Message(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    rename="pascal",
    tag_field="MessageType",
):
    """Common wire settings: PascalCase keys, ``MessageType`` tag, no extras."""


class _FeedMessage(_Message, frozen=True):
    feed_name: NonEmpty
    feed_args: dict[str, str]

    @property
    def feed(self) -> FeedKey:
        return FeedKey(self.feed_name, frozenset(self.feed_args.items()))

    def __post_init__(self) -> None:
        _check_feed(self.feed_name, self.feed_args)


# --- client -> server -------------------------------------------------------


class Handshake(_Message, frozen=True, tag="Handshake"):
    versions: Annotated[list[str], Meta(min_length=1)]

    def __post_init__(self) -> None:
        if not self.versions or not all(isinstance(v, str) for v in self.versions):
            raise ValueError("Versions must be a non-empty array of strings")


class Action(_Message, frozen=True, tag="Action"):
    action_name: NonEmpty
    action_args: JsonObject
    callback_id: NonEmpty

    def __post_init__(self) -> None:
        _check_name("ActionName", self.action_name)
        _check_object("ActionArgs", self.action_args)
        _check_name("CallbackId", self.callback_id)


class FeedOpen(_FeedMessage, frozen=True, tag="FeedOpen"):
    pass


class FeedClose(_FeedMessage, frozen=True, tag="FeedClose"):
    pass


# --- server -> client -------------------------------------------------------


class ViolationResponse(_Message, frozen=True, tag="ViolationResponse"):
    diagnostics: JsonObject

    def __post_init__(self) -> None:
        _check_object("Diagnostics", self.diagnostics)


class HandshakeResponse(_Message, frozen=True, tag="HandshakeResponse"):
    """Success carries ``Version`` and nothing else: no ``ClientId`` (util 0.2.2)."""

    success: bool
    version: NonEmpty | UnsetType = UNSET

    @classmethod
    def accepted(cls, version: str) -> HandshakeResponse:
        return cls(success=True, version=version)

    @classmethod
    def rejected(cls) -> HandshakeResponse:
        return cls(success=False)

    def __post_init__(self) -> None:
        if self.success:
            _check_name("Version", self.version)
        elif self.version is not UNSET:
            raise ValueError("a failed HandshakeResponse has no Version")


def _check_outcome(
    success: bool, data_field: str, data: object, error_code: object, error_data: object
) -> None:
    if success:
        _check_object(data_field, data)
        if error_code is not UNSET or error_data is not UNSET:
            raise ValueError("a successful response has no ErrorCode or ErrorData")
    else:
        if data is not UNSET:
            raise ValueError(f"a failed response has no {data_field}")
        _check_name("ErrorCode", error_code)
        _check_object("ErrorData", error_data)


class ActionResponse(_Message, frozen=True, tag="ActionResponse"):
    callback_id: NonEmpty
    success: bool
    action_data: JsonObject | UnsetType = UNSET
    error_code: NonEmpty | UnsetType = UNSET
    error_data: JsonObject | UnsetType = UNSET

    @classmethod
    def ok(cls, callback_id: str, action_data: JsonObject) -> ActionResponse:
        return cls(callback_id=callback_id, success=True, action_data=action_data)

    @classmethod
    def error(
        cls, callback_id: str, error_code: str, error_data: JsonObject | None = None
    ) -> ActionResponse:
        return cls(
            callback_id=callback_id,
            success=False,
            error_code=error_code,
            error_data={} if error_data is None else error_data,
        )

    def __post_init__(self) -> None:
        _check_name("CallbackId", self.callback_id)
        _check_outcome(
            self.success, "ActionData", self.action_data, self.error_code, self.error_data
        )


class FeedOpenResponse(_FeedMessage, frozen=True, tag="FeedOpenResponse"):
    success: bool
    feed_data: JsonObject | UnsetType = UNSET
    error_code: NonEmpty | UnsetType = UNSET
    error_data: JsonObject | UnsetType = UNSET

    @classmethod
    def ok(cls, feed: FeedKey, feed_data: JsonObject) -> FeedOpenResponse:
        return cls(feed.name, feed.args_dict(), success=True, feed_data=feed_data)

    @classmethod
    def error(
        cls, feed: FeedKey, error_code: str, error_data: JsonObject | None = None
    ) -> FeedOpenResponse:
        return cls(
            feed.name,
            feed.args_dict(),
            success=False,
            error_code=error_code,
            error_data={} if error_data is None else error_data,
        )

    def __post_init__(self) -> None:
        _check_feed(self.feed_name, self.feed_args)
        _check_outcome(self.success, "FeedData", self.feed_data, self.error_code, self.error_data)


class FeedCloseResponse(_FeedMessage, frozen=True, tag="FeedCloseResponse"):
    """Always a success: a server may not refuse a valid FeedClose."""

    @classmethod
    def of(cls, feed: FeedKey) -> FeedCloseResponse:
        return cls(feed.name, feed.args_dict())


class DeltaOperation(StrEnum):
    """The 14 delta operations, valued as on the wire."""

    SET = "Set"
    DELETE = "Delete"
    DELETE_VALUE = "DeleteValue"
    PREPEND = "Prepend"
    APPEND = "Append"
    INCREMENT = "Increment"
    DECREMENT = "Decrement"
    TOGGLE = "Toggle"
    INSERT_FIRST = "InsertFirst"
    INSERT_LAST = "InsertLast"
    INSERT_BEFORE = "InsertBefore"
    INSERT_AFTER = "InsertAfter"
    DELETE_FIRST = "DeleteFirst"
    DELETE_LAST = "DeleteLast"


_NO_VALUE = frozenset(
    {
        DeltaOperation.DELETE,
        DeltaOperation.TOGGLE,
        DeltaOperation.DELETE_FIRST,
        DeltaOperation.DELETE_LAST,
    }
)
_STRING_VALUE = frozenset({DeltaOperation.PREPEND, DeltaOperation.APPEND})
_NUMBER_VALUE = frozenset({DeltaOperation.INCREMENT, DeltaOperation.DECREMENT})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Delta(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, rename="pascal"
):
    """One feed delta. ``Value`` is present iff the operation takes one.

    ``Path`` follows feedme-util 0.2.2: empty for the root, otherwise a
    non-empty string first, then non-empty strings or integers >= 0.
    """

    operation: DeltaOperation
    path: tuple[PathElement, ...]
    value: Any = UNSET

    takes_value: ClassVar[frozenset[DeltaOperation]] = frozenset(DeltaOperation) - _NO_VALUE

    def __post_init__(self) -> None:
        for index, element in enumerate(self.path):
            if isinstance(element, str):
                if not element:
                    raise ValueError("Path strings must be non-empty")
            elif type(element) is not int or element < 0 or index == 0:
                raise ValueError("Path must start with a string; indexes are integers >= 0")
        op = self.operation
        if op in _NO_VALUE:
            if self.value is not UNSET:
                raise ValueError(f"{op.value} takes no Value")
        elif self.value is UNSET:
            raise ValueError(f"{op.value} requires a Value")
        elif op in _STRING_VALUE and not isinstance(self.value, str):
            raise ValueError(f"{op.value} requires a string Value")
        elif op in _NUMBER_VALUE and not _is_number(self.value):
            raise ValueError(f"{op.value} requires a number Value")


class ActionRevelation(_FeedMessage, frozen=True, tag="ActionRevelation"):
    """Named ``ActionRevelation`` (not the later spec's ``FeedAction``) for
    feedme-client 0.0.35. ``FeedMd5`` is omitted, never null, when unknown."""

    action_name: NonEmpty
    action_data: JsonObject
    feed_deltas: list[Delta]
    feed_md5: Annotated[str, Meta(min_length=24, max_length=24)] | UnsetType = UNSET

    @classmethod
    def of(
        cls,
        feed: FeedKey,
        action_name: str,
        action_data: JsonObject,
        deltas: Iterable[Delta] = (),
        feed_md5: str | None = None,
    ) -> ActionRevelation:
        return cls(
            feed.name,
            feed.args_dict(),
            action_name=action_name,
            action_data=action_data,
            feed_deltas=list(deltas),
            feed_md5=UNSET if feed_md5 is None else feed_md5,
        )

    def __post_init__(self) -> None:
        _check_feed(self.feed_name, self.feed_args)
        _check_name("ActionName", self.action_name)
        _check_object("ActionData", self.action_data)
        if not all(isinstance(d, Delta) for d in self.feed_deltas):
            raise ValueError("FeedDeltas must hold Delta values")
        if self.feed_md5 is not UNSET and (
            not isinstance(self.feed_md5, str) or len(self.feed_md5) != 24
        ):
            raise ValueError("FeedMd5 must be a 24-character string")


class FeedTermination(_FeedMessage, frozen=True, tag="FeedTermination"):
    error_code: NonEmpty
    error_data: JsonObject

    @classmethod
    def of(
        cls, feed: FeedKey, error_code: str, error_data: JsonObject | None = None
    ) -> FeedTermination:
        return cls(
            feed.name,
            feed.args_dict(),
            error_code=error_code,
            error_data={} if error_data is None else error_data,
        )

    def __post_init__(self) -> None:
        _check_feed(self.feed_name, self.feed_args)
        _check_name("ErrorCode", self.error_code)
        _check_object("ErrorData", self.error_data)


ClientMessage: TypeAlias = Handshake | Action | FeedOpen | FeedClose
ServerMessage: TypeAlias = (
    ViolationResponse
    | HandshakeResponse
    | ActionResponse
    | FeedOpenResponse
    | FeedCloseResponse
    | ActionRevelation
    | FeedTermination
)
Message: TypeAlias = ClientMessage | ServerMessage

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.__name__: cls
    for cls in (
        Handshake,
        Action,
        FeedOpen,
        FeedClose,
        ViolationResponse,
        HandshakeResponse,
        ActionResponse,
        FeedOpenResponse,
        FeedCloseResponse,
        ActionRevelation,
        FeedTermination,
    )
}
