"""Errors raised by the sans-I/O protocol layer: one root, so ``except ProtocolError`` is enough.

ProtocolError
 +-- LocalProtocolError            we tried something the protocol forbids (a bug on our side)
 |    +-- InvalidState             a call that does not fit the current state
 |    +-- feedme.LocalProtocolError
 |         +-- feedme.InvalidState (also an ``InvalidState``)
 +-- RemoteProtocolError           the peer sent something the protocol forbids
 |    +-- lime.EnvelopeError       a frame that is not a valid envelope (``reason``)
 |    +-- lime.InvalidNode         a string that is not a node (also a ``ValueError``)
 |    +-- feedme.RemoteProtocolError  a violation (``case``, ``diagnostics``)
 +-- feedme.FeedmeError            base of the Feedme errors above, and of
      +-- feedme.DeltaError        a delta that cannot apply (also a ``ValueError``)

Each protocol package keeps its own names and extra attributes (the hint a caller needs to
answer: a LIME ``Reason``, Feedme ``diagnostics``) and subclasses the shared classes here.
"""

from __future__ import annotations

__all__ = ["InvalidState", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class of every protocol-layer error."""


class LocalProtocolError(ProtocolError):
    """We tried to send or do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol."""


class InvalidState(LocalProtocolError):
    """The call does not fit the current state of the state machine."""
