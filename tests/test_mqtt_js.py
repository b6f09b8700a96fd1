"""mqtt.js under Node against the broker, end to end (SPEC §11): the library browser
dashboards use, over WebSocket on ``/mqtt``, beside a chat client and paho-mqtt.

``tests/js/mqtt_client.mjs`` takes JSON commands on stdin and prints JSON events;
``scripts/test.sh`` installs its ``node_modules`` (``npm ci`` in ``tests/js``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import websockets

from support import ServerFactory, ws_url
from support.mqtt import V5, Paho
from support.node import NodeClient
from wsplex.server import Server

TIMEOUT = 10.0


Start = Callable[[str, int], Coroutine[Any, Any, NodeClient]]


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=("mqtt", "chat"))


@pytest.fixture
async def mqtt_js(server: Server) -> AsyncIterator[Start]:
    started: list[NodeClient] = []

    async def start(client_id: str, version: int) -> NodeClient:
        client = await NodeClient.start("mqtt_client.mjs", ws_url(server, "/mqtt"), client_id,
                                        str(version), timeout=TIMEOUT)
        started.append(client)
        assert (await client.event("connected"))["returnCode"] == 0
        return client

    yield start
    for client in started:
        await client.stop()


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])
async def test_mqtt_js_talks_in_a_chat_room(server: Server, mqtt_js: Start, version: int) -> None:
    dashboard = await mqtt_js("dashboard", version)
    await dashboard.command("subscribe", topic="chat/+", qos=1)
    assert (await dashboard.event("subscribed"))["granted"][0]["qos"] == 1
    async with websockets.connect(ws_url(server, "/?name=alice"), subprotocols=["chat"]) as alice:  # type: ignore[list-item]
        await alice.send("/who")
        assert await asyncio.wait_for(alice.recv(), TIMEOUT) == "* in lobby: alice"
        await alice.send("hello dashboard")
        message = await dashboard.event("message")
        assert (message["topic"], message["payload"], message["qos"]) == ("chat/lobby", "hello dashboard", 0)
        if version == 5:
            assert message["user"] == {"from": "chat:alice"}
        await dashboard.command("publish", topic="chat/lobby", payload="hello alice", qos=2)
        assert await asyncio.wait_for(alice.recv(), TIMEOUT) == "[mqtt:dashboard] hello alice"
        events = {event["event"]: event for event in [await dashboard.next(), await dashboard.next()]}
        assert events["published"]["error"] is None  # the QoS 2 exchange completed
        assert (events["message"]["payload"], events["message"]["qos"]) == ("hello alice", 1)  # chat/+
    await dashboard.command("end")
    await dashboard.event("closed")


async def test_mqtt_js_and_paho_at_qos_1_and_retained(server: Server, mqtt_js: Start) -> None:
    js = await mqtt_js("js", 5)
    await js.command("publish", topic="sensors/temp", payload="21.5", qos=1, retain=True)
    assert (await js.event("published"))["error"] is None
    paho = Paho(server.port, "paho", version=V5)
    try:
        await paho.connect()
        await paho.subscribe("sensors/#", 1)
        retained = await paho.next_message()
        assert (retained.payload, retained.retain, retained.qos) == (b"21.5", True, 1)
        await js.command("subscribe", topic="replies", qos=1)
        await js.event("subscribed")
        await paho.publish("replies", "got it", 1)
        message = await js.event("message")
        assert (message["payload"], message["qos"], message["user"]) == ("got it", 1, {"from": "paho"})
    finally:
        await paho.stop()
