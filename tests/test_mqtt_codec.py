"""The MQTT packet codec, byte for byte and fuzzed (3.1.1 §2-§3, 5.0 §1-§3)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsplex.protocols.mqtt.codec import (
    LEVEL_5,
    LEVEL_311,
    NO_PROPERTIES,
    Ack,
    Connect,
    Disconnect,
    MalformedPacket,
    PingReq,
    Prop,
    Properties,
    Publish,
    Reason,
    Splitter,
    Subscribe,
    SubscriptionRequest,
    Type,
    Unsubscribe,
    Will,
    decode,
    decode_properties,
    encode_ack,
    encode_client_disconnect,
    encode_connack,
    encode_connect,
    encode_properties,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
    varint,
)

LEVELS = pytest.mark.parametrize("level", [LEVEL_311, LEVEL_5], ids=["3.1.1", "5.0"])


def one(data: bytes, level: int = LEVEL_5) -> object:
    """Split ``data`` into exactly one packet and decode it."""
    packets = Splitter().feed(data)
    assert len(packets) == 1
    first, body = packets[0]
    return decode(first, body, level)


# -- byte for byte -------------------------------------------------------------------


def test_a_311_connect_from_the_spec() -> None:
    """3.1.1 §3.1.2.11's example header: MQTT, level 4, clean session, keep-alive 10."""
    data = bytes([0x10, 0x0E, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 10, 0, 2]) + b"id"
    assert one(data, 0) == Connect("MQTT", 4, True, 10, "id")


