"""The server's own federation keys, in ``<data_dir>/federation/server_keys.json``.

The file is a JSON list of ``{"id", "secret" (base64 seed), "created", "expires"}``, oldest
first; the newest key signs. It holds private keys, so it is created with mode 0600 (its folder
0700) and replaced atomically (write a temporary file, fsync, rename, fsync the folder): a crash
mid-rotation leaves the old keys or the new ones, never a truncated file that would change the
server's identity on the next start.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol.federation import SigningKey

__all__ = ["SERVER_KEYS_FILE", "ServerKeys", "ServerKeysError", "StoredKey"]

SERVER_KEYS_FILE = Path("federation") / "server_keys.json"
"""Where the keys live, relative to the data folder."""


class ServerKeysError(ValueError):
    """The key file cannot be read as keys of this domain; the message names the file."""


@dataclass(frozen=True)
class StoredKey:
    """One key of the file with its lifetime (epoch seconds; ``expires`` ``None``: no end)."""

    key: SigningKey
    created: float
    expires: float | None


class ServerKeys:
    """The keys of one domain as they are on disk; every change is written before it returns."""

    def __init__(self, path: Path, domain: str, keys: list[StoredKey]) -> None:
        """Keys oldest first; use ``load_or_create`` rather than building one by hand."""
        if not keys:
            raise ServerKeysError(f"{path}: no keys")
        self.path = path
        self.domain = domain
        self._keys = list(keys)

    @classmethod
    def load_or_create(cls, data_dir: Path, domain: str, now: float) -> ServerKeys:
        """The keys in ``data_dir``, or a first key, written before this returns."""
        path = Path(data_dir) / SERVER_KEYS_FILE
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            keys = cls(path, domain, [StoredKey(SigningKey.generate(domain), now, None)])
            keys._write()
            return keys
        keys = cls(path, domain, _parse(text, path, domain))
        if all(k.expires is not None for k in keys._keys):
            # Every key was given an end (by hand): add a signing key, the others keep their end.
            keys.rotate(overlap_s=math.inf, now=now)
        return keys

    @property
    def keys(self) -> list[StoredKey]:
        return list(self._keys)

    @property
    def current(self) -> SigningKey:
        """The key that signs: the newest key without an expiry (rotation adds one)."""
        return next(k.key for k in reversed(self._keys) if k.expires is None)

    def published(self, now: float) -> list[tuple[SigningKey, float | None]]:
        """The unexpired keys with their expiry, newest last: what the server document lists."""
        return [(k.key, k.expires) for k in self._keys if k.expires is None or k.expires > now]

    def rotate(self, *, overlap_s: float, now: float) -> SigningKey:
        """Add a new signing key; the others expire ``overlap_s`` from now, or sooner if set so.

        Keys already expired are dropped from the file. Peers that pinned an old key learn the
        new one from a document both sign, as long as they fetch it within the overlap.
        """
        if overlap_s < 0:
            raise ValueError("overlap_s must not be negative")
        until = now + overlap_s
        kept = [
            StoredKey(k.key, k.created, until if k.expires is None else min(k.expires, until))
            for k in self._keys
            if k.expires is None or k.expires > now
        ]
        new = SigningKey.generate(self.domain)
        previous = self._keys
        self._keys = [*kept, StoredKey(new, now, None)]
        try:
            self._write()
        except BaseException:
            self._keys = previous
            raise
        return new

    def _write(self) -> None:
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps(
            [
                {
                    "id": k.key.key_id,
                    "secret": base64.b64encode(k.key.seed).decode("ascii"),
                    "created": k.created,
                    "expires": k.expires,
                }
                for k in self._keys
            ],
            indent=1,
        ).encode("utf-8")
        temporary = folder / f".{self.path.name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()  # left by a crash of this process id; never another's live file
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        folder_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)  # the rename itself survives a crash
        finally:
            os.close(folder_fd)


def _parse(text: bytes, path: Path, domain: str) -> list[StoredKey]:
    def bad(detail: str) -> ServerKeysError:
        return ServerKeysError(f"{path}: {detail}; restore it from a backup or move it away")

    try:
        entries: Any = json.loads(text)
    except ValueError as exc:
        raise bad("not UTF-8 JSON") from exc
    if not isinstance(entries, list) or not entries:
        raise bad("expected a non-empty list of keys")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"id", "secret", "created", "expires"}:
            raise bad("each key has exactly id, secret, created and expires")
        kid, secret, created, expires = (
            entry["id"],
            entry["secret"],
            entry["created"],
            entry["expires"],
        )
        if not isinstance(kid, str) or not kid.startswith(f"{domain}#"):
            raise bad(f"key {kid!r} is not a key of {domain}")
        if not _is_number(created) or not (expires is None or _is_number(expires)):
            raise bad(f"created and expires of {kid} must be epoch seconds")
        try:
            seed = base64.b64decode(secret, validate=True) if isinstance(secret, str) else b""
            key = SigningKey(kid, seed)
        except (binascii.Error, ValueError) as exc:
            raise bad(f"the secret of {kid} is not a base64 Ed25519 seed") from exc
        keys.append(StoredKey(key, float(created), None if expires is None else float(expires)))
    if len({k.key.key_id for k in keys}) != len(keys):
        raise bad("a key id is listed twice")
    return sorted(keys, key=lambda k: k.created)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
