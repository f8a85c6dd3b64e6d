"""Addresses: a node ``name@domain/instance`` or an identity ``name@domain``, parsed once.

Core code receives an ``Address`` and reads its parts; it never splits address strings. The
edges parse: the LIME gateway with ``protocol.lime.parse_node``, whose ``Node`` satisfies the
``Address`` protocol structurally (a message's destination reaches the router with no
conversion); other edges (HTTP routes taking an identity, app code) and node texts the core
stored itself (a queued envelope's sender) with ``parse_address``, which applies the same rules
as LIME: names and domains compare case-insensitively, so they are kept in lower case, and the
instance is kept as written. Parsing is cached: the same few thousand addresses recur.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, Protocol

from .errors import ErrorId, Invalid

__all__ = ["MAX_PART_LENGTH", "Address", "NodeAddress", "parse_address", "parse_identity"]

MAX_PART_LENGTH: Final = 1023
"""Longest name, domain or instance the LIME node pattern admits."""

_FORBIDDEN_IN_NAME: Final = frozenset("\"&'/:<>@")
_FORBIDDEN_IN_DOMAIN: Final = frozenset("/@")


class Address(Protocol):
    """A parsed node or identity, as the core reads it."""

    @property
    def name(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def instance(self) -> str | None:
        """None for an identity."""

    @property
    def identity(self) -> str:
        """``name@domain``."""

    @property
    def text(self) -> str:
        """The whole address: ``name@domain`` or ``name@domain/instance``."""


class NodeAddress:
    """The core's own ``Address`` (immutable; equal when the texts are)."""

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

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"NodeAddress({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeAddress) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def parse_address(text: str, default_domain: str | None = None) -> NodeAddress:
    """Parse ``name@domain[/instance]``; raises ``Invalid`` (``INVALID_ADDRESS``).

    Without ``@`` the domain is ``default_domain`` (a sender may omit the destination's
    domain); ``name@domain/`` has no instance."""
    if not isinstance(text, str):
        raise Invalid(ErrorId.INVALID_ADDRESS, "an address must be a string")
    return _parse(text, default_domain)


def parse_identity(text: str) -> NodeAddress:
    """Parse ``name@domain`` (no instance, the domain required); raises ``Invalid``."""
    address = parse_address(text)
    if address.instance is not None or "/" in text:
        raise Invalid(ErrorId.INVALID_ADDRESS, f"{text!r} is a node, not an identity (name@domain)")
    return address


@lru_cache(maxsize=65536)
def _parse(text: str, default_domain: str | None) -> NodeAddress:
    identity, slash, instance = text.partition("/")
    name, at, domain = identity.partition("@")
    if not at:
        if default_domain is None:
            raise Invalid(ErrorId.INVALID_ADDRESS, f"{text!r} has no domain")
        domain = default_domain
    _check_part(name, "name", _FORBIDDEN_IN_NAME, text)
    _check_part(domain, "domain", _FORBIDDEN_IN_DOMAIN, text)
    if len(instance) > MAX_PART_LENGTH:
        raise Invalid(
            ErrorId.INVALID_ADDRESS,
            f"{text!r}: the instance is longer than {MAX_PART_LENGTH} characters",
        )
    if not all(ch.isprintable() for ch in instance):
        raise Invalid(ErrorId.INVALID_ADDRESS, f"{text!r}: the instance has control characters")
    return NodeAddress(name.lower(), domain.lower(), instance if slash and instance else None)


def _check_part(part: str, what: str, forbidden: frozenset[str], text: str) -> None:
    if not part:
        raise Invalid(ErrorId.INVALID_ADDRESS, f"{text!r} has an empty {what}")
    if len(part) > MAX_PART_LENGTH:
        raise Invalid(
            ErrorId.INVALID_ADDRESS,
            f"{text!r}: the {what} is longer than {MAX_PART_LENGTH} characters",
        )
    bad = forbidden.intersection(part)
    if bad:
        raise Invalid(
            ErrorId.INVALID_ADDRESS,
            f"{text!r}: the {what} may not contain {''.join(sorted(bad))!r}",
        )
    if not part.isprintable() or part.strip() != part:
        raise Invalid(
            ErrorId.INVALID_ADDRESS, f"{text!r}: the {what} has blank or control characters"
        )
