"""Sans-I/O protocol layer: codecs and state machines, no asyncio, no sockets, no storage."""

from ._errors import InvalidState, LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = ["InvalidState", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]
