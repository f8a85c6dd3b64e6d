"""The secure channel: handshake, records, every check with its kind, replay and corruption."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol import InvalidState, LocalProtocolError
from tidings.protocol.e2e import InvalidKey
from tidings.protocol.peer import (
    MAX_CHUNK,
    AcksReceived,
    Established,
    MessageDropped,
    MessageReceived,
    PeerError,
    PeerMessage,
    ReplayDropped,
    SecureChannel,
    encode_netstring,
)

from .peers import NOW_MS, Node, established, pump, records

GARBAGE_TARGET = Node("garbage")  # one key pair for every hypothesis example


def kind_of(channel: SecureChannel, data: bytes) -> str:
    with pytest.raises(PeerError) as caught:
        channel.receive_data(data)
    return caught.value.kind


def assert_dead(channel: SecureChannel) -> None:
    assert not channel.established
    assert channel.data_to_send() == b""
    with pytest.raises(InvalidState):
        channel.receive_data(b"")
    with pytest.raises(InvalidState):
        channel.send(PeerMessage("t", "p", b""))


def send_raw(channel: SecureChannel, plaintext: bytes) -> None:
    """Queue plaintext past the encoder, as a buggy or hostile peer would."""
    channel._plaintext += plaintext


class TestHandshake:
    def test_three_records_then_both_ends_know_each_other(self) -> None:
        alice, bob = Node("alice"), Node("bob")
        initiator, responder = alice.initiator(expected=bob), bob.responder()
        record_1 = initiator.data_to_send()
        assert [len(r) for r in records(record_1)] == [4 + 32]  # e, no payload
        assert responder.receive_data(record_1) == []
        record_2 = responder.data_to_send()
        assert len(records(record_2)) == 1
        assert not initiator.established
        [event] = initiator.receive_data(record_2)
        assert event == Established(initiator.peer)  # type: ignore[arg-type]
        assert initiator.peer is not None and initiator.peer.box_id == bob.keys.box_id
        record_3 = initiator.data_to_send()
        assert len(records(record_3)) == 1
        assert not responder.established
        assert responder.receive_data(record_3) == [Established(responder.peer)]  # type: ignore[arg-type]
        assert responder.peer is not None and responder.peer.sign_id == alice.keys.sign_id
        assert responder.peer.document() == alice.node_info

    def test_no_expected_key_is_needed(self) -> None:
        initiator, responder = Node("alice").initiator(), Node("bob").responder()
        pump(initiator, responder)
        assert initiator.established and responder.established

    def test_sending_before_the_handshake(self) -> None:
        initiator, responder = Node("alice").initiator(), Node("bob").responder()
        for channel in (initiator, responder):
            with pytest.raises(InvalidState):
                channel.send(PeerMessage("t", "p", b""))

    def test_whole_conversation_one_byte_at_a_time(self) -> None:
        initiator, responder = Node("alice").initiator(), Node("bob").responder()
        got: dict[int, list[object]] = {id(initiator): [], id(responder): []}
        sent_messages = False
        while True:
            moved = False
            for sender, receiver in ((initiator, responder), (responder, initiator)):
                for byte in sender.data_to_send():
                    got[id(receiver)] += receiver.receive_data(bytes([byte]))
                    moved = True
            if not moved and initiator.established and responder.established:
                if sent_messages:
                    break
                initiator.send(PeerMessage("to", "bob", b"1", id="a"))
                responder.send(PeerMessage("to", "alice", b"2"))
                responder.send_acks(["x", "y"])
                sent_messages = True
        assert got[id(responder)][1:] == [MessageReceived(PeerMessage("to", "bob", b"1", "a"))]
        assert got[id(initiator)][1:] == [
            MessageReceived(PeerMessage("to", "alice", b"2")),
            AcksReceived(["x", "y"]),
        ]

    def test_the_initiator_may_write_messages_right_behind_record_3(self) -> None:
        initiator, responder = Node("alice").initiator(), Node("bob").responder()
        responder.receive_data(initiator.data_to_send())
        initiator.receive_data(responder.data_to_send())
        initiator.send(PeerMessage("t", "p", b"early"))
        events = responder.receive_data(initiator.data_to_send())
        assert [type(e) for e in events] == [Established, MessageReceived]

    def test_an_invalid_expected_key_is_refused_at_once(self) -> None:
        with pytest.raises(InvalidKey):
            Node("alice").initiator(expected_box_id="not a key")


class TestChecks:
    def test_an_impostor_is_refused_on_record_2_before_record_3(self) -> None:
        alice, bob, mallory = Node("alice"), Node("bob"), Node("mallory")
        initiator, impostor = alice.initiator(expected=bob), mallory.responder()
        impostor.receive_data(initiator.data_to_send())
        assert kind_of(initiator, impostor.data_to_send()) == "key-mismatch"
        assert initiator.peer is None
        assert_dead(initiator)  # record 3 (alice's node info) was never produced

    def test_a_responder_presenting_someone_elses_node_info(self) -> None:
        bob, mallory = Node("bob"), Node("mallory")
        mallory.node_info = bob.node_info  # valid, but for another box key
        initiator, responder = Node("alice").initiator(), mallory.responder()
        responder.receive_data(initiator.data_to_send())
        assert kind_of(initiator, responder.data_to_send()) == "key-mismatch"
        assert_dead(initiator)

    def test_an_initiator_presenting_someone_elses_node_info(self) -> None:
        alice, mallory = Node("alice"), Node("mallory")
        mallory.node_info = alice.node_info
        initiator, responder = mallory.initiator(), Node("bob").responder()
        responder.receive_data(initiator.data_to_send())
        initiator.receive_data(responder.data_to_send())
        assert kind_of(responder, initiator.data_to_send()) == "key-mismatch"
        assert responder.peer is None
        assert_dead(responder)

    def test_a_spliced_box_id_breaks_the_signature(self) -> None:
        bob, mallory = Node("bob"), Node("mallory")
        mallory.node_info = {**bob.node_info, "boxId": mallory.keys.box_id}
        initiator, responder = Node("alice").initiator(), mallory.responder()
        responder.receive_data(initiator.data_to_send())
        assert kind_of(initiator, responder.data_to_send()) == "bad-node-info"

    @pytest.mark.parametrize("side", ["initiator", "responder"])
    def test_expired_node_info(self, side: str) -> None:
        stale = Node("stale", expires=NOW_MS)  # expires must be after now
        fresh = Node("fresh")
        if side == "responder":
            initiator, responder = fresh.initiator(), stale.responder()
            responder.receive_data(initiator.data_to_send())
            assert kind_of(initiator, responder.data_to_send()) == "expired-node-info"
        else:
            initiator, responder = stale.initiator(), fresh.responder()
            responder.receive_data(initiator.data_to_send())
            initiator.receive_data(responder.data_to_send())
            assert kind_of(responder, initiator.data_to_send()) == "expired-node-info"

    @pytest.mark.parametrize(
        "payload",
        [
            json.dumps({"identity": "x"}).encode(),
            b"[]",
            b"\xff",
            b"{",
            b"[" * 30_000 + b"]" * 30_000,  # deeper than the JSON parser recurses
        ],
    )
    def test_a_payload_that_is_no_node_info(self, payload: bytes) -> None:
        initiator, responder = Node("alice").initiator(), Node("bob").responder()
        responder._payload = payload  # forge what the peer sends
        responder.receive_data(initiator.data_to_send())
        assert kind_of(initiator, responder.data_to_send()) == "bad-node-info"

    def test_a_record_1_with_a_payload(self) -> None:
        responder = Node("bob").responder()
        assert kind_of(responder, (33).to_bytes(4, "big") + bytes(33)) == "handshake-failed"

    def test_a_low_order_ephemeral_key(self) -> None:
        responder = Node("bob").responder()
        assert kind_of(responder, (32).to_bytes(4, "big") + bytes(32)) == "handshake-failed"
        assert_dead(responder)

    @given(st.binary(min_size=1, max_size=400))
    def test_garbage_for_record_2(self, garbage: bytes) -> None:
        channel = GARBAGE_TARGET.initiator()
        channel.data_to_send()
        assert kind_of(channel, len(garbage).to_bytes(4, "big") + garbage) == "handshake-failed"

    def test_a_flipped_byte_in_record_3(self) -> None:
        initiator, responder = Node("alice").initiator(), Node("bob").responder()
        responder.receive_data(initiator.data_to_send())
        initiator.receive_data(responder.data_to_send())
        record_3 = bytearray(initiator.data_to_send())
        record_3[50] ^= 1
        assert kind_of(responder, bytes(record_3)) == "handshake-failed"


class TestTransport:
    def test_messages_both_ways(self) -> None:
        initiator, responder = established()
        initiator.send(PeerMessage("chat.msg", "ms", b"hello", id="1"))
        responder.send(PeerMessage("chat.msg", "ms", b"hi"))
        responder.send_acks(["1"])
        to_initiator, to_responder = pump(initiator, responder)
        assert to_responder == [MessageReceived(PeerMessage("chat.msg", "ms", b"hello", "1"))]
        assert to_initiator == [
            MessageReceived(PeerMessage("chat.msg", "ms", b"hi")),
            AcksReceived(["1"]),
        ]

    def test_the_ack_protocol_is_refused_to_send(self) -> None:
        """The peer would read it as an ack and drop it (a bad one): refused here, plainly."""
        initiator, _ = established()
        with pytest.raises(LocalProtocolError, match=r"tidings\.ack"):
            initiator.send(PeerMessage("ack", "tidings.ack", b"1"))
        assert initiator.data_to_send() == b""

    def test_messages_sent_together_share_a_record(self) -> None:
        initiator, responder = established()
        for index in range(10):
            initiator.send(PeerMessage("t", "p", b"%d" % index))
        data = initiator.data_to_send()
        assert len(records(data)) == 1
        assert len(responder.receive_data(data)) == 10

    def test_a_one_mebibyte_message_spans_records(self) -> None:
        initiator, responder = established()
        payload = bytes(range(256)) * 4096
        initiator.send(PeerMessage("big", "p", payload))
        data = initiator.data_to_send()
        parts = records(data)
        assert len(parts) == -(-len(payload) // MAX_CHUNK)
        assert max(len(part) for part in parts) == 4 + 8 + MAX_CHUNK + 16
        events = [event for part in parts for event in responder.receive_data(part)]
        assert events == [MessageReceived(PeerMessage("big", "p", payload))]

    def test_a_message_over_max_message(self) -> None:
        initiator, _ = established()
        with pytest.raises(LocalProtocolError):
            initiator.send(PeerMessage("t", "p", bytes(16 * 2**20)))

    def test_the_receivers_max_message(self) -> None:
        alice, bob = Node("alice"), Node("bob")
        initiator, responder = alice.initiator(), bob.responder(max_message=100)
        pump(initiator, responder)
        initiator.send(PeerMessage("t", "p", bytes(100)))
        assert kind_of(responder, initiator.data_to_send()) == "too-large"
        assert_dead(responder)

    def test_a_replayed_record_is_dropped_and_the_stream_goes_on(self) -> None:
        initiator, responder = established()
        initiator.send(PeerMessage("t", "p", b"first"))
        first = initiator.data_to_send()
        assert responder.receive_data(first) == [MessageReceived(PeerMessage("t", "p", b"first"))]
        assert responder.receive_data(first) == [ReplayDropped(0)]
        initiator.send(PeerMessage("t", "p", b"second"))
        assert responder.receive_data(initiator.data_to_send()) == [
            MessageReceived(PeerMessage("t", "p", b"second"))
        ]

    def test_a_counter_that_skips_ahead_is_accepted(self) -> None:
        initiator, responder = established()
        sent = []
        for text in (b"0", b"1", b"2"):
            initiator.send(PeerMessage("t", "p", text))
            sent.append(initiator.data_to_send())
        assert responder.receive_data(sent[2]) == [MessageReceived(PeerMessage("t", "p", b"2"))]
        assert responder.receive_data(sent[0] + sent[1]) == [ReplayDropped(0), ReplayDropped(1)]

    @pytest.mark.parametrize("offset", [4, 11, 12, 20, -1])  # counter, ciphertext, tag
    def test_a_flipped_byte(self, offset: int) -> None:
        initiator, responder = established()
        initiator.send(PeerMessage("t", "p", b"payload"))
        data = bytearray(initiator.data_to_send())
        data[offset] ^= 0x01
        assert kind_of(responder, bytes(data)) == "decrypt-failed"
        assert_dead(responder)

    @pytest.mark.parametrize("length", [0, 65_544, 2**32 - 1])
    def test_a_record_length_out_of_bounds(self, length: int) -> None:
        _, responder = established()
        assert kind_of(responder, length.to_bytes(4, "big")) == "malformed"

    def test_a_handshake_record_longer_than_noise_allows(self) -> None:
        responder = Node("bob").responder()
        assert kind_of(responder, (65_536).to_bytes(4, "big")) == "malformed"

    def test_a_transport_record_too_short_to_hold_a_tag(self) -> None:
        _, responder = established()
        assert kind_of(responder, (23).to_bytes(4, "big") + bytes(23)) == "malformed"

    def test_a_bad_protobuf_inside_a_good_record_drops_only_that_message(self) -> None:
        initiator, responder = established()
        send_raw(initiator, encode_netstring(b"\x0a\x01t"))  # no protocol, no payload
        send_raw(initiator, encode_netstring(b"\x0a\x03ack\x12\x0btidings.ack\x1a\x00"))
        initiator.send(PeerMessage("t", "p", b"after"))
        bad, bad_ack, good = responder.receive_data(initiator.data_to_send())
        assert isinstance(bad, MessageDropped) and bad.error.kind == "malformed"
        assert isinstance(bad_ack, MessageDropped) and bad_ack.error.kind == "malformed"
        assert good == MessageReceived(PeerMessage("t", "p", b"after"))

    def test_a_broken_netstring_inside_a_good_record_kills_the_channel(self) -> None:
        initiator, responder = established()
        send_raw(initiator, b"1:xy")
        assert kind_of(responder, initiator.data_to_send()) == "malformed"
        assert_dead(responder)


def test_local_node_info_that_cannot_be_sent() -> None:
    alice = Node("alice")
    with pytest.raises(LocalProtocolError):
        SecureChannel.responder(alice.keys, {"x": float("nan")}, now_ms=NOW_MS)
    with pytest.raises(LocalProtocolError):
        SecureChannel.responder(alice.keys, {"x": "y" * 65_535}, now_ms=NOW_MS)
