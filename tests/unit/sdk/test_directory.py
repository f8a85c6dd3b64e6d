"""The SDK's view of the key directory trusts signatures, not the server: an answer that is not
signed by its key, or names someone else, is as good as absent."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tidings.protocol.e2e import NodeKeys, sign_node_info
from tidings.protocol.lime import Command, CommandMethod
from tidings.sdk import CommandFailed, CommandResult
from tidings.sdk._directory import Directory

NOW = 1_764_500_000_000
BOB = "bob@localhost"


def published(keys: NodeKeys, identity: str = BOB, instance: str = "b1") -> dict[str, Any]:
    return sign_node_info(keys, identity, instance, published=NOW, expires=NOW + 86_400_000)


class Answers:
    """What the "server" answers, and how often it was asked."""

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {}
        self.asked: list[str] = []

    async def __call__(self, method: str, uri: str, resource: Any, type: str | None) -> Any:
        self.asked.append(uri)
        if uri not in self.documents:
            raise CommandFailed(67, "not found")
        command = Command(method=CommandMethod.GET, uri=uri)
        return CommandResult(type=None, resource=self.documents[uri], envelope=command)


async def test_devices_keep_only_what_verifies_and_names_the_identity_asked():
    good, forged, elsewhere = NodeKeys.generate(), NodeKeys.generate(), NodeKeys.generate()
    tampered = published(forged) | {"instance": "evil"}  # the signature no longer holds
    answers = Answers()
    answers.documents[f"lime://{BOB}/keys"] = {
        "items": [published(good), tampered, published(elsewhere, "eve@localhost"), "junk"]
    }
    devices = await Directory(answers).devices(BOB)
    assert [d.sign_id for d in devices] == [good.sign_id]


async def test_an_owner_must_be_signed_by_the_key_asked_about():
    keys, other = NodeKeys.generate(), NodeKeys.generate()
    answers = Answers()
    answers.documents[f"/keys/{_quoted(keys.sign_id)}"] = published(other)  # another key's
    answers.documents[f"/keys/{_quoted(other.sign_id)}"] = published(other) | {"revoked": NOW}
    directory = Directory(answers)
    assert await directory.owner(keys.sign_id) is None
    owner = await directory.owner(other.sign_id)
    assert owner is not None and owner.revoked and owner.node == f"{BOB}/b1"
    assert await directory.owner(NodeKeys.generate().sign_id) is None  # never published


async def test_answers_are_cached_for_the_ttl():
    clock = [0.0]
    answers = Answers()
    answers.documents[f"lime://{BOB}/keys"] = {"items": []}
    directory = Directory(answers, ttl=30.0, clock=lambda: clock[0])
    await directory.devices(BOB)
    await directory.devices(BOB)
    clock[0] = 31.0
    await directory.devices(BOB)
    assert len(answers.asked) == 2
    directory.forget(BOB)
    await directory.devices(BOB)
    assert len(answers.asked) == 3


async def test_other_failures_are_not_taken_for_absence():
    async def refusing(method: str, uri: str, resource: Any, type: str | None) -> Any:
        raise CommandFailed(35, "forbidden")

    with pytest.raises(CommandFailed):
        await Directory(refusing).owner(NodeKeys.generate().sign_id)


def _quoted(sign_id: str) -> str:
    return quote(sign_id, safe="")


async def test_an_owner_named_by_the_sender_is_asked_in_the_named_form():
    """A sealed message's sender may be of another domain: its server knows the key, asked
    through ``lime://sender/keys/{signId}``, cached apart from the unnamed answer."""
    keys = NodeKeys.generate()
    answers = Answers()
    answers.documents[f"lime://{BOB}/keys/{_quoted(keys.sign_id)}"] = published(keys)
    directory = Directory(answers)
    owner = await directory.owner(keys.sign_id, BOB)
    assert owner is not None and owner.node == f"{BOB}/b1" and not owner.revoked
    assert await directory.owner(keys.sign_id) is None  # not this server's own
    assert answers.asked == [
        f"lime://{BOB}/keys/{_quoted(keys.sign_id)}",
        f"/keys/{_quoted(keys.sign_id)}",
    ]
