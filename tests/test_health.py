"""``/healthz`` follows a bounded round trip to Redis (issue 17 item 13).

A Redis frozen with SIGSTOP keeps its TCP connections open and answers
nothing: only a PING with a deadline tells. The node must say 503 with why,
its clients' requests must not wait on it, and it must say 200 again once
Redis answers (SIGCONT). Polls have a deadline; nothing is timed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from support import RedisProcess, http_get
from wsplex.config import Settings
from wsplex.server import Server

DEADLINE = 30.0
TIMEOUT = 20.0


async def until(check: Callable[[], object], what: str) -> None:
    """Poll ``check`` until it is true, failing after :data:`DEADLINE` seconds."""
    deadline = time.monotonic() + DEADLINE
    while not await check():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE:g} s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def node(redis_process: RedisProcess) -> AsyncIterator[Server]:
    server = Server(Settings(host="127.0.0.1", port=0, shutdown_timeout=2.0, protocols=("chat",),
                             redis_url=redis_process.url, redis_ping_timeout=0.5))
    await server.start()
    yield server
    assert redis_process.proc is not None
    redis_process.proc.send_signal(signal.SIGCONT)  # however the test ended
    await server.stop()


async def recv(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    return message


async def joined(ws: ClientConnection, room: str) -> None:
    await ws.send(f"/join {room}")
    while await recv(ws) != "* alice joined":
        pass


async def test_healthz_is_503_while_redis_is_frozen_and_200_once_it_answers(
        node: Server, redis_process: RedisProcess) -> None:
    base = f"http://127.0.0.1:{node.port}"
    status, body = await http_get(f"{base}/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert "wsplex_redis_up 1.0" in (await http_get(f"{base}/metrics"))[1]
    async with connect(f"ws://127.0.0.1:{node.port}/?name=alice",
                       subprotocols=[Subprotocol("chat")]) as alice:
        await joined(alice, "before")
        assert redis_process.proc is not None
        redis_process.proc.send_signal(signal.SIGSTOP)

        async def unhealthy() -> bool:
            return (await http_get(f"{base}/healthz"))[0] == 503

        await until(unhealthy, "/healthz 503 with Redis frozen")
        status, body = await http_get(f"{base}/healthz")
        reply = json.loads(body)
        assert status == 503 and reply["status"] == "degraded: redis unavailable"
        assert reply["reason"].startswith("redis not answering for ")
        assert "wsplex_redis_up 0.0" in (await http_get(f"{base}/metrics"))[1]
        await joined(alice, "during")  # answered from this node alone, not after Redis wakes

        redis_process.proc.send_signal(signal.SIGCONT)

        async def healthy() -> bool:
            return (await http_get(f"{base}/healthz"))[0] == 200

        await until(healthy, "/healthz 200 once Redis answers again")
        assert "wsplex_redis_up 1.0" in (await http_get(f"{base}/metrics"))[1]
        await joined(alice, "after")
