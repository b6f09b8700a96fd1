"""autobahn-js under Node against wsplex, end to end (SPEC §13), beside a chat client and
Autobahn for Python: pub/sub with the chat room ``lobby`` (realm1 is the topic space) and
RPC in both directions, over ``wamp.2.json`` and ``wamp.2.msgpack``.

``tests/js/wamp_client.mjs`` takes JSON commands on stdin and prints JSON events;
``scripts/test.sh`` installs its ``node_modules`` (``npm ci`` in ``tests/js``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from autobahn.wamp.types import EventDetails, PublishOptions

from support import ServerFactory
from support.node import NodeClient
from support.wamp import SERIALIZERS, TIMEOUT, make, wamp_client, wamp_clients
from test_wamp import chat, other, subscribe
from wsplex.protocols.wamp.router import META_ROLES, ROLES
from wsplex.server import Server

PROTOCOLS = ("wamp.2.json", "wamp.2.msgpack", "chat")


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=PROTOCOLS)


@pytest.fixture
async def autobahn_js(server: Server) -> AsyncIterator[Callable[[str], Any]]:
    """``await autobahn_js("msgpack")``: an autobahn-js session joined to realm1."""
    clients: list[NodeClient] = []

    async def spawn(serializer: str) -> tuple[NodeClient, dict[str, Any]]:
        client = await NodeClient.start("wamp_client.mjs", f"ws://127.0.0.1:{server.port}/", "realm1",
                                        serializer, timeout=TIMEOUT)
        clients.append(client)
        return client, await client.event("joined")

    yield spawn
    for client in clients:
        await client.stop()


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_autobahn_js_pubsub_with_python_and_the_chat_room(
    server: Server, autobahn_js: Callable[[str], Any], hub: str, serializer: str
) -> None:
    js, joined = await autobahn_js(serializer)
    assert joined["protocol"] == f"wamp.2.{serializer}"
    assert joined["roles"] == (META_ROLES if hub == "memory" else ROLES)  # realm1 spans a cluster
    await js.command("subscribe", id="lobby", topic="chat.lobby")
    await js.event("subscribed")
    await js.command("subscribe", id="news", topic="com.example", options={"match": "prefix"})
    await js.event("subscribed")
    alice = await chat(server, "alice")
    async with wamp_clients(server) as opened:
        python = await wamp_client(server, other(serializer))
        opened.append(python)
        inbox = await subscribe(python, "com.example.news")

        await alice.send("hi from chat")
        line = await js.event("event")
        assert (line["id"], line["args"]) == ("lobby", ["hi from chat"])
        assert line["publisher_authid"] == "chat:alice"

        await python.publish("com.example.news", "from python", 2, flag=True,
                             options=make(PublishOptions, acknowledge=True))
        news = await js.event("event")
        assert (news["id"], news["args"], news["kwargs"]) == ("news", ["from python", 2], {"flag": True})
        assert news["topic"] == "com.example.news"

        await js.command("publish", id="p1", topic="com.example.news", args=["from js", [1, 2]],
                         kwargs={"k": "v"})
        await js.event("published")
        args, kwargs = await inbox.next()
        assert args == ("from js", [1, 2]) and isinstance(kwargs.pop("details"), EventDetails)
        assert kwargs == {"k": "v"}

        await js.command("publish", id="p2", topic="chat.lobby", args=["hi from js"])
        await js.event("published")
        assert await asyncio.wait_for(alice.recv(), TIMEOUT) == f"[wamp:{joined['session']}] hi from js"
    await alice.close()
    await js.command("leave")
    assert (await js.event("closed"))["reason"] == "closed"


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_autobahn_js_calls_python_and_python_calls_autobahn_js(
    server: Server, autobahn_js: Callable[[str], Any], serializer: str
) -> None:
    js, _ = await autobahn_js(serializer)
    async with wamp_clients(server) as opened:
        python = await wamp_client(server, other(serializer))
        opened.append(python)
        await python.register(lambda a, b: a + b, "com.example.add")
        await js.command("call", id="c1", procedure="com.example.add", args=[2, 3])
        assert (await js.event("result"))["args"] == [5]
        await js.command("call", id="c2", procedure="com.example.nobody")
        assert (await js.event("error"))["error"] == "wamp.error.no_such_procedure"

        await js.command("register", id="r1", procedure="com.example.js.", options={"match": "prefix"})
        await js.event("registered")
        call = asyncio.ensure_future(python.call("com.example.js.greet", "bob", punctuation="!"))
        invocation = await js.event("invocation")
        assert (invocation["args"], invocation["kwargs"]) == (["bob"], {"punctuation": "!"})
        assert invocation["procedure"] == "com.example.js.greet"
        await js.command("yield", invocation=invocation["invocation"], args=["hello bob!"])
        assert await asyncio.wait_for(call, TIMEOUT) == "hello bob!"
    await js.command("leave")
    await js.event("closed")


async def test_autobahn_js_sessions_of_both_serialisations_talk(autobahn_js: Callable[[str], Any]) -> None:
    callee, _ = await autobahn_js("msgpack")
    caller, _ = await autobahn_js("json")
    await callee.command("register", id="r", procedure="com.example.echo")
    await callee.event("registered")
    await caller.command("call", id="c", procedure="com.example.echo", args=["x", 1.5], kwargs={"n": None})
    invocation = await callee.event("invocation")
    await callee.command("yield", invocation=invocation["invocation"], args=invocation["args"],
                         kwargs=invocation["kwargs"])
    result = await caller.event("result")
    assert (result["args"], result["kwargs"]) == (["x", 1.5], {"n": None})

