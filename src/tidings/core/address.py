"""Addresses: a node ``name@domain/instance`` or an identity ``name@domain``, parsed once.

Core code receives an ``Address`` and reads its parts; it never splits address strings. The
edges parse: the LIME gateway with ``protocol.lime.parse_node``, whose ``Node`` satisfies the
``Address`` protocol structurally (a message's destination reaches the router with no
conversion); other edges (HTTP routes taking an identity, app code) and node texts the core
stored itself (a queued envelope's sender) with ``parse_address``: the same (cached) parser as
LIME's, its errors turned into ``Invalid``. Names and domains compare case-insensitively, so
they are kept in lower case; the instance is kept as written.
"""

from __future__ import annotations

from typing import Protocol

from ..protocol.lime import InvalidNode, Node, parse_node
from .errors import ErrorId, Invalid

__all__ = ["Address", "NodeAddress", "parse_address", "parse_identity"]


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


NodeAddress = Node
"""The core's concrete ``Address``: the LIME ``Node`` value type (one parser, one set of rules
for every edge; the protocol layer is below the core, so the core may use it)."""


def parse_address(text: str, default_domain: str | None = None) -> NodeAddress:
    """Parse ``name@domain[/instance]``; raises ``Invalid`` (``INVALID_ADDRESS``).

    Without ``@`` the domain is ``default_domain`` (a sender may omit the destination's
    domain); ``name@domain/`` has no instance."""
    if not isinstance(text, str):
        raise Invalid(ErrorId.INVALID_ADDRESS, "an address must be a string")
    try:
        return parse_node(text, default_domain)
    except InvalidNode as exc:
        raise Invalid(ErrorId.INVALID_ADDRESS, str(exc)) from None


def parse_identity(text: str) -> NodeAddress:
    """Parse ``name@domain`` (no instance, the domain required); raises ``Invalid``."""
    address = parse_address(text)
    if address.instance is not None or "/" in text:
        raise Invalid(ErrorId.INVALID_ADDRESS, f"{text!r} is a node, not an identity (name@domain)")
    return address
