"""Accounts, credentials and who may open a session as whom."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .documents import FieldTypes, check_fields
from .errors import Conflict, ErrorId, Forbidden, Invalid, NotFound
from .ports import AccountStore

ACCOUNT_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
KEY_PREFIX: Final = "tdk_"
MAX_PASSWORD_LENGTH: Final = 1024

PROFILE_FIELDS: Final[FieldTypes] = {
    "fullName": str,
    "address": str,
    "city": str,
    "email": str,
    "phoneNumber": str,
    "cellPhoneNumber": str,
    "photoUri": str,
    "gender": str,
    "timezone": (int, str),
    "culture": str,
    "extras": dict,
    "isTemporary": bool,
    "allowGuestSender": bool,
    "allowUnknownSender": bool,
    "storeMessageContent": bool,
    "encryptMessageContent": bool,
}
"""The LIME account document fields Tidings keeps (``password``/``oldPassword`` are separate)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a session authenticated as."""

    identity: str
    guest: bool


def check_account_name(name: str) -> str:
    if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
        raise Invalid(
            ErrorId.INVALID_ARGUMENT,
            f"Invalid account name {name!r}: use 1-64 of a-z 0-9 . _ - starting with a letter "
            "or digit",
        )
    return name


def check_profile(profile: Any) -> dict[str, Any]:
    return check_fields(profile, PROFILE_FIELDS, "account")


class AccountService:
    def __init__(self, domain: str, store: AccountStore, *, allow_guests: bool = False) -> None:
        self.domain = domain
        self._store = store
        self.allow_guests = allow_guests
        self._hasher = PasswordHasher()
        self._names: set[str] = set()

    async def load(self) -> None:
        self._names = {account.name for account in await self._store.list_accounts()}

    def exists(self, identity: str) -> bool:
        """Is there such an account? Accounts added by another process are found too."""
        name, _, domain = identity.partition("@")
        if domain != self.domain:
            return False
        if name in self._names:
            return True
        if self._store.has_account(name):
            self._names.add(name)
            return True
        return False

    # -- administration ---------------------------------------------------------------------

    async def add(self, name: str, password: str) -> None:
        check_account_name(name)
        self._check_password(password)
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        try:
            await self._store.create_account(name, password_hash)
        except sqlite3.IntegrityError:
            raise Conflict(ErrorId.ACCOUNT_EXISTS, f"The account {name!r} exists already") from None
        self._names.add(name)

    async def remove(self, name: str) -> None:
        self._names.discard(name)
        if not await self._store.delete_account(name):
            raise NotFound(ErrorId.ACCOUNT_NOT_FOUND, f"There is no account {name!r}")

    async def names(self) -> list[str]:
        return [account.name for account in await self._store.list_accounts()]

    async def create_key(self, name: str, label: str = "") -> str:
        """Make an API key for the ``key`` scheme; only its hash is stored."""
        if await self._store.get_account(name) is None:
            raise NotFound(ErrorId.ACCOUNT_NOT_FOUND, f"There is no account {name!r}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        await self._store.add_key(name, _key_hash(key), label)
        return key

    # -- authentication ---------------------------------------------------------------------

    async def authenticate(self, identity: str, scheme: str, secret: str | None) -> Principal:
        """Check a session's credentials; ``secret`` is the decoded password or key."""
        name, _, domain = identity.partition("@")
        if domain != self.domain:
            raise Forbidden(
                ErrorId.BAD_CREDENTIALS, f"This server serves the domain {self.domain!r} only"
            )
        if scheme == "guest":
            if not self.allow_guests:
                raise Forbidden(ErrorId.GUESTS_DISABLED, "Guest sessions are disabled")
            if name in self._names:
                raise Forbidden(ErrorId.BAD_CREDENTIALS, "A guest cannot use an account's name")
            return Principal(identity, guest=True)
        if scheme == "plain":
            await self._check_password_of(name, secret or "")
            return Principal(identity, guest=False)
        if scheme == "key":
            owner = await self._store.account_for_key(_key_hash(secret or ""))
            if owner != name:
                raise Forbidden(ErrorId.BAD_CREDENTIALS, "The session authentication failed")
            return Principal(identity, guest=False)
        raise Forbidden(ErrorId.BAD_CREDENTIALS, f"The scheme {scheme!r} is not supported")

    async def _check_password_of(self, name: str, password: str) -> None:
        account = await self._store.get_account(name)
        if account is None or account.password_hash is None:
            raise Forbidden(ErrorId.BAD_CREDENTIALS, "The session authentication failed")
        try:
            await asyncio.to_thread(self._hasher.verify, account.password_hash, password)
        except (VerificationError, InvalidHashError):
            raise Forbidden(ErrorId.BAD_CREDENTIALS, "The session authentication failed") from None

    def identity_for_key(self, key: str) -> str | None:
        """The identity an API key belongs to (Feedme connection tokens), or None."""
        owner = self._store.key_owner(_key_hash(key))
        return f"{owner}@{self.domain}" if owner is not None else None

    # -- the account resource ---------------------------------------------------------------

    async def profile(self, name: str) -> dict[str, Any]:
        account = await self._store.get_account(name)
        if account is None:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"There is no account {name!r}")
        return {"identity": f"{name}@{self.domain}", **account.profile}

    async def update_profile(self, name: str, document: dict[str, Any], *, merge: bool) -> None:
        account = await self._store.get_account(name)
        if account is None:
            raise NotFound(ErrorId.RESOURCE_NOT_FOUND, f"There is no account {name!r}")
        document = dict(document)
        document.pop("identity", None)
        password = document.pop("password", None)
        old_password = document.pop("oldPassword", None)
        profile = check_profile(document)
        password_hash = None
        if password is not None:
            if not isinstance(password, str) or not isinstance(old_password, str):
                raise Invalid(
                    ErrorId.INVALID_ARGUMENT,
                    "Changing the password needs 'password' and 'oldPassword'",
                )
            await self._check_password_of(name, old_password)
            self._check_password(password)
            password_hash = await asyncio.to_thread(self._hasher.hash, password)
        merged = {**account.profile, **profile} if merge else profile
        await self._store.update_account(name, password_hash=password_hash, profile=merged)

    @staticmethod
    def _check_password(password: str) -> None:
        if not isinstance(password, str) or not 1 <= len(password) <= MAX_PASSWORD_LENGTH:
            raise Invalid(
                ErrorId.INVALID_ARGUMENT,
                f"A password must have 1 to {MAX_PASSWORD_LENGTH} characters",
            )


def _key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
