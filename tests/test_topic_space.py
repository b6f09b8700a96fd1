"""One topic space for every protocol (SPEC §10): chat, JSONsvc and echo hear each other.

Real clients (the ``websockets`` client) on real sockets; every case runs on
both hubs, and on Redis the clients sit on two nodes, so what crosses
protocols also crosses processes' hubs. "Nothing else arrived" is shown with
a marker: a message sent after the action on the same path must be the next
thing the client receives.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from support import ServerFactory, ws_url
from wsplex.server import Server

pytestmark = pytest.mark.both_hubs

TIMEOUT = 5.0
PROTOCOLS = ("echo", "chat", "command", "JSONsvc")
Open = Callable[..., Awaitable[ClientConnection]]


@pytest.fixture
async def nodes(start_server: ServerFactory) -> tuple[Server, Server]:
    """Two servers: on the Redis hub two nodes of one cluster, on the memory hub two
    separate servers of which the tests use only the first."""
    one = await start_server(protocols=PROTOCOLS)
    two = await start_server(protocols=PROTOCOLS) if one.settings.redis_url else one
    return one, two


@pytest.fixture
async def open_client(nodes: tuple[Server, Server]) -> AsyncIterator[Open]:
    """``await open_client("chat", node=1, path="/?name=alice")``."""
    opened: list[ClientConnection] = []

    async def open_one(protocol: str, node: int = 0, path: str = "/") -> ClientConnection:
        ws = await connect(ws_url(nodes[node], path), subprotocols=[Subprotocol(protocol)])
        opened.append(ws)
        return ws

    yield open_one
    for ws in opened:
        await ws.close()


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def recv_text(ws: ClientConnection) -> str:
    message = await recv(ws)
    assert isinstance(message, str), message
    return message


def header(data: dict[str, Any], payload: str | None = None) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text if payload is None else f"{text}>{payload}"


async def chat(open_client: Open, name: str, node: int = 0) -> ClientConnection:
    """A chat client in the lobby, past its own joining notice and history."""
    ws = await open_client("chat", node, f"/?name={name}")
    await ws.send("/who")  # answered after the join: the room is entered by then
    while not (await recv_text(ws)).startswith("* in lobby:"):
        pass
    return ws


async def jsonsvc(open_client: Open, name: str, node: int = 0, **keys: Any) -> ClientConnection:
    """A registered JSONsvc client that sent ``keys`` in its first message."""
    ws = await open_client("JSONsvc", node)
    await ws.send(header({"from": name, **keys}))
    await ws.send(header({"from": name, "to": "JSONsvc", "cmd": "whoami"}))
    reply = json.loads(await recv_text(ws))
    assert reply.get("name") == name, reply
    return ws


async def marker(ws: ClientConnection, name: str) -> None:
    """The next message is the answer to ``whoami``: nothing else came first."""
    await ws.send(header({"from": name, "to": "JSONsvc", "cmd": "whoami"}))
    assert json.loads(await recv_text(ws)).get("name") == name


async def chat_marker(ws: ClientConnection) -> None:
    await ws.send("/help")
    assert (await recv_text(ws)).startswith("* commands:")


async def test_jsonsvc_requester_hears_the_chat_room(open_client: Open) -> None:
    dash = await jsonsvc(open_client, "dash", requests="chat/lobby")
    alice = await chat(open_client, "alice", node=1)
    await alice.send("hi")
    assert await recv_text(dash) == '{"from":"chat:alice","put":"chat/lobby"}>hi'
    await alice.send("/join kitchen")  # notices are chat's own: they are not publications
    assert await recv_text(alice) == "* alice joined"
    await alice.send("second")  # said in the kitchen: not on chat/lobby
    await chat_marker(alice)
    await marker(dash, "dash")


async def test_jsonsvc_put_is_heard_in_the_room(open_client: Open) -> None:
    alice = await chat(open_client, "alice")
    dash = await jsonsvc(open_client, "dash", node=1)
    await dash.send(header({"from": "dash", "put": "chat/lobby"}, "hi from the dashboard"))
    assert await recv_text(alice) == "[JSONsvc:dash] hi from the dashboard"


async def test_jsonsvc_provider_reaches_requesters_as_itself(open_client: Open) -> None:
    dash = await jsonsvc(open_client, "dash", requests="temp")
    sensor = await jsonsvc(open_client, "sensor", node=1)
    await sensor.send(header({"from": "sensor", "put": "temp", "unit": "C"}, "21.5"))
    assert await recv_text(dash) == '{"from":"sensor","put":"temp","unit":"C"}>21.5'


async def test_room_history_holds_every_protocols_lines(open_client: Open) -> None:
    alice = await chat(open_client, "alice")
    # dash hears "first" before it answers: on Redis the line is in the history then.
    dash = await jsonsvc(open_client, "dash", node=1, requests="chat/lobby")
    await alice.send("first")
    assert await recv_text(dash) == '{"from":"chat:alice","put":"chat/lobby"}>first'
    await dash.send(header({"from": "dash", "put": "chat/lobby"}, "second"))
    assert await recv_text(alice) == "[JSONsvc:dash] second"
    bob = await open_client("chat", 1, "/?name=bob")
    assert [await recv_text(bob) for _ in range(4)] == [
        "* history: 2 messages", "[alice] first", "[JSONsvc:dash] second", "* end of history",
    ]


async def test_requests_take_filters(open_client: Open) -> None:
    one = await jsonsvc(open_client, "one", requests="sensors/+")
    deep = await jsonsvc(open_client, "deep", requests=["sensors/#"])
    sensor = await jsonsvc(open_client, "sensor", node=1)
    await sensor.send(header({"from": "sensor", "put": "sensors/temp"}, "21"))
    await sensor.send(header({"from": "sensor", "put": "sensors/kitchen/temp"}, "19"))
    await sensor.send(header({"from": "sensor", "put": "other"}, "x"))
    assert await recv_text(one) == '{"from":"sensor","put":"sensors/temp"}>21'
    await marker(one, "one")  # sensors/kitchen/temp is two levels below sensors/
    assert [await recv_text(deep) for _ in range(2)] == [
        '{"from":"sensor","put":"sensors/temp"}>21',
        '{"from":"sensor","put":"sensors/kitchen/temp"}>19',
    ]
    await marker(deep, "deep")


async def test_overlapping_filters_deliver_once(open_client: Open) -> None:
    dash = await jsonsvc(open_client, "dash", requests=["sensors/temp", "sensors/+", "#", "sensors/#"])
    sensor = await jsonsvc(open_client, "sensor", node=1)
    await sensor.send(header({"from": "sensor", "put": "sensors/temp"}, "21"))
    assert await recv_text(dash) == '{"from":"sensor","put":"sensors/temp"}>21'
    await marker(dash, "dash")


async def test_echo_is_topic_echo(open_client: Open) -> None:
    listener = await jsonsvc(open_client, "listener", requests="echo")
    echo = await open_client("echo", 1)
    await echo.send("ping")
    assert await recv(echo) == "ping"  # echo clients still hear themselves
    heard = await recv_text(listener)
    prefix = '{"from":"echo:'
    assert heard.startswith(prefix) and heard.endswith('","put":"echo"}>ping'), heard
    await listener.send(header({"from": "listener", "put": "echo"}, "from JSONsvc"))
    assert await recv(echo) == "from JSONsvc"


async def test_text_protocols_skip_binary_that_is_not_utf8(
    open_client: Open, nodes: tuple[Server, Server]
) -> None:
    listener = await jsonsvc(open_client, "listener", requests="echo")
    echo = await open_client("echo", 1)
    await echo.send(b"\xff\xfe not text")
    assert await recv(echo) == b"\xff\xfe not text"
    await echo.send(b"utf-8 bytes")  # binary but valid UTF-8: a text protocol can show it
    assert await recv(echo) == b"utf-8 bytes"
    assert (await recv_text(listener)).endswith('"put":"echo"}>utf-8 bytes')
    await marker(listener, "listener")
    metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{nodes[0].port}/metrics")
    assert 'wsplex_publications_not_text_total{protocol="JSONsvc"} 1.0' in metrics


async def test_get_answers_from_the_retained_publication(open_client: Open) -> None:
    # The phone requests the topic too: having received a publication, it finds it
    # retained (a Redis hub writes the retained value before publishing).
    phone = await jsonsvc(open_client, "phone", node=1, requests="sensors/temp")
    sensor = await jsonsvc(open_client, "sensor")
    await sensor.send(header({"from": "sensor", "put": "sensors/temp"}, "21.5"))
    assert await recv_text(phone) == '{"from":"sensor","put":"sensors/temp"}>21.5'
    await phone.send(header({"from": "phone", "get": "sensors/temp"}))
    assert await recv_text(phone) == '{"from":"sensor","put":"sensors/temp"}>21.5'
    await sensor.send(header({"from": "sensor", "put": "sensors/temp"}))  # empty: clears the value
    assert await recv_text(phone) == '{"from":"sensor","put":"sensors/temp"}'
    await phone.send(header({"from": "phone", "get": "sensors/temp"}))  # no value: asks the provider
    assert await recv_text(sensor) == '{"from":"phone","get":"sensors/temp"}'


async def test_chat_lines_are_not_retained(open_client: Open) -> None:
    alice = await chat(open_client, "alice")
    await alice.send("hello")
    await chat_marker(alice)
    phone = await jsonsvc(open_client, "phone", node=1)
    await phone.send(header({"from": "phone", "get": "chat/lobby"}))
    assert "has no provider" in json.loads(await recv_text(phone))["error"]


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ({"put": "sensors/+"}, '"put": topic \'sensors/+\' contains a wildcard'),
        ({"get": "a/#"}, '"get": topic \'a/#\' contains a wildcard'),
        ({"requests": "a/#/b"}, '"requests": filter \'a/#/b\': # must be a whole level'),
        ({"requests": "a+"}, '"requests": filter \'a+\': + must be a whole level'),
        ({"put": "$SYS/uptime"}, "reserved for the server"),
        ({"provides": "$SYS/x"}, "reserved for the server"),
    ],
)
async def test_bad_topics_are_refused(open_client: Open, keys: dict[str, str], fragment: str) -> None:
    dash = await jsonsvc(open_client, "dash")
    await dash.send(header({"from": "dash", **keys}, "x"))
    reply = json.loads(await recv_text(dash))
    assert reply["from"] == "JSONsvc" and fragment in reply["error"], reply


async def test_names_with_a_colon_are_refused(open_client: Open) -> None:
    ws = await open_client("chat", 0, "/?name=chat:alice")
    assert (await recv_text(ws)).startswith("! invalid name: names are 1-32 printable characters")
    js = await open_client("JSONsvc")
    await js.send(header({"from": "chat:alice"}))
    assert "without ':'" in json.loads(await recv_text(js))["error"]


async def test_rooms_must_be_one_topic_level(open_client: Open) -> None:
    alice = await chat(open_client, "alice")
    for room in ("a/b", "a+", "#"):
        await alice.send(f"/join {room}")
        assert (await recv_text(alice)).startswith("! invalid room:")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_subscriptions_per_connection_are_capped(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS, max_subscriptions=3)
    async with connect(ws_url(server), subprotocols=[Subprotocol("JSONsvc")]) as dash:
        await dash.send(header({"from": "dash", "requests": ["a", "b", "c"]}))
        await marker(dash, "dash")  # three: at the cap, accepted silently
        await dash.send(header({"from": "dash", "requests": ["c", "d", "e"]}))
        reply = json.loads(await recv_text(dash))
        assert reply["error"] == "too many services for one connection: refused 'd', 'e'", reply
        async with connect(ws_url(server), subprotocols=[Subprotocol("JSONsvc")]) as sensor:
            await sensor.send(header({"from": "sensor", "put": "c"}, "still heard"))
            assert await recv_text(dash) == '{"from":"sensor","put":"c"}>still heard'
        metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/metrics")
        assert "wsplex_subscriptions_refused_total 2.0" in metrics


async def test_listings_are_rate_limited(open_client: Open) -> None:
    alice = await chat(open_client, "alice")  # one /who spent already
    for _ in range(9):
        await alice.send("/rooms")
        assert (await recv_text(alice)).startswith("* rooms: lobby (1)")
    await alice.send("/rooms")
    assert (await recv_text(alice)).startswith("! too many listings; try again in ")
    dash = await jsonsvc(open_client, "dash")
    for _ in range(10):
        await dash.send(header({"from": "dash", "to": "JSONsvc", "cmd": "clients"}))
        assert json.loads(await recv_text(dash))["clients"] == ["dash"]
    await dash.send(header({"from": "dash", "to": "JSONsvc", "cmd": "services"}))
    assert json.loads(await recv_text(dash))["error"].startswith("too many listings; try again in ")


async def test_joins_are_rate_limited(open_client: Open) -> None:
    alice = await chat(open_client, "alice")
    for n in range(10):
        await alice.send(f"/join room{n}")
        assert await recv_text(alice) == "* alice joined"
    await alice.send("/join one-too-many")
    assert (await recv_text(alice)).startswith("! too many /join; try again in ")


async def test_a_value_too_big_to_keep_is_still_pushed(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS, retained_value_size=4)
    async with connect(ws_url(server), subprotocols=[Subprotocol("JSONsvc")]) as dash, \
            connect(ws_url(server), subprotocols=[Subprotocol("JSONsvc")]) as sensor:
        await dash.send(header({"from": "dash", "requests": "big"}))
        await marker(dash, "dash")
        await sensor.send(header({"from": "sensor", "put": "big"}, "12345"))
        assert await recv_text(dash) == '{"from":"sensor","put":"big"}>12345'
        reply = json.loads(await recv_text(sensor))
        assert reply["error"].startswith("value of 'big' not kept"), reply
        await sensor.send(header({"from": "sensor", "get": "big"}))  # nothing kept: asks the provider
        assert await recv_text(sensor) == '{"from":"sensor","get":"big"}'
