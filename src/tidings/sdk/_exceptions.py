"""Exceptions raised by the Tidings SDK.

Every exception the SDK raises on purpose derives from ``TidingsClientError``::

    TidingsClientError
     +-- ConnectError            the connection or the session establishment failed
     +-- ConnectionLost          the connection dropped while a command waited for its response
     +-- ClientClosed            the client is closed, or was closed while the call waited
     +-- RequestTimeout          no answer in time (also a ``TimeoutError``)
     +-- OutboxFull              the peer outbox holds its maximum number of messages
     +-- MessageInDoubt          a message out longer than the resend horizon, not re-sent
     +-- LimeError               the server answered with a LIME reason (``code``, ``description``)
          +-- SessionFailed      the server ended the session with ``failed``
          |    +-- AuthenticationFailed   ... because it refused the credentials (code 13)
          +-- MessageFailed      a ``failed`` notification for a message this client sent
          +-- CommandFailed      a ``failure`` response to a command this client sent
               +-- ConsentError  ... to a ``/consent/...`` command, with the ``error_id``
    InviteRefused                ``wait_for_accept``: the single-use invite was refused
    PeerSendFailed               a peer message expired, or its destination was not found

``LimeError.code`` is a ``ReasonCode`` member when the number is a known LIME or Tidings code,
and a plain ``int`` otherwise (the spec lets servers define their own codes).
"""

from __future__ import annotations

import re

from tidings.protocol.lime import Reason, ReasonCode, UnsetType

__all__ = [
    "AuthenticationFailed",
    "ClientClosed",
    "CommandFailed",
    "ConnectError",
    "ConnectionLost",
    "ConsentError",
    "InviteRefused",
    "LimeError",
    "MessageFailed",
    "MessageInDoubt",
    "OutboxFull",
    "PeerSendFailed",
    "RequestTimeout",
    "SessionFailed",
    "TidingsClientError",
]


class TidingsClientError(Exception):
    """Base class of every error the SDK raises."""


class ConnectError(TidingsClientError):
    """The WebSocket connection or the LIME session establishment failed."""


class ConnectionLost(TidingsClientError):
    """The connection dropped while a command was waiting for its response.

    Commands are not re-sent after a reconnection (they need not be idempotent); retry if the
    command is safe to repeat. Messages, unlike commands, are re-sent automatically.
    """


class ClientClosed(TidingsClientError):
    """The client is closed, or was closed while the call was waiting."""


class RequestTimeout(TidingsClientError, TimeoutError):
    """The awaited answer (notification or command response) did not arrive in time."""


def reason_parts(reason: Reason | UnsetType | None) -> tuple[int, str]:
    """The code and description of a wire ``reason`` (GENERAL_ERROR when it is missing)."""
    if not isinstance(reason, Reason):
        return ReasonCode.GENERAL_ERROR, "The server gave no reason"
    return reason.code, reason.description if isinstance(reason.description, str) else ""


def _code(code: int) -> ReasonCode | int:
    try:
        return ReasonCode(code)
    except ValueError:
        return code


class OutboxFull(TidingsClientError):
    """The peer outbox already holds ``max_items`` messages: nothing more is accepted until
    some are delivered or expire (the limit keeps a dead peer from filling the disk)."""


class LimeError(TidingsClientError):
    """The server answered with a LIME reason."""

    code: ReasonCode | int
    description: str

    def __init__(self, code: int, description: str = "") -> None:
        self.code = _code(code)
        self.description = description
        name = self.code.name if isinstance(self.code, ReasonCode) else "unknown code"
        text = f"{int(self.code)} ({name})"
        super().__init__(f"{text}: {description}" if description else text)


class SessionFailed(LimeError):
    """The server ended the session with ``failed`` (during establishment or later)."""


class AuthenticationFailed(SessionFailed):
    """The server refused the credentials (``SESSION_AUTHENTICATION_FAILED``, 13)."""


class MessageFailed(LimeError):
    """The server (or the destination) reported ``failed`` for a message this client sent."""

    message_id: str

    def __init__(self, code: int, description: str = "", message_id: str = "") -> None:
        super().__init__(code, description)
        self.message_id = message_id


class MessageInDoubt(TidingsClientError):
    """A message sent, never ``accepted`` nor ``failed``, that the client will not re-send:
    its connection was lost, and by the time a new one was up the message had been out longer
    than the client's ``resend_horizon``. The server may have stored it (only the ``accepted``
    was lost) or not; it remembers ids only for its duplicate window, so a re-send could be
    stored, and delivered, twice. Find out (a persistent session's memento says what took
    effect), or send it again under a new id, accepting a possible duplicate."""

    message_id: str
    age: float
    """Seconds since the message was first sent."""

    def __init__(self, message_id: str, age: float, horizon: float) -> None:
        super().__init__(
            f"message {message_id!r} was sent {age:.0f} s ago and never accepted; past the"
            f" resend horizon ({horizon:g} s) it is not re-sent, since the server may have"
            " stored it and forgotten its id (a re-send could be delivered twice)"
        )
        self.message_id = message_id
        self.age = age


class CommandFailed(LimeError):
    """A command this client sent got a ``failure`` response."""

    command_id: str

    def __init__(self, code: int, description: str = "", command_id: str = "") -> None:
        super().__init__(code, description)
        self.command_id = command_id


ERROR_ID_PREFIX = re.compile(r"^(cmc-[a-z0-9-]+): ")
"""How the server puts a consent error id in a LIME reason: ``"<error-id>: <message>"``."""


class ConsentError(CommandFailed):
    """A ``/consent/...`` command failed: ``error_id`` is the consent error id (the same
    ``cmc-...`` id the HTTP API gives in ``error_id``), ``code`` the LIME reason code and
    ``description`` the server's message without the id. ``error_id`` is ``""`` when the
    failure was not a consent error (an unknown resource, an invalid argument, ...)."""

    error_id: str

    def __init__(
        self, code: int, description: str = "", command_id: str = "", error_id: str = ""
    ) -> None:
        super().__init__(
            code, f"{error_id}: {description}" if error_id else description, command_id
        )
        self.description = description
        self.error_id = error_id

    @classmethod
    def from_failure(cls, failure: CommandFailed) -> ConsentError:
        """Read the error id off a failed command's reason description."""
        found = ERROR_ID_PREFIX.match(failure.description)
        if found is None:
            return cls(failure.code, failure.description, failure.command_id)
        return cls(
            failure.code,
            failure.description[found.end() :],
            failure.command_id,
            found.group(1),
        )


class InviteRefused(TidingsClientError):
    """``wait_for_accept``: the single-use invite was refused (``by``, ``reason``)."""

    def __init__(self, invite_id: str, by: str, reason: str | None) -> None:
        text = f"invite {invite_id} was refused by {by}"
        super().__init__(f"{text}: {reason}" if reason else text)
        self.invite_id = invite_id
        self.by = by
        self.reason = reason


class PeerSendFailed(TidingsClientError):
    """A peer message (``Platform.messaging.send``) was not delivered: ``kind`` says why.

    ``"timeout"``: its ``expire_after`` passed before a peer or the server took it (the
    message is gone from the outbox); ``"lookup-timeout"``: nobody answered the directory
    lookup of its destination in time (the message stays in the outbox and is retried).
    """

    def __init__(self, message: str, *, kind: str, destination: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.destination = destination
