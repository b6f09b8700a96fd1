"""STOMP 1.0-1.2 end to end (SPEC §12, the STOMP 1.2 specification): stomp.py over WebSocket,
and raw frames over the ``websockets`` client where the bytes matter.

Every test runs on both hubs. Queues live on one node (their tests use one
server); topics cross nodes on Redis (two servers of one cluster). "Nothing
else arrived" is shown with a receipt: STOMP keeps a connection's frames in
order, so when the receipt of a later frame comes first, nothing came before it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from support import ServerFactory, ws_url
from support.mqtt import Paho
from support.stomp import RawStomp, StompPy
from wsplex.app.users import hash_password
from wsplex.server import Server

STOMP = ("v12.stomp", "v11.stomp", "v10.stomp")
TIMEOUT = 5.0


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=("chat", "JSONsvc", *STOMP))


@pytest.fixture
async def nodes(start_server: ServerFactory, server: Server) -> tuple[Server, Server]:
    """Two nodes of one cluster on Redis; the one server twice on the memory hub."""
    if server.settings.redis_url:
        return server, await start_server(protocols=("chat", "JSONsvc", *STOMP))
    return server, server


async def stomp_py(server: Server, protocol: str = "v12.stomp", *, binary: bool = False) -> StompPy:
    client = StompPy(server, protocol, binary=binary)
    await client.connect()
    return client


async def nothing_else(client: StompPy) -> None:
    """The next event is the receipt of a frame sent now: nothing else was on its way."""
    receipt = client.receipt_id()
    client.conn.begin(transaction="marker", headers={"receipt": receipt})
    await client.receipt(id=receipt)
    client.conn.abort(transaction="marker")


# -- CONNECT (STOMP 1.2 "Connecting", "Protocol Negotiation") --------------------------


@pytest.mark.parametrize(
    ("accept", "version"), [("1.2", "1.2"), ("1.0,1.1", "1.1"), ("1.1,1.2,2.0", "1.2"), (None, "1.0")]
)
async def test_connected_negotiates_the_version(server: Server, accept: str | None, version: str) -> None:
    raw = await RawStomp.open(server, "v10.stomp")  # the name does not cap the version
    headers = {"host": "test"} if accept is None else {"accept-version": accept, "host": "test"}
    await raw.frame("CONNECT", headers)
    connected = await raw.next()
    assert connected.command == "CONNECTED"
    assert connected.get("version") == version
    assert (connected.get("server") or "").startswith("wsplex/")
    assert connected.get("session")
    await raw.close()


async def test_stomp_frame_connects_and_heart_beat_is_announced(start_server: ServerFactory) -> None:
    server = await start_server(protocols=STOMP, stomp_heart_beat=4000)
    raw = await RawStomp.open(server)
    await raw.frame("STOMP", {"accept-version": "1.2", "host": "test"})
    connected = await raw.next()
    assert (connected.command, connected.get("heart-beat")) == ("CONNECTED", "4000,4000")
    await raw.close()


async def test_no_common_version_is_an_error_naming_ours(server: Server) -> None:
    raw = await RawStomp.open(server)
    await raw.frame("CONNECT", {"accept-version": "2.0,3.1", "host": "test"})
    error = await raw.next()
    assert error.command == "ERROR"
    assert error.get("version") == "1.0,1.1,1.2"
    assert b"1.0 1.1 1.2" in error.body
    assert await raw.closed() == 1002


async def test_a_frame_before_connect_is_an_error(server: Server) -> None:
    raw = await RawStomp.open(server)
    await raw.frame("SEND", {"destination": "/topic/a"}, b"x")
    error = await raw.next()
    assert error.command == "ERROR" and "CONNECT" in (error.get("message") or "")
    assert await raw.closed() == 1002


# -- topics and the topic space (SPEC §10, §12) -----------------------------------------


async def test_topic_round_trip_with_headers_and_receipts(nodes: tuple[Server, Server]) -> None:
    sender, receiver = await stomp_py(nodes[0]), await stomp_py(nodes[1])
    await receiver.subscribe("/topic/sensors/+", id="7")
    await sender.send("/topic/sensors/temp", "21.5", **{"x-unit": "C:elsius", "content-type": "text/plain"})
    message = await receiver.message()
    assert message.headers["destination"] == "/topic/sensors/temp"
    assert message.headers["subscription"] == "7"
    assert message.headers["message-id"]
    assert message.headers["x-unit"] == "C:elsius"  # escaped on the wire as \c, and back
    assert message.headers["content-type"] == "text/plain"
    assert message.body == b"21.5"
    assert message.headers["from"] == sender.session  # a STOMP sender, to STOMP: its bare id
    await sender.disconnect()
    await receiver.disconnect()


async def test_sender_identity_is_the_servers(server: Server) -> None:
    client = await stomp_py(server)
    await client.subscribe("/topic/me", id="1")
    client.conn.send("/topic/me", "hi", headers={"from": "chat:admin"})  # its own subscriber
    message = await client.message()
    assert client.session and message.headers["from"] == client.session  # its own: the bare id
    await client.disconnect()


async def test_wildcards_and_overlap_deliver_once(server: Server) -> None:
    client, sender = await stomp_py(server), await stomp_py(server)
    await client.subscribe("/topic/a/#", id="all")
    await client.subscribe("/topic/a/b", id="exact")
    await sender.send("/topic/a/b", "one")
    message = await client.message()
    assert message.headers["subscription"] == "all"  # the oldest matching subscription
    await nothing_else(client)
    receipt = client.receipt_id()
    client.conn.unsubscribe("all", headers={"receipt": receipt})
    await client.receipt(id=receipt)
    await sender.send("/topic/a/b", "two")
    assert (await client.message()).headers["subscription"] == "exact"
    await sender.send("/topic/a/c", "three")  # no subscription left that matches
    await nothing_else(client)
    await client.disconnect()
    await sender.disconnect()


async def test_chat_room_lines_reach_stomp_and_back(nodes: tuple[Server, Server]) -> None:
    client = await stomp_py(nodes[1])
    await client.subscribe("/topic/chat/lobby", id="room")
    async with connect(ws_url(nodes[0], "/?name=alice"), subprotocols=[Subprotocol("chat")]) as alice:
        await alice.send("/who")
        while not str(await asyncio.wait_for(alice.recv(), TIMEOUT)).startswith("* in lobby"):
            pass
        await alice.send("hi")
        message = await client.message()
        assert message.body == b"hi"
        assert message.headers["from"] == "chat:alice"
        assert message.headers["destination"] == "/topic/chat/lobby"
        assert message.headers["content-type"] == "text/plain;charset=utf-8"
        client.conn.send("/topic/chat/lobby", "hello alice")  # the client hears itself too
        assert (await client.message()).body == b"hello alice"
        line = await asyncio.wait_for(alice.recv(), TIMEOUT)
        assert isinstance(line, str) and line.startswith("[stomp:") and line.endswith("] hello alice")
    await client.disconnect()


async def test_send_reaches_jsonsvc_requesters(nodes: tuple[Server, Server]) -> None:
    client = await stomp_py(nodes[0])
    async with connect(ws_url(nodes[1]), subprotocols=[Subprotocol("JSONsvc")]) as dash:
        await dash.send(json.dumps({"from": "dash", "requests": "sensors/temp"}))
        await dash.send(json.dumps({"from": "dash", "to": "JSONsvc", "cmd": "whoami"}))
        assert json.loads(await asyncio.wait_for(dash.recv(), TIMEOUT))["name"] == "dash"
        await client.send("/topic/sensors/temp", "21.5")
        got = await asyncio.wait_for(dash.recv(), TIMEOUT)
        assert isinstance(got, str)
        head, _, payload = got.partition(">")
        assert payload == "21.5"
        assert json.loads(head)["put"] == "sensors/temp"
        assert json.loads(head)["from"].startswith("stomp:")
    await client.disconnect()


async def test_binary_bodies_go_in_binary_messages(server: Server) -> None:
    raw = await RawStomp.open(server)
    await raw.connect()
    await raw.frame("SUBSCRIBE", {"id": "1", "destination": "/topic/bin", "receipt": "s"})
    assert (await raw.next()).command == "RECEIPT"
    body = b"\x00\xff\x00 not utf-8"
    await raw.frame("SEND", {"destination": "/topic/bin"}, body)
    message = await raw.raw()
    assert isinstance(message, bytes)
    [frame] = raw.parser.feed(message)
    assert frame.body == body and frame.get("content-length") == str(len(body))
    await raw.close()


# -- the wire: pieces, packing, escaping, NUL (STOMP 1.2 "STOMP Frames") -----------------


async def test_frames_split_across_and_packed_into_messages(server: Server) -> None:
    raw = await RawStomp.open(server)
    await raw.connect()
    wire = (b"SUBSCRIBE\nid:1\ndestination:/topic/p\n\n\0"
            b"SEND\ndestination:/topic/p\ncontent-length:7\n\na\0b\0c\0d\0\n"
            b"SEND\ndestination:/topic/p\nreceipt:done\n\nlast\0")
    for start in range(0, len(wire), 9):  # binary and text pieces, cut anywhere
        piece = wire[start : start + 9]
        await raw.send(piece if start % 2 else piece.decode())
    first, second, receipt = await raw.next(), await raw.next(), await raw.next()
    assert (first.command, first.body) == ("MESSAGE", b"a\0b\0c\0d")
    assert (second.command, second.body) == ("MESSAGE", b"last")
    assert (receipt.command, receipt.get("receipt-id")) == ("RECEIPT", "done")
    await raw.close()


async def test_header_escaping_between_versions(server: Server) -> None:
    v11 = await RawStomp.open(server, "v11.stomp")
    await v11.connect(**{"accept-version": "1.1"})
    v10 = await RawStomp.open(server, "v10.stomp")
    await v10.connect(**{"accept-version": "1.0"})
    v12 = await stomp_py(server)
    await v12.subscribe("/topic/esc", id="1")
    await v10.frame("SUBSCRIBE", {"destination": "/topic/esc", "receipt": "s"})  # 1.0: no id needed
    assert (await v10.next()).command == "RECEIPT"
    await v11.send(b"SEND\ndestination:/topic/esc\nx-note:a\\cb\\nc\\\\d\n\nhi\0")
    assert (await v12.message()).headers["x-note"] == "a:b\nc\\d"
    raw_message = await v10.raw()
    assert isinstance(raw_message, str)
    assert "\nx-note:a:b c\\d\n" in raw_message  # 1.0 has no escapes: LF flattened
    assert "\nsubscription:/topic/esc\n" in raw_message
    await v12.disconnect()
    await v10.close()
    await v11.close()


# -- errors: ERROR with a message, then the close; nobody else touched ---------------------


@pytest.mark.parametrize(
    ("wire", "fragment"),
    [
        (b"FLY\n\n\0", "unknown command FLY"),
        (b"SEND\n\nno destination\0", "SEND needs a destination header"),
        (b"SEND\ndestination:/exchange/x\n\n\0", "unknown destination"),
        (b"SUBSCRIBE\ndestination:/topic/a\n\n\0", "SUBSCRIBE needs an id header"),
        (b"SUBSCRIBE\nid:1\ndestination:/topic/a/#/b\n\n\0", "invalid destination"),
        (b"SUBSCRIBE\nid:1\nack:sometimes\ndestination:/topic/a\n\n\0", "invalid ack mode"),
        (b"SEND\ndestination:/topic/a+\n\n\0", "invalid destination"),
        (b"SEND\ndestination:/topic/a\nh:\\t\n\n\0", "undefined escape"),
        (b"SEND\ndestination:/topic/a\ncontent-length:x\n\n\0", "invalid content-length"),
        (b"COMMIT\ntransaction:never\n\n\0", "unknown transaction"),
        (b"BEGIN\n\n\0", "BEGIN needs a transaction header"),
        (b"ACK\n\n\0", "ACK needs a id header"),
        (b"ACK\nid:1\n\nbody\0", "must not have a body"),
        (b"CONNECT\naccept-version:1.2\n\n\0", "unknown command CONNECT"),
    ],
)
async def test_bad_frames_get_error_then_close(server: Server, wire: bytes, fragment: str) -> None:
    bystander = await stomp_py(server)
    await bystander.subscribe("/topic/still", id="1")
    raw = await RawStomp.open(server)
    await raw.connect()
    await raw.send(wire)
    error = await raw.next()
    assert error.command == "ERROR"
    assert fragment in (error.get("message") or ""), error
    assert await raw.closed() == 1002
    bystander.conn.send("/topic/still", "alive")  # heard by itself
    assert (await bystander.message()).body == b"alive"
    await bystander.disconnect()


async def test_error_names_the_destination_prefixes_and_the_receipt(server: Server) -> None:
    raw = await RawStomp.open(server)
    await raw.connect()
    await raw.frame("SEND", {"destination": "/amq/x", "receipt": "42"}, b"x")
    error = await raw.next()
    assert error.get("receipt-id") == "42"
    assert b"/topic/NAME" in error.body and b"/queue/NAME" in error.body
    assert await raw.closed() == 1002


async def test_nack_is_not_stomp_10(server: Server) -> None:
    raw = await RawStomp.open(server, "v10.stomp")
    await raw.frame("CONNECT", {"host": "test"})
    assert (await raw.next()).get("version") == "1.0"
    await raw.frame("NACK", {"message-id": "1"})
    assert "unknown command NACK" in ((await raw.next()).get("message") or "")
    assert await raw.closed() == 1002


async def test_frame_over_the_size_limit(start_server: ServerFactory) -> None:
    server = await start_server(protocols=STOMP, stomp_max_frame_size=1024)
    raw = await RawStomp.open(server)
    await raw.connect()
    await raw.frame("SEND", {"destination": "/topic/big"}, b"x" * 2000)
    error = await raw.next()
    assert error.command == "ERROR" and "larger than 1024" in (error.get("message") or "")
    assert await raw.closed() == 1002


# -- DISCONNECT and heart-beats (STOMP 1.2 "DISCONNECT", "Heart-beating") ------------------


async def test_disconnect_with_receipt(server: Server) -> None:
    raw = await RawStomp.open(server)
    await raw.connect()
    await raw.frame("DISCONNECT", {"receipt": "bye"})
    receipt = await raw.next()
    assert (receipt.command, receipt.get("receipt-id")) == ("RECEIPT", "bye")
    assert await raw.closed() == 1000


async def test_a_client_that_misses_its_heart_beats_is_disconnected(start_server: ServerFactory) -> None:
    server = await start_server(protocols=STOMP, stomp_heart_beat=50)
    raw = await RawStomp.open(server)
    connected = await raw.connect(**{"heart-beat": "50,0"})  # promises a beat every 50 ms, sends none
    assert connected.get("heart-beat") == "50,50"
    error = await raw.next()
    assert error.command == "ERROR" and error.get("message") == "heart-beat timeout"
    assert await raw.closed() == 1002


async def test_the_server_sends_heart_beats(start_server: ServerFactory) -> None:
    server = await start_server(protocols=STOMP, stomp_heart_beat=50)
    raw = await RawStomp.open(server)
    await raw.connect(**{"heart-beat": "0,50"})  # wants one every 50 ms, sends none itself
    for _ in range(3):
        assert await raw.raw() == "\n"
    await raw.close()


async def test_heart_beats_keep_a_client_alive(start_server: ServerFactory) -> None:
    server = await start_server(protocols=STOMP, stomp_heart_beat=50)
    raw = await RawStomp.open(server)
    await raw.connect(**{"heart-beat": "50,50"})
    beats = 0
    while beats < 6:  # each of the server's beats is answered with one of ours
        assert await raw.raw() == "\n"
        await raw.send("\n")
        beats += 1
    await raw.frame("DISCONNECT", {"receipt": "still-here"})
    assert (await raw.next()).get("receipt-id") == "still-here"
    await raw.close()


# -- --users (SPEC §15): login and passcode ----------------------------------------------


@pytest.mark.parametrize(("login", "passcode", "accepted"),
                         [("alice", "s3cret", True), ("alice", "wrong", False), (None, None, False)])
async def test_users_log_in_with_login_and_passcode(
    start_server: ServerFactory, tmp_path: Path, login: str | None, passcode: str | None, accepted: bool
) -> None:
    users = tmp_path / "users.toml"
    users.write_text(f'[users]\nalice = "{hash_password("s3cret", n=16, r=1, p=1)}"\n')
    server = await start_server(protocols=STOMP, users_file=str(users))
    raw = await RawStomp.open(server)
    credentials = {"login": login, "passcode": passcode} if login and passcode else {}
    await raw.frame("CONNECT", {"accept-version": "1.2", "host": "test", **credentials})
    await raw.frame("DISCONNECT", {"receipt": "bye"})  # waits behind the check
    reply = await raw.next()
    if accepted:
        assert reply.command == "CONNECTED"
        assert (await raw.next()).get("receipt-id") == "bye"
        assert await raw.closed() == 1000
    else:
        assert (reply.command, reply.get("message")) == ("ERROR", "authentication failed")
        assert await raw.closed() == 1002


async def test_mqtt_and_stomp_hear_each_other(start_server: ServerFactory) -> None:
    one = await start_server(protocols=("mqtt", *STOMP))
    two = await start_server(protocols=("mqtt", *STOMP)) if one.settings.redis_url else one
    sensor = Paho(two.port, "sensor-1")
    await sensor.connect()
    await sensor.subscribe("sensors/#")
    client = await stomp_py(one)
    await client.subscribe("/topic/sensors/+", id="s")
    client.conn.send("/topic/sensors/setpoint", "22")
    assert (await client.message()).body == b"22"  # its own subscription hears it too
    got = await sensor.next_message()
    assert (got.topic, got.payload) == ("sensors/setpoint", b"22")
    await sensor.publish("sensors/temp", b"21.5")
    message = await client.message()
    assert (message.headers["destination"], message.body) == ("/topic/sensors/temp", b"21.5")
    assert message.headers["from"] == "mqtt:sensor-1"
    await sensor.disconnect()
    await client.disconnect()


async def test_stomp_py_heart_beats_both_ways(start_server: ServerFactory) -> None:
    """stomp.py beats every 100 ms and wants ours as often: six of the server's beats (half
    a second) come while the server, which drops a client silent for 200 ms, keeps it."""
    server = await start_server(protocols=STOMP, stomp_heart_beat=100)
    client = StompPy(server, heart_beats=(100, 100), binary=True)
    await client.connect()
    for _ in range(6):
        assert await client.event("HEARTBEAT") is None
    client.conn.send("/topic/alive", "yes", headers={"receipt": "r"})
    while True:  # the server's beats go on meanwhile
        got, frame = await asyncio.to_thread(client.events.get, timeout=TIMEOUT)
        if got != "HEARTBEAT":
            break
    assert (got, frame.headers["receipt-id"] if frame is not None else None) == ("RECEIPT", "r")
    await client.disconnect()
