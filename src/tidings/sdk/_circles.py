"""The ``devices`` and ``friends`` circles that give a direct message its scope (mm-platform's
``circle.js`` and ``_getScope``): devices win over friends, anyone else is ``public``.

A circle is fed over the local bus: each ``self.devices.update`` / ``self.friends.update``
replaces the whole key list, and at construction the circles ask for their lists with
``devices.updateRequest`` / ``friends.updateRequest`` sent to ``local``.

Keys: a ``signId`` and a ``boxId`` are both the base64 of 32 bytes, so their text does not say
which kind a key is. A circle keeps the keys it was given and also the ``boxId`` each one has
when it is read as a ``signId``; a key is in the circle when it, or the ``boxId`` it has as a
``signId``, is among those. So a circle given signIds recognises their boxIds and the reverse.
Reading a ``boxId`` as a ``signId`` yields an unrelated key (or none), which cannot collide with
a real one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any, Final, Literal

from tidings.protocol.e2e import InvalidKey, box_id_of, decode_key

from ._bus import Handler, LocalBus

__all__ = ["CIRCLE_NAMES", "Circle", "Circles", "Scope"]

log = logging.getLogger("tidings.sdk.circles")

Scope = Literal["self", "friends", "public"]
CIRCLE_NAMES: Final = ("devices", "friends")
LOCAL: Final = "local"
"""The sender of events a node publishes for itself (mm-platform's ``'local'`` destination)."""


@functools.lru_cache(maxsize=4096)
def _as_box_id(key: str) -> str | None:
    """The ``boxId`` of ``key`` read as a ``signId``; None when it is no Ed25519 point."""
    try:
        return box_id_of(key)
    except InvalidKey:
        return None


class Circle:
    """One circle: a set of node keys, replaced as a whole."""

    def __init__(self, name: str) -> None:
        if name not in CIRCLE_NAMES:
            raise ValueError(f"a circle is named {' or '.join(CIRCLE_NAMES)}, not {name!r}")
        self.name = name
        self._keys: frozenset[str] = frozenset()
        self._match: frozenset[str] = frozenset()

    @property
    def keys(self) -> frozenset[str]:
        """The keys as given (signIds or boxIds), without duplicates."""
        return self._keys

    def replace(self, keys: Iterable[str]) -> None:
        """Make ``keys`` the circle's members; an invalid key refuses the whole list."""
        if isinstance(keys, str | bytes):
            raise ValueError(f"the {self.name} circle takes a list of keys, not one string")
        given = list(keys)
        for key in given:
            try:
                decode_key(key, "key")
            except InvalidKey as exc:
                raise ValueError(f"{self.name} circle: {exc}") from None
        match = set(given)
        match.update(box for key in given if (box := _as_box_id(key)) is not None)
        self._keys = frozenset(given)
        self._match = frozenset(match)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` (a signId or a boxId) is in the circle; False for a non-key."""
        if not isinstance(key, str):
            return False
        return key in self._match or _as_box_id(key) in self._match

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Circle({self.name!r}, {len(self._keys)} keys)"


class Circles:
    """The node's two circles, kept up to date from the local bus."""

    def __init__(self, bus: LocalBus) -> None:
        self.devices = Circle("devices")
        self.friends = Circle("friends")
        self._bus = bus
        for circle in (self.devices, self.friends):
            bus.on(f"self.{circle.name}.update", self._updater(circle))
        for circle in (self.devices, self.friends):
            bus.emit(f"self.{circle.name}.updateRequest", LOCAL, None)

    def scope_of(self, sign_id: str) -> Scope:
        """The scope of a message from ``sign_id``: devices first, then friends."""
        if sign_id in self.devices:
            return "self"
        if sign_id in self.friends:
            return "friends"
        return "public"

    @staticmethod
    def _updater(circle: Circle) -> Handler:
        def update(topic: str, sender: Any, payload: Any) -> None:
            if not isinstance(payload, list | tuple):
                log.warning(
                    "%s refused: the payload is a list of keys, not %s",
                    topic,
                    type(payload).__name__,
                )
                return
            try:
                circle.replace(payload)
            except ValueError as exc:
                log.warning("%s refused, the circle is unchanged: %s", topic, exc)

        return update
