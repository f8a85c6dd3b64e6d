"""A ``GrantChecker`` for tests: grants set by hand, listeners told on each change (as the
consent service's ``Grants`` does after an accept, a revocation or a scope update)."""

from __future__ import annotations

from collections.abc import Callable

from tidings.core.consent_model import Level, Permission
from tidings.core.grants import covers


class FakeGrants:
    def __init__(self) -> None:
        self._granted: dict[tuple[str, str], dict[str, str]] = {}
        self._listeners: list[Callable[[str, str], None]] = []
        self.asked: list[tuple[str, str, str, str]] = []

    def grant(self, owner: str, requester: str, resource: str, level: str = "read") -> None:
        self._granted.setdefault((owner, requester), {})[resource] = level
        self._changed(owner, requester)

    def revoke(self, owner: str, requester: str) -> None:
        self._granted.pop((owner, requester), None)
        self._changed(owner, requester)

    def _changed(self, owner: str, requester: str) -> None:
        for listener in list(self._listeners):
            listener(owner, requester)

    async def allows(self, actor: str, owner: str, resource: str, level: str) -> bool:
        """As ``Grants.allows``: the owner always may; a grant matches as ``covers`` says."""
        self.asked.append((actor, owner, resource, level))
        if actor == owner:
            return True
        wanted = Level(level)
        granted = self._granted.get((owner, actor), {})
        return any(
            covers(Permission(pattern, Level(given)), resource, wanted)
            for pattern, given in granted.items()
        )

    def listen(self, callback: Callable[[str, str], None]) -> Callable[[], None]:
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)
