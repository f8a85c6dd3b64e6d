"""What a ``SecureChannel`` reports from the bytes it received: facts, named in the past tense."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from ..e2e import NodeInfo
from ._envelope import PeerMessage
from ._errors import PeerError

__all__ = [
    "AcksReceived",
    "ChannelEvent",
    "Established",
    "MessageDropped",
    "MessageReceived",
    "ReplayDropped",
]


@dataclass(frozen=True, slots=True)
class Established:
    """The handshake completed and ``peer`` (its node info) passed every check."""

    peer: NodeInfo


@dataclass(frozen=True, slots=True)
class MessageReceived:
    message: PeerMessage


@dataclass(frozen=True, slots=True)
class AcksReceived:
    """The peer acknowledged these ids of our messages (in the order it listed them)."""

    ids: list[str]


@dataclass(frozen=True, slots=True)
class ReplayDropped:
    """A transport record whose counter was not above the last accepted one: not decrypted."""

    counter: int


@dataclass(frozen=True, slots=True)
class MessageDropped:
    """One netstring inside an authentic record was no valid message; the stream goes on."""

    error: PeerError


ChannelEvent: TypeAlias = (
    Established | MessageReceived | AcksReceived | ReplayDropped | MessageDropped
)
