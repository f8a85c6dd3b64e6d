"""LIME node addresses: ``name@domain/instance``.

Names and domains compare case-insensitively in every LIME implementation, so they are kept in
lower case; the instance is kept as sent. Parsing is cached because the same few thousand
addresses appear on every envelope of a busy server.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from .._errors import RemoteProtocolError

MAX_PART_LENGTH: Final = 1023
"""Longest name, domain or instance the LIME spec's node pattern admits."""

_FORBIDDEN_IN_NAME: Final = frozenset("\"&'/:<>@")
_FORBIDDEN_IN_DOMAIN: Final = frozenset("/@")


class InvalidNode(RemoteProtocolError, ValueError):
    """A string that is not a LIME node or identity (a ``ValueError`` too, as parsers raise)."""


class Node:
    """An identity (``name@domain``) or a node (``name@domain/instance``)."""

    __slots__ = ("domain", "identity", "instance", "name", "text")

    name: str
    domain: str
    instance: str | None
    identity: str
    text: str

    def __init__(self, name: str, domain: str, instance: str | None = None) -> None:
        self.name = name
        self.domain = domain
        self.instance = instance
        self.identity = f"{name}@{domain}"
        self.text = self.identity if instance is None else f"{self.identity}/{instance}"

    def with_instance(self, instance: str | None) -> Node:
        return Node(self.name, self.domain, instance)

    def to_identity(self) -> Node:
        return self if self.instance is None else Node(self.name, self.domain)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Node({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def parse_node(text: str, default_domain: str | None = None) -> Node:
    """Parse ``name@domain[/instance]``.

    Without ``@`` the part before ``/`` is the name and the domain is ``default_domain``, as the
    spec allows a sender to omit the destination's domain. ``name@domain/`` has no instance.
    """
    return _parse(text, default_domain)


def parse_node_once(text: str, default_domain: str | None = None) -> Node:
    """``parse_node`` for an address parsed once per session (its ``from`` when it
    authenticates): not kept in the cache, where each session's entry would stay until 65,536
    newer ones pushed it out (~0.5 KB per connection, issue 15)."""
    return _parse_uncached(text, default_domain)


def _parse_uncached(text: str, default_domain: str | None) -> Node:
    if not isinstance(text, str):
        raise InvalidNode("a node must be a string")
    identity, slash, instance = text.partition("/")
    name, at, domain = identity.partition("@")
    if not at:
        if default_domain is None:
            raise InvalidNode(f"{text!r} has no domain")
        domain = default_domain
    _check_part(name, "name", _FORBIDDEN_IN_NAME, text)
    _check_part(domain, "domain", _FORBIDDEN_IN_DOMAIN, text)
    if len(instance) > MAX_PART_LENGTH:
        raise InvalidNode(f"{text!r}: the instance is longer than {MAX_PART_LENGTH} characters")
    if not all(ch.isprintable() for ch in instance):
        raise InvalidNode(f"{text!r}: the instance has control characters")
    return Node(name.lower(), domain.lower(), instance if slash and instance else None)


_parse = lru_cache(maxsize=65536)(_parse_uncached)


def _check_part(part: str, what: str, forbidden: frozenset[str], text: str) -> None:
    if not part:
        raise InvalidNode(f"{text!r} has an empty {what}")
    if len(part) > MAX_PART_LENGTH:
        raise InvalidNode(f"{text!r}: the {what} is longer than {MAX_PART_LENGTH} characters")
    bad = forbidden.intersection(part)
    if bad:
        raise InvalidNode(f"{text!r}: the {what} may not contain {''.join(sorted(bad))!r}")
    if not part.isprintable() or part.strip() != part:
        raise InvalidNode(f"{text!r}: the {what} has blank or control characters")
