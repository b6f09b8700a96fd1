"""Session hooks: coroutine hooks start at once (eagerly) and still keep message order.

A coroutine hook runs inline up to its first real wait; one that never waits
(the in-memory hub's directory calls) finishes without a task. One that does
wait holds the session's later messages back until it is done.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from support import ServerFactory, ws_url
from wsplex.app import Context, HookResult, Protocol, Session
from wsplex.app.session import BACKLOG_EVENTS
from wsplex.server import Server

GATE = [Subprotocol("gate")]


class Gate(Protocol):
    """``wait`` blocks on a gate another client opens with ``open``."""

    name = "gate"
    description = "Hooks that wait, and hooks that do not."
    help = "wait, open, inline, boom-now, or any text to have it echoed."

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.gate = asyncio.Event()

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        if message == "wait":
            return self._wait(session)
        if message == "open":
            self.gate.set()
            session.send_text("opened")
            return None
        if message == "inline":
            return self._inline(session)
        if message == "boom-now":
            return self._boom()
        session.send_text(f"echo {message!s}")
        return None

    async def _wait(self, session: Session) -> None:
        session.send_text("waiting")
        await self.gate.wait()
        session.send_text("released")

    async def _inline(self, session: Session) -> None:
        await self._no_wait()
        session.send_text("inline done")

    async def _no_wait(self) -> None:
        """A coroutine that returns without ever suspending, like MemoryHub's calls."""

    async def _boom(self) -> None:
        raise RuntimeError("boom before any await")


async def gate_server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=("gate",), protocol_modules=("test_session:Gate",))


async def test_a_waiting_hook_holds_later_messages_back(start_server: ServerFactory) -> None:
    server = await gate_server(start_server)
    async with connect(ws_url(server), subprotocols=GATE) as a, \
            connect(ws_url(server), subprotocols=GATE) as b:
        await a.send("wait")
        await a.send("one")
        await a.send("two")
        assert await a.recv() == "waiting"
        await b.send("open")
        assert await b.recv() == "opened"
        assert [await a.recv() for _ in range(3)] == ["released", "echo one", "echo two"]


async def test_a_hook_that_never_waits_keeps_order(start_server: ServerFactory) -> None:
    server = await gate_server(start_server)
    async with connect(ws_url(server), subprotocols=["gate"]) as ws:  # type: ignore[list-item]
        for text in ("inline", "one", "inline", "two"):
            await ws.send(text)
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(4)]
        assert got == ["inline done", "echo one", "inline done", "echo two"]


async def test_a_coroutine_raising_before_its_first_await_closes_1011(start_server: ServerFactory) -> None:
    server = await gate_server(start_server)
    async with connect(ws_url(server), subprotocols=GATE) as ws, \
            connect(ws_url(server), subprotocols=GATE) as other:
        await ws.send("boom-now")
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1011
        else:
            raise AssertionError("the connection stayed open")
        await other.send("still here")
        assert await other.recv() == "echo still here"


async def test_a_session_far_behind_is_not_read_until_it_catches_up(start_server: ServerFactory) -> None:
    """Issue 17 item 8: past BACKLOG_EVENTS waiting messages the connection is not read
    (counted in /metrics); once its hook is done every message is handled, in order."""
    server = await gate_server(start_server)
    async with connect(ws_url(server), subprotocols=GATE) as a, \
            connect(ws_url(server), subprotocols=GATE) as b:
        await a.send("wait")
        assert await a.recv() == "waiting"
        count = BACKLOG_EVENTS + 50
        for n in range(count):
            await a.send(f"m{n}")
        await b.send("echo")  # a bystander is served meanwhile
        assert await b.recv() == "echo echo"
        await b.send("open")
        assert await b.recv() == "opened"
        assert await a.recv() == "released"
        assert [await a.recv() for _ in range(count)] == [f"echo m{n}" for n in range(count)]
        await a.send("after")  # reading resumed
        assert await a.recv() == "echo after"
    assert server.stats.reads_paused >= 1
