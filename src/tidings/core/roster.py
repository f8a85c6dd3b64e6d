"""Contacts (the roster) and delegations: who shares presence, who may send on whose behalf."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .documents import FieldTypes, check_fields
from .errors import ErrorId, Invalid, NotFound
from .ports import RosterStore

MAX_CONTACTS: Final = 5000
CONTACT_FIELDS: Final[FieldTypes] = {
    "identity": str,
    "name": str,
    "isPending": bool,
    "sharePresence": bool,
    "shareAccountInfo": bool,
    "group": str,
    "priority": int,
    "lastMessageDate": str,
    "subscriptionStatus": str,
    "address": str,
    "city": str,
    "email": str,
    "phoneNumber": str,
    "cellPhoneNumber": str,
    "photoUri": str,
    "extras": dict,
}
ENVELOPE_TYPES: Final = frozenset({"message", "notification", "command"})


class RosterService:
    def __init__(
        self,
        store: RosterStore,
        normalize_identity: Any,
        changed: Callable[[str], None] = lambda owner: None,
    ) -> None:
        self._store = store
        self._normalize = normalize_identity
        """Callable turning a user-supplied identity into ``name@domain`` (or raising Invalid)."""
        self._changed = changed
        """Told the owner whose contacts changed (the trust circles read them again)."""

    # -- contacts ---------------------------------------------------------------------------

    async def contacts(self, owner: str) -> list[dict[str, Any]]:
        return await self._store.contacts(owner)

    async def contact(self, owner: str, identity: str) -> dict[str, Any]:
        identity = self._normalize(identity)
        for contact in await self._store.contacts(owner):
            if contact["identity"] == identity:
                return contact
        raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"{identity} is not in the contacts")

    async def put_contact(
        self, owner: str, document: Any, *, merge: bool, identity: str | None = None
    ) -> None:
        if isinstance(document, dict) and identity is not None:
            document = {"identity": identity, **document}
        contact = check_fields(document, CONTACT_FIELDS, "contact")
        if "identity" not in contact:
            raise Invalid(ErrorId.INVALID_ARGUMENT, "A contact needs an 'identity'")
        contact["identity"] = self._normalize(contact["identity"])
        existing = {c["identity"]: c for c in await self._store.contacts(owner)}
        if contact["identity"] not in existing and len(existing) >= MAX_CONTACTS:
            raise Invalid(ErrorId.INVALID_ARGUMENT, f"A roster holds at most {MAX_CONTACTS}")
        if merge and contact["identity"] in existing:
            contact = {**existing[contact["identity"]], **contact}
        await self._store.put_contact(owner, contact)
        self._changed(owner)

    async def delete_contact(self, owner: str, identity: str) -> None:
        removed = await self._store.delete_contact(owner, self._normalize(identity))
        self._changed(owner)
        if not removed:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"{identity} is not in the contacts")

    async def shares_presence_with(self, owner: str, viewer: str) -> bool:
        """LIME: contacts share presence unless ``sharePresence`` is false."""
        if owner == viewer:
            return True
        for contact in await self._store.contacts(owner):
            if contact["identity"] == viewer:
                return bool(contact.get("sharePresence", True))
        return False

    # -- delegations ------------------------------------------------------------------------

    async def delegations(self, owner: str) -> list[dict[str, Any]]:
        return await self._store.delegations(owner)

    async def put_delegation(self, owner: str, document: Any) -> None:
        if not isinstance(document, dict) or not isinstance(document.get("target"), str):
            raise Invalid(ErrorId.INVALID_ARGUMENT, "A delegation needs a 'target' node")
        types = document.get("envelopeTypes", sorted(ENVELOPE_TYPES))
        if not isinstance(types, list) or not set(types) <= ENVELOPE_TYPES:
            raise Invalid(
                ErrorId.INVALID_ARGUMENT,
                f"'envelopeTypes' must be a list drawn from {sorted(ENVELOPE_TYPES)}",
            )
        delegation = {"target": self._normalize(document["target"]), "envelopeTypes": types}
        await self._store.put_delegation(owner, delegation)

    async def delete_delegation(self, owner: str, target: str) -> None:
        if not await self._store.delete_delegation(owner, self._normalize(target)):
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"No delegation to {target}")

    async def is_delegate(self, owner: str, delegate: str, envelope_type: str) -> bool:
        """May ``delegate`` (an identity) send ``envelope_type`` envelopes as ``owner``?"""
        for delegation in await self._store.delegations(owner):
            if delegation["target"] == delegate and envelope_type in delegation["envelopeTypes"]:
                return True
        return False
