"""Several wsplex nodes as one service through a real Redis (SPEC §9).

In-process nodes (``start_server`` on the Redis hub) for the protocol paths,
``wsplex`` processes (``spawn``) for what only processes can show: Redis
killed and restarted under them, a node killed with SIGKILL, ``--workers``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conftest import RedisProcess, ServerFactory, WsplexProcess, ws_url
from test_hub import join
from wsplex.hub.redis import RedisHub
from wsplex.wire import Outgoing

ECHO = ["echo"]
Spawn = Callable[..., WsplexProcess]


async def http_get(url: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    return await asyncio.to_thread(fetch)


async def open_echo(url: str) -> ClientConnection:
    return await connect(url, subprotocols=ECHO)  # type: ignore[list-item]


def node(spawn: Spawn, redis_url: str, *args: str) -> WsplexProcess:
    return spawn("--redis", redis_url, "--redis-ttl", "3", *args)  # connected before listening


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_echo_reaches_clients_on_every_node(start_server: ServerFactory) -> None:
    one, two = await start_server(protocols=("echo",)), await start_server(protocols=("echo",))
    async with (
        connect(ws_url(one), subprotocols=ECHO) as a,  # type: ignore[arg-type]
        connect(ws_url(two), subprotocols=ECHO) as b,  # type: ignore[arg-type]
    ):
        await a.send("from one")
        assert [await a.recv(), await b.recv()] == ["from one", "from one"]
        await b.send(b"\x00from two")
        assert [await a.recv(), await b.recv()] == [b"\x00from two"] * 2
        for i in range(100):
            await a.send(str(i))
        assert [await b.recv() for _ in range(100)] == [str(i) for i in range(100)]
        assert [await a.recv() for _ in range(100)] == [str(i) for i in range(100)]


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_healthz_names_the_node(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    status, body = await http_get(f"http://127.0.0.1:{server.port}/healthz")
    assert status == 200
    assert json.loads(body)["node"] == server.node_id


async def test_three_processes_are_one_echo_service(spawn: Spawn, clean_redis: str) -> None:
    nodes = [node(spawn, clean_redis, "--protocols", "echo") for _ in range(3)]
    clients = [await open_echo(n.url) for n in nodes]
    try:
        for sender in clients:
            await sender.send(f"hello from {clients.index(sender)}")
            for receiver in clients:
                assert await receiver.recv() == f"hello from {clients.index(sender)}"
    finally:
        for client in clients:
            await client.close()


async def test_redis_killed_and_restarted(spawn: Spawn, redis_process: RedisProcess) -> None:
    one = node(spawn, redis_process.url, "--protocols", "echo")
    two = node(spawn, redis_process.url, "--protocols", "echo")
    async with await open_echo(one.url) as a, await open_echo(two.url) as b:
        await a.send("before")
        assert [await a.recv(), await b.recv()] == ["before", "before"]

        redis_process.stop(signal.SIGKILL)
        one.read_until("redis unavailable")
        two.read_until("redis unavailable")
        status, body = await http_get(f"{one.http}/healthz")
        assert status == 503
        assert json.loads(body)["status"] == "degraded: redis unavailable"

        await a.send("during")  # a node keeps serving its own clients
        assert await a.recv() == "during"

        redis_process.start()
        one.read_until("redis connected")
        two.read_until("redis connected")
        assert (await http_get(f"{one.http}/healthz"))[0] == 200
        await b.send("after")  # resubscribed: fan-out across nodes resumes
        assert [await a.recv(), await b.recv()] == ["after", "after"]  # "during" was not queued


async def test_node_starts_degraded_without_redis(spawn: Spawn, redis_process: RedisProcess) -> None:
    url = redis_process.url
    redis_process.stop()
    lonely = spawn("--redis", url, "--protocols", "echo")  # listening after one failed attempt
    assert (await http_get(f"{lonely.http}/healthz"))[0] == 503
    async with await open_echo(lonely.url) as a:
        await a.send("alone")
        assert await a.recv() == "alone"
        redis_process.start()
        lonely.read_until("redis connected")
        assert (await http_get(f"{lonely.http}/healthz"))[0] == 200


async def test_workers_share_one_port(spawn: Spawn, clean_redis: str) -> None:
    parent = spawn("--redis", clean_redis, "--workers", "2", "--protocols", "echo", wait=False)
    parent.read_until("listening on")
    parent.read_until("listening on")  # both workers
    clients = [await open_echo(parent.url) for _ in range(6)]
    await clients[0].send("to all workers")
    for client in clients:
        assert await client.recv() == "to all workers"
    assert await asyncio.to_thread(parent.stop, signal.SIGTERM) == 0  # clients answer meanwhile
    for client in clients:
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.close_code == 1001


async def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for a state change nothing announces; the deadline is a guard, not a timing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


async def test_a_restarted_redis_gets_the_directory_back(redis_process: RedisProcess) -> None:
    a, b = RedisHub("aaaaaa", redis_process.url, ttl=5.0), RedisHub("bbbbbb", redis_process.url, ttl=5.0)
    await a.start()
    await b.start()
    try:
        alice, link = join(a, "chat", name="alice")
        a.subscribe("room", alice)
        assert await a.claim_name("chat", "alice", alice)

        redis_process.stop(signal.SIGKILL)
        await wait_until(lambda: not a.healthy and not b.healthy)
        assert a.stats.redis_disconnects == 1
        # Degraded: this node still answers for its own clients.
        assert await a.lookup_name("chat", "alice") == alice.id
        assert [c.id for c in await a.members("room")] == [alice.id]
        a.publish("room", Outgoing.text("local"))
        assert await link.next() == Outgoing.text("local").frame
        assert a.stats.redis_dropped == 1
        bob, _ = join(a, "chat")
        assert not await a.claim_name("chat", "alice", bob)

        redis_process.start()  # empty: no persistence
        await wait_until(lambda: a.healthy and b.healthy)
        await a.sync()
        assert await b.lookup_name("chat", "alice") == alice.id
        assert [(c.id, c.name) for c in await b.members("room")] == [(alice.id, "alice")]
        assert {c.id for c in await b.clients()} == {alice.id, bob.id}
        b.publish("room", Outgoing.text("remote"))
        assert await link.next() == Outgoing.text("remote").frame
    finally:
        await a.stop()
        await b.stop()
