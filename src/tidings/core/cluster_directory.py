"""Which node holds each live session of the deployment (``core.cluster``), kept in memory.

Every node learns it from the others' ``Attached`` / ``Detached`` / ``PresenceChanged`` and
their answers to ``Hello``; a node not heard from for ``missed`` heartbeats is dead and its
sessions leave the directory (their clients reconnect somewhere and resume from the store).
The directory holds only other nodes' sessions: this node's are ``SessionRegistry``'s.

It is a plain state machine with an injected clock: the invariant (every session indexed by
identity is in its node's map and nowhere else, and the other way round) holds after any
sequence of calls; tests/unit/core/test_cluster_directory.py checks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Holes", "NodeState", "Remote", "SessionDirectory"]


@dataclass(slots=True)
class Remote:
    """A session live on another node."""

    node: str
    presence: dict[str, Any]


@dataclass(slots=True)
class NodeState:
    heard_at: float
    sessions: set[tuple[str, str]] = field(default_factory=set)


Change = Callable[[str], None]
"""Told the identity whose remote sessions changed (presence pushes)."""


class SessionDirectory:
    """The live sessions of the other nodes, by identity (``sessions``, read on the routing
    path: a dict miss when nobody else holds the identity) and by node."""

    def __init__(self, self_id: str, interval: float, missed: int = 3) -> None:
        self.self_id = self_id
        self.timeout = interval * missed
        """Seconds of silence after which a node is dead."""
        self.sessions: dict[str, dict[str, Remote]] = {}
        self.nodes: dict[str, NodeState] = {}

    # -- nodes ------------------------------------------------------------------------------

    def heard(self, node: str, now: float) -> bool:
        """The node spoke (any message); True when it is new (or came back)."""
        state = self.nodes.get(node)
        if state is None:
            self.nodes[node] = NodeState(now)
            return True
        state.heard_at = max(state.heard_at, now)
        return False

    def expire(self, now: float) -> list[str]:
        """Drop the nodes silent for ``timeout`` and their sessions; the identities changed."""
        dead = [n for n, state in self.nodes.items() if now - state.heard_at >= self.timeout]
        changed: list[str] = []
        for node in dead:
            changed.extend(self.drop(node))
        return changed

    def drop(self, node: str) -> list[str]:
        """Forget a node (it said goodbye, or died); the identities that lost sessions."""
        state = self.nodes.pop(node, None)
        if state is None:
            return []
        changed = []
        for identity, instance in state.sessions:
            self._unindex(identity, instance, node)
            changed.append(identity)
        return changed

    # -- sessions ---------------------------------------------------------------------------

    def attached(
        self, node: str, identity: str, instance: str, presence: dict[str, Any], now: float
    ) -> str | None:
        """The session attached on ``node``; returns the node that held it before, if any."""
        self.heard(node, now)
        instances = self.sessions.setdefault(identity, {})
        previous = instances.get(instance)
        if previous is not None and previous.node != node:
            old = self.nodes.get(previous.node)
            if old is not None:
                old.sessions.discard((identity, instance))
        instances[instance] = Remote(node, presence)
        self.nodes[node].sessions.add((identity, instance))
        return previous.node if previous is not None and previous.node != node else None

    def detached(self, node: str, identity: str, instance: str) -> bool:
        """The session left ``node`` (ignored when another node holds it now)."""
        state = self.nodes.get(node)
        if state is not None:
            state.sessions.discard((identity, instance))
        return self._unindex(identity, instance, node)

    def taken_here(self, identity: str, instance: str) -> str | None:
        """The session attached on this node: forget where it was; returns that node."""
        instances = self.sessions.get(identity)
        if not instances or instance not in instances:
            return None
        node = instances[instance].node
        self.detached(node, identity, instance)
        return node

    def presence_changed(
        self, node: str, identity: str, instance: str, presence: dict[str, Any]
    ) -> bool:
        found = self.sessions.get(identity, {}).get(instance)
        if found is None or found.node != node:
            return False
        found.presence = presence
        return True

    def replace(
        self, node: str, sessions: list[tuple[str, str, dict[str, Any]]], now: float
    ) -> set[str]:
        """Everything ``node`` holds now (its answer to ``Hello``); the identities changed."""
        changed = set(self.drop(node))
        self.heard(node, now)
        for identity, instance, presence in sessions:
            self.attached(node, identity, instance, presence, now)
            changed.add(identity)
        return changed

    def owner(self, identity: str, instance: str) -> str | None:
        found = self.sessions.get(identity, {}).get(instance)
        return found.node if found is not None else None

    def of_identity(self, identity: str) -> dict[str, Remote]:
        return self.sessions.get(identity, {})

    def _unindex(self, identity: str, instance: str, node: str) -> bool:
        instances = self.sessions.get(identity)
        if not instances:
            return False
        found = instances.get(instance)
        if found is None or found.node != node:
            return False
        del instances[instance]
        if not instances:
            del self.sessions[identity]
        return True

    def check(self) -> None:
        """Raise ``AssertionError`` unless the two indexes agree (tests)."""
        by_node = {(i, n, node) for node, s in self.nodes.items() for i, n in s.sessions}
        indexed = {(i, n, r.node) for i, ns in self.sessions.items() for n, r in ns.items()}
        assert by_node == indexed, (by_node, indexed)
        assert all(self.sessions.values()), "an identity indexed with no session"
        assert self.self_id not in self.nodes, "this node is not its own peer"


class Holes:
    """Queue rows a live session may have skipped: with several nodes writing one session's
    queue, this node may write a newer row live (its cursor jumps past ``lo``..``hi``) before
    the ``Wake`` for an older row stored by another node arrives. A woken row at or below the
    cursor is written only if it lies in such a jump (otherwise a replay wrote it already)."""

    __slots__ = ("_filled", "_jumps")

    LIMIT = 512

    def __init__(self) -> None:
        self._jumps: list[tuple[int, int]] = []
        self._filled: set[int] = set()

    def jump(self, cursor: int, seq: int) -> None:
        """The cursor moves from ``cursor`` to ``seq`` by a live write."""
        if seq > cursor + 1:
            jumps = self._jumps
            jumps.append((cursor, seq))
            if len(jumps) > self.LIMIT:
                del jumps[: len(jumps) // 2]
                floor = jumps[0][0]
                self._filled = {s for s in self._filled if s > floor}

    def take(self, seqs: list[int]) -> list[int]:
        """Those of ``seqs`` (all at or below the cursor) that are holes still; they count as
        written from now on."""
        found = []
        for seq in seqs:
            if seq in self._filled:
                continue
            if any(lo < seq < hi for lo, hi in self._jumps):
                found.append(seq)
                self._filled.add(seq)
        return sorted(found)

    def all(self) -> tuple[int, list[tuple[int, int]]]:
        """The lowest possible hole and the jumps (a reconnect re-reads them all)."""
        if not self._jumps:
            return 0, []
        return min(lo for lo, _ in self._jumps), list(self._jumps)

    def filled(self, seq: int) -> bool:
        return seq in self._filled

    def fill(self, seq: int) -> None:
        self._filled.add(seq)
