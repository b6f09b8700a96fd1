"""The MQTT broker's wire rules with hand-built packets over a real WebSocket (SPEC §11).

The ``websockets`` client sends exactly the bytes each test builds, so packets
can be split across messages, packed into one, or broken on purpose.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from support import ServerFactory, ws_url
from support.rawws import RawClient
from wsplex.config import Settings
from wsplex.protocols.mqtt.codec import (
    LEVEL_5,
    LEVEL_311,
    Connect,
    Prop,
    Properties,
    Publish,
    Splitter,
    Subscribe,
    SubscriptionRequest,
    Type,
    encode_ack,
    encode_connect,
    encode_properties,
    encode_publish,
    encode_subscribe,
    packet,
)
from wsplex.server import Server

WAIT = 10.0


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    client = await RawClient.open(port)
    client.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    response = await client.read_response()
    await client.close()
    return response.status, response.body
LEVELS = pytest.mark.parametrize("level", [LEVEL_311, LEVEL_5], ids=["3.1.1", "5.0"])


class Wire:
    """A WebSocket speaking raw MQTT: packets out, (first byte, body) pairs in."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.splitter = Splitter()
        self.packets: list[tuple[int, bytes]] = []

    async def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            await self.ws.send(chunk)

    async def packet(self) -> tuple[int, bytes]:
        while not self.packets:
            message = await asyncio.wait_for(self.ws.recv(), WAIT)
            assert isinstance(message, bytes), "the broker sends binary messages only"
            self.packets += self.splitter.feed(message)
        return self.packets.pop(0)

    async def closed(self) -> int | None:
        """Read until the server closes; its close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), WAIT)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=("mqtt",))


@pytest.fixture
async def wire(server: Server) -> AsyncIterator[Wire]:
    async with websockets.connect(ws_url(server, "/mqtt"), subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        yield Wire(ws)


def connect(level: int, client_id: str = "c", **kwargs: object) -> bytes:
    return encode_connect(Connect("MQTT", level, True, 0, client_id, **kwargs))  # type: ignore[arg-type]


async def connected(wire: Wire, level: int, client_id: str = "c") -> None:
    await wire.send(connect(level, client_id))
    first, body = await wire.packet()
    assert first >> 4 == Type.CONNACK and body[1] == 0


@LEVELS
async def test_packets_split_across_messages_and_packed_in_one(wire: Wire, level: int) -> None:
    data = connect(level)
    await wire.send(data[:1], data[1:3], data[3:])  # CONNECT in three messages
    assert (await wire.packet())[0] >> 4 == Type.CONNACK
    subscribe = encode_subscribe(level, Subscribe(1, (SubscriptionRequest("t", 0),)))
    publish = encode_publish(level, Publish("t", b"x"))
    await wire.send(subscribe + publish + b"\xc0\x00")  # SUBSCRIBE, PUBLISH, PINGREQ in one
    assert (await wire.packet())[0] >> 4 == Type.SUBACK
    first, body = await wire.packet()
    assert first == 0x30 and body.endswith(b"x")
    assert await wire.packet() == (0xD0, b"")  # PINGRESP


async def test_a_text_message_closes_with_1003(wire: Wire) -> None:
    await wire.ws.send("CONNECT")
    assert await wire.closed() == 1003


@pytest.mark.parametrize(("level", "connack"), [(3, b"\x00\x01"), (6, b"\x00\x84\x00")])
async def test_an_unsupported_level_gets_the_prescribed_connack(wire: Wire, level: int,
                                                               connack: bytes) -> None:
    """3.1.1 [MQTT-3.1.2-2]: 0x01 then close; 5.0 §3.1.2.2: 0x84."""
    body = b"\x00\x04MQTT" + bytes([level, 0x02, 0, 0]) + b"\x00\x01c"
    await wire.send(packet(Type.CONNECT, 0, body))
    assert await wire.packet() == (0x20, connack)
    assert await wire.closed() is not None


async def test_the_first_packet_must_be_connect(wire: Wire) -> None:
    await wire.send(b"\xc0\x00")
    assert await wire.closed() == 1008


async def test_a_second_connect_ends_the_connection(wire: Wire) -> None:
    await connected(wire, LEVEL_5)
    await wire.send(connect(LEVEL_5))
    first, body = await wire.packet()
    assert (first, body[0]) == (0xE0, 0x82)  # DISCONNECT, Protocol Error
    assert await wire.closed() == 1008


async def test_a_malformed_packet_gets_disconnect_0x81_in_5(wire: Wire) -> None:
    await connected(wire, LEVEL_5)
    await wire.send(b"\x30\x03\x00\x05a")  # a topic longer than the packet
    first, body = await wire.packet()
    assert (first, body[0]) == (0xE0, 0x81)
    assert await wire.closed() == 1008


async def test_a_malformed_packet_in_311_just_closes(wire: Wire) -> None:
    await connected(wire, LEVEL_311)
    await wire.send(b"\x36\x03\x00\x01a")  # QoS 3
    assert await wire.closed() == 1008


async def test_an_empty_client_id_without_clean_session_is_rejected_in_311(wire: Wire) -> None:
    await wire.send(encode_connect(Connect("MQTT", LEVEL_311, False, 0, "")))
    assert await wire.packet() == (0x20, b"\x00\x02")  # [MQTT-3.1.3-8]
    assert await wire.closed() is not None


async def test_auth_is_refused(wire: Wire) -> None:
    """SPEC §11: enhanced authentication is not supported (5.0 §4.12: 0x8C)."""
    props = Properties({Prop.AUTH_METHOD: "SCRAM-SHA-1"})
    await wire.send(encode_connect(Connect("MQTT", LEVEL_5, True, 0, "c", properties=props)))
    first, body = await wire.packet()
    assert (first, body[:2]) == (0x20, b"\x00\x8c")


async def test_keep_alive_closes_a_silent_client(wire: Wire) -> None:
    """3.1.1 [MQTT-3.1.2-24]: silent for 1.5 times its Keep Alive; 5.0 says so with 0x8D."""
    await wire.send(encode_connect(Connect("MQTT", LEVEL_5, True, 1, "sleepy")))
    assert (await wire.packet())[0] == 0x20
    first, body = await wire.packet()
    assert (first, body[0]) == (0xE0, 0x8D)
    assert await wire.closed() == 1008


async def test_qos2_exchange_and_a_repeated_publish_is_not_published_twice(wire: Wire) -> None:
    """5.0 §4.3.3: the receiver acknowledges a repeated PUBLISH and does not pass it on."""
    await connected(wire, LEVEL_5)
    await wire.send(encode_subscribe(LEVEL_5, Subscribe(1, (SubscriptionRequest("q2", 2),))))
    assert (await wire.packet())[0] == 0x90
    publish = Publish("q2", b"once", 2, packet_id=7)
    await wire.send(encode_publish(LEVEL_5, publish))
    replies = {(await wire.packet())[0] for _ in range(2)}  # our PUBREC and the delivery, in some order
    assert replies == {0x50, 0x34}
    await wire.send(encode_publish(LEVEL_5, Publish("q2", b"once", 2, dup=True, packet_id=7)))
    assert await wire.packet() == (0x50, b"\x00\x07")  # PUBREC again, nothing delivered
    await wire.send(encode_ack(LEVEL_5, Type.PUBREL, 7))
    assert await wire.packet() == (0x70, b"\x00\x07")  # PUBCOMP
    await wire.send(encode_ack(LEVEL_5, Type.PUBREL, 7))
    assert await wire.packet() == (0x70, b"\x00\x07\x92")  # Packet Identifier not found


async def test_topic_aliases(wire: Wire) -> None:
    await connected(wire, LEVEL_5)
    await wire.send(encode_subscribe(LEVEL_5, Subscribe(1, (SubscriptionRequest("long/topic", 0),))))
    await wire.packet()
    alias = Properties({Prop.TOPIC_ALIAS: 3})
    await wire.send(encode_publish(LEVEL_5, Publish("long/topic", b"1", properties=alias)),
                    encode_publish(LEVEL_5, Publish("", b"2", properties=alias)))
    for payload in (b"1", b"2"):
        first, body = await wire.packet()
        assert body[:12] == b"\x00\x0along/topic" and body.endswith(payload)
    unknown = Properties({Prop.TOPIC_ALIAS: 999})
    await wire.send(encode_publish(LEVEL_5, Publish("", b"3", properties=unknown)))
    first, body = await wire.packet()
    assert (first, body[0]) == (0xE0, 0x94)  # Topic Alias invalid


async def test_a_wildcard_in_a_topic_name_ends_the_connection(wire: Wire) -> None:
    await connected(wire, LEVEL_5)
    await wire.send(encode_publish(LEVEL_5, Publish("a/+", b"x")))
    first, body = await wire.packet()
    assert (first, body[0]) == (0xE0, 0x90)


async def test_the_outbound_window_holds_the_rest_until_acknowledged(start_server: ServerFactory) -> None:
    """5.0 §4.9: no more than the client's Receive Maximum QoS 1 messages unacknowledged."""
    server = await start_server(protocols=("mqtt",))
    async with websockets.connect(ws_url(server, "/mqtt"), subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        wire = Wire(ws)
        props = Properties({Prop.RECEIVE_MAXIMUM: 2})
        await wire.send(encode_connect(Connect("MQTT", LEVEL_5, True, 0, "slow", properties=props)))
        await wire.packet()
        await wire.send(encode_subscribe(LEVEL_5, Subscribe(1, (SubscriptionRequest("w", 1),))))
        await wire.packet()
        for n in range(4):
            await wire.send(encode_publish(LEVEL_5, Publish("w", bytes([n]), 1, packet_id=n + 1)))
        got = [await wire.packet() for _ in range(6)]  # 4 PUBACKs and the 2 messages the window allows
        delivered = [body for first, body in got if first >> 4 == Type.PUBLISH]
        assert [body[-1] for body in delivered] == [0, 1]
        await wire.send(b"\xc0\x00")
        assert await wire.packet() == (0xD0, b"")  # and nothing more came before the PINGRESP
        first_id = delivered[0][3:5]
        await wire.send(packet(Type.PUBACK, 0, first_id))
        first, body = await wire.packet()
        assert first >> 4 == Type.PUBLISH and body[-1] == 2


async def test_a_client_disconnect_closes_normally(wire: Wire) -> None:
    await connected(wire, LEVEL_5)
    await wire.send(packet(Type.DISCONNECT, 0, b""))
    assert await wire.closed() == 1000


# -- persistent sessions (3.1.1 §4.1, 5.0 §4.1) ------------------------------------------


def persistent(level: int, client_id: str) -> bytes:
    """CONNECT keeping the session: 3.1.1 Clean Session 0, 5.0 a Session Expiry Interval."""
    props = Properties({Prop.SESSION_EXPIRY: 300}) if level == LEVEL_5 else Properties()
    return encode_connect(Connect("MQTT", level, False, 0, client_id, properties=props))


async def open_wire(server: Server) -> websockets.ClientConnection:
    return await websockets.connect(ws_url(server, "/mqtt"), subprotocols=["mqtt"])  # type: ignore[list-item]


@LEVELS
async def test_a_persistent_session_queues_while_away_and_resends_with_dup(
        start_server: ServerFactory, level: int) -> None:
    server = await start_server(protocols=("mqtt",), mqtt_max_queued=2)
    async with await open_wire(server) as ws:
        wire = Wire(ws)
        await wire.send(persistent(level, "keeper"))
        first, body = await wire.packet()
        assert (first, body[:2]) == (0x20, b"\x00\x00")
        await wire.send(encode_subscribe(level, Subscribe(1, (SubscriptionRequest("jobs/#", 1),))))
        await wire.packet()
        await wire.send(encode_publish(level, Publish("jobs/1", b"first", 1, packet_id=1)))
        got = {(await wire.packet())[0] for _ in range(2)}
        assert got == {0x40, 0x32}  # our PUBACK, and the delivery we leave unacknowledged
    async with await open_wire(server) as ws:
        sender = Wire(ws)
        await connected(sender, level, "sender")
        for n in (2, 3, 4):  # three while away: the queue keeps the last two
            await sender.send(encode_publish(level, Publish(f"jobs/{n}", b"later", 1, packet_id=n)))
            assert (await sender.packet())[0] == 0x40
    status, metrics = await http_get(server.port, "/metrics")
    assert status == 200
    for line in ("wsplex_mqtt_sessions_away 1.0", "wsplex_mqtt_queued 2.0", "wsplex_mqtt_inflight 1.0",
                 "wsplex_mqtt_subscriptions", "wsplex_mqtt_dropped_total 1.0", "wsplex_mqtt_retained 0.0"):
        assert line.encode() in metrics
    async with await open_wire(server) as ws:
        wire = Wire(ws)
        await wire.send(persistent(level, "keeper"))
        first, body = await wire.packet()
        assert (first, body[0]) == (0x20, 1)  # Session Present
        redelivered = await wire.packet()
        assert redelivered[0] == 0x3A and b"jobs/1" in redelivered[1]  # PUBLISH, DUP, QoS 1
        topics = []
        for _ in range(2):
            first, body = await wire.packet()
            assert first == 0x32
            topics.append(body[2 : 2 + body[1]])
        assert topics == [b"jobs/3", b"jobs/4"]


@LEVELS
async def test_a_clean_session_forgets_the_old_one(start_server: ServerFactory, level: int) -> None:
    server = await start_server(protocols=("mqtt",))
    async with await open_wire(server) as ws:
        wire = Wire(ws)
        await wire.send(persistent(level, "forgetful"))
        await wire.packet()
        await wire.send(encode_subscribe(level, Subscribe(1, (SubscriptionRequest("x", 1),))))
        await wire.packet()
    async with await open_wire(server) as ws:
        wire = Wire(ws)
        await wire.send(connect(level, "forgetful"))  # clean
        first, body = await wire.packet()
        assert (first, body[0]) == (0x20, 0)  # no session present
        await wire.send(encode_publish(level, Publish("x", b"nobody hears", 1, packet_id=1)))
        await wire.send(b"\xc0\x00")
        assert [await wire.packet() for _ in range(2)] == [(0x40, b"\x00\x01"), (0xD0, b"")]


async def test_nothing_bigger_than_the_clients_maximum_packet_size_is_sent(wire: Wire) -> None:
    """5.0 [MQTT-3.1.2-25]: such a message is discarded as if it had been sent."""
    props = Properties({Prop.MAXIMUM_PACKET_SIZE: 64})
    await wire.send(encode_connect(Connect("MQTT", LEVEL_5, True, 0, "small", properties=props)))
    await wire.packet()
    await wire.send(encode_subscribe(LEVEL_5, Subscribe(1, (SubscriptionRequest("m", 1),))))
    await wire.packet()
    await wire.send(encode_publish(LEVEL_5, Publish("m", bytes(100))),
                    encode_publish(LEVEL_5, Publish("m", b"fits", 1, packet_id=1)))
    got = dict([await wire.packet(), await wire.packet()])  # the delivery, and the PUBACK
    assert got[0x40] == b"\x00\x01" and got[0x32].endswith(b"fits")


@LEVELS
async def test_garbage_after_connect_ends_only_that_connection(server: Server, wire: Wire,
                                                               level: int) -> None:
    """Random bytes (seeded, so a failure repeats) after a CONNECT: each connection ends or
    waits for more, and a bystander is served throughout."""
    await connected(wire, level, "bystander")
    rng = random.Random(13)
    for n in range(60):
        garbage = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 80)))
        async with await open_wire(server) as ws:
            victim = Wire(ws)
            await connected(victim, level, f"victim-{n}")
            await victim.send(garbage)
        await wire.send(b"\xc0\x00")
        assert await wire.packet() == (0xD0, b"")
    assert server.stats.closes[1011] == 0  # no hook crashed on any of it


