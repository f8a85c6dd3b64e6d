"""Errors raised by the sans-I/O protocol layer.

ProtocolError
 +-- LocalProtocolError   we tried something the protocol forbids (a bug on our side)
 +-- RemoteProtocolError  the peer sent something the protocol forbids
 +-- InvalidState         a call that does not fit the current state
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every protocol-layer error."""


class LocalProtocolError(ProtocolError):
    """We tried to send or do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol."""


class InvalidState(LocalProtocolError):
    """The call does not fit the current state of the state machine."""
