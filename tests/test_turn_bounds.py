"""Issue 17 items 11, 12, 14: one connection's input is paced (``wsplex.transport.pacing``).

* the work handled for one connection per loop turn is bounded: a flood of
  pongs does not keep a bystander waiting for the whole flood;
* the frame rate counts by arrival: frames that piled up while the server was
  stalled are allowed for the stall, a flood at a responsive server is not;
* a client that floods pings and never reads stops being read once its pongs
  wait, so what is queued for it stays bounded.

The servers run on uvloop, as ``wsplex`` does (``on_uvloop``): it reads a readable
socket up to 32 times per callback round, which is what the turn budget is about.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop
import websockets
from websockets.asyncio.client import connect

from support import ws_url
from support.rawws import RawClient, frame_bytes
from test_bad_input import upgraded
from test_limits import echo_round_trip
from wsplex.config import Settings
from wsplex.server import Server
from wsplex.transport.connection import Connection
from wsplex.transport.listener import MAX_READ
from wsplex.transport.pacing import TICK, FrameRate, LoopLag, Pause
from wsplex.ws.close import CloseCode
from wsplex.ws.frames import Opcode

pytestmark = pytest.mark.memory_only("pacing lives in the transport: no hub involved")

ECHO = [websockets.Subprotocol("echo")]


def on_uvloop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on uvloop (pytest-asyncio's loop is asyncio's own)."""
    @functools.wraps(test)
    def run() -> None:
        uvloop.run(test())
    return run


