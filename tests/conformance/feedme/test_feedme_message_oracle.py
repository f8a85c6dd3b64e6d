"""Message schemas: what we send passes the client's validators; what we accept
is what feedme-util 0.2.2's validators accept."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from feedme_node import NodeRunner, examples
from feedme_strategies import client_messages, json_values, server_messages
from hypothesis import strategies as st

from tidings.protocol.feedme import (
    Message,
    RemoteProtocolError,
    decode_client_message,
    decode_server_message,
    encode_message,
)

pytestmark = pytest.mark.conformance


def test_every_server_message_we_encode_passes_the_client(feedme_node: NodeRunner) -> None:
    messages: list[Message] = examples(server_messages, 800)
    texts = [encode_message(m).decode() for m in messages]
    answers = feedme_node("validate.js", [{"side": "server", "text": t} for t in texts])
    for text, answer in zip(texts, answers, strict=True):
        assert answer == {"ok": True}, text


def test_the_oracle_rejects_what_the_reference_says(feedme_node: NodeRunner) -> None:
    bad = [
        '{"MessageType":"HandshakeResponse","Success":true,"Version":"0.1","ClientId":"x"}',
        '{"MessageType":"FeedAction","ActionName":"a","ActionData":{},"FeedName":"F",'
        '"FeedArgs":{},"FeedDeltas":[]}',
        '{"MessageType":"ActionResponse","CallbackId":"1","Success":true,"ActionData":{},'
        '"ErrorCode":"X"}',
        '{"MessageType":"ActionRevelation","ActionName":"a","ActionData":{},"FeedName":"F",'
        '"FeedArgs":{},"FeedDeltas":[],"FeedMd5":null}',
    ]
    answers = feedme_node("validate.js", [{"side": "server", "text": t} for t in bad])
    assert all(answer["ok"] is False for answer in answers)
    for text in bad:
        with pytest.raises(RemoteProtocolError):
            decode_server_message(text)


@st.composite
def mutated(draw: st.DrawFn, messages: st.SearchStrategy[Message]) -> str:
    obj: dict[str, Any] = json.loads(encode_message(draw(messages)))
    how = draw(st.sampled_from(["none", "drop", "extra", "replace", "empty", "type"]))
    key = draw(st.sampled_from(sorted(obj)))
    if how == "drop":
        del obj[key]
    elif how == "extra":
        obj[draw(st.sampled_from(["ClientId", "X", "Success", "FeedData"]))] = draw(json_values)
    elif how == "replace":
        obj[key] = draw(json_values)
    elif how == "empty" and isinstance(obj[key], str):
        obj[key] = ""
    elif how == "type":
        obj["MessageType"] = draw(
            st.sampled_from(["Handshake", "Action", "FeedOpen", "ActionResponse", "FeedAction"])
        )
    return json.dumps(obj)


def _accepts(decode: Callable[[str], Message], text: str) -> bool:
    try:
        decode(text)
    except RemoteProtocolError:
        return False
    return True


@pytest.mark.parametrize(
    ("side", "messages", "decode"),
    [
        ("client", client_messages, decode_client_message),
        ("server", server_messages, decode_server_message),
    ],
    ids=["client", "server"],
)
def test_message_acceptance_matches_feedme_util(
    feedme_node: NodeRunner,
    side: str,
    messages: st.SearchStrategy[Message],
    decode: Callable[[str], Message],
) -> None:
    """Mutated messages of each side: we accept exactly what the oracle does (client messages:
    feedme-util's validators; server messages: what feedme-client checks on receipt)."""
    texts: list[str] = examples(mutated(messages), 1000)
    answers = feedme_node("validate.js", [{"side": side, "text": t} for t in texts])
    verdicts = [answer["ok"] for answer in answers]
    assert verdicts.count(True) > 100 and verdicts.count(False) > 100
    for text, answer in zip(texts, answers, strict=True):
        assert _accepts(decode, text) is answer["ok"], (text, answer)
