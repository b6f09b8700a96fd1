"""Several wsplex nodes as one service through a real Redis (SPEC §9).

In-process nodes (``start_server`` on the Redis hub) for the protocol paths,
``wsplex`` processes (``spawn``) for what only processes can show: Redis
killed and restarted under them, a node killed with SIGKILL, ``--workers``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable

import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from support import RedisProcess, ServerFactory, WsplexProcess, http_get, ws_url
from test_hub import connect as attached_session
from wsplex.app.outgoing import Outgoing
from wsplex.app.publication import Publication, Sender
from wsplex.hub.redis import RedisHub
from wsplex.server import Server

ECHO = [Subprotocol("echo")]
SENDER = Sender("test", "tester")
Spawn = Callable[..., WsplexProcess]


async def open_echo(url: str) -> ClientConnection:
    return await connect(url, subprotocols=ECHO)


def node(spawn: Spawn, redis_url: str, *args: str) -> WsplexProcess:
    return spawn("--redis", redis_url, "--redis-ttl", "3", *args)  # connected before listening


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_echo_reaches_clients_on_every_node(start_server: ServerFactory) -> None:
    one, two = await start_server(protocols=("echo",)), await start_server(protocols=("echo",))
    async with (
        connect(ws_url(one), subprotocols=ECHO) as a,
        connect(ws_url(two), subprotocols=ECHO) as b,
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
        assert "wsplex_redis_disconnects_total 1.0" in (await http_get(f"{one.http}/metrics"))[1]

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
        alice, link = attached_session(a, "chat", name="alice")
        a.subscribe("room/+", alice)  # a pattern: PSUBSCRIBEd again after the restart
        a.join("room", alice)
        assert await a.claim_name("chat", "alice", alice)

        redis_process.stop(signal.SIGKILL)
        await wait_until(lambda: not a.healthy and not b.healthy)
        assert a.stats.redis_disconnects == 1
        # Degraded: this node still answers for its own clients.
        assert await a.lookup_name("chat", "alice") == alice.id
        assert [c.id for c in await a.members("room")] == [alice.id]
        assert [c.id for c in await a.subscribers("room/+")] == [alice.id]
        a.publish(Publication("room/1", "local", SENDER))
        assert await link.next() == Outgoing.text("local").frame
        assert a.stats.redis_dropped == 1
        bob, _ = attached_session(a, "chat")
        assert not await a.claim_name("chat", "alice", bob)

        redis_process.start()  # empty: no persistence
        await wait_until(lambda: a.healthy and b.healthy)
        await a.sync()
        assert await b.lookup_name("chat", "alice") == alice.id
        assert [(c.id, c.name) for c in await b.members("room")] == [(alice.id, "alice")]
        assert [c.id for c in await b.subscribers("room/+")] == [alice.id]
        assert {c.id for c in await b.clients()} == {alice.id, bob.id}
        b.publish(Publication("room/1", "remote", SENDER))
        assert await link.next() == Outgoing.text("remote").frame
        b.broadcast("room", Outgoing.text("to the channel"))
        assert await link.next() == Outgoing.text("to the channel").frame
    finally:
        await a.stop()
        await b.stop()


# -- every protocol across nodes (in-process nodes sharing one Redis) ----------

PROTOCOLS = ("echo", "chat", "command", "JSONsvc")
TOKEN = "cluster-token"


async def open_client(server: Server, protocol: str, query: str = "") -> ClientConnection:
    return await connect(ws_url(server) + query, subprotocols=[Subprotocol(protocol)])


async def recv(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(message, str)
    return message


async def ask(ws: ClientConnection, line: str) -> str:
    await ws.send(line)
    return await recv(ws)


async def two_nodes(start_server: ServerFactory) -> tuple[Server, Server]:
    return (await start_server(protocols=PROTOCOLS, admin_token=TOKEN),
            await start_server(protocols=PROTOCOLS, admin_token=TOKEN))


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_chat_room_across_nodes(start_server: ServerFactory) -> None:
    one, two = await two_nodes(start_server)
    alice = await open_client(one, "chat", "?name=alice")
    assert await ask(alice, "/who") == "* in lobby: alice"
    bob = await open_client(two, "chat", "?name=bob")
    assert await ask(bob, "/who") == "* in lobby: alice, bob"
    assert await recv(alice) == "* bob joined"
    await alice.send("hello from one")
    assert await recv(bob) == "[alice] hello from one"
    await bob.send("hello from two")
    assert await recv(alice) == "[bob] hello from two"

    assert await ask(bob, "/name alice") == "! name 'alice' is taken"  # unique cluster-wide
    carol = await open_client(two, "chat", "?name=carol")  # history is shared
    lines = [await recv(carol) for _ in range(4)]
    assert lines == ["* history: 2 messages", "[alice] hello from one", "[bob] hello from two",
                     "* end of history"]
    assert await ask(carol, "/who") == "* in lobby: alice, bob, carol"

    assert await recv(bob) == "* carol joined"
    assert await recv(alice) == "* carol joined"
    await alice.send("/join cellar")
    assert await recv(bob) == "* alice left"
    assert await recv(carol) == "* alice left"
    # Chat announces the leave before it joins the new room, so "left" proves
    # nothing about cellar; an answer to alice after her join does (the barrier:
    # her next event waits until her membership is in Redis).
    assert await recv(alice) == "* alice joined"
    assert await ask(alice, "/who") == "* in cellar: alice"
    assert await ask(carol, "/rooms") == "* rooms: cellar (1), lobby (2)"


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_command_sees_and_reaches_every_node(start_server: ServerFactory) -> None:
    one, two = await two_nodes(start_server)
    victim = await open_client(two, "chat", "?name=victim")
    await ask(victim, "/who")
    echo_one, echo_two = await open_client(one, "echo"), await open_client(two, "echo")
    admin = await open_client(one, "command")
    rows = json.loads(await ask(admin, "clients --json"))["clients"]
    assert sorted(row["protocol"] for row in rows) == ["chat", "command", "echo", "echo"]
    victim_id = next(row["id"] for row in rows if row["name"] == "victim")
    assert victim_id.startswith(two.node_id + "-")

    assert await ask(admin, f"auth {TOKEN}") == "ok: authenticated"
    assert await ask(admin, "broadcast echo to every node") == "ok: broadcast to echo"
    assert [await recv(echo_one), await recv(echo_two)] == ["to every node"] * 2
    assert await ask(admin, f"kick {victim_id}") == f"ok: kicked {victim_id}"
    with pytest.raises(ConnectionClosed) as closed:
        await recv(victim)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "kicked")


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_jsonsvc_routes_and_services_across_nodes(start_server: ServerFactory) -> None:
    one, two = await two_nodes(start_server)
    sensor, reader = await open_client(one, "JSONsvc"), await open_client(two, "JSONsvc")
    whoami = {"to": "JSONsvc", "cmd": "whoami"}
    await sensor.send(json.dumps({"from": "sensor", "provides": "temp", **whoami}))
    assert json.loads(await recv(sensor))["name"] == "sensor"
    await reader.send(json.dumps({"from": "reader", "requests": "temp", **whoami}))
    assert json.loads(await recv(reader))["name"] == "reader"

    await reader.send('{"from":"reader","to":"sensor","hello":1}')  # routing to a name on another node
    assert json.loads(await recv(sensor)) == {"from": "reader", "to": "sensor", "hello": 1}
    await sensor.send('{"from":"sensor","put":"temp"}>21.5')  # pushed to the requester on node two
    assert await recv(reader) == '{"from":"sensor","put":"temp"}>21.5'

    late = await open_client(two, "JSONsvc")
    await late.send('{"from":"late","get":"temp"}')  # the latest value, kept in Redis
    assert await recv(late) == '{"from":"sensor","put":"temp"}>21.5'
    impostor = await open_client(two, "JSONsvc")
    await impostor.send('{"from":"sensor"}')  # the name is held on node one
    error = json.loads(await recv(impostor))
    assert error["from"] == "JSONsvc" and "sensor" in error["error"], error


# -- a node that dies without a goodbye ---------------------------------------


async def test_a_killed_node_loses_its_names_and_presence(spawn: Spawn, clean_redis: str) -> None:
    doomed = node(spawn, clean_redis)
    survivor = node(spawn, clean_redis)
    alice = await connect(doomed.url + "?name=alice", subprotocols=[Subprotocol("chat")])
    assert await ask(alice, "/who") == "* in lobby: alice"
    bob = await connect(survivor.url + "?name=bob", subprotocols=[Subprotocol("chat")])
    assert await ask(bob, "/who") == "* in lobby: alice, bob"
    assert await ask(bob, "/name alice") == "! name 'alice' is taken"

    doomed.stop(signal.SIGKILL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3 + 5  # --redis-ttl 3, and a guard
    while (answer := await ask(bob, "/name alice")) != "* bob is now alice":
        assert answer == "! name 'alice' is taken"
        assert loop.time() < deadline, "alice's name outlived its node's TTL"
        await asyncio.sleep(0.2)  # polls the TTL; the deadline above is the test
    assert await ask(bob, "/who") == "* in lobby: alice"
    await alice.close()


async def test_workers_restart_a_dead_worker_and_stop_on_killserver(spawn: Spawn, clean_redis: str) -> None:
    parent = spawn("--redis", clean_redis, "--workers", "2", "--protocols", "echo,command", wait=False,
                   env={"WSPLEX_ADMIN_TOKEN": TOKEN})
    parent.read_until("listening on")
    parent.read_until("listening on")
    workers = psutil.Process(parent.proc.pid).children()
    assert len(workers) == 2
    workers[0].kill()
    parent.read_until("worker 1 exited with status -9; starting another")
    parent.read_until("listening on")  # the replacement
    assert len(psutil.Process(parent.proc.pid).children()) == 2

    admin = await connect(parent.url, subprotocols=[Subprotocol("command")])
    assert await ask(admin, f"auth {TOKEN}") == "ok: authenticated"
    await admin.send("killserver")
    assert await asyncio.to_thread(parent.proc.wait, 15) == 0  # every worker, not just this one


@pytest.mark.parametrize(("args", "message"), [
    (("--redis", "http://localhost:6379"), "is not a redis://, rediss:// or unix:// URL"),
    (("--redis", "redis://127.0.0.1:1/0", "--redis-ttl", "31"), "--redis-ttl must be between 1 and 30"),
    (("--workers", "2"), "--workers above 1 needs --redis"),
])
def test_bad_cluster_flags_are_one_line_and_status_2(
    spawn: Spawn, args: tuple[str, ...], message: str
) -> None:
    child = spawn(*args, wait=False)
    assert child.proc.wait(15) == 2
    assert message in child.read_until("error")
