"""The protobuf ``Message``: reference scenario 2.10/3, proto2 decoding rules, bounds, acks,
and a cross-check in both directions against Google's ``protobuf``."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol import LocalProtocolError
from tidings.protocol.peer import (
    ACK_PROTOCOL,
    NetstringReader,
    PeerError,
    PeerMessage,
    ack_message,
    acked_ids,
    decode_message,
    encode_message,
    encode_netstring,
)

from .strategies import ids, messages, text

SCENARIO_3 = bytes.fromhex("0a 01 74 12 02 6d 73 1a 07 7b 22 78 22 3a 31 7d")

Field = descriptor_pb2.FieldDescriptorProto


def google_message_class(payload_type: int = Field.TYPE_BYTES) -> Any:
    """The ``Message`` class built at run time from a descriptor (no generated code)."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"tidings_peer_test_{payload_type}.proto", package="tidingstest", syntax="proto2"
    )
    message = file.message_type.add(name="Message")
    for name, number, kind, label in (
        ("topic", 1, Field.TYPE_STRING, Field.LABEL_REQUIRED),
        ("protocol", 2, Field.TYPE_STRING, Field.LABEL_REQUIRED),
        ("payload", 3, payload_type, Field.LABEL_REQUIRED),
        ("id", 4, Field.TYPE_STRING, Field.LABEL_OPTIONAL),
    ):
        message.field.add(name=name, number=number, type=kind, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tidingstest.Message"))


GoogleMessage = google_message_class()
MmPlatformMessage = google_message_class(Field.TYPE_STRING)  # payload as mm-platform has it


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


def malformed(data: bytes) -> str:
    with pytest.raises(PeerError) as caught:
        decode_message(data)
    assert caught.value.kind == "malformed"
    return str(caught.value)


class TestScenario3:
    """Reference 2.10, scenario 3: envelope round trip."""

    def test_the_wire_bytes(self) -> None:
        message = PeerMessage(topic="t", protocol="ms", payload=b'{"x":1}')
        assert encode_message(message) == SCENARIO_3
        assert encode_netstring(encode_message(message)) == b"16:" + SCENARIO_3 + b","
        assert decode_message(SCENARIO_3) == message

    def test_two_netstrings_fed_one_byte_at_a_time(self) -> None:
        second = PeerMessage(topic="u", protocol="ms", payload=b"2", id="out-1")
        data = encode_netstring(SCENARIO_3) + encode_netstring(encode_message(second))
        reader = NetstringReader()
        decoded = [
            decode_message(payload)
            for index in range(len(data))
            for payload in reader.feed(data[index : index + 1])
        ]
        assert decoded == [decode_message(SCENARIO_3), second]

    def test_a_message_without_payload_is_dropped_and_the_stream_goes_on(self) -> None:
        data = encode_netstring(field(1, b"t") + field(2, b"ms")) + encode_netstring(SCENARIO_3)
        first, second = NetstringReader().feed(data)
        assert "payload" in malformed(first)
        assert decode_message(second).payload == b'{"x":1}'


class TestProto2Rules:
    def test_each_required_field_is_named_when_missing(self) -> None:
        parts = {1: field(1, b"t"), 2: field(2, b"ms"), 3: field(3, b"")}
        for missing, name in ((1, "topic"), (2, "protocol"), (3, "payload")):
            data = b"".join(part for number, part in parts.items() if number != missing)
            assert name in malformed(data)
        assert decode_message(b"".join(parts.values())).payload == b""

    def test_unknown_fields_of_every_skippable_wire_type_are_skipped(self) -> None:
        unknown = (
            varint(5 << 3 | 0)
            + varint(2**64 - 1)
            + varint(6 << 3 | 1)
            + bytes(8)
            + field(7, b"ignored")
            + varint(8 << 3 | 5)
            + bytes(4)
            + field(2**29 - 1, b"")
        )
        assert decode_message(unknown + SCENARIO_3 + unknown) == decode_message(SCENARIO_3)

    def test_the_last_occurrence_wins(self) -> None:
        data = field(4, b"a") + SCENARIO_3 + field(1, b"second") + field(4, b"b")
        message = decode_message(data)
        assert (message.topic, message.id) == ("second", "b")

    @pytest.mark.parametrize("wire_type", [0, 1, 5])
    @pytest.mark.parametrize("number", [1, 2, 3, 4])
    def test_a_known_field_with_another_wire_type(self, number: int, wire_type: int) -> None:
        value = {0: varint(1), 1: bytes(8), 5: bytes(4)}[wire_type]
        malformed(SCENARIO_3 + varint(number << 3 | wire_type) + value)

    @pytest.mark.parametrize("wire_type", [3, 4, 6, 7])
    def test_groups_and_unassigned_wire_types(self, wire_type: int) -> None:
        malformed(SCENARIO_3 + varint(9 << 3 | wire_type))

    def test_field_number_zero(self) -> None:
        malformed(SCENARIO_3 + field(0, b""))

    def test_varints_of_more_than_ten_bytes(self) -> None:
        malformed(SCENARIO_3 + varint(5 << 3) + b"\x80" * 10 + b"\x00")
        assert decode_message(SCENARIO_3 + varint(5 << 3) + b"\x80" * 9 + b"\x01")

    def test_every_truncation_inside_a_field(self) -> None:
        data = encode_message(PeerMessage("topic", "proto", b"payload", id="id"))
        boundaries = {0}
        for number, value in ((1, b"topic"), (2, b"proto"), (3, b"payload"), (4, b"id")):
            boundaries.add(max(boundaries) + len(field(number, value)))
        for end in range(len(data)):
            if end not in boundaries:
                assert "ends inside" in malformed(data[:end])

    @pytest.mark.parametrize("number", [1, 2, 4])
    def test_strings_are_utf8(self, number: int) -> None:
        parts = {1: b"t", 2: b"ms", 3: b"", 4: b"id"}
        for bad in (b"\xff", b"\xed\xa0\x80", b"a\xc3"):  # invalid, a surrogate, truncated
            parts_bad = {**parts, number: bad}
            data = b"".join(field(n, v) for n, v in parts_bad.items())
            assert "UTF-8" in malformed(data)

    def test_the_payload_is_any_bytes(self) -> None:
        data = field(1, b"t") + field(2, b"ms") + field(3, b"\xff\x00")
        assert decode_message(data).payload == b"\xff\x00"


BOUNDS = [("topic", 1, 1024), ("protocol", 2, 64), ("id", 4, 256)]


class TestBounds:
    @pytest.mark.parametrize(("name", "number", "limit"), BOUNDS)
    def test_lengths_in_characters(self, name: str, number: int, limit: int) -> None:
        def wire(value: str) -> bytes:
            parts = {1: "t", 2: "ms", 4: "id", number: value}
            data = field(1, parts[1].encode()) + field(2, parts[2].encode()) + field(3, b"")
            return data + field(4, parts[4].encode())

        longest = "é" * limit  # two bytes each: the limit counts characters
        assert getattr(decode_message(wire(longest)), name) == longest
        assert name in malformed(wire(longest + "é"))
        assert name in malformed(wire(""))
        good = decode_message(wire(longest))
        with pytest.raises(LocalProtocolError, match=name):
            encode_message(PeerMessage(**{**_as_dict(good), name: longest + "é"}))
        with pytest.raises(LocalProtocolError, match=name):
            encode_message(PeerMessage(**{**_as_dict(good), name: ""}))

    def test_an_id_never_holds_the_ack_separator(self) -> None:
        malformed(SCENARIO_3 + field(4, b"a\nb"))
        with pytest.raises(LocalProtocolError):
            encode_message(PeerMessage("t", "ms", b"", id="a\nb"))

    def test_encoding_refuses_what_utf8_cannot_hold(self) -> None:
        with pytest.raises(LocalProtocolError):
            encode_message(PeerMessage("\ud800", "ms", b""))


def _as_dict(message: PeerMessage) -> dict[str, Any]:
    return {
        "topic": message.topic,
        "protocol": message.protocol,
        "payload": message.payload,
        "id": message.id,
    }


class TestAcks:
    def test_the_ack_message(self) -> None:
        ack = ack_message(["a", "b"])
        assert ack == PeerMessage(topic="ack", protocol=ACK_PROTOCOL, payload=b"a\nb")
        assert acked_ids(decode_message(encode_message(ack))) == ["a", "b"]

    @given(st.lists(ids, min_size=1, max_size=20))
    def test_round_trip(self, acknowledged: list[str]) -> None:
        assert acked_ids(decode_message(encode_message(ack_message(acknowledged)))) == acknowledged

    @pytest.mark.parametrize(
        "ack",
        [
            PeerMessage("ack", ACK_PROTOCOL, b""),
            PeerMessage("ack", ACK_PROTOCOL, b"a\n\nb"),
            PeerMessage("ack", ACK_PROTOCOL, b"\xff"),
            PeerMessage("ack", ACK_PROTOCOL, b"x" * 257),
            PeerMessage("ack", ACK_PROTOCOL, b"a", id="1"),
            PeerMessage("other", ACK_PROTOCOL, b"a"),
        ],
    )
    def test_bad_acks_are_malformed(self, ack: PeerMessage) -> None:
        with pytest.raises(PeerError) as caught:
            acked_ids(ack)
        assert caught.value.kind == "malformed"

    def test_misuse(self) -> None:
        with pytest.raises(LocalProtocolError):
            acked_ids(PeerMessage("t", "ms", b"a"))
        for bad in ([], "ab", ["a\nb"], [""]):
            with pytest.raises(LocalProtocolError):
                ack_message(bad)


class TestProperties:
    @given(messages)
    def test_round_trip(self, message: PeerMessage) -> None:
        assert decode_message(encode_message(message)) == message

    @given(st.binary(max_size=200))
    def test_junk_is_a_message_or_malformed(self, data: bytes) -> None:
        try:
            decode_message(data)
        except PeerError as exc:
            assert exc.kind == "malformed"


class TestAgainstGoogleProtobuf:
    @given(messages)
    def test_our_bytes_are_googles(self, message: PeerMessage) -> None:
        theirs = GoogleMessage(topic=message.topic, protocol=message.protocol)
        theirs.payload = message.payload
        if message.id is not None:
            theirs.id = message.id
        assert encode_message(message) == theirs.SerializeToString()
        parsed = GoogleMessage.FromString(encode_message(message))
        assert (parsed.topic, parsed.protocol, parsed.payload) == (
            message.topic,
            message.protocol,
            message.payload,
        )
        assert parsed.HasField("id") == (message.id is not None)

    @given(messages.filter(lambda m: _is_utf8(m.payload)))
    def test_mm_platform_string_payloads_are_our_bytes(self, message: PeerMessage) -> None:
        theirs = MmPlatformMessage(
            topic=message.topic, protocol=message.protocol, payload=message.payload.decode()
        )
        if message.id is not None:
            theirs.id = message.id
        assert decode_message(theirs.SerializeToString()) == message

    @given(
        st.lists(
            st.one_of(
                st.tuples(st.sampled_from([1]), text(1024).map(str.encode)),
                st.tuples(st.sampled_from([2]), text(64).map(str.encode)),
                st.tuples(st.sampled_from([3]), st.binary(max_size=50)),
                st.tuples(st.sampled_from([4]), ids.map(str.encode)),
                st.tuples(st.integers(5, 2**29 - 1), st.integers(0, 2**64 - 1)),
                st.tuples(st.integers(5, 2**29 - 1), st.binary(max_size=20)),
            ),
            max_size=12,
        )
    )
    def test_decoding_agrees(self, fields: list[tuple[int, int | bytes]]) -> None:
        """Any mix of known fields (repeated or missing) and unknown varint and bytes fields."""
        data = b"".join(
            field(number, value)
            if isinstance(value, bytes)
            else varint(number << 3) + varint(value)
            for number, value in fields
        )
        theirs = GoogleMessage.FromString(data)
        if not theirs.IsInitialized():  # Google parses partial messages; proto2 says invalid
            assert "missing" in malformed(data)
            return
        ours = decode_message(data)
        assert (ours.topic, ours.protocol, ours.payload) == (
            theirs.topic,
            theirs.protocol,
            theirs.payload,
        )
        assert ours.id == (theirs.id if theirs.HasField("id") else None)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
