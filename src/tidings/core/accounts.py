"""Accounts, credentials and who may open a session as whom."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .address import Address
from .documents import FieldTypes, check_fields
from .errors import ErrorId, Forbidden, Invalid, LimitExceeded, NotFound
from .login_throttle import LoginRule, LoginThrottle
from .ports import AccountStore

ACCOUNT_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
KEY_PREFIX: Final = "tdk_"
SERVER_NAME: Final = "postmaster"
"""The name the server speaks as (``postmaster@domain/server``): gap markers, notices, kept
failures carry it as ``from``."""
RESERVED_NAMES: Final = frozenset({SERVER_NAME})
"""Names no account and no guest may take, compared case-insensitively: whoever held one could
send envelopes that look like the server's and read what users send to it."""
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
    if is_reserved(name):
        raise Invalid(ErrorId.INVALID_ARGUMENT, f"The name {name!r} is reserved for the server")
    return name


def is_reserved(name: str) -> bool:
    return name.lower() in RESERVED_NAMES


def check_profile(profile: Any) -> dict[str, Any]:
    return check_fields(profile, PROFILE_FIELDS, "account")


class AccountService:
    def __init__(
        self,
        domain: str,
        store: AccountStore,
        *,
        allow_guests: bool = False,
        login: LoginRule | None = None,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.monotonic,
        changed: Callable[[str], None] = lambda identity: None,
        created_or_removed: Callable[[], None] = lambda: None,
    ) -> None:
        self.domain = domain
        self._changed = changed
        """Told the identity whose account settings changed or went (trust circles)."""
        self._created_or_removed = created_or_removed
        """Told when an account comes or goes: only accounts are friends (trust circles)."""
        self._store = store
        self.allow_guests = allow_guests
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self._names: set[str] = set()
        self._dummy_hash: str | None = None
        login = login if login is not None else LoginRule()
        self._by_identity = LoginThrottle(
            free_failures=login.free_failures,
            base_s=login.backoff_base_s,
            max_s=login.backoff_max_s,
            clock=clock,
        )
        self._by_address = LoginThrottle(
            free_failures=login.free_failures_per_address,
            base_s=login.backoff_base_s,
            max_s=login.backoff_max_s,
            clock=clock,
        )
        self._turns: dict[str, _Turn] = {}

    async def load(self) -> None:
        self._names = {account.name for account in await self._store.list_accounts()}
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self._hasher.hash, secrets.token_hex(16))

    def forget(self, identity: str) -> None:
        """Another node changed or removed the account: ask the store next time."""
        name, _, domain = identity.partition("@")
        if domain == self.domain:
            self._names.discard(name)

    async def exists(self, identity: Address) -> bool:
        """Is there such an account? Accounts added by another process are found too."""
        name = identity.name
        if identity.domain != self.domain:
            return False
        if name in self._names:
            return True
        if await self._store.has_account(name):
            self._names.add(name)
            return True
        return False

    # -- administration ---------------------------------------------------------------------

    async def add(self, name: str, password: str) -> None:
        check_account_name(name)
        self._check_password(password)
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        await self._store.create_account(name, password_hash)  # Conflict if it exists
        self._names.add(name)
        self._changed(f"{name}@{self.domain}")
        self._created_or_removed()

    async def remove(self, name: str) -> None:
        self._names.discard(name)
        self._changed(f"{name}@{self.domain}")
        removed = await self._store.delete_account(name)
        self._created_or_removed()
        if not removed:
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

    async def authenticate(
        self, node: Address, scheme: str, secret: str | None, *, source: str | None = None
    ) -> Principal:
        """Check a session's credentials; ``secret`` is the decoded password or key, ``source``
        the client's address as ``login_throttle.source_key`` gives it (None: unknown).

        Failed ``plain`` logins are throttled per identity and per source, failed ``key`` logins
        per source only (a key cannot be guessed, and counting them per identity would only let
        anyone lock a key's owner out): see ``login_throttle``.
        """
        name, domain, identity = node.name, node.domain, node.identity
        if domain != self.domain:
            raise Forbidden(
                ErrorId.BAD_CREDENTIALS, f"This server serves the domain {self.domain!r} only"
            )
        if is_reserved(name):
            raise Forbidden(ErrorId.BAD_CREDENTIALS, f"The name {name!r} is the server's")
        if scheme == "guest":
            if not self.allow_guests:
                raise Forbidden(ErrorId.GUESTS_DISABLED, "Guest sessions are disabled")
            # Asked of the store, not a cache: accounts are added by other processes (the CLI).
            if await self._store.get_account(name) is not None:
                raise Forbidden(ErrorId.BAD_CREDENTIALS, "A guest cannot use an account's name")
            return Principal(identity, guest=True)
        if scheme == "plain":
            await self._verify_password(name, secret or "", source)
            return Principal(identity, guest=False)
        if scheme == "key":
            self._refuse_if_throttled(None, source)
            owner = await self._store.account_for_key(_key_hash(secret or ""))
            if owner != name:
                self._count_failure(None, source)
                raise Forbidden(ErrorId.BAD_CREDENTIALS, "The session authentication failed")
            return Principal(identity, guest=False)
        raise Forbidden(ErrorId.BAD_CREDENTIALS, f"The scheme {scheme!r} is not supported")

    async def _verify_password(self, name: str, password: str, source: str | None) -> None:
        """Every password check goes through here: throttled, and as slow for unknown names."""
        key = _identity_key(name)
        async with self._turn(key):
            self._refuse_if_throttled(key, source)
            try:
                await self._check_password_of(name, password)
            except Forbidden:
                self._count_failure(key, source)
                raise
            self._by_identity.succeeded(key)

    async def _check_password_of(self, name: str, password: str) -> None:
        account = await self._store.get_account(name)
        password_hash = account.password_hash if account is not None else None
        # An unknown name (or an account without a password) costs one argon2 verify too,
        # against a hash of a random secret, so the time of the answer tells no name apart.
        try:
            await asyncio.to_thread(self._hasher.verify, password_hash or self._dummy(), password)
        except (VerificationError, InvalidHashError):
            raise Forbidden(ErrorId.BAD_CREDENTIALS, "The session authentication failed") from None
        if password_hash is None:
            raise Forbidden(ErrorId.BAD_CREDENTIALS, "The session authentication failed")

    def _dummy(self) -> str:
        if self._dummy_hash is None:  # load() makes it at start; this is for a service not loaded
            self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        return self._dummy_hash

    def _refuse_if_throttled(self, key: str | None, source: str | None) -> None:
        """Refuse at once, checking nothing: the same for names that exist and names that do
        not, and it bounds the argon2 work one identity or one address can cost."""
        wait = max(
            self._by_identity.wait(key) if key is not None else 0.0,
            self._by_address.wait(source) if source is not None else 0.0,
        )
        if wait > 0:
            seconds = math.ceil(wait * 10) / 10
            raise LimitExceeded(
                ErrorId.LOGIN_THROTTLED,
                f"Too many failed logins: try again in {seconds:g} s",
                {"retry_after_s": seconds},
            )

    def _count_failure(self, key: str | None, source: str | None) -> None:
        if key is not None:
            self._by_identity.failed(key)
        if source is not None:
            self._by_address.failed(source)

    @asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        """One password check at a time per identity: attempts sent together wait for each
        other, so each sees the failures before it and none outruns the throttle."""
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._turns[key]

    def identity_for_key(self, key: str, source: str | None = None) -> str | None:
        """The identity an API key belongs to (Feedme connection tokens), or None. With a
        ``source``, failures count against it and a throttled source is refused (raises
        ``LimitExceeded``) before the key is looked up."""
        self._refuse_if_throttled(None, source)
        owner = self._store.key_owner(_key_hash(key))
        if owner is None:
            self._count_failure(None, source)
            return None
        return f"{owner}@{self.domain}"

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
            await self._verify_password(name, old_password, None)
            self._check_password(password)
            password_hash = await asyncio.to_thread(self._hasher.hash, password)
        merged = {**account.profile, **profile} if merge else profile
        await self._store.update_account(name, password_hash=password_hash, profile=merged)
        self._changed(f"{name}@{self.domain}")

    @staticmethod
    def _check_password(password: str) -> None:
        if not isinstance(password, str) or not 1 <= len(password) <= MAX_PASSWORD_LENGTH:
            raise Invalid(
                ErrorId.INVALID_ARGUMENT,
                f"A password must have 1 to {MAX_PASSWORD_LENGTH} characters",
            )


class _Turn:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def _identity_key(name: str) -> str:
    """The throttle key of a name: itself, or a digest of a name too long to be an account's
    (``#`` is in no account name), so that a throttle entry stays small."""
    if len(name) <= 64:
        return name
    return "#" + hashlib.sha256(name.encode()).hexdigest()[:32]


def _key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
