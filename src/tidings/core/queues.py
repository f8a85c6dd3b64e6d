"""Rules of bounded per-session queues (applied inside one write by ``queue_policy``).

A session's queue has a limit (its own, or the server's ``queue_limit``) and an overflow policy:

- ``reject-new`` (default): a message that would exceed the limit is refused as a whole, and its
  sender gets ``failed`` with ``QUEUE_FULL`` (LIME 121); nothing is stored.
- ``drop-oldest``: the message is stored and, in the same transaction, the oldest envelopes beyond
  the limit are removed. Each removed message's sender gets ``failed`` with ``QUEUE_DROPPED``
  (LIME 122), live or kept in its own queue until it reconnects; and the session gets a *gap
  marker*: one server message at the head of its queue (type ``GAP_TYPE``) that counts the
  envelopes dropped since the session last acknowledged a marker and names the lost ones.

The core never encodes envelopes itself: the gateway gives it a ``NoticeFactory`` (a port).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Final

from .errors import ErrorId, Invalid, TidingsError

GAP_TYPE: Final = "application/vnd.tidings.gap+json"
"""Content type of the gap marker: ``{"dropped": N, "lost": [{"from", "id"}, ...]}``."""
MAX_LOST_LISTED: Final = 100
"""A gap marker names at most this many lost messages (``dropped`` still counts them all)."""
MAX_SNAPSHOT: Final = 1000


def dropped_error(node: str) -> TidingsError:
    return TidingsError(
        ErrorId.QUEUE_DROPPED,
        f"The message was dropped from the full queue of {node} (policy drop-oldest)",
    )


def expired_error(node: str) -> TidingsError:
    return TidingsError(
        ErrorId.SESSION_EXPIRED,
        f"The session {node} was deleted while the message was still queued",
    )


def message_expired_error(node: str) -> TidingsError:
    return TidingsError(
        ErrorId.MESSAGE_EXPIRED,
        f"The message expired before {node} received it",
    )


def check_pattern(pattern: str) -> str:
    """A session-name pattern: shell-style glob (``*``, ``?``, ``[...]``), matched in full."""
    if not pattern or len(pattern) > 256:
        raise Invalid(ErrorId.INVALID_ARGUMENT, "A session pattern is 1..256 characters")
    return pattern


def matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)


def check_limit(limit: Any, maximum: int) -> int | None:
    """A queue limit from a client: ``null`` (server default) or an integer 1..maximum."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"'limit' must be null or an integer 1..{maximum}")
    return limit
