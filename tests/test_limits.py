"""SPEC §8 limits end to end: each one refuses with a clear status or close code."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support import ServerFactory, ws_url
from support.rawws import RawClient, frame_bytes, upgrade_request
from test_bad_input import upgraded
from wsplex.http.admission import ConnectionCounter, Refusal, header_size, origin_allowed
from wsplex.transport.pacing import FrameRate
from wsplex.ws.close import CloseCode
from wsplex.ws.frames import Opcode


async def echo_round_trip(url: str, text: str = "still here") -> None:
    async with connect(url, subprotocols=[websockets.Subprotocol("echo")]) as ws:
        await ws.send(text)
        assert await asyncio.wait_for(ws.recv(), 5) == text


# -- the rules on their own ---------------------------------------------------


def test_counter_caps_total_and_per_address() -> None:
    counter = ConnectionCounter(max_total=3, max_per_address=2)
    assert counter.admit("a") is None
    assert counter.admit("a") is None
    refused = counter.admit("a")
    assert refused is not None and refused.reason is Refusal.MAX_CONNECTIONS_PER_IP
    assert refused.status == 503
    assert counter.admit("b") is None
    refused = counter.admit("c")
    assert refused is not None and refused.reason is Refusal.MAX_CONNECTIONS
    counter.release("a")
    assert counter.admit("c") is None
    for address in ("a", "b", "c"):
        counter.release(address)
    assert counter.total == 0 and counter.from_address("a") == 0


def test_message_rate_window() -> None:
    rate = FrameRate(limit=2, now=100.0)
    rate.count = 3
    assert rate.exceeded(100.5, lag=0.0)  # the third message within the first second
    assert not rate.exceeded(101.0, lag=0.0)  # a second later: a new window, counting this one
    assert rate.count == 1 and rate.window_start == 101.0


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("https://example.com", True),
        ("HTTPS://EXAMPLE.COM", True),
        ("https://chat.example.org", True),
        ("https://example.org", False),
        ("https://example.com.evil.net", False),
        ("null", False),
    ],
)
def test_origin_globs(origin: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, ["https://example.com", "https://*.example.org"]) is allowed


def test_header_size_counts_the_wire_bytes() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nA: bc\r\n"
    assert header_size(b"GET", b"/", b"HTTP/1.1", [("Host", "x"), ("A", "bc")]) == len(raw)


# -- connections ----------------------------------------------------------------


async def test_per_address_limit_refuses_with_503(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_connections_per_ip=2)
    url = ws_url(server)
    first = await connect(url, subprotocols=[websockets.Subprotocol("echo")])
    second = await connect(url, subprotocols=[websockets.Subprotocol("echo")])
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, subprotocols=[websockets.Subprotocol("echo")])
    assert refused.value.response.status_code == 503
    assert b"too many connections from 127.0.0.1" in refused.value.response.body
    assert server.stats.refusals[Refusal.MAX_CONNECTIONS_PER_IP] == 1
    await first.close()
    await second.close()
    await echo_round_trip(url)  # the slots were released
    assert server.counter.total == 0


async def test_total_limit_refuses_with_503(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_connections=1)
    url = ws_url(server)
    async with connect(url, subprotocols=[websockets.Subprotocol("echo")]) as ws:
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, subprotocols=[websockets.Subprotocol("echo")])
        assert refused.value.response.status_code == 503
        assert b"server full" in refused.value.response.body
        await ws.send("bystander")
        assert await ws.recv() == "bystander"
    assert server.stats.refusals[Refusal.MAX_CONNECTIONS] == 1


async def test_slot_released_when_picows_refuses_after_us(start_server: ServerFactory) -> None:
    """A request we accept but picows then refuses (no key) must not leak its slot."""
    server = await start_server(protocols=("echo",), max_connections=1)
    client = await RawClient.open(server.port)
    request = upgrade_request(server.port, ["echo"]).replace(b"Sec-WebSocket-Key", b"X-Not-A-Key")
    client.send(request)
    assert (await client.read_response()).status == 400
    assert await client.at_eof()
    await client.close()
    await echo_round_trip(ws_url(server))


# -- message rate ---------------------------------------------------------------


async def test_message_flood_closes_with_1008(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_messages_per_second=20)
    client = await upgraded(server.port)
    client.send(b"".join(frame_bytes(Opcode.TEXT, b"x") for _ in range(200)))
    close = (await client.recv_until_close())[1]
    assert close.close_code == CloseCode.POLICY_VIOLATION
    assert close.close_reason == "more than 20 messages per second"
    await client.close()
    await echo_round_trip(ws_url(server))


async def test_ping_flood_counts_as_messages(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_messages_per_second=20)
    client = await upgraded(server.port)
    client.send(b"".join(frame_bytes(Opcode.PING, b"p") for _ in range(200)))
    pongs = 0
    while (received := await client.recv_frame()).opcode == Opcode.PONG:
        assert received.payload == b"p"
        pongs += 1
    assert received.opcode == Opcode.CLOSE and received.close_code == CloseCode.POLICY_VIOLATION
    assert pongs == 20
    await client.close()


async def test_normal_traffic_is_not_limited(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_messages_per_second=50)
    async with connect(ws_url(server), subprotocols=[websockets.Subprotocol("echo")]) as ws:
        for i in range(40):
            await ws.send(str(i))
        assert [await ws.recv() for _ in range(40)] == [str(i) for i in range(40)]


# -- handshake --------------------------------------------------------------------


async def test_slowloris_gets_408_and_is_dropped(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), handshake_timeout=0.5)
    client = await RawClient.open(server.port)
    request = upgrade_request(server.port, ["echo"])
    client.send(request[:20])  # and never the rest
    response = await client.read_response()
    assert response.status == 408
    assert b"handshake not completed within 0.5 s" in response.body
    assert await client.at_eof()
    assert server.stats.refusals[Refusal.HANDSHAKE_TIMEOUT] == 1
    await echo_round_trip(ws_url(server))


async def test_idle_tcp_connection_is_dropped(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), handshake_timeout=0.3)
    client = await RawClient.open(server.port)
    assert (await client.read_response()).status == 408
    assert await client.at_eof()


async def test_headers_over_the_limit_get_431(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_header_size=1024)
    client = await RawClient.open(server.port)
    client.send(upgrade_request(server.port, ["echo"], extra_headers=f"X-Big: {'a' * 1100}\r\n"))
    response = await client.read_response()
    assert response.status == 431
    assert b"request headers larger than 1024 bytes" in response.body
    await client.close()
    assert server.stats.refusals[Refusal.HEADER_SIZE] == 1
    await echo_round_trip(ws_url(server))


async def test_headers_over_picows_cap_get_431(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    client = await RawClient.open(server.port)
    client.send(upgrade_request(server.port, ["echo"], extra_headers=f"X-Big: {'a' * 17000}\r\n"))
    response = await client.read_response()
    assert response.status == 431
    assert b"larger than 16384 bytes" in response.body
    assert await client.at_eof()
    assert server.stats.refusals[Refusal.HEADER_SIZE] == 1
    await echo_round_trip(ws_url(server))


# -- origin -----------------------------------------------------------------------


async def test_origin_allow_list(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), origins=("https://*.example.com",))
    url = ws_url(server)
    echo = [websockets.Subprotocol("echo")]
    async with connect(url, subprotocols=echo, origin=websockets.Origin("https://app.example.com")) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, subprotocols=echo, origin=websockets.Origin("https://evil.net"))
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"origin https://evil.net is not allowed\n"
    assert server.stats.refusals[Refusal.ORIGIN] == 1
    await echo_round_trip(url)  # no Origin header: a non-browser client, allowed


# -- the never-reader -------------------------------------------------------------


async def test_unread_pongs_are_capped(start_server: ServerFactory) -> None:
    """A client that pings and never reads its pongs is a slow consumer too."""
    server = await start_server(protocols=("echo",), max_send_buffer=32 * 1024, max_message_size=8192,
                                close_timeout=30.0,
                                max_messages_per_second=10_000_000)
    client = await upgraded(server.port)
    pings = frame_bytes(Opcode.PING, b"x" * 125) * 100
    for _ in range(5000):  # up to 63 MB of pongs; the kernel buffers hold a few MB
        if server.stats.slow_consumer_drops:
            break
        client.send(pings)
        await client.writer.drain()
    assert server.stats.slow_consumer_drops == 1
    close = (await client.recv_until_close())[1]
    assert close.close_code == CloseCode.POLICY_VIOLATION and close.close_reason == "slow consumer"
    await client.close()
