"""Tidings Python SDK: an asyncio LIME client.

Example::

    async with Client("ws://localhost:8080", "alice@localhost", instance="laptop",
                      password="secret") as client:
        await client.send_message("bob@localhost", "hello")        # waits for "accepted"
        async for message in client.messages():                      # each message once
            print(message.sender, message.content)
"""

from ._backoff import Backoff
from ._bus import LocalBus
from ._circles import Circle, Circles
from ._client import Client, WaitFor
from ._consent import Consent, ConsentInbox, InboxEvent, capability_token
from ._dedupe import MessageKey, SeenMessages
from ._directory import KeyOwner
from ._exceptions import (
    AuthenticationFailed,
    ClientClosed,
    CommandFailed,
    ConnectError,
    ConnectionLost,
    ConsentError,
    InviteRefused,
    LimeError,
    MessageFailed,
    MessageInDoubt,
    OutboxFull,
    PeerSendFailed,
    RequestTimeout,
    SessionFailed,
    TidingsClientError,
)
from ._iterators import Envelopes, Incoming, IncomingSource, Messages
from ._keystore import KeyFileError, KeyStore
from ._peer_directory import PeerAddress
from ._peer_links import PeerLink
from ._peer_outbox import Outgoing, PeerOutbox
from ._persistent import Backlog, Gap, PersistentSession, backlog
from ._pipeline import MessageLayer
from ._platform import Delivered, Messaging, Platform, Sending
from ._sealing import Rejection, SealingFailed
from ._transport import Connection, FrameReceiver, Transport, WebSocketTransport
from ._types import CommandResult, ReceivedMessage

__all__ = [
    "AuthenticationFailed",
    "Backlog",
    "Backoff",
    "Circle",
    "Circles",
    "Client",
    "ClientClosed",
    "CommandFailed",
    "CommandResult",
    "ConnectError",
    "Connection",
    "ConnectionLost",
    "Consent",
    "ConsentError",
    "ConsentInbox",
    "Delivered",
    "Envelopes",
    "FrameReceiver",
    "Gap",
    "InboxEvent",
    "Incoming",
    "IncomingSource",
    "InviteRefused",
    "KeyFileError",
    "KeyOwner",
    "KeyStore",
    "LimeError",
    "LocalBus",
    "MessageFailed",
    "MessageInDoubt",
    "MessageKey",
    "MessageLayer",
    "Messages",
    "Messaging",
    "OutboxFull",
    "Outgoing",
    "PeerAddress",
    "PeerLink",
    "PeerOutbox",
    "PeerSendFailed",
    "PersistentSession",
    "Platform",
    "ReceivedMessage",
    "Rejection",
    "RequestTimeout",
    "SealingFailed",
    "SeenMessages",
    "Sending",
    "SessionFailed",
    "TidingsClientError",
    "Transport",
    "WaitFor",
    "WebSocketTransport",
    "backlog",
    "capability_token",
]