async def test_session_expiry_set_at_disconnect(start_server: ServerFactory) -> None:
    """5.0 §3.14.2.2.2: a DISCONNECT may change a non-zero Session Expiry Interval (0 ends the
    session with the connection), and may not set one after 0 at CONNECT [MQTT-3.14.2-2]."""
    server = await start_server(protocols=("mqtt",))
    async with await open_wire(server) as ws:
        wire = Wire(ws)
        await wire.send(persistent(LEVEL_5, "brief"))
        await wire.packet()
        await wire.send(packet(Type.DISCONNECT, 0, b"\x00" + encode_properties(
            Properties({Prop.SESSION_EXPIRY: 0}))))
        assert await wire.closed() == 1000
    async with await open_wire(server) as ws:
        wire = Wire(ws)
        await wire.send(persistent(LEVEL_5, "brief"))
        first, body = await wire.packet()
        assert (first, body[0]) == (0x20, 0)  # the session ended: none present
        await wire.send(packet(Type.DISCONNECT, 0, b"\x00" + encode_properties(
            Properties({Prop.SESSION_EXPIRY: 60}))))
        assert await wire.closed() == 1000  # allowed: it was not 0
    async with await open_wire(server) as ws:
        wire = Wire(ws)
        await connected(wire, LEVEL_5, "never")
        await wire.send(packet(Type.DISCONNECT, 0, b"\x00" + encode_properties(
            Properties({Prop.SESSION_EXPIRY: 60}))))
        first, body = await wire.packet()
        assert (first, body[0]) == (0xE0, 0x82)


