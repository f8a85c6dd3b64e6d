"""The key directory across servers (issue 13): ``get lime://bob@beta.test/keys`` and
``get lime://bob@beta.test/keys/{signId}`` asked of bob's server.

The owner's server answers with its own rules (``KeyExports``): the listing for those the owner
accepts messages from (``Resource.KEYS``), one named key for anyone (``Resource.KEY_OWNERS``: a
recipient checks the key that signed a sealed message). The asking server (``RemoteKeys``)
passes the answer on, keeping only documents that name the identity asked about; the clients
verify each signature themselves, so a server can at worst hide a key, never slip one in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .address import parse_address
from .errors import ErrorId, Forbidden, Invalid, NotFound
from .federation_presence import Relay, check_actor
from .key_directory import KeyDirectory

__all__ = ["KeyExports", "KeyLookups", "RemoteKeys"]


class KeyExports:
    """The owner's side: the ``keys.get`` and ``keys.key`` queries."""

    def __init__(self, domain: str, keys: KeyDirectory) -> None:
        self._domain = domain
        self._keys = keys

    def queries(self) -> dict[str, Callable[[str, dict[str, Any]], Any]]:
        return {"keys.get": self.listing, "keys.key": self.key}

    async def listing(self, origin: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        actor, owner = check_actor(origin, body, self._domain)
        return await self._keys.keys_of(actor, owner)

    async def key(self, origin: str, body: dict[str, Any]) -> dict[str, Any]:
        actor, owner = check_actor(origin, body, self._domain)
        sign_id = body.get("signId")
        if not isinstance(sign_id, str) or not sign_id:
            raise Invalid(ErrorId.INVALID_ARGUMENT, "A keys.key query names its 'signId'")
        document = await self._keys.key(actor, sign_id)
        if document.get("identity") != owner:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"{owner} published no key {sign_id}")
        return document


class RemoteKeys:
    """The asking side: another domain's identity's keys, from its server."""

    def __init__(self, domain: str, federation: Relay) -> None:
        self._domain = domain
        self._federation = federation

    def serves(self, identity: str) -> bool:
        """Whether ``identity`` is another domain's."""
        return identity.rpartition("@")[2] != self._domain

    async def listing(self, viewer: str, guest: bool, owner: str) -> list[dict[str, Any]]:
        answer = await self._ask(viewer, guest, "keys.get", owner)
        items = answer if isinstance(answer, list) else []
        return [d for d in items if isinstance(d, dict) and d.get("identity") == owner]

    async def key(self, viewer: str, guest: bool, owner: str, sign_id: str) -> dict[str, Any]:
        document = await self._ask(viewer, guest, "keys.key", owner, signId=sign_id)
        if not isinstance(document, dict) or document.get("identity") != owner:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"{owner} published no key {sign_id}")
        return document

    async def _ask(self, viewer: str, guest: bool, kind: str, owner: str, **fields: Any) -> Any:
        if guest:
            raise Forbidden(ErrorId.FORBIDDEN, "Guests look up only this server's identities' keys")
        domain = parse_address(owner).domain
        return await self._federation.ask(domain, kind, viewer, identity=owner, **fields)


class KeyLookups:
    """What a client of this server may look up, wherever the owner's keys are kept: this
    server's directory (its rules: ``KeyDirectory.keys_of`` and ``key``), or the owner's own
    server (``RemoteKeys``; None: other domains' keys are not found)."""

    def __init__(self, keys: KeyDirectory, remote: RemoteKeys | None = None) -> None:
        self._keys = keys
        self._remote = remote

    async def listing(
        self, viewer: str, owner: str, *, guest: bool = False
    ) -> list[dict[str, Any]]:
        """``owner``'s current node infos, if ``owner`` accepts ``viewer``'s messages."""
        remote = self._remote
        if remote is not None and remote.serves(owner):
            return await remote.listing(viewer, guest, owner)
        return await self._keys.keys_of(viewer, owner)

    async def key(
        self, viewer: str, owner: str, sign_id: str, *, guest: bool = False
    ) -> dict[str, Any]:
        """The latest publication of ``owner``'s key ``sign_id``; ``NotFound`` when ``owner``
        never published it (another identity's key included)."""
        remote = self._remote
        if remote is not None and remote.serves(owner):
            return await remote.key(viewer, guest, owner, sign_id)
        document = await self._keys.key(viewer, sign_id)
        if document.get("identity") != owner:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"{owner} published no key {sign_id}")
        return document
