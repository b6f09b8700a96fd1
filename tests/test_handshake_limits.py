"""Half-open TCP connections are counted per address (issue 17 item 9).

An address that connects and sends nothing holds a file descriptor per
connection until the handshake timeout. Past ``--max-handshakes-per-ip`` its
new connections are closed at once, while a bystander from another address
(127.0.0.1 against 127.0.0.2: loopback answers the whole 127/8) connects and
chats. Polls have a deadline; nothing is timed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from support import ServerFactory, ws_url
from wsplex.http.admission import HANDSHAKE_SPARE, ConnectionCounter, HandshakeCounter
from wsplex.server import Server

CAP = 4
DEADLINE = 20.0
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE:g} s: {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def idle() -> AsyncIterator[Callable[[Server, str], asyncio.Future[Streams]]]:
    """Open a TCP connection to a server from a given address and send nothing."""
    opened: list[asyncio.StreamWriter] = []

    def open_from(server: Server, host: str) -> asyncio.Future[Streams]:
        async def go() -> Streams:
            streams = await asyncio.open_connection("127.0.0.1", server.port, local_addr=(host, 0))
            opened.append(streams[1])
            return streams

        return asyncio.ensure_future(go())

    yield open_from
    for writer in opened:
        writer.close()


async def closed_at_once(reader: asyncio.StreamReader) -> bool:
    """The server ended the connection without a word (RST or FIN)."""
    try:
        return await asyncio.wait_for(reader.read(1), DEADLINE) == b""
    except ConnectionResetError:
        return True


async def chats(server: Server) -> None:
    async with connect(ws_url(server), subprotocols=[Subprotocol("echo")]) as bystander:
        await bystander.send("still here")
        assert await asyncio.wait_for(bystander.recv(), DEADLINE) == "still here"


async def test_an_address_past_its_half_open_cap_is_closed_at_once_while_others_chat(
        start_server: ServerFactory, idle: Callable[[Server, str], asyncio.Future[Streams]],
        caplog: pytest.LogCaptureFixture) -> None:
    server = await start_server(protocols=("echo",), max_handshakes_per_ip=CAP)
    handshakes = server.listener.handshakes
    held = [await idle(server, "127.0.0.2") for _ in range(CAP)]
    await until(lambda: handshakes.from_address("127.0.0.2") == CAP, "the idle connections counted")

    with caplog.at_level(logging.WARNING, logger="wsplex.server"):
        refused = [await idle(server, "127.0.0.2") for _ in range(20)]
        for reader, _ in refused:
            assert await closed_at_once(reader)
    warnings = [r.getMessage() for r in caplog.records if "closed at once" in r.getMessage()]
    assert warnings and "127.0.0.2" in warnings[0] and "--max-handshakes-per-ip" in warnings[0]
    assert len(warnings) < len(refused)  # one line a second, with a count
    assert server.stats.refusals["max_handshakes_per_ip"] == len(refused)
    assert handshakes.from_address("127.0.0.2") == CAP

    await chats(server)  # from 127.0.0.1: not this address's cap
    for _, writer in held:
        writer.close()
    await until(lambda: handshakes.from_address("127.0.0.2") == 0, "the closed ones released")
    assert handshakes.total == 0
    async with connect(ws_url(server), subprotocols=[Subprotocol("echo")]) as again:
        await again.send("back")
        assert await asyncio.wait_for(again.recv(), DEADLINE) == "back"


async def test_a_finished_handshake_is_no_longer_half_open(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_handshakes_per_ip=1)
    async with connect(ws_url(server), subprotocols=[Subprotocol("echo")]) as first, \
            connect(ws_url(server), subprotocols=[Subprotocol("echo")]) as second:
        await first.send("one")  # echo goes to every echo client
        assert [await first.recv(), await second.recv()] == ["one", "one"]
        assert server.listener.handshakes.total == 0


async def test_a_trusted_proxy_is_not_counted_per_address(
        start_server: ServerFactory, idle: Callable[[Server, str], asyncio.Future[Streams]]) -> None:
    server = await start_server(protocols=("echo",), max_handshakes_per_ip=CAP,
                                trusted_proxies=("127.0.0.3",))
    for _ in range(CAP + 2):
        await idle(server, "127.0.0.3")
    handshakes = server.listener.handshakes
    await until(lambda: handshakes.total == CAP + 2, "every connection of the proxy admitted")
    assert server.stats.refusals["max_handshakes_per_ip"] == 0


async def test_open_and_half_open_together_stay_under_the_connection_cap(
        start_server: ServerFactory, idle: Callable[[Server, str], asyncio.Future[Streams]]) -> None:
    """Many addresses, each under its cap: the descriptors still run out here, counted,
    not in accept()."""
    server = await start_server(protocols=("echo",), max_connections=2, max_handshakes_per_ip=CAP)
    async with connect(ws_url(server), subprotocols=[Subprotocol("echo")]) as open_one:
        ceiling = 2 + HANDSHAKE_SPARE - 1  # one slot is open_one's
        for n in range(ceiling):
            await idle(server, f"127.0.1.{1 + n // CAP}")
        handshakes = server.listener.handshakes
        await until(lambda: handshakes.total == ceiling, "the half-open ones counted")
        reader, _ = await idle(server, "127.0.2.1")
        assert await closed_at_once(reader)
        assert server.stats.refusals["max_handshakes"] == 1
        await open_one.send("open ones carry on")
        assert await asyncio.wait_for(open_one.recv(), DEADLINE) == "open ones carry on"


def test_the_counter_releases_what_it_admitted() -> None:
    """The rule on its own: per address, in all with the open ones, and the exemption."""
    connections = ConnectionCounter(max_total=2, max_per_address=10)
    handshakes = HandshakeCounter(2, connections)
    assert handshakes.admit("a") is None and handshakes.admit("a") is None
    refused = handshakes.admit("a")
    assert refused is not None and refused.reason == "max_handshakes_per_ip"
    assert handshakes.admit("a", per_address=False) is None  # a trusted proxy
    assert connections.admit("b") is None and connections.admit("c") is None
    for _ in range(HANDSHAKE_SPARE - 3):
        assert handshakes.admit("d", per_address=False) is None
    refused = handshakes.admit("e")
    assert refused is not None and refused.reason == "max_handshakes"
    handshakes.release("a")
    handshakes.release("a")
    assert handshakes.from_address("a") == 0 and handshakes.admit("e") is None
