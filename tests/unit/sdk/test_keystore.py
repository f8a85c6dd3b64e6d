"""Key files: made once with the right modes, read back the same, refused (never replaced) when
they will not do, rotated without losing the old key."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidings.protocol.e2e import InvalidKey, NodeKeys, open_sealed, seal
from tidings.protocol.lime import parse_node
from tidings.sdk import KeyFileError, KeyStore
from tidings.sdk._keystore import default_key_folder

NODE = "alice@example.com/laptop"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys")


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would leave files world-readable: the modes must not depend on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_first_use_creates_a_0600_file_in_0700_folders(store: KeyStore, loose_umask: None) -> None:
    keys = store.current(NODE)
    path = store.folder / "alice@example.com" / "laptop.key"
    assert store.path_of(NODE) == path
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(store.folder) == 0o700
    assert path.read_bytes() == base64.b64encode(keys.secret) + b"\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["laptop.key"]  # no temp file left


def test_the_same_ids_come_back(store: KeyStore) -> None:
    """Reference 2.10 scenario 1: after a restart with the same storage, the same ids."""
    keys = store.current(NODE)
    again = KeyStore(store.folder)
    assert again.current(NODE) == keys
    assert again.load(parse_node(NODE)) == keys
    assert (again.current(NODE).sign_id, again.current(NODE).box_id) == (keys.sign_id, keys.box_id)


def test_load_does_not_create(store: KeyStore) -> None:
    assert store.load(NODE) is None
    assert not store.folder.exists()


def test_each_node_has_its_own_key(store: KeyStore) -> None:
    laptop, phone = store.current(NODE), store.current("alice@example.com/phone")
    other = store.current("Bob@Example.com/laptop")
    assert len({laptop.sign_id, phone.sign_id, other.sign_id}) == 3
    assert (store.folder / "bob@example.com" / "laptop.key").exists()


def test_the_instance_is_quoted(store: KeyStore) -> None:
    store.current("alice@example.com/home/desk ü")
    assert store.path_of("alice@example.com/home/desk ü").name == "home%2Fdesk%20%C3%BC.key"


def test_an_identity_has_no_key_file(store: KeyStore) -> None:
    with pytest.raises(ValueError):
        store.current("alice@example.com")


def test_existing_folders_keep_their_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    KeyStore(tmp_path).current(NODE)
    assert mode(tmp_path) == 0o755
    assert mode(tmp_path / "alice@example.com") == 0o700


def test_the_default_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_key_folder() == tmp_path / "data" / "tidings" / "keys"
    assert KeyStore().folder == tmp_path / "data" / "tidings" / "keys"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unusable in ("", "relative/data"):
        monkeypatch.setenv("XDG_DATA_HOME", unusable)
        assert default_key_folder() == tmp_path / "home" / ".local" / "share" / "tidings" / "keys"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_key_folder() == tmp_path / "home" / ".local" / "share" / "tidings" / "keys"


# bad files are refused and left alone


def bad_contents() -> dict[str, bytes]:
    one, other = NodeKeys.generate(), NodeKeys.generate()
    secret = one.secret
    return {
        "empty": b"",
        "newline only": b"\n",
        "garbage": b"this is not a key\n",
        "binary": bytes(range(256)),
        "32 bytes": base64.b64encode(secret[:32]) + b"\n",
        "63 bytes": base64.b64encode(secret[:63]) + b"\n",
        "65 bytes": base64.b64encode(secret + b"x") + b"\n",
        "raw secret": secret,
        "mismatched public half": base64.b64encode(secret[:32] + other.secret[32:]) + b"\n",
        "two lines": base64.b64encode(secret) + b"\n" + base64.b64encode(secret) + b"\n",
        "too long": b"A" * 10_000,
        "spaces": b" " + base64.b64encode(secret) + b"\n",
    }


@pytest.mark.parametrize("content", bad_contents().values(), ids=list(bad_contents()))
def test_a_bad_file_is_refused_and_left_untouched(store: KeyStore, content: bytes) -> None:
    path = store.path_of(NODE)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    path.chmod(0o600)  # as a key file is: refused for its content, not its mode
    before = path.stat()
    for attempt in (store.current, store.load, store.keys_of, store.rotate):
        with pytest.raises(KeyFileError) as caught:
            attempt(NODE)
        assert caught.value.path == path
        assert str(path) in str(caught.value)
    assert path.read_bytes() == content
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in path.parent.iterdir()) == ["laptop.key"]


def test_a_key_file_error_is_an_invalid_key(store: KeyStore) -> None:
    assert issubclass(KeyFileError, InvalidKey) and issubclass(KeyFileError, ValueError)


def test_the_file_without_its_newline_is_accepted(store: KeyStore) -> None:
    keys = NodeKeys.generate()
    path = store.path_of(NODE)
    path.parent.mkdir(parents=True)
    path.write_bytes(base64.b64encode(keys.secret))
    path.chmod(0o600)
    assert store.current(NODE) == keys


def test_a_folder_where_the_file_should_be_is_refused(store: KeyStore) -> None:
    store.path_of(NODE).mkdir(parents=True)
    with pytest.raises(KeyFileError):
        store.current(NODE)


def test_an_unreadable_file_is_refused(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faked, since the tests may run as root, who reads any file."""
    store.current(NODE)
    path = store.path_of(NODE)
    real_open = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(KeyFileError, match=r"cannot be read \(Permission denied"):
        KeyStore(store.folder).current(NODE)
    monkeypatch.undo()
    assert path.stat().st_size == 89


