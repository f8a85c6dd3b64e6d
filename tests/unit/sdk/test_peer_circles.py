"""Circles and scopes (reference 2.5): devices win, updates replace, keys of either kind."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tidings.protocol.e2e import NodeKeys
from tidings.sdk._bus import LocalBus
from tidings.sdk._circles import Circle, Circles

ALICE_PHONE = NodeKeys.generate()
ALICE_LAPTOP = NodeKeys.generate()
BOB = NodeKeys.generate()
CAROL = NodeKeys.generate()


def test_a_circle_matches_a_sign_id_and_its_box_id() -> None:
    circle = Circle("friends")
    circle.replace([BOB.sign_id])
    assert BOB.sign_id in circle
    assert BOB.box_id in circle
    assert CAROL.sign_id not in circle
    assert CAROL.box_id not in circle
    assert circle.keys == frozenset({BOB.sign_id})


def test_a_circle_given_box_ids_matches_their_sign_ids() -> None:
    circle = Circle("devices")
    circle.replace([BOB.box_id, BOB.box_id])
    assert BOB.sign_id in circle
    assert BOB.box_id in circle
    assert CAROL.sign_id not in circle
    assert circle.keys == frozenset({BOB.box_id})
    assert len(circle) == 1


def test_replace_replaces() -> None:
    circle = Circle("friends")
    circle.replace([BOB.sign_id])
    circle.replace([CAROL.sign_id])
    assert BOB.sign_id not in circle
    assert CAROL.sign_id in circle
    circle.replace([])
    assert CAROL.sign_id not in circle


@pytest.mark.parametrize("bad", ["", "not a key", "A" * 42 + "==", 7, None])
def test_an_invalid_key_refuses_the_whole_list(bad: Any) -> None:
    circle = Circle("friends")
    circle.replace([BOB.sign_id])
    with pytest.raises(ValueError, match="friends circle"):
        circle.replace([CAROL.sign_id, bad])
    assert circle.keys == frozenset({BOB.sign_id})
    assert CAROL.sign_id not in circle


def test_one_string_is_not_a_list_of_keys() -> None:
    with pytest.raises(ValueError, match="list of keys"):
        Circle("friends").replace(BOB.sign_id)


def test_non_keys_are_simply_not_members() -> None:
    circle = Circle("friends")
    circle.replace([BOB.sign_id])
    assert "nonsense" not in circle
    assert 42 not in circle


def test_circle_names_are_the_two_of_the_seed() -> None:
    with pytest.raises(ValueError, match="devices or friends"):
        Circle("enemies")


async def test_circles_ask_for_their_lists_on_the_bus() -> None:
    bus = LocalBus()
    requests: list[tuple[str, Any, Any]] = []
    bus.on("self.*", lambda topic, sender, payload: requests.append((topic, sender, payload)))
    Circles(bus)
    await bus.drained()
    assert requests == [
        ("self.devices.updateRequest", "local", None),
        ("self.friends.updateRequest", "local", None),
    ]


async def test_scope_follows_the_updates_and_devices_win() -> None:
    bus = LocalBus()
    circles = Circles(bus)
    assert circles.scope_of(BOB.sign_id) == "public"
    bus.emit("self.devices.update", "local", [ALICE_PHONE.box_id, ALICE_LAPTOP.sign_id])
    bus.emit("self.friends.update", "local", [BOB.sign_id, ALICE_PHONE.sign_id])
    await bus.drained()
    assert circles.scope_of(ALICE_PHONE.sign_id) == "self"  # in both: devices win
    assert circles.scope_of(ALICE_LAPTOP.sign_id) == "self"
    assert circles.scope_of(BOB.sign_id) == "friends"
    assert circles.scope_of(CAROL.sign_id) == "public"
    bus.emit("self.friends.update", "local", [CAROL.sign_id])  # replaces, not adds
    await bus.drained()
    assert circles.scope_of(BOB.sign_id) == "public"
    assert circles.scope_of(CAROL.sign_id) == "friends"


@pytest.mark.parametrize(
    "payload", [None, "one string", {"keys": []}, [1, 2], ["not a key"], [BOB.sign_id, None]]
)
async def test_a_bad_update_is_refused_whole_and_logged(
    payload: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bus = LocalBus()
    circles = Circles(bus)
    bus.emit("self.friends.update", "local", [CAROL.sign_id])
    await bus.drained()
    with caplog.at_level(logging.WARNING, logger="tidings.sdk.circles"):
        bus.emit("self.friends.update", "local", payload)
        await bus.drained()
    assert "self.friends.update refused" in caplog.text
    assert circles.friends.keys == frozenset({CAROL.sign_id})
    assert circles.scope_of(BOB.sign_id) == "public"
