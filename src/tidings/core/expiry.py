"""Expiring messages: how long a message may wait for its recipient.

A message may say, in its metadata, how long it is worth delivering:

- ``tidings.expireAfter``: milliseconds, a decimal string (LIME metadata values are strings),
  ``1 .. MAX_EXPIRE_AFTER_MS`` (7 days, mm-platform's ``MAX_EXPIRE_TIME``). A message that says
  nothing gets the server's ``message_ttl_s``. Its queue entries carry the wall-clock time it
  expires (stored, so it survives restarts).
- ``tidings.realtime = "true"``: only worth delivering now. When no session of the destination
  is online (connected and available), the sender gets ``failed`` with ``MESSAGE_EXPIRED`` at
  once instead of the message being queued.

An expired message is never written to a recipient: the router checks before each write of a
stored entry, and the periodic sweep (``Router.sweep``) removes the expired ones. Either way
``QueuePolicy`` removes it in one transaction that keeps a ``failed`` (``MESSAGE_EXPIRED``) for
its sender and moves the session's gap marker, as drop-oldest does.
"""

from __future__ import annotations

import re
from typing import Any, Final

from .errors import ErrorId, Invalid

EXPIRE_AFTER_KEY: Final = "tidings.expireAfter"
REALTIME_KEY: Final = "tidings.realtime"
MAX_EXPIRE_AFTER_MS: Final = 7 * 24 * 3600 * 1000
"""The longest expiry a message may ask for, and the longest ``message_ttl_s``: 7 days."""
MAX_TTL_S: Final = MAX_EXPIRE_AFTER_MS / 1000
_DECIMAL = re.compile(r"[0-9]{1,10}")


def expire_after_s(metadata: Any) -> float | None:
    """The message's ``tidings.expireAfter`` in seconds, or None when it gives none; raises
    ``Invalid`` (naming the key) for anything but a decimal string 1 .. 604800000."""
    if not isinstance(metadata, dict):
        return None
    value = metadata.get(EXPIRE_AFTER_KEY)
    if value is None and EXPIRE_AFTER_KEY not in metadata:
        return None
    if (
        not isinstance(value, str)
        or _DECIMAL.fullmatch(value) is None
        or not 1 <= int(value) <= MAX_EXPIRE_AFTER_MS
    ):
        raise Invalid(
            ErrorId.INVALID_ARGUMENT,
            f"'{EXPIRE_AFTER_KEY}' must be a decimal string of milliseconds, "
            f"1 .. {MAX_EXPIRE_AFTER_MS}",
        )
    return int(value) / 1000


def is_realtime(metadata: Any) -> bool:
    """Whether the message asks for delivery now or never (``tidings.realtime`` = "true")."""
    return isinstance(metadata, dict) and metadata.get(REALTIME_KEY) == "true"
