"""Hypothesis strategies for peer messages (text without surrogates: UTF-8 must encode it)."""

from __future__ import annotations

from hypothesis import strategies as st

from tidings.protocol.peer import (
    MAX_ID_LENGTH,
    MAX_PROTOCOL_LENGTH,
    MAX_TOPIC_LENGTH,
    PeerMessage,
)

_CHARACTERS = st.characters(exclude_categories=["Cs"])


def text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_CHARACTERS, min_size=1, max_size=max_size)


ids = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\n"),
    min_size=1,
    max_size=MAX_ID_LENGTH,
)

messages = st.builds(
    PeerMessage,
    topic=text(MAX_TOPIC_LENGTH),
    protocol=text(MAX_PROTOCOL_LENGTH),
    payload=st.binary(max_size=300),
    id=st.none() | ids,
)