async def test_shutdown_says_disconnect_0x8b_to_5_clients() -> None:
    """5.0 §3.14: a server that stops tells a 5.0 client why, then closes with 1001 (SPEC §8)."""
    server = Server(Settings(host="127.0.0.1", port=0, protocols=("mqtt",), shutdown_timeout=2.0))
    await server.start()
    stopping: asyncio.Task[None] | None = None
    try:
        async with await open_wire(server) as ws:
            wire = Wire(ws)
            await connected(wire, LEVEL_5, "leaving")
            stopping = asyncio.create_task(server.stop())
            first, body = await wire.packet()
            assert (first, body[0]) == (0xE0, 0x8B)
            assert await wire.closed() == 1001
    finally:
        await (stopping if stopping is not None else server.stop())


@LEVELS
async def test_subscriptions_past_the_cap_are_refused(start_server: ServerFactory, level: int) -> None:
    """--max-subscriptions: the SUBACK refuses the filter past it (5.0: 0x97 Quota exceeded)."""
    server = await start_server(protocols=("mqtt",), max_subscriptions=2)
    async with await open_wire(server) as ws:
        wire = Wire(ws)
        await connected(wire, level)
        requests = tuple(SubscriptionRequest(f, 1) for f in ("a", "b", "c", "a"))
        await wire.send(encode_subscribe(level, Subscribe(1, requests)))
        first, body = await wire.packet()
        refused = 0x97 if level == LEVEL_5 else 0x80
        assert (first, body[-4:]) == (0x90, bytes([1, 1, refused, 1]))  # "a" again is no new one


