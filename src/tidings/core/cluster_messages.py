"""The messages nodes send each other through the broker (``core.cluster``), and their codec.

Each is a msgspec struct encoded as a tagged msgpack map, and names its ``origin`` node, so
that a node skips what it published itself (the broker hands a node its own publications too).
Channels: ``tidings:node:{node_id}`` (to one node), ``tidings:all`` (to every node); feed
revelations go on ``tidings:feed:...`` in their own format (``core.feeds``).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "ALL",
    "Attached",
    "Bye",
    "ClusterMessage",
    "ClusterMessageError",
    "Deliver",
    "Detached",
    "Forget",
    "Heartbeat",
    "Hello",
    "LiveEntry",
    "PresenceChanged",
    "RecordChanged",
    "Sessions",
    "TakeOver",
    "Wake",
    "decode",
    "encode",
    "node_channel",
]

ALL: Final = "tidings:all"


def node_channel(node_id: str) -> str:
    return f"tidings:node:{node_id}"


class _Message(msgspec.Struct, frozen=True, tag_field="t", array_like=False):
    origin: str


class Heartbeat(_Message, frozen=True, tag="hb"):
    """Sent every ``heartbeat_s`` to ``ALL``: the node lives (and holds ``sessions``)."""

    sessions: int = 0


class Hello(_Message, frozen=True, tag="hello"):
    """At start and after a broker reconnect, to ``ALL``: every node answers with
    ``Sessions`` on the origin's node channel."""


class LiveEntry(msgspec.Struct, frozen=True, array_like=True):
    identity: str
    instance: str
    presence: dict[str, Any] = {}


class Sessions(_Message, frozen=True, tag="sessions"):
    """The answer to ``Hello``, or to meeting a node: every live session the origin holds
    (replaces what the receiver knew of that node)."""

    sessions: list[LiveEntry] = []
    ask: bool = False
    """The receiver answers with its own (sent on meeting a node that may not know this
    one's sessions: one that it had taken for dead, say)."""


class Attached(_Message, frozen=True, tag="attached"):
    identity: str
    instance: str
    presence: dict[str, Any] = {}


class Detached(_Message, frozen=True, tag="detached"):
    identity: str
    instance: str


class PresenceChanged(_Message, frozen=True, tag="presence"):
    identity: str
    instance: str
    presence: dict[str, Any] = {}


class Wake(_Message, frozen=True, tag="wake"):
    """To the owner node: these rows were stored in the session's queue; write them."""

    identity: str
    instance: str
    seqs: list[int] = []


class Deliver(_Message, frozen=True, tag="deliver"):
    """To the owner node: something not queued for a live session. With ``event`` it is a
    receipt for the session's message ``message_id`` (``dispatched``...); otherwise
    ``payload`` is an encoded envelope (a forwarded notification or command), and
    ``message_id`` the message a notification is about (it waits for that one's
    ``accepted``)."""

    identity: str
    instance: str
    payload: bytes = b""
    message_id: str = ""
    event: str = ""
    command: bool = False
    """A command: not kept when the session is gone (a notification is)."""


class TakeOver(_Message, frozen=True, tag="takeover"):
    """To the previous owner: the session attached on the origin node; end its connection."""

    identity: str
    instance: str


class RecordChanged(_Message, frozen=True, tag="record"):
    """A session record was created, changed or deleted: read it again from the store."""

    identity: str
    instance: str


class Forget(_Message, frozen=True, tag="forget"):
    """A cache invalidation (``kind``: ``trust``, ``trust-all``, ``grant``, ``keys``,
    ``inbox``, ``account``), with what the receivers need to tell their local listeners."""

    kind: str
    key: str = ""
    data: bytes = b""


class Bye(_Message, frozen=True, tag="bye"):
    """The origin stops: its sessions leave the directory now rather than on expiry."""


ClusterMessage = (
    Heartbeat
    | Hello
    | Sessions
    | Attached
    | Detached
    | PresenceChanged
    | Wake
    | Deliver
    | TakeOver
    | RecordChanged
    | Forget
    | Bye
)


class ClusterMessageError(ValueError):
    """Bytes from the broker that are not a cluster message (another version, or garbage)."""


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[ClusterMessage] = msgspec.msgpack.Decoder(ClusterMessage)


def encode(message: ClusterMessage) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> ClusterMessage:
    """The message ``data`` encodes; raises ``ClusterMessageError`` for anything else."""
    try:
        return _decoder.decode(data)
    except (msgspec.MsgspecError, ValueError) as exc:  # ValueError: bad UTF-8 in a string
        raise ClusterMessageError(f"not a cluster message: {exc}") from None
