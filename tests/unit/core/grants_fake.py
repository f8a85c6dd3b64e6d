"""A ``GrantChecker`` for tests: grants set by hand, listeners told on each change (as the
consent service's ``Grants`` does after an accept, a revocation or a scope update)."""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

LEVELS = ("read", "contribute", "manage")


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
        self.asked.append((actor, owner, resource, level))
        for pattern, granted in self._granted.get((owner, actor), {}).items():
            if fnmatchcase(resource, pattern) and LEVELS.index(granted) >= LEVELS.index(level):
                return True
        return False

    def listen(self, callback: Callable[[str, str], None]) -> Callable[[], None]:
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)