@asynccontextmanager
async def serving(**overrides: Any) -> AsyncIterator[Server]:
    server = Server(Settings(host="127.0.0.1", port=0, shutdown_timeout=2.0, **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# -- the rules on their own -----------------------------------------------------------


def test_a_responsive_window_allows_exactly_the_limit() -> None:
    rate = FrameRate(limit=10, now=100.0, lag=5.0)
    rate.count = 11
    assert rate.exceeded(100.5, lag=5.0)


def test_a_stall_widens_the_window_by_its_length() -> None:
    rate = FrameRate(limit=10, now=100.0, lag=5.0)
    rate.count = 11
    assert not rate.exceeded(102.5, lag=7.0)  # two seconds stalled: 30 frames in 3 s
    assert rate.allowance == 30
    rate.count = 31
    assert rate.exceeded(102.6, lag=7.0)


def test_the_stall_of_the_window_before_is_credited_once() -> None:
    rate = FrameRate(limit=10, now=100.0, lag=5.0)
    rate.count = 11
    assert not rate.exceeded(103.0, lag=7.0)  # 1 s + 2 s stalled: a new window
    assert rate.count == 1 and rate.allowance == 30  # for what piled up in the stall
    rate.count = 31
    assert rate.exceeded(103.5, lag=7.0)
    rate.count = 11
    assert not rate.exceeded(104.0, lag=7.0)  # and the window after that: the plain limit
    assert rate.allowance == 10


def test_paused_reading_counts_as_a_stall() -> None:
    rate = FrameRate(limit=10, now=100.0, lag=0.0)
    rate.paused = 1.0
    rate.count = 20
    assert not rate.exceeded(100.5, lag=0.0)


async def test_the_loop_lag_clock_sees_a_blocked_loop() -> None:
    wanted = {"a connection"}
    published: list[float] = []
    lag = LoopLag(wanted, published.append)
    loop = asyncio.get_running_loop()
    lag.start(loop)
    time.sleep(4 * TICK)  # the loop is blocked: what the clock is for
    assert lag.now(loop.time()) > 0.0  # before the late tick has run
    while not published:
        await asyncio.sleep(TICK)
    assert lag.total == published[-1] > 0.0
    wanted.clear()
    while lag.running:  # the clock stops at a tick that finds nobody
        await asyncio.sleep(TICK)


# -- item 11: the work done for one connection per loop turn ------------------------


async def pong(client: RawClient) -> bytes:
    """The payload of the next pong; an echo client gets the others' messages too."""
    while (received := await client.recv_frame(timeout=60)).opcode != Opcode.PONG:
        pass
    return received.payload


@on_uvloop
async def test_a_pong_flood_does_not_hold_up_a_bystander() -> None:
    """3.6 MB of empty pongs is some 55 reads: a bystander's round trips come between them."""
    async with serving(protocols=("echo",), max_messages_per_second=10_000_000) as server:
        flooder = await upgraded(server.port)
        async with connect(ws_url(server), subprotocols=ECHO) as bystander:
            flooder.send(frame_bytes(Opcode.PONG, b"") * 600_000 + frame_bytes(Opcode.PING, b"end"))
            flood_done = asyncio.ensure_future(pong(flooder))
            for i in range(3):
                await bystander.send(f"round trip {i}")
                assert await bystander.recv() == f"round trip {i}"
            assert not flood_done.done()  # the bystander did not wait for the flood
            end = await flood_done
        assert end == b"end"
        assert server.stats.turn_yields > 0
        await flooder.close()


def test_a_flood_gets_one_read_per_loop_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """One read of empty pongs (11,000 frames) is past the budget: the connection rests
    until the next turn, where uvloop would have read it up to 32 times in this one."""
    frames_in_turn: dict[int, int] = {}
    turn = 0
    on_ws_frame = Connection.on_ws_frame

    def counted(connection: Connection, transport: Any, frame: Any) -> None:
        frames_in_turn[turn] = frames_in_turn.get(turn, 0) + 1
        on_ws_frame(connection, transport, frame)

    monkeypatch.setattr(Connection, "on_ws_frame", counted)

    async def flood() -> None:
        nonlocal turn
        loop = asyncio.get_running_loop()
        counting = True

        def next_turn() -> None:  # call_soon from a callback runs in the next loop turn
            nonlocal turn
            turn += 1
            if counting:
                loop.call_soon(next_turn)

        async with serving(protocols=("echo",), max_messages_per_second=10_000_000) as server:
            flooder = await upgraded(server.port)
            loop.call_soon(next_turn)
            flooder.send(frame_bytes(Opcode.PONG, b"") * 300_000 + frame_bytes(Opcode.PING, b"end"))
            assert await pong(flooder) == b"end"
            counting = False
            await flooder.close()
            assert server.stats.turn_yields >= 300_000 // 11_000

    uvloop.run(flood())
    one_read = MAX_READ // len(frame_bytes(Opcode.PONG, b"")) + 1
    assert sum(frames_in_turn.values()) == 300_001
    assert max(frames_in_turn.values()) <= one_read, sorted(frames_in_turn.values())[-5:]


@on_uvloop
async def test_a_budget_spent_in_one_read_rests_until_the_next_turn() -> None:
    async with serving(protocols=("echo",), read_per_turn=1024) as server:
        client = await upgraded(server.port)
        client.send(frame_bytes(Opcode.BINARY, b"b" * 2000))
        echoed = await client.recv_frame()
        assert echoed.payload == b"b" * 2000
        assert server.stats.turn_yields == 1
        (connection,) = server.listener.connections
        client.send_frame(Opcode.PING, b"next turn")  # read again: the rest was only a turn
        assert (await client.recv_frame()).payload == b"next turn"
        assert connection.paused == 0
        await client.close()


# -- item 12: the rate counts by arrival --------------------------------------------


@on_uvloop
async def test_frames_that_arrived_during_a_stall_are_not_a_flood() -> None:
    """900 pings reach the socket while the server is blocked for 1.5 s: within 400/s of it.

    Counted when handled, they would be 900 in an instant, twice the window's
    400 (the old window rolled over at the 401st and closed at the 801st).
    """
    async with serving(protocols=("echo",), max_messages_per_second=400) as server:
        client = await upgraded(server.port)
        client.send_frame(Opcode.PING, b"warm")
        assert (await client.recv_frame()).payload == b"warm"
        client.send(frame_bytes(Opcode.PING, b"p") * 900)  # into the socket at once
        time.sleep(1.5)  # the server's loop (this one) is stalled: the pings wait in the socket
        for _ in range(900):
            received = await client.recv_frame()
            assert (received.opcode, received.payload) == (Opcode.PONG, b"p")
        assert not server.stats.limit_closes
        # At a responsive server, the same burst is a flood.
        flooder = await upgraded(server.port)
        flooder.send(frame_bytes(Opcode.PING, b"p") * 900)
        close = (await flooder.recv_until_close())[1]
        assert (close.close_code, close.close_reason) == (
            CloseCode.POLICY_VIOLATION, "more than 400 messages per second")
        assert server.stats.limit_closes == {"rate": 1}
        client.send_frame(Opcode.PING, b"still open")
        assert (await client.recv_frame()).payload == b"still open"
        await client.close()
        await flooder.close()


# -- item 14: bytes queued for one connection -----------------------------------------


@on_uvloop
async def test_a_never_reading_ping_flooder_stops_being_read() -> None:
    async with serving(protocols=("echo",), max_messages_per_second=10_000_000,
                       max_send_buffer=4 << 20) as server:
        flooder = await upgraded(server.port)
        pings = frame_bytes(Opcode.PING, b"x" * 125) * 100
        for _ in range(5000):  # up to 63 MB of pongs, were it read on
            if server.stats.send_pauses:
                break
            flooder.send(pings)  # no drain(): once the server stops reading, it would never return
            await asyncio.sleep(0)  # the server's turn
        assert server.stats.send_pauses == 1
        (connection,) = server.listener.connections
        assert connection.paused & Pause.SEND
        assert connection.out is not None
        # The high-water mark plus what one read's pings make: nowhere near the 4 MiB cap.
        assert connection.out.get_write_buffer_size() <= 3 * 64 * 1024
        assert server.stats.slow_consumer_drops == 0
        await echo_round_trip(ws_url(server))  # a bystander is served meanwhile
        # It reads at last: its pongs drain and its pings are read again.
        flooder.send_frame(Opcode.PING, b"last")
        while (await flooder.recv_frame(timeout=30)).payload != b"last":
            pass  # its pongs, and the bystander's echo
        assert connection.paused == 0
        await flooder.close()


@on_uvloop
async def test_backlog_and_turn_pauses_do_not_undo_each_other() -> None:
    async with serving(protocols=("echo",)) as server:
        client = await upgraded(server.port)
        client.send_frame(Opcode.PING, b"up")
        assert (await client.recv_frame()).payload == b"up"
        (connection,) = server.listener.connections
        connection.pause_reading()  # the session's backlog
        connection._yield_turn()  # and a spent turn, resumed by call_soon
        assert connection.paused == Pause.BACKLOG | Pause.TURN
        client.send_frame(Opcode.PING, b"held")
        after_resume = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(after_resume.set_result, None)  # after the turn's resume
        await after_resume
        assert connection.paused == Pause.BACKLOG  # which left the backlog's pause alone
        connection.resume_reading()
        assert connection.paused == 0
        assert (await client.recv_frame()).payload == b"held"
        await client.close()


@on_uvloop
async def test_a_closing_connection_is_read_on() -> None:
    """Once a close frame is out, what the peer sends is discarded: reading it costs nothing,
    and not reading it would turn our FIN into a reset."""
    async with serving(protocols=("echo",)) as server:
        client = await upgraded(server.port)
        client.send_frame(Opcode.PING, b"up")
        assert (await client.recv_frame()).payload == b"up"
        (connection,) = server.listener.connections
        connection.pause_writing()
        assert connection.paused == Pause.SEND
        connection.close(CloseCode.GOING_AWAY, "bye")
        assert connection.paused == 0
        connection.pause_reading()
        assert connection.paused == 0
        close = (await client.recv_until_close())[1]
        assert close.close_code == CloseCode.GOING_AWAY
        await client.close()
