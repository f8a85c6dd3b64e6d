"""The key directory, as a client reads it: node info of identities and owners of keys.

Every answer is verified here (its signature, and that it names what was asked), so that a
server that lies about a key can at worst hide one, never slip in one its owner did not sign.
Answers are cached for ``ttl`` seconds: a burst of sealed messages to one recipient costs one
lookup, and a revocation is seen within ``ttl``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from tidings.protocol.e2e import E2EError, NodeInfo, verify_node_info

from ._exceptions import CommandFailed
from ._types import CommandResult

__all__ = ["Directory", "KeyOwner"]

NOT_FOUND: Final = 67
"""LIME's "resource not found": a key never published."""

Request = Callable[[str, str, Any, str | None], Awaitable[CommandResult]]
"""Sends a command (method, uri, resource, type) and returns its answer."""


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Who published a key, and whether it has been revoked since."""

    info: NodeInfo
    revoked: bool

    @property
    def node(self) -> str:
        return f"{self.info.identity}/{self.info.instance}"


class Directory:
    def __init__(
        self, request: Request, *, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._request = request
        self._ttl = ttl
        self._clock = clock
        self._devices: dict[str, tuple[float, list[NodeInfo]]] = {}
        self._owners: dict[tuple[str, str], tuple[float, KeyOwner | None]] = {}

    async def devices(self, identity: str) -> list[NodeInfo]:
        """The current (published, unrevoked, unexpired) nodes of ``identity``."""
        cached = self._devices.get(identity)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        answer = await self._request("get", f"lime://{identity}/keys", None, None)
        items = answer.resource.get("items", []) if isinstance(answer.resource, dict) else []
        devices = []
        for item in items:
            try:
                info = verify_node_info(item)
            except E2EError:
                continue  # not signed by its key: as good as absent
            if info.identity == identity:
                devices.append(info)
        self._devices[identity] = (self._clock() + self._ttl, devices)
        return devices

    async def owner(self, sign_id: str, identity: str | None = None) -> KeyOwner | None:
        """Who published ``sign_id`` (None: nobody ever did). With the ``identity`` said to
        own it (a sealed message's sender), the named form ``lime://ID/keys/{signId}`` is
        asked: the server sends it on to ID's server when ID is of another domain."""
        cached = self._owners.get((identity or "", sign_id))
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        path = f"/keys/{quote(sign_id, safe='')}"
        uri = f"lime://{identity}{path}" if identity else path
        try:
            answer = await self._request("get", uri, None, None)
        except CommandFailed as failure:
            if failure.code != NOT_FOUND:
                raise
            owner = None
        else:
            owner = _owner(answer.resource, sign_id)
        self._owners[(identity or "", sign_id)] = (self._clock() + self._ttl, owner)
        return owner

    def forget(self, identity: str | None = None) -> None:
        """Drop cached answers (all of them, or one identity's devices)."""
        if identity is None:
            self._devices.clear()
            self._owners.clear()
        else:
            self._devices.pop(identity, None)


def _owner(document: Any, sign_id: str) -> KeyOwner | None:
    if not isinstance(document, dict):
        return None
    revoked = document.get("revoked") is not None
    published = {key: value for key, value in document.items() if key != "revoked"}
    try:
        info = verify_node_info(published)
    except E2EError:
        return None
    return KeyOwner(info, revoked) if info.sign_id == sign_id else None
