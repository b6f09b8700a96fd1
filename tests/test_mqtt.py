"""The MQTT broker with paho-mqtt, the real client, over WebSocket, both versions (SPEC §11).

Every test runs on both hubs (memory and Redis). paho's network loop runs in
its own thread; ``support.mqtt.Paho`` hands its events to the test's loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import websockets
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from support import ServerFactory, ws_url
from support.mqtt import V5, V311, Paho, properties
from wsplex.app.users import hash_password
from wsplex.hub.redis import RedisHub
from wsplex.server import Server

PROTOCOLS = ("mqtt", "chat", "JSONsvc", "echo")
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["3.1.1", "5.0"])

Clients = Callable[..., Coroutine[Any, Any, Paho]]


async def recv(ws: websockets.ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), 10)


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=PROTOCOLS)


@pytest.fixture
async def clients(server: Server) -> AsyncIterator[Clients]:
    """Connected paho clients: ``await clients("id", version=V5)``; stopped at the end."""
    made: list[Paho] = []

    async def connect(client_id: str = "", *, version: MQTTProtocolVersion = V311, clean: bool = True,
                      **kwargs: Any) -> Paho:
        client = Paho(server.port, client_id, version=version, clean=clean)
        made.append(client)
        reason, _, _ = await client.connect(**kwargs)
        assert reason == 0, reason
        return client

    yield connect
    await asyncio.gather(*(client.stop() for client in made))


@VERSIONS
async def test_publish_and_subscribe_at_each_qos(clients: Clients, version: MQTTProtocolVersion) -> None:
    receiver = await clients("receiver", version=version)
    sender = await clients("sender", version=version)
    granted = await receiver.subscribe("sensors/+/temp", 2)
    assert [int(g.value) if hasattr(g, "value") else int(g) for g in granted] == [2]
    for qos in (0, 1, 2):
        await sender.publish("sensors/kitchen/temp", f"21.{qos}", qos)
        got = await receiver.next_message()
        assert (got.topic, got.payload, got.qos, got.retain) == ("sensors/kitchen/temp",
                                                                  f"21.{qos}".encode(), qos, False)


@VERSIONS
async def test_chat_room_lines_reach_an_mqtt_subscriber_and_back(server: Server, clients: Clients,
                                                               version: MQTTProtocolVersion) -> None:
    """SPEC §10: chat room R is topic chat/R; an MQTT publish there is a line of the room."""
    mqtt_client = await clients("sensor-1", version=version)
    await mqtt_client.subscribe("chat/lobby")
    async with websockets.connect(ws_url(server, "/?name=alice"), subprotocols=["chat"]) as alice:  # type: ignore[list-item]
        await alice.send("/who")
        assert await recv(alice) == "* in lobby: alice"  # in the room now
        await alice.send("hello mqtt")
        got = await mqtt_client.next_message()
        assert (got.topic, got.payload) == ("chat/lobby", b"hello mqtt")
        if version == V5:
            assert ("from", "chat:alice") in got.user
        await mqtt_client.publish("chat/lobby", "hi alice", 1)
        assert await recv(alice) == "[mqtt:sensor-1] hi alice"


async def test_a_retained_publish_is_the_jsonsvc_service_value(server: Server, clients: Clients) -> None:
    sensor = await clients("thermo")
    await sensor.publish("sensors/temp", "21.5", 1, retain=True)
    async with websockets.connect(ws_url(server), subprotocols=["JSONsvc"]) as dash:  # type: ignore[list-item]
        await dash.send('{"from":"dash","get":"sensors/temp"}')
        assert await recv(dash) == '{"from":"mqtt:thermo","put":"sensors/temp"}>21.5'


async def test_a_jsonsvc_put_is_a_retained_mqtt_message(server: Server, clients: Clients) -> None:
    async with websockets.connect(ws_url(server), subprotocols=["JSONsvc"]) as sensor:  # type: ignore[list-item]
        await sensor.send('{"from":"sensor","put":"temp"}>19.0')
        await sensor.send('{"from":"sensor","to":"JSONsvc","cmd":"whoami"}')
        assert json.loads(await recv(sensor))["name"] == "sensor"  # the put was handled before
    watcher = await clients("watcher", version=V5)
    await watcher.subscribe("temp", 1)
    got = await watcher.next_message()
    assert (got.topic, got.payload, got.retain) == ("temp", b"19.0", True)
    assert ("from", "JSONsvc:sensor") in got.user


@VERSIONS
async def test_retained_messages_on_subscribe_and_cleared_by_an_empty_one(clients: Clients,
                                                                        version: MQTTProtocolVersion) -> None:
    sender = await clients("sender", version=version)
    await sender.publish("status/door", "open", 1, retain=True)
    first = await clients("first", version=version)
    await first.subscribe("status/#", 1)
    got = await first.next_message()
    assert (got.topic, got.payload, got.retain, got.qos) == ("status/door", b"open", True, 1)
    await sender.publish("status/door", "", 1, retain=True)
    cleared = await first.next_message()  # a live message: RETAIN 0 on an established subscription
    assert (cleared.payload, cleared.retain) == (b"", False)
    second = await clients("second", version=version)
    await second.subscribe("status/#", 1)
    await second.subscribe("status/marker", 0)
    await sender.publish("status/marker", "m")
    assert (await second.next_message()).topic == "status/marker"  # nothing retained came first


async def test_overlapping_subscriptions_deliver_once_at_the_highest_qos(clients: Clients) -> None:
    receiver = await clients("receiver", version=V5)
    sender = await clients("sender", version=V5)
    await receiver.subscribe("a/#", 0, properties=properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    await receiver.subscribe("a/+", 1, properties=properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=9))
    await sender.publish("a/b", "x", 2)
    await sender.publish("a/b/c", "y", 2)
    first, second = await receiver.next_message(), await receiver.next_message()
    assert (first.payload, first.qos, sorted(first.subscription_ids)) == (b"x", 1, [7, 9])
    assert (second.payload, second.qos, second.subscription_ids) == (b"y", 0, (7,))


async def test_dollar_topics(clients: Clients) -> None:
    """Wildcards at the first level do not match $ topics; $SYS/ publications are dropped
    (5.0: PUBACK 0x90)."""
    receiver = await clients("receiver", version=V5)
    await receiver.subscribe("#", 0)
    await receiver.subscribe("$SYS/#", 0)
    sender = await clients("sender", version=V5)
    reason = await sender.publish("$SYS/fake", "x", 1)
    assert int(reason.value) == 0x90
    await sender.publish("$app/x", "not for #", 1)
    await sender.publish("plain", "for #", 1)
    got = await receiver.next_message()
    assert (got.topic, got.payload) == ("plain", b"for #")


async def test_no_local_and_retain_as_published(clients: Clients) -> None:
    client = await clients("loop", version=V5)
    await client.subscribe("mine", options=SubscribeOptions(qos=1, noLocal=True))
    await client.subscribe("kept", options=SubscribeOptions(qos=1, retainAsPublished=True))
    await client.publish("mine", "not back to me", 1)
    await client.publish("kept", "flagged", 1, retain=True)
    got = await client.next_message()
    assert (got.topic, got.retain) == ("kept", True)


@VERSIONS
async def test_unsubscribe(clients: Clients, version: MQTTProtocolVersion) -> None:
    client = await clients("u", version=version)
    await client.subscribe("x", 0)
    await client.subscribe("y", 0)
    await client.unsubscribe("x")
    await client.publish("x", "gone", 1)
    await client.publish("y", "here", 1)
    assert (await client.next_message()).topic == "y"


@VERSIONS
async def test_a_will_is_published_when_the_connection_drops(server: Server, clients: Clients,
                                                            version: MQTTProtocolVersion) -> None:
    watcher = await clients("watcher", version=version)
    await watcher.subscribe("wills/#", 1)
    doomed = Paho(server.port, "doomed", version=version)
    await doomed.connect(will=("wills/doomed", b"gone", 1, False))
    await clients("doomed", version=version)  # takeover: the old connection ends without DISCONNECT
    got = await watcher.next_message()
    assert (got.topic, got.payload) == ("wills/doomed", b"gone")
    await doomed.wait_disconnected()
    await doomed.stop()


@VERSIONS
async def test_no_will_after_a_normal_disconnect(server: Server, clients: Clients,
                                                 version: MQTTProtocolVersion) -> None:
    watcher = await clients("watcher", version=version)
    await watcher.subscribe("wills/#", 1)
    polite = Paho(server.port, "polite", version=version)
    await polite.connect(will=("wills/polite", b"gone", 1, False))
    await polite.disconnect()
    marker = await clients("marker", version=version)
    await marker.publish("wills/marker", "m", 1)
    assert (await watcher.next_message()).topic == "wills/marker"


async def test_an_empty_client_id_is_assigned(server: Server) -> None:
    client = Paho(server.port, "", version=V5)
    reason, _, props = await client.connect()
    assert reason == 0 and props.AssignedClientIdentifier.startswith("wsplex-")
    await client.stop()


async def test_connack_announces_what_the_server_supports(server: Server) -> None:
    client = Paho(server.port, "c", version=V5)
    _, _, props = await client.connect()
    assert props.ReceiveMaximum > 0 and props.TopicAliasMaximum > 0
    assert props.MaximumPacketSize == server.settings.max_message_size
    assert not hasattr(props, "SharedSubscriptionAvailable")  # absent: available (5.0 §3.2.2.3.15)
    await client.stop()


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
@VERSIONS
async def test_takeover_and_topics_across_nodes(start_server: ServerFactory,
                                               version: MQTTProtocolVersion) -> None:
    """SPEC §9: a client id is unique in the cluster; a wildcard subscriber on one node hears
    a publisher on the other; retained messages are the cluster's."""
    first_node = await start_server(protocols=PROTOCOLS)
    second_node = await start_server(protocols=PROTOCOLS)
    old = Paho(first_node.port, "roaming", version=version)
    new = Paho(second_node.port, "roaming", version=version)
    listener = Paho(first_node.port, "listener", version=version)
    try:
        await old.connect()
        await new.connect()
        await old.wait_disconnected()
        await listener.connect()
        await listener.subscribe("fleet/+/position", 1)
        await new.publish("fleet/7/position", "52.5,13.4", 1, retain=True)
        got = await listener.next_message()
        assert (got.topic, got.payload) == ("fleet/7/position", b"52.5,13.4")
        late = Paho(first_node.port, "late", version=version)
        try:
            await late.connect()
            await late.subscribe("fleet/#", 1)
            retained = await late.next_message()
            assert (retained.payload, retained.retain) == (b"52.5,13.4", True)
        finally:
            await late.stop()
    finally:
        await asyncio.gather(old.stop(), new.stop(), listener.stop())


