"""The set of messages the application has already taken, for dropping redeliveries.

The server delivers each message at least once: it redelivers whatever the destination session
has not acknowledged with ``received``. ``SeenMessages`` remembers the ``(sender, id)`` of the
last ``capacity`` messages handed to the application so the SDK can drop the copies. With a
``path`` it also appends each key to a file (flushed and fsynced before the SDK hands the message
over), so the set survives a restart of the application: that is what makes delivery
exactly-once across a client restart.

The file is a log of JSON lines ``["sender", "id"]``. A torn last line (a crash mid-write) is
ignored. When the log grows past twice the capacity it is rewritten, atomically, with only the
keys still remembered.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TypeAlias

import msgspec

__all__ = ["MessageKey", "SeenMessages"]

MessageKey: TypeAlias = tuple[str, str]
"""``(sender node, message id)``: the server stores a message once per such pair."""

_decode_key = msgspec.json.Decoder(tuple[str, str])


class SeenMessages:
    """A bounded LRU set of message keys, optionally persisted to a file."""

    def __init__(
        self,
        capacity: int = 10_000,
        path: str | os.PathLike[str] | None = None,
        *,
        fsync: bool = True,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.path = Path(path) if path is not None else None
        self.fsync = fsync
        self._keys: OrderedDict[MessageKey, None] = OrderedDict()
        self._file: IO[bytes] | None = None
        self._logged = 0
        if self.path is not None:
            self._load(self.path)
            self._compact()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def check(self, key: MessageKey) -> bool:
        """Whether ``key`` was seen; a hit makes it the most recently used."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        return False

    def add(self, key: MessageKey) -> None:
        """Remember ``key`` (written to the file, durably, before this returns)."""
        self.add_many((key,))

    def add_many(self, keys: Iterable[MessageKey]) -> None:
        """Remember every key of ``keys``, with one write and one fsync for them all."""
        lines = []
        for key in keys:
            if key in self._keys:
                self._keys.move_to_end(key)
                continue
            self._keys[key] = None
            lines.append(msgspec.json.encode(key) + b"\n")
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        if self._file is not None and lines:
            self._file.write(b"".join(lines))
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self._logged += len(lines)
            if self._logged > 2 * self.capacity:
                self._compact()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.splitlines():
            try:
                sender, message_id = _decode_key.decode(line)
            except msgspec.DecodeError:
                continue  # a torn write at the end of the log, or junk
            key = (sender, message_id)
            self._keys[key] = None
            self._keys.move_to_end(key)
            if len(self._keys) > self.capacity:
                self._keys.popitem(last=False)

    def _compact(self) -> None:
        assert self.path is not None
        if self._file is not None:
            self._file.close()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as out:
            out.writelines(msgspec.json.encode(key) + b"\n" for key in self._keys)
            out.flush()
            if self.fsync:
                os.fsync(out.fileno())
        os.replace(tmp, self.path)
        if self.fsync:
            _fsync_dir(self.path.parent)
        self._file = open(self.path, "ab")  # noqa: SIM115 (kept open for appends)
        self._logged = len(self._keys)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
