"""Key files: the long-term secret key of each node, kept in one folder on the client's machine.

Layout (``docs/e2e.md``, "Key files")::

    <folder>/<identity>/<quote(instance)>.key                      current key
    <folder>/<identity>/<quote(instance)>.<hash8>.old.key          retired keys, kept to read
                                                                   messages sealed before
                                                                   a rotation

A file holds the base64 of the 64-byte Ed25519 secret key and a newline, as mm-platform stores
its ``'identity'``. A key file is the node's identity: a bad one is refused with the path named
and never replaced, since replacing it would silently make a new identity and lose every
message sealed for the old one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Final
from urllib.parse import quote

from tidings.protocol.e2e import SECRET_BYTES, InvalidKey, NodeKeys
from tidings.protocol.lime import Node, parse_node

__all__ = ["KeyFileError", "KeyStore", "default_key_folder"]

_MAX_FILE_BYTES: Final = 256
"""A key file is 89 bytes; reading more than this would only read garbage."""
_MAX_NAME_BYTES: Final = 255 - len(".00000000.old.key")
_RETIRED: Final = re.compile(r"\.([0-9a-f]{8})\.old\.key")


class KeyFileError(InvalidKey):
    """A key file that cannot be used: unreadable, of the wrong form, or inconsistent.

    ``path`` names it; the file is left as it is for a person to look at.
    """

    kind = "invalid-key-file"

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"Key file {path}: {problem} (left untouched; move it away to start anew)")
        self.path = path


def default_key_folder() -> Path:
    """``$XDG_DATA_HOME/tidings/keys``, else ``~/.local/share/tidings/keys`` (the XDG base
    directory rule: a relative ``XDG_DATA_HOME`` is ignored)."""
    data_home = os.environ.get("XDG_DATA_HOME", "")
    base = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "tidings" / "keys"


class KeyStore:
    """The key files in ``folder`` (default: ``default_key_folder()``).

    Blocking file I/O, a few small files per node: call it once at start-up, or in a thread.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_key_folder()

    def path_of(self, node: Node | str) -> Path:
        """Where the current key of ``node`` (``identity/instance``) lives."""
        parsed = parse_node(node) if isinstance(node, str) else node
        if parsed.instance is None:
            raise ValueError(f"Keys belong to a node (identity/instance), not to {parsed}")
        name = quote(parsed.instance, safe="")
        if len(name.encode()) > _MAX_NAME_BYTES:
            raise ValueError(f"The instance of {parsed} is too long for a key file name")
        return self.folder / parsed.identity / f"{name}.key"

    def load(self, node: Node | str) -> NodeKeys | None:
        """The current keys of ``node``, or ``None`` when it has no key file yet."""
        path = self.path_of(node)
        try:
            return _read(path)
        except FileNotFoundError:
            return None

    def current(self, node: Node | str) -> NodeKeys:
        """The current keys of ``node``, made and written on first use.

        Two processes starting at once agree on one key: the file appears complete or not at
        all (linked into place from a temporary file), and the one that loses reads the other's.
        """
        path = self.path_of(node)
        while True:
            try:
                return _read(path)
            except FileNotFoundError:
                pass
            keys = NodeKeys.generate()
            if _create(path, keys, self.folder):
                return keys

    def keys_of(self, node: Node | str) -> list[NodeKeys]:
        """Every key ``node`` may open messages with: the current one first (made if there is
        none), then the retired ones, newest first."""
        current = self.current(node)
        path = self.path_of(node)
        stem = path.name.removesuffix(".key")
        retired: list[tuple[float, str, NodeKeys]] = []
        for candidate in path.parent.iterdir():
            name = candidate.name
            if not name.startswith(stem) or not (match := _RETIRED.fullmatch(name, len(stem))):
                continue
            keys = _read(candidate)
            if _tag(keys) != match.group(1):
                raise KeyFileError(candidate, "its name is for another key")
            if keys != current:  # a rotation interrupted between its two steps
                retired.append((candidate.stat().st_mtime, name, keys))
        retired.sort(key=lambda item: (-item[0], item[1]))
        return [current, *(keys for _, _, keys in retired)]

    def rotate(self, node: Node | str) -> NodeKeys:
        """Make a new current key for ``node`` and keep the old one as retired.

        The old file is linked under its retired name before the new one replaces it, so a
        crash in between leaves the old key in both places, never in neither.
        """
        path = self.path_of(node)
        try:
            old = _read(path)
        except FileNotFoundError:
            return self.current(node)
        retired = path.with_name(f"{path.name.removesuffix('.key')}.{_tag(old)}.old.key")
        try:
            os.link(path, retired)
        except FileExistsError:
            if _read(retired) != old:
                raise KeyFileError(retired, "it holds another key than its name says") from None
        _sync_folder(path.parent)
        keys = NodeKeys.generate()
        temporary = _write_temporary(path, keys)
        os.replace(temporary, path)
        _sync_folder(path.parent)
        return keys


def _tag(keys: NodeKeys) -> str:
    """Tells retired keys of one node apart: 8 hex digits of SHA-256 of the ``signId`` text."""
    return hashlib.sha256(keys.sign_id.encode("ascii")).hexdigest()[:8]


def _read(path: Path) -> NodeKeys:
    """The keys in ``path``; ``FileNotFoundError`` when there is none, ``KeyFileError`` when
    there is one that will not do."""
    try:
        with path.open("rb") as file:
            found = os.fstat(file.fileno())
            data = file.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(found.st_mode):
        raise KeyFileError(path, "not a regular file")
    if os.name == "posix" and found.st_mode & 0o077:
        # a secret others can read is leaked, one they can write is theirs (ssh refuses too)
        raise KeyFileError(
            path,
            f"others may read or write it (mode {oct(stat.S_IMODE(found.st_mode))}): "
            "make it 0600 if it was never exposed",
        )
    if len(data) > _MAX_FILE_BYTES:
        raise KeyFileError(path, "too long for a key file")
    text = data.removesuffix(b"\n")
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(path, "not the base64 of a secret key") from None
    if len(secret) != SECRET_BYTES or base64.b64encode(secret) != text:
        raise KeyFileError(path, f"not the base64 of {SECRET_BYTES} bytes")
    try:
        return NodeKeys.from_secret(secret)
    except InvalidKey as exc:
        raise KeyFileError(path, str(exc)) from None


def _create(path: Path, keys: NodeKeys, root: Path) -> bool:
    """Put ``keys`` at ``path`` unless a file is there already (then ``False``)."""
    _make_folders(path.parent, root)
    temporary = _write_temporary(path, keys)
    try:
        os.link(temporary, path)  # unlike rename, never replaces a file that appeared meanwhile
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    _sync_folder(path.parent)
    return True


def _write_temporary(path: Path, keys: NodeKeys) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "wb") as file:
            os.fchmod(fd, 0o600)  # whatever the umask
            file.write(base64.b64encode(keys.secret) + b"\n")
            file.flush()
            os.fsync(fd)
    except BaseException:
        temporary.unlink()
        raise
    return temporary


def _make_folders(folder: Path, root: Path) -> None:
    """Create the key folder and the identity folder 0700; folders above them get the
    usual mode, and existing ones are left as their owner set them."""
    for step in (root, folder):
        if not step.is_dir():
            step.parent.mkdir(parents=True, exist_ok=True)
            try:
                step.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chmod(step, 0o700)


def _sync_folder(folder: Path) -> None:
    """Make a new name durable: without it a crash can lose a key the node already used."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