def test_a_key_written_meanwhile_by_another_process_wins(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes creating at once: the one that links second reads the first one's key."""
    theirs = NodeKeys.generate()
    real_generate = NodeKeys.generate

    def generate_while_another_writes() -> NodeKeys:
        if not store.path_of(NODE).exists():
            store.path_of(NODE).parent.mkdir(parents=True, exist_ok=True)
            store.path_of(NODE).write_bytes(base64.b64encode(theirs.secret) + b"\n")
            store.path_of(NODE).chmod(0o600)
        return real_generate()

    monkeypatch.setattr(NodeKeys, "generate", generate_while_another_writes)
    assert store.current(NODE) == theirs
    assert sorted(p.name for p in store.path_of(NODE).parent.iterdir()) == ["laptop.key"]


# rotation


def retired_name(keys: NodeKeys) -> str:
    return f"laptop.{hashlib.sha256(keys.sign_id.encode()).hexdigest()[:8]}.old.key"


def test_rotation_keeps_the_retired_keys(store: KeyStore, loose_umask: None) -> None:
    first = store.current(NODE)
    second = store.rotate(NODE)
    third = store.rotate(NODE)
    assert len({first, second, third}) == 3
    assert store.current(NODE) == third
    assert store.keys_of(NODE) == [third, second, first]
    assert KeyStore(store.folder).keys_of(NODE) == [third, second, first]
    folder = store.path_of(NODE).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["laptop.key", retired_name(first), retired_name(second)]
    )
    assert all(mode(p) == 0o600 for p in folder.iterdir())


def test_rotating_a_node_without_a_key_makes_one(store: KeyStore) -> None:
    keys = store.rotate(NODE)
    assert store.keys_of(NODE) == [keys]


def test_keys_of_other_instances_are_not_retired_keys_of_this_one(store: KeyStore) -> None:
    store.current("alice@example.com/laptop2")
    store.current("alice@example.com/laptop.old")
    keys = store.current(NODE)
    assert store.keys_of(NODE) == [keys]


def test_a_retired_file_named_for_another_key_is_refused(store: KeyStore) -> None:
    store.current(NODE)
    stranger = NodeKeys.generate()
    path = store.path_of(NODE).with_name("laptop.0badc0de.old.key")
    path.write_bytes(base64.b64encode(stranger.secret) + b"\n")
    with pytest.raises(KeyFileError) as caught:
        store.keys_of(NODE)
    assert caught.value.path == path


def test_a_rotation_cut_short_lists_the_key_once(store: KeyStore) -> None:
    """A crash after linking the retired name, before the new key replaced the current one."""
    keys = store.current(NODE)
    os.link(store.path_of(NODE), store.path_of(NODE).with_name(retired_name(keys)))
    assert store.keys_of(NODE) == [keys]
    new = store.rotate(NODE)  # and rotating again completes it
    assert store.keys_of(NODE) == [new, keys]


def test_old_messages_still_open_after_rotation(store: KeyStore) -> None:
    sender = NodeKeys.generate()
    bob = "bob@example.com/phone"
    before = store.current(bob)
    content = seal(
        sender,
        message_id="m1",
        sender=NODE,
        to="bob@example.com",
        content_type="text/plain",
        content="sealed before the rotation",
        recipients=[before.box_id],
    )
    store.rotate(bob)

    def open_with(keys: list[NodeKeys]) -> str:
        opened = open_sealed(
            content, message_id="m1", envelope_from=NODE, envelope_to=bob, my_keys=keys
        )
        assert isinstance(opened.content, str)
        return opened.content

    assert open_with(KeyStore(store.folder).keys_of(bob)) == "sealed before the rotation"
    with pytest.raises(Exception, match="not sealed for any of my keys"):
        open_with([store.current(bob)])


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o620])
def test_a_key_file_others_may_read_or_write_is_refused(store: KeyStore, loose: int) -> None:
    """A secret key others can read is leaked, one they can write is theirs: refused, with the
    path and the mode named, and left as it is (ssh does the same with private keys)."""
    keys = store.current(NODE)
    path = store.path_of(NODE)
    path.chmod(loose)
    for attempt in (store.current, store.load, store.keys_of, store.rotate):
        with pytest.raises(KeyFileError, match=f"mode 0o{loose:o}") as caught:
            attempt(NODE)
        assert caught.value.path == path
    assert mode(path) == loose
    path.chmod(0o600)
    assert store.current(NODE) == keys


def test_a_retired_key_file_others_may_read_is_refused(store: KeyStore) -> None:
    store.current(NODE)
    store.rotate(NODE)
    (retired,) = [p for p in store.path_of(NODE).parent.iterdir() if p.name.endswith(".old.key")]
    retired.chmod(0o644)
    with pytest.raises(KeyFileError) as caught:
        store.keys_of(NODE)
    assert caught.value.path == retired