async def test_a_retained_message_not_kept_is_delivered_and_acknowledged_with_0x97(
        start_server: ServerFactory) -> None:
    server = await start_server(protocols=("mqtt",), retained_value_size=16)
    async with await open_wire(server) as ws:
        wire = Wire(ws)
        await connected(wire, LEVEL_5)
        await wire.send(encode_subscribe(LEVEL_5, Subscribe(1, (SubscriptionRequest("big", 0),))))
        await wire.packet()
        await wire.send(encode_publish(LEVEL_5, Publish("big", bytes(100), 1, retain=True, packet_id=5)))
        got = dict([await wire.packet(), await wire.packet()])
        assert got[0x40] == b"\x00\x05\x97"
        assert got[0x30].endswith(bytes(100))  # delivered all the same


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
@LEVELS
async def test_a_kept_session_follows_its_client_to_another_node(start_server: ServerFactory,
                                                                 level: int) -> None:
    """SPEC §9: the client comes back on another node; the session kept on the first (its
    subscriptions and the messages queued meanwhile) moves there, with Session Present."""
    first_node = await start_server(protocols=("mqtt",))
    second_node = await start_server(protocols=("mqtt",))
    async with await open_wire(first_node) as ws:
        wire = Wire(ws)
        await wire.send(persistent(level, "roamer"))
        await wire.packet()
        await wire.send(encode_subscribe(level, Subscribe(1, (SubscriptionRequest("jobs/#", 1),))))
        await wire.packet()
    async with await open_wire(first_node) as ws:
        sender = Wire(ws)
        await connected(sender, level, "sender")
        await sender.send(encode_publish(level, Publish("jobs/1", b"while away", 1, packet_id=1)))
        assert (await sender.packet())[0] == 0x40
    async with await open_wire(second_node) as ws:
        wire = Wire(ws)
        await wire.send(persistent(level, "roamer"))
        first, body = await wire.packet()
        assert (first, body[0]) == (0x20, 1)  # Session Present, on the other node
        first, body = await wire.packet()
        assert first == 0x32 and body.endswith(b"while away")
        await wire.send(packet(Type.PUBACK, 0, body[2 + body[1] : 4 + body[1]]))
        async with await open_wire(second_node) as ws2:
            sender = Wire(ws2)
            await connected(sender, level, "sender2")
            await sender.send(encode_publish(level, Publish("jobs/2", b"here now", 1, packet_id=1)))
            first, body = await wire.packet()  # the subscription came along
            assert first == 0x32 and body.endswith(b"here now")


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_a_node_that_stops_says_its_kept_sessions_are_gone(
        start_server: ServerFactory) -> None:
    first_node = await start_server(protocols=("mqtt",))
    second_node = await start_server(protocols=("mqtt",))
    async with await open_wire(first_node) as ws:
        wire = Wire(ws)
        await wire.send(persistent(LEVEL_5, "orphan"))
        await wire.packet()
    await first_node.stop()  # the session ends with the process, and the cluster is told
    assert await second_node.hub.get_value("mqtt.session:orphan") is None
    async with await open_wire(second_node) as ws:
        wire = Wire(ws)
        await wire.send(persistent(LEVEL_5, "orphan"))
        first, body = await wire.packet()
        assert (first, body[0]) == (0x20, 0)  # a new session