def test_variable_byte_integers_at_the_boundaries() -> None:
    """5.0 §1.5.5's table."""
    for value, encoded in ((0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"),
                           (16_384, b"\x80\x80\x01"), (2_097_151, b"\xff\xff\x7f"),
                           (2_097_152, b"\x80\x80\x80\x01"), (268_435_455, b"\xff\xff\xff\x7f")):
        assert varint(value) == encoded


def test_a_pubrel_has_flags_0010() -> None:
    assert one(b"\x62\x02\x00\x01") == Ack(Type.PUBREL, 1)
    with pytest.raises(MalformedPacket):
        one(b"\x60\x02\x00\x01")  # [MQTT-3.6.1-1]


def test_server_packets() -> None:
    assert encode_connack(LEVEL_311, True, 0) == b"\x20\x02\x01\x00"
    assert encode_connack(LEVEL_5, False, 0x84) == b"\x20\x03\x00\x84\x00"
    assert encode_ack(LEVEL_311, Type.PUBACK, 1) == b"\x40\x02\x00\x01"
    assert encode_ack(LEVEL_5, Type.PUBREL, 258) == b"\x62\x02\x01\x02"  # success: reason left out
    assert encode_ack(LEVEL_5, Type.PUBREC, 1, 0x90) == b"\x50\x03\x00\x01\x90"


def test_a_remaining_length_of_five_bytes_is_malformed() -> None:
    with pytest.raises(MalformedPacket) as caught:
        Splitter().feed(b"\x30\xff\xff\xff\xff\x01")
    assert caught.value.reason == Reason.MALFORMED_PACKET


def test_a_packet_over_the_limit_is_refused_from_its_header() -> None:
    with pytest.raises(MalformedPacket) as caught:
        Splitter(limit=100).feed(b"\x30\x80\x01")  # 128 bytes announced, none sent
    assert caught.value.reason == Reason.PACKET_TOO_LARGE


@pytest.mark.parametrize("data", [
    b"\x00\x00",  # type 0 is reserved
    b"\x82\x02\x00\x01",  # SUBSCRIBE without a filter: protocol error
    b"\x80\x02\x00\x01",  # SUBSCRIBE with flags 0000
    b"\x36\x03\x00\x01a",  # PUBLISH QoS 3
    b"\x38\x03\x00\x01a",  # DUP on QoS 0
    b"\x32\x05\x00\x01a\x00\x00",  # packet id 0
    b"\x30\x03\x00\x02a",  # string longer than the packet
    b"\x30\x04\x00\x02\xc3\x28",  # not UTF-8
    b"\x30\x04\x00\x02a\x00",  # U+0000
    b"\xc0\x01\x00",  # PINGREQ with a body
    b"\x20\x02\x00\x00",  # CONNACK from a client
])
def test_malformed_packets(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        one(data, LEVEL_311)


def test_properties_may_not_repeat_or_appear_where_they_do_not_belong() -> None:
    expiry = varint(Prop.MESSAGE_EXPIRY) + b"\x00\x00\x00\x05"
    with pytest.raises(MalformedPacket) as caught:
        decode_properties(varint(len(expiry) * 2) + expiry * 2)
    assert caught.value.reason == Reason.PROTOCOL_ERROR
    session = varint(Prop.SESSION_EXPIRY) + b"\x00\x00\x00\x05"
    with pytest.raises(MalformedPacket) as caught:
        decode_properties(varint(len(session)) + session, "publish")
    assert caught.value.reason == Reason.PROTOCOL_ERROR


# -- round trips (what a client sends, as the server reads it) -----------------------------

texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=20)
topics = texts.filter(lambda t: t != "" and "+" not in t and "#" not in t)
pairs = st.tuples(texts, texts)


@st.composite
def publish_properties(draw: st.DrawFn) -> Properties:
    values: dict[Prop, int | str | bytes] = {}
    if draw(st.booleans()):
        values[Prop.MESSAGE_EXPIRY] = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        values[Prop.CONTENT_TYPE] = draw(texts)
    if draw(st.booleans()):
        values[Prop.CORRELATION_DATA] = draw(st.binary(max_size=20))
    if draw(st.booleans()):
        values[Prop.TOPIC_ALIAS] = draw(st.integers(1, 65_535))
    return Properties(values, tuple(draw(st.lists(pairs, max_size=3))))


@given(topic=topics, payload=st.binary(max_size=300), qos=st.integers(0, 2), retain=st.booleans(),
       packet_id=st.integers(1, 65_535), props=publish_properties(), level=st.sampled_from([4, 5]))
def test_publish_round_trip(topic: str, payload: bytes, qos: int, retain: bool, packet_id: int,
                            props: Properties, level: int) -> None:
    packet = Publish(topic, payload, qos, retain, False, packet_id if qos else 0,
                     props if level == LEVEL_5 else NO_PROPERTIES)
    assert one(encode_publish(level, packet), level) == packet


@given(client_id=texts, keep_alive=st.integers(0, 65_535), clean=st.booleans(),
       will=st.none() | st.tuples(topics, st.binary(max_size=30), st.integers(0, 2), st.booleans()),
       username=st.none() | texts, password=st.none() | st.binary(max_size=10),
       level=st.sampled_from([4, 5]), session_expiry=st.none() | st.integers(0, 2**32 - 1))
def test_connect_round_trip(client_id: str, keep_alive: int, clean: bool,
                            will: tuple[str, bytes, int, bool] | None, username: str | None,
                            password: bytes | None, level: int, session_expiry: int | None) -> None:
    if level == LEVEL_311 and password is not None and username is None:
        username = "u"  # 3.1.1 [MQTT-3.1.2-22]
    props = Properties({Prop.SESSION_EXPIRY: session_expiry}) if level == 5 and session_expiry is not None \
        else NO_PROPERTIES
    packet = Connect("MQTT", level, clean, keep_alive, client_id,
                     Will(*will) if will is not None else None, username, password, props)
    assert one(encode_connect(packet), 0) == packet


@given(filters=st.lists(st.tuples(texts.filter(bool), st.integers(0, 2), st.booleans(), st.booleans(),
                                  st.integers(0, 2)), min_size=1, max_size=4),
       packet_id=st.integers(1, 65_535), level=st.sampled_from([4, 5]),
       identifier=st.none() | st.integers(1, 268_435_455))
def test_subscribe_and_unsubscribe_round_trip(filters: list[tuple[str, int, bool, bool, int]],
                                              packet_id: int, level: int, identifier: int | None) -> None:
    v5 = level == LEVEL_5
    requests = tuple(SubscriptionRequest(f, q, nl and v5, rap and v5, rh if v5 else 0)
                     for f, q, nl, rap, rh in filters)
    props = Properties(subscription_ids=(identifier,)) if v5 and identifier else NO_PROPERTIES
    subscribe = Subscribe(packet_id, requests, props)
    assert one(encode_subscribe(level, subscribe), level) == subscribe
    unsubscribe = Unsubscribe(packet_id, tuple(f for f, *_ in filters))
    assert one(encode_unsubscribe(level, unsubscribe), level) == unsubscribe


@LEVELS
def test_pingreq_and_disconnect(level: int) -> None:
    assert one(b"\xc0\x00", level) == PingReq()
    assert one(encode_client_disconnect(level), level) == Disconnect()
    if level == LEVEL_5:
        assert one(encode_client_disconnect(level, 4), level) == Disconnect(4)


# -- the stream: packets split and packed --------------------------------------------------


@given(sizes=st.lists(st.integers(0, 400), min_size=1, max_size=6), cuts=st.lists(st.integers(1, 50)))
def test_packets_split_and_packed_in_any_pieces(sizes: list[int], cuts: list[int]) -> None:
    packets = [Publish(f"t/{n}", bytes(size), 0) for n, size in enumerate(sizes)]
    stream = b"".join(encode_publish(LEVEL_311, p) for p in packets)
    splitter, got, position = Splitter(), [], 0
    for cut in [*cuts, len(stream)]:
        got += splitter.feed(stream[position : position + cut])
        position += cut
    assert [decode(first, body, LEVEL_311) for first, body in got] == packets
    assert splitter.pending == 0


@given(data=st.binary(max_size=200), level=st.sampled_from([0, 4, 5]))
def test_any_bytes_give_packets_or_a_malformed_packet_error(data: bytes, level: int) -> None:
    """Fuzz: no input makes the codec raise anything but MalformedPacket."""
    try:
        for first, body in Splitter().feed(data):
            decode(first, body, level)
    except MalformedPacket as exc:
        assert isinstance(exc.reason, Reason)


@given(body=st.binary(max_size=120), kind=st.integers(1, 15), flags=st.integers(0, 15),
       level=st.sampled_from([0, 4, 5]))
def test_any_body_for_any_type(body: bytes, kind: int, flags: int, level: int) -> None:
    with contextlib.suppress(MalformedPacket):
        decode((kind << 4) | flags, body, level)


@given(props=publish_properties())
def test_properties_round_trip(props: Properties) -> None:
    assert decode_properties(encode_properties(props)) == props
    assert encode_properties(NO_PROPERTIES) == b"\x00"