async def test_5_properties_are_passed_on_with_the_sender(clients: Clients) -> None:
    """5.0 §3.3.2.3: payload format, content type, response topic, correlation data and user
    properties reach the subscriber unaltered; the expiry as what is left of it; ``from`` is
    the server's (SPEC §10), whatever the client put there."""
    receiver = await clients("receiver", version=V5)
    sender = await clients("sender", version=V5)
    await receiver.subscribe("rpc/request", 1)
    props = properties(PacketTypes.PUBLISH, PayloadFormatIndicator=1, ContentType="text/plain",
                       ResponseTopic="rpc/reply", CorrelationData=b"\x01\x02", MessageExpiryInterval=100,
                       UserProperty=[("trace", "abc"), ("from", "someone-else")])
    await sender.publish("rpc/request", "ping", 1, properties=props)
    got = await receiver.next_message()
    p = got.properties
    assert (p.PayloadFormatIndicator, p.ContentType, p.ResponseTopic, p.CorrelationData) == (
        1, "text/plain", "rpc/reply", b"\x01\x02")
    assert 0 < p.MessageExpiryInterval <= 100
    assert got.user == (("from", "sender"), ("trace", "abc"))


async def test_a_will_delay_ends_with_the_session(server: Server, clients: Clients) -> None:
    """5.0 [MQTT-3.1.3-9]: published at the earlier of the Will Delay and the session's end;
    with a Session Expiry of 0 that is the moment the connection drops."""
    watcher = await clients("watcher", version=V5)
    await watcher.subscribe("wills/#", 1)
    doomed = Paho(server.port, "doomed", version=V5)
    await doomed.connect(will=("wills/doomed", b"gone", 1, False),
                         will_properties=properties(PacketTypes.WILLMESSAGE, WillDelayInterval=300))
    await clients("doomed", version=V5)  # takeover: no DISCONNECT from the old connection
    got = await watcher.next_message()
    assert (got.topic, got.payload) == ("wills/doomed", b"gone")
    await doomed.stop()


