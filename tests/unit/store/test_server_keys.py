"""The server's federation keys on disk: created once, reloaded as they were, rotated with an
overlap, private (0600), and a damaged file named in the error."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tidings.protocol.federation import read_server_document, server_document
from tidings.store.server_keys import SERVER_KEYS_FILE, ServerKeys, ServerKeysError

NOW = 1_700_000_000.0
DOMAIN = "alpha.test"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_on_first_load(tmp_path: Path) -> None:
    keys = ServerKeys.load_or_create(tmp_path, DOMAIN, NOW)
    path = tmp_path / "federation" / "server_keys.json"
    assert keys.path == path == tmp_path / SERVER_KEYS_FILE
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    (entry,) = json.loads(path.read_text())
    assert entry["id"] == keys.current.key_id and entry["id"].startswith(f"{DOMAIN}#")
    assert (entry["created"], entry["expires"]) == (NOW, None)
    assert keys.published(NOW) == [(keys.current, None)]
    assert [p.name for p in path.parent.iterdir()] == ["server_keys.json"]


def test_reloaded_as_it_was(tmp_path: Path) -> None:
    first = ServerKeys.load_or_create(tmp_path, DOMAIN, NOW).current
    again = ServerKeys.load_or_create(tmp_path, DOMAIN, NOW + 100).current
    assert again == first
    assert (again.key_id, again.public) == (first.key_id, first.public)


def test_rotate(tmp_path: Path) -> None:
    keys = ServerKeys.load_or_create(tmp_path, DOMAIN, NOW)
    old = keys.current
    new = keys.rotate(overlap_s=3600, now=NOW + 10)
    assert keys.current == new != old
    assert keys.published(NOW + 10) == [(old, NOW + 3610), (new, None)]
    assert keys.published(NOW + 3610) == [(new, None)]
    assert mode(keys.path) == 0o600
    reloaded = ServerKeys.load_or_create(tmp_path, DOMAIN, NOW + 20)
    assert reloaded.current == new
    assert reloaded.published(NOW + 20) == [(old, NOW + 3610), (new, None)]
    assert [p.name for p in keys.path.parent.iterdir()] == ["server_keys.json"]
    # A peer that pinned the old key learns the new one from the published document.
    document = server_document(DOMAIN, reloaded.published(NOW + 20))
    learned = read_server_document(document, domain=DOMAIN, pinned=[old.public], now=NOW + 20)
    assert [kid for kid, _, _ in learned] == [old.key_id, new.key_id]


def test_a_second_rotation_keeps_a_sooner_expiry_and_drops_expired_keys(tmp_path: Path) -> None:
    keys = ServerKeys.load_or_create(tmp_path, DOMAIN, NOW)
    first = keys.current
    second = keys.rotate(overlap_s=100, now=NOW)
    third = keys.rotate(overlap_s=1000, now=NOW + 50)
    assert [(k.key, k.expires) for k in keys.keys] == [
        (first, NOW + 100),  # already sooner than NOW + 50 + 1000
        (second, NOW + 1050),
        (third, None),
    ]
    fourth = keys.rotate(overlap_s=0, now=NOW + 200)
    assert [k.key for k in keys.keys] == [second, third, fourth]  # first had expired
    assert [k.expires for k in keys.keys] == [NOW + 200, NOW + 200, None]
    assert keys.published(NOW + 200) == [(fourth, None)]


def test_rotate_refuses_a_negative_overlap(tmp_path: Path) -> None:
    keys = ServerKeys.load_or_create(tmp_path, DOMAIN, NOW)
    with pytest.raises(ValueError):
        keys.rotate(overlap_s=-1, now=NOW)


def test_every_key_given_an_end_by_hand_gets_a_new_signing_key(tmp_path: Path) -> None:
    keys = ServerKeys.load_or_create(tmp_path, DOMAIN, NOW)
    entries = json.loads(keys.path.read_text())
    entries[0]["expires"] = NOW + 500
    keys.path.write_text(json.dumps(entries))
    reloaded = ServerKeys.load_or_create(tmp_path, DOMAIN, NOW + 1)
    assert reloaded.current != keys.current
    assert reloaded.published(NOW + 1) == [(keys.current, NOW + 500), (reloaded.current, None)]


def valid_entry(tmp_path: Path) -> dict[str, object]:
    keys = ServerKeys.load_or_create(tmp_path / "seed", DOMAIN, NOW)
    entry: dict[str, object] = json.loads(keys.path.read_text())[0]
    return entry


CORRUPT = {
    "not JSON": lambda e: "{",
    "empty file": lambda e: "",
    "not a list": lambda e: json.dumps(e),
    "empty list": lambda e: "[]",
    "missing field": lambda e: json.dumps([{k: v for k, v in e.items() if k != "secret"}]),
    "extra field": lambda e: json.dumps([e | {"x": 1}]),
    "another domain": lambda e: json.dumps([e | {"id": "gamma.test#1"}]),
    "secret not base64": lambda e: json.dumps([e | {"secret": "!!"}]),
    "secret too short": lambda e: json.dumps([e | {"secret": "AAAA"}]),
    "secret not a string": lambda e: json.dumps([e | {"secret": 1}]),
    "created not a number": lambda e: json.dumps([e | {"created": "now"}]),
    "expires a bool": lambda e: json.dumps([e | {"expires": True}]),
    "same key twice": lambda e: json.dumps([e, e]),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_a_corrupt_file_is_named(tmp_path: Path, name: str) -> None:
    path = tmp_path / SERVER_KEYS_FILE
    path.parent.mkdir()
    path.write_text(CORRUPT[name](valid_entry(tmp_path)))
    with pytest.raises(ServerKeysError, match=str(path)) as caught:
        ServerKeys.load_or_create(tmp_path, DOMAIN, NOW)
    assert isinstance(caught.value, ValueError)
    assert path.read_text() == CORRUPT[name](valid_entry(tmp_path))  # left as it was


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / SERVER_KEYS_FILE
    path.parent.mkdir()
    path.write_bytes(b"[\xff]")
    with pytest.raises(ServerKeysError, match=str(path)):
        ServerKeys.load_or_create(tmp_path, DOMAIN, NOW)