@LEVELS
async def test_invalid_filters_are_refused_in_the_suback(wire: Wire, level: int) -> None:
    """3.1.1 §3.9.3 (0x80), 5.0 §3.9.3 (0x8F Topic Filter invalid), each filter on its own:
    ``#`` not last, ``+`` in a level, a shared subscription without a group or a filter
    [MQTT-4.8.2-1]; the valid one in the same SUBSCRIBE is granted."""
    await connected(wire, level)
    filters = ("a/#/b", "a/b+", "$share//x", "$share/group", "$share/g+/x", "fine/+")
    await wire.send(encode_subscribe(level, Subscribe(3, tuple(SubscriptionRequest(f, 1) for f in filters))))
    first, body = await wire.packet()
    refused = 0x8F if level == LEVEL_5 else 0x80
    assert first == 0x90
    assert body == b"\x00\x03" + (b"\x00" if level == LEVEL_5 else b"") + bytes([refused] * 5 + [1])


async def test_no_local_on_a_shared_subscription_is_a_protocol_error(wire: Wire) -> None:
    """5.0 [MQTT-3.8.3-4]: DISCONNECT 0x82, then the close."""
    await connected(wire, LEVEL_5)
    request = SubscriptionRequest("$share/pool/jobs", 1, no_local=True)
    await wire.send(encode_subscribe(LEVEL_5, Subscribe(1, (request,))))
    first, body = await wire.packet()
    assert (first, body[0]) == (0xE0, 0x82)
    assert await wire.closed() == 1008