async def test_status_counts_the_brokers_sessions(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("mqtt", "command"))
    client = Paho(server.port, "counted", version=V5)
    try:
        await client.connect()
        await client.subscribe("a", 1)
        await client.subscribe("b", 1)
        await client.publish("sensors/temp", "21.5", 1, retain=True)
        if isinstance(server.hub, RedisHub):  # the cluster's count, as a heartbeat reads it
            server.hub.directory.on_beat()
            await server.hub.sync()
        async with websockets.connect(ws_url(server), subprotocols=["command"]) as operator:  # type: ignore[list-item]
            await operator.send("status --json")
            status = json.loads(await recv(operator))
        assert (status["mqtt_sessions"], status["mqtt_subscriptions"], status["mqtt_dropped"],
                status["mqtt_queued"], status["mqtt_retained"]) == (1, 2, 0, 0, 1)
    finally:
        await client.stop()


@VERSIONS
async def test_a_shared_subscription_group_gets_each_message_once(clients: Clients,
                                                                 version: MQTTProtocolVersion) -> None:
    """5.0 §4.8.2: ``$share/GROUP/FILTER``: the members take turns; a plain subscriber of
    the same filter gets everything."""
    workers = [await clients(f"worker-{n}", version=version) for n in range(2)]
    for worker in workers:
        await worker.subscribe("$share/pool/jobs/+", 1)
    auditor = await clients("auditor", version=version)
    await auditor.subscribe("jobs/+", 1)
    sender = await clients("sender", version=version)
    for n in range(4):
        await sender.publish(f"jobs/{n}", str(n), 1)
    seen = [(await auditor.next_message()).payload for _ in range(4)]
    assert seen == [b"0", b"1", b"2", b"3"]
    shares = [[(await worker.next_message()).payload for _ in range(2)] for worker in workers]
    assert sorted(shares[0] + shares[1]) == [b"0", b"1", b"2", b"3"]  # each once, two each


