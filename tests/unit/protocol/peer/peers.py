"""Two nodes and their channels in memory: keys, signed node info, and a byte pump."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidings.protocol.e2e import NodeKeys, sign_node_info
from tidings.protocol.peer import ChannelEvent, SecureChannel

NOW_MS = 1_764_500_000_000
PUBLISHED = NOW_MS - 60_000
EXPIRES = NOW_MS + 600_000


@dataclass
class Node:
    """A node's keys and its signed node info (``node_info`` may be replaced to forge one)."""

    name: str
    keys: NodeKeys = field(default_factory=NodeKeys.generate)
    expires: int = EXPIRES
    node_info: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.node_info = sign_node_info(
            self.keys, f"{self.name}@example.com", "laptop", PUBLISHED, self.expires
        )

    def initiator(self, expected: Node | None = None, **options: Any) -> SecureChannel:
        if expected is not None:
            options["expected_box_id"] = expected.keys.box_id
        return SecureChannel.initiator(self.keys, self.node_info, now_ms=NOW_MS, **options)

    def responder(self, **options: Any) -> SecureChannel:
        return SecureChannel.responder(self.keys, self.node_info, now_ms=NOW_MS, **options)


def records(data: bytes) -> list[bytes]:
    """Split a byte stream into its records (length prefix included)."""
    out = []
    while data:
        end = 4 + int.from_bytes(data[:4], "big")
        out.append(data[:end])
        data = data[end:]
    return out


def pump(a: SecureChannel, b: SecureChannel) -> tuple[list[ChannelEvent], list[ChannelEvent]]:
    """Move bytes both ways until neither side has anything to write; the events each got."""
    a_events: list[ChannelEvent] = []
    b_events: list[ChannelEvent] = []
    while True:
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not to_a and not to_b:
            return a_events, b_events
        if to_b:
            b_events += b.receive_data(to_b)
        if to_a:
            a_events += a.receive_data(to_a)


def established(
    alice: Node | None = None, bob: Node | None = None
) -> tuple[SecureChannel, SecureChannel]:
    """Alice dialled Bob (expecting his key) and both ends are established."""
    alice = alice or Node("alice")
    bob = bob or Node("bob")
    initiator, responder = alice.initiator(expected=bob), bob.responder()
    pump(initiator, responder)
    assert initiator.established and responder.established
    return initiator, responder
