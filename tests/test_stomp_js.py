"""@stomp/stompjs under Node against wsplex, end to end (SPEC §12), beside a chat client and
stomp.py: the library as a browser application uses it, with its default subprotocol offer
(``v10.stomp``, ``v11.stomp``, ``v12.stomp``) and ``accept-version:1.2,1.1,1.0``.

``tests/js/stomp_client.mjs`` takes JSON commands on stdin and prints JSON events;
``scripts/test.sh`` installs its ``node_modules`` (``npm ci`` in ``tests/js``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from support import ServerFactory, ws_url
from support.node import NodeClient
from support.stomp import StompPy
from wsplex.server import Server

TIMEOUT = 10.0


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=("chat", "v10.stomp", "v11.stomp", "v12.stomp"))


@pytest.fixture
async def stompjs(server: Server) -> AsyncIterator[NodeClient]:
    client = await NodeClient.start("stomp_client.mjs", ws_url(server), timeout=TIMEOUT)
    yield client
    await client.stop()


async def test_stompjs_talks_to_chat_and_to_a_queue(server: Server, stompjs: NodeClient) -> None:
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