@VERSIONS
async def test_with_users_the_password_must_match(start_server: ServerFactory, tmp_path: Path,
                                                  version: MQTTProtocolVersion) -> None:
    """SPEC §11, §15: CONNACK 0x04 (3.1.1) or 0x86 (5.0) for a wrong password."""
    users = tmp_path / "users.toml"
    users.write_text(f'[users]\nalice = "{hash_password("s3cret", n=16, r=1, p=1)}"\n')
    server = await start_server(protocols=("mqtt",), users_file=str(users))
    wrong = Paho(server.port, "w", version=version)
    wrong.client.username_pw_set("alice", "guess")
    reason, _, _ = await wrong.connect()
    assert int(reason.value) in (0x86, 0x04) and reason.is_failure
    await wrong.stop()
    right = Paho(server.port, "r", version=version)
    right.client.username_pw_set("alice", "s3cret")
    reason, _, _ = await right.connect()
    assert reason == 0
    await right.stop()


async def test_a_5_client_taken_over_hears_disconnect_0x8e(clients: Clients) -> None:
    """5.0 §3.1.4: the old connection gets DISCONNECT 0x8E (Session taken over), then the close."""
    old = await clients("twin", version=V5)
    await clients("twin", version=V5)
    reason = await old.wait_disconnected()
    assert int(reason.value) == 0x8E


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_a_5_client_taken_over_from_another_node_hears_disconnect_0x8e(
        start_server: ServerFactory) -> None:
    """5.0 §3.1.4 across nodes: the holder's node says 0x8E before it closes the connection."""
    first_node = await start_server(protocols=PROTOCOLS)
    second_node = await start_server(protocols=PROTOCOLS)
    old = Paho(first_node.port, "roaming", version=V5)
    new = Paho(second_node.port, "roaming", version=V5)
    try:
        await old.connect()
        reason, _, _ = await new.connect()
        assert reason == 0
        assert int((await old.wait_disconnected()).value) == 0x8E
    finally:
        await asyncio.gather(old.stop(), new.stop())


async def test_a_kicked_5_client_hears_disconnect_0x98(start_server: ServerFactory) -> None:
    """5.0 §3.14.2.1: an operator's ``kick`` is DISCONNECT 0x98 (Administrative action)."""
    server = await start_server(protocols=("mqtt", "command"), admin_token="tok")
    client = Paho(server.port, "unwanted", version=V5)
    try:
        await client.connect()
        session_id = await server.hub.lookup_name("mqtt", "unwanted")
        async with websockets.connect(ws_url(server), subprotocols=["command"]) as operator:  # type: ignore[list-item]
            await operator.send("auth tok")
            assert await recv(operator) == "ok: authenticated"
            await operator.send(f"kick {session_id}")
            assert await recv(operator) == f"ok: kicked {session_id}"
        assert int((await client.wait_disconnected()).value) == 0x98
    finally:
        await client.stop()


