"""Conversation events that are not wire messages, named as past-tense facts."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import RemoteProtocolError
from ._messages import FeedKey

__all__ = [
    "HandshakeRejected",
    "HandshakeTimedOut",
    "PeerClosed",
    "PeerViolated",
    "TerminationWindowClosed",
]


@dataclass(frozen=True, slots=True)
class PeerViolated:
    """The peer sent an invalid or out-of-sequence message; it was not processed.

    On the server the ``ViolationResponse`` is already queued; disconnecting
    (the spec's recommendation) is the gateway's choice.
    """

    error: RemoteProtocolError


@dataclass(frozen=True, slots=True)
class HandshakeRejected:
    """Server: a Handshake offered no supported version; the failure reply is queued."""

    offered: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HandshakeTimedOut:
    """Server: no compatible Handshake in time; the gateway must drop the connection."""


@dataclass(frozen=True, slots=True)
class TerminationWindowClosed:
    """Server: a terminated feed is now closed; a FeedClose for it is a violation again."""

    feed: FeedKey


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The transport closed; the conversation accepts no more input or output."""
