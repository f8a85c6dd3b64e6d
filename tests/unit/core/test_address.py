"""``core.address``: parsing round-trips, agrees with LIME's parser, and LIME's ``Node`` is an
``Address`` as it is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core.address import Address, NodeAddress, parse_address, parse_identity
from tidings.core.errors import ErrorId, Invalid
from tidings.protocol.lime import InvalidNode, Node, parse_node
from tidings.protocol.lime._node import parse_node_once

parts = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Co", "Cn")),
    min_size=1,
    max_size=12,
).filter(str.isprintable)
names = parts.filter(lambda s: not set("\"&'/:<>@") & set(s) and s == s.strip())
domains = parts.filter(lambda s: not set("/@") & set(s) and s == s.strip())
instances = st.none() | parts


@given(name=names, domain=domains, instance=instances)
def test_an_address_round_trips_through_its_text(
    name: str, domain: str, instance: str | None
) -> None:
    address = NodeAddress(name.lower(), domain.lower(), instance)
    parsed = parse_address(address.text)
    assert parsed == address
    assert (parsed.name, parsed.domain, parsed.instance) == (
        name.lower(),
        domain.lower(),
        instance,
    )
    assert parsed.identity == f"{parsed.name}@{parsed.domain}"
    assert parse_address(parsed.identity).instance is None


@given(text=st.text(max_size=20) | st.from_regex(r"[a-zA-Z]{0,3}@?[a-z]{0,3}/?.{0,3}"))
def test_it_agrees_with_the_lime_parser(text: str) -> None:
    try:
        node: Node | None = parse_node(text, "d")
    except InvalidNode:
        node = None
    try:
        address: NodeAddress | None = parse_address(text, "d")
    except Invalid as exc:
        assert exc.error_id is ErrorId.INVALID_ADDRESS
        address = None
    assert (node is None) == (address is None)
    if node is not None and address is not None:
        assert (node.name, node.domain, node.instance, node.identity, node.text) == (
            address.name,
            address.domain,
            address.instance,
            address.identity,
            address.text,
        )


@given(name=names, domain=domains, instance=instances, data=st.data())
def test_no_address_holds_nul(
    name: str, domain: str, instance: str | None, data: st.DataObject
) -> None:
    """A NUL anywhere in an otherwise valid address: refused by every parser, with only its
    documented error (PostgreSQL text cannot hold NUL, and addresses become store keys)."""
    text = f"{name}@{domain}" + ("" if instance is None else f"/{instance}")
    at = data.draw(st.integers(0, len(text)))
    text = text[:at] + "\x00" + text[at:]
    with pytest.raises(Invalid) as caught:
        parse_address(text, "d")
    assert caught.value.error_id is ErrorId.INVALID_ADDRESS
    for parse in (parse_node, parse_node_once):
        with pytest.raises(InvalidNode):
            parse(text, "d")


def test_a_lime_node_is_an_address() -> None:
    address: Address = parse_node("Bob@X/a")  # structural: no conversion
    assert (address.identity, address.instance, address.domain) == ("bob@x", "a", "x")


@pytest.mark.parametrize("text", ["", "@x", "bob@", "bob", "bo<b@x", "bob@x@y"])
def test_invalid_addresses_are_refused(text: str) -> None:
    with pytest.raises(Invalid):
        parse_address(text)


def test_an_identity_has_no_instance() -> None:
    assert parse_identity("Bob@X").text == "bob@x"
    for text in ("bob@x/a", "bob@x/", "bob"):
        with pytest.raises(Invalid):
            parse_identity(text)