async def test_retain_handling(clients: Clients) -> None:
    """5.0 §3.8.3.1: Retain Handling 0 sends the retained message at every subscribe, 1 only
    when the subscription is new, 2 never."""
    sender = await clients("sender", version=V5)
    await sender.publish("rh/x", "kept", 1, retain=True)
    client = await clients("rh", version=V5)
    await client.subscribe("rh/x", options=SubscribeOptions(qos=1, retainHandling=1))
    assert (await client.next_message()).payload == b"kept"  # new: sent
    await client.subscribe("rh/x", options=SubscribeOptions(qos=1, retainHandling=1))  # not new
    await client.subscribe("rh/+", options=SubscribeOptions(qos=1, retainHandling=2))  # never
    await client.subscribe("rh/#", options=SubscribeOptions(qos=1, retainHandling=0))  # always
    got = await client.next_message()
    assert (got.payload, got.retain) == (b"kept", True)
    await sender.publish("rh/marker", "m", 1)
    assert (await client.next_message()).topic == "rh/marker"  # nothing retained in between


@VERSIONS
async def test_mqtt_on_the_root_path_too(server: Server, version: MQTTProtocolVersion) -> None:
    """SPEC §11: an upgrade with the subprotocol mqtt is accepted on / as on /mqtt."""
    client = Paho(server.port, "rooted", version=version, path="/")
    try:
        reason, _, _ = await client.connect()
        assert reason == 0
        await client.subscribe("root/t", 1)
        await client.publish("root/t", "here", 1)
        assert (await client.next_message()).payload == b"here"
    finally:
        await client.stop()


async def test_a_payload_that_is_not_the_utf8_it_says_is_refused_with_0x99(clients: Clients) -> None:
    """5.0 §3.3.2.3.2: Payload Format Indicator 1 and a payload that is not UTF-8: PUBACK
    0x99 (Payload format invalid), not published."""
    receiver = await clients("receiver", version=V5)
    await receiver.subscribe("fmt", 1)
    sender = await clients("sender", version=V5)
    utf8 = properties(PacketTypes.PUBLISH, PayloadFormatIndicator=1)
    assert int((await sender.publish("fmt", b"\xff\xfe", 1, properties=utf8)).value) == 0x99
    assert int((await sender.publish("fmt", "fine", 1, properties=utf8)).value) == 0
    got = await receiver.next_message()
    assert (got.payload, got.properties.PayloadFormatIndicator) == (b"fine", 1)


async def test_a_shared_subscription_group_changes_hands_when_its_owner_leaves(clients: Clients) -> None:
    """One member owns the group (the node that delivers to it); when it unsubscribes,
    another member takes the group before the UNSUBACK, so nothing published later is lost."""
    first = await clients("first", version=V5)
    second = await clients("second", version=V5)
    await first.subscribe("$share/pool/work", 1)
    await second.subscribe("$share/pool/work", 1)
    sender = await clients("sender", version=V5)
    await sender.publish("work", "0", 1)
    await sender.publish("work", "1", 1)
    assert [(await first.next_message()).payload, (await second.next_message()).payload] == [b"0", b"1"]
    await first.unsubscribe("$share/pool/work")
    await sender.publish("work", "2", 1)
    await sender.publish("work", "3", 1)
    assert [(await second.next_message()).payload for _ in range(2)] == [b"2", b"3"]


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_a_shared_subscription_group_across_nodes_gets_each_message_once(
        start_server: ServerFactory) -> None:
    """5.0 §4.8.2 with --redis: one member of the cluster owns the group and only its node
    delivers, so members on two nodes get each message once between them."""
    first_node = await start_server(protocols=PROTOCOLS)
    second_node = await start_server(protocols=PROTOCOLS)
    workers = [Paho(node.port, f"worker-{n}", version=V5) for n, node in enumerate((first_node, second_node))]
    sender = Paho(first_node.port, "sender", version=V5)
    try:
        for worker in workers:
            await worker.connect()
            await worker.subscribe("$share/pool/jobs/+", 1)
            await worker.subscribe("flush", 1)
        await sender.connect()
        for n in range(4):
            await sender.publish(f"jobs/{n}", str(n), 1)
        await sender.publish("flush", "", 1)  # after the jobs on every node: per-publisher order
        seen: list[bytes] = []
        for worker in workers:
            while (got := await worker.next_message()).topic != "flush":
                seen.append(got.payload)
        assert sorted(seen) == [b"0", b"1", b"2", b"3"]
    finally:
        await asyncio.gather(sender.stop(), *(worker.stop() for worker in workers))
