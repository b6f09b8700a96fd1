"""@stomp/stompjs under Node against wsplex, end to end (SPEC §12), beside a chat client and
stomp.py: the library as a browser application uses it, with its default subprotocol offer
(``v10.stomp``, ``v11.stomp``, ``v12.stomp``) and ``accept-version:1.2,1.1,1.0``.

``tests/js/stomp_client.mjs`` takes JSON commands on stdin and prints JSON events;
``scripts/test.sh`` installs its ``node_modules`` (``npm ci`` in ``tests/js``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from support import ServerFactory, ws_url
from support.stomp import StompPy
from wsplex.server import Server

SCRIPT = Path(__file__).parent / "js" / "stomp_client.mjs"
TIMEOUT = 10.0


def node_command() -> list[str]:
    """``node``, with the flag that gives Node 20 its WebSocket (later versions have it built in)."""
    built_in = subprocess.run(["node", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                              check=False).returncode == 0
    return ["node"] if built_in else ["node", "--experimental-websocket"]


class StompJs:
    """The Node process of one @stomp/stompjs client."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def command(self, op: str, **arguments: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}).encode() + b"\n")
        await self.process.stdin.drain()

    async def event(self, kind: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
        assert line, "the stompjs client exited"
        event: dict[str, Any] = json.loads(line)
        assert event["event"] == kind, event
        return event


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=("chat", "v10.stomp", "v11.stomp", "v12.stomp"))


@pytest.fixture
async def stompjs(server: Server) -> AsyncIterator[StompJs]:
    process = await asyncio.create_subprocess_exec(
        *node_command(), str(SCRIPT), ws_url(server),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    client = StompJs(process)
    yield client
    if process.returncode is None:
        process.kill()
    await process.wait()


async def test_stompjs_talks_to_chat_and_to_a_queue(server: Server, stompjs: StompJs) -> None:
    connected = await stompjs.event("connected")
    assert connected["headers"]["version"] == "1.2"  # on the v10.stomp name it was given
    await stompjs.command("subscribe", destination="/topic/chat/lobby", id="room", receipt="s1")
    await stompjs.event("receipt")

    async with connect(ws_url(server, "/?name=alice"), subprotocols=[Subprotocol("chat")]) as alice:
        await alice.send("/who")
        while not str(await asyncio.wait_for(alice.recv(), TIMEOUT)).startswith("* in lobby"):
            pass
        await alice.send("hi from chat")
        message = await stompjs.event("message")
        assert message["body"] == "hi from chat"
        assert message["headers"]["from"] == "chat:alice"
        assert message["headers"]["destination"] == "/topic/chat/lobby"

        await stompjs.command("send", destination="/topic/chat/lobby", body="hi from stompjs",
                              receipt="p1")
        assert (await stompjs.event("message"))["body"] == "hi from stompjs"  # it hears itself
        await stompjs.event("receipt")
        line = await asyncio.wait_for(alice.recv(), TIMEOUT)
        assert line == f"[stomp:{connected['headers']['session']}] hi from stompjs"

    producer = StompPy(server)
    await producer.connect()
    await stompjs.command("subscribe", destination="/queue/jobs", id="jobs",
                          ack="client-individual", receipt="s2")
    await stompjs.event("receipt")
    await producer.send("/queue/jobs", "job 1", **{"content-type": "text/plain"})
    job = await stompjs.event("message")
    assert (job["body"], job["headers"]["subscription"]) == ("job 1", "jobs")
    await stompjs.command("nack", messageId=job["headers"]["message-id"])
    again = await stompjs.event("message")  # alone on the queue: it comes back to us
    assert (again["body"], again["headers"]["redelivered"]) == ("job 1", "true")
    await stompjs.command("ack", messageId=again["headers"]["message-id"])
    await producer.disconnect()

    await stompjs.command("disconnect")
    assert (await stompjs.event("closed"))["code"] == 1000
