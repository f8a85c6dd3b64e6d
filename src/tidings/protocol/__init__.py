"""Sans-I/O protocol layer: codecs and state machines, no asyncio, no sockets, no storage."""
