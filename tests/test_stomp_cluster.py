"""STOMP ``/queue/Q`` shared by two nodes on Redis (SPEC §12, issue 14), with stomp.py.

A message is consumed once by a consumer on any node, in turn across the
nodes; it waits in Redis, so it outlives the node it was sent to; what a
consumer gave back (NACK, or it left) reaches a consumer of the other node
marked ``redelivered:true``. Where a message may land on either node, the
consumers share one event queue and are told apart by their subscription id.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest
from redis.asyncio import Redis

from support import RedisProcess, ServerFactory, Spawn
from support.stomp import TIMEOUT, ClientFrame, StompPy
from test_cluster import wait_until
from test_stomp_queues import messages_and_receipt, nothing_else
from wsplex.app import QueueConsumer, QueueMessage
from wsplex.hub.redis import RedisHub
from wsplex.hub.redis.queues import GROUP
from wsplex.server import Server

STOMP = ("v12.stomp", "v11.stomp", "v10.stomp")
Connect = Callable[[Server], Awaitable[StompPy]]

pytestmark = pytest.mark.parametrize("hub", ["redis"], indirect=True)


@pytest.fixture
async def nodes(start_server: ServerFactory) -> tuple[Server, Server]:
    return await start_server(protocols=STOMP), await start_server(protocols=STOMP)


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(node)``: a stomp.py client of that node, disconnected at the end."""
    clients: list[StompPy] = []

    async def open_one(server: Server) -> StompPy:
        client = StompPy(server)
        await client.connect()
        clients.append(client)
        return client

    yield open_one
    for client in clients:
        await client.disconnect()


def share_events(*clients: StompPy) -> queue.Queue[tuple[str, ClientFrame | None]]:
    """One event queue for several clients: a MESSAGE says which by its ``subscription``."""
    events = clients[0].events
    for client in clients[1:]:
        client.events = client.listener.events = events
    return events


async def next_message(events: queue.Queue[tuple[str, ClientFrame | None]]) -> ClientFrame:
    kind, frame = await asyncio.to_thread(events.get, timeout=TIMEOUT)
    assert kind == "MESSAGE" and frame is not None, (kind, frame)
    return frame


async def test_each_message_is_consumed_once_in_turn_across_nodes(
        nodes: tuple[Server, Server], connect: Connect) -> None:
    a, b = nodes
    on_a, on_b, producer = await connect(a), await connect(b), await connect(a)
    await on_a.subscribe("/queue/work", id="on-a")
    await on_b.subscribe("/queue/work", id="on-b")
    events = share_events(on_a, on_b)
    consumed = []
    for number in range(6):
        await producer.send("/queue/work", f"job {number}")
        message = await next_message(events)  # taken before the next is sent
        consumed.append((message.body, message.headers["subscription"]))
    assert [body for body, _ in consumed] == [f"job {n}".encode() for n in range(6)]
    takers = [taker for _, taker in consumed]
    assert set(takers) == {"on-a", "on-b"}
    assert all(first != second for first, second in itertools.pairwise(takers)), takers
    await nothing_else(on_a)  # no message twice
    await nothing_else(on_b)


async def test_a_message_waits_and_outlives_the_node_it_was_sent_to(
        nodes: tuple[Server, Server], connect: Connect) -> None:
    a, b = nodes
    producer = await connect(a)
    await producer.send("/queue/later", "first", **{"x-kind": "early"})  # its receipt: in Redis
    await producer.send("/queue/later", "second")
    await producer.disconnect()
    await a.stop()
    consumer = await connect(b)
    consumer.conn.subscribe("/queue/later", id="1", headers={"receipt": "s"})
    messages = await messages_and_receipt(consumer, 2, "s")
    assert [m.body for m in messages] == [b"first", b"second"]
    assert messages[0].headers["x-kind"] == "early" and "redelivered" not in messages[0].headers
    assert messages[0].headers["from"] == producer.session
    await nothing_else(consumer)


async def test_unacked_messages_of_a_consumer_gone_go_to_the_other_node(
        nodes: tuple[Server, Server], connect: Connect) -> None:
    a, b = nodes
    producer, leaver = await connect(a), await connect(b)
    await leaver.subscribe("/queue/q", id="1", ack="client-individual")
    await producer.send("/queue/q", "held")
    assert (await leaver.message()).body == b"held"
    stayer = await connect(a)
    await stayer.subscribe("/queue/q", id="2", ack="client-individual")
    await leaver.drop()  # gone without ACK
    again = await stayer.message()
    assert (again.body, again.headers.get("redelivered")) == (b"held", "true")
    stayer.conn.ack(again.headers["ack"])
    await nothing_else(stayer)


async def test_nack_goes_to_a_consumer_of_the_other_node(
        nodes: tuple[Server, Server], connect: Connect) -> None:
    a, b = nodes
    on_a, on_b, producer = await connect(a), await connect(b), await connect(a)
    await on_a.subscribe("/queue/n", id="on-a", ack="client-individual")
    await on_b.subscribe("/queue/n", id="on-b", ack="client-individual")
    events = share_events(on_a, on_b)
    await producer.send("/queue/n", "x")
    first = await next_message(events)
    picky = on_a if first.headers["subscription"] == "on-a" else on_b
    picky.conn.nack(first.headers["ack"])
    again = await next_message(events)
    assert again.headers["subscription"] != first.headers["subscription"]
    assert (again.body, again.headers["redelivered"]) == (b"x", "true")
    (on_b if picky is on_a else on_a).conn.ack(again.headers["ack"])
    await nothing_else(on_a)
    await nothing_else(on_b)


async def test_what_a_dead_node_delivered_unacked_goes_to_a_live_one(
        start_server: ServerFactory, clean_redis: str, spawn: Spawn, connect: Connect) -> None:
    """A node killed (no goodbye) held a delivered, unacknowledged message: once its presence
    expired (--redis-ttl 1) a node with a consumer of the queue takes it over."""
    live = await start_server(protocols=STOMP, redis_ttl=1.0)
    doomed = spawn("--redis", clean_redis, "--redis-ttl", "1")
    holder = await connect(cast(Server, doomed))  # a client needs only the port
    await holder.subscribe("/queue/dead", id="1", ack="client-individual")
    producer = await connect(live)
    await producer.send("/queue/dead", "in flight")
    assert (await holder.message()).body == b"in flight"
    stayer = await connect(live)
    await stayer.subscribe("/queue/dead", id="2", ack="client-individual")
    doomed.stop(signal.SIGKILL)
    again = await stayer.message()
    assert (again.body, again.headers["redelivered"]) == (b"in flight", "true")
    stayer.conn.ack(again.headers["ack"])
    await nothing_else(stayer)


async def test_sends_go_on_after_redis_forgot_the_script(
        nodes: tuple[Server, Server], connect: Connect, clean_redis: str) -> None:
    a, b = nodes
    consumer, producer = await connect(b), await connect(a)
    await consumer.subscribe("/queue/s", id="1")
    await producer.send("/queue/s", "before")
    assert (await consumer.message()).body == b"before"
    async with Redis.from_url(clean_redis) as redis:
        await redis.script_flush()
    await producer.send("/queue/s", "after")  # NOSCRIPT: sent again with the script
    assert (await consumer.message()).body == b"after"
    await nothing_else(consumer)


async def test_queues_work_again_after_redis_came_back(
        start_server: ServerFactory, redis_process: RedisProcess, connect: Connect) -> None:
    """While Redis is away a SEND to a queue is dropped and counted; once it is back (empty:
    no persistence) the readers start over and the script is loaded again."""
    a = await start_server(protocols=STOMP, redis_url=redis_process.url)
    b = await start_server(protocols=STOMP, redis_url=redis_process.url)
    consumer, producer = await connect(b), await connect(a)
    await consumer.subscribe("/queue/r", id="1")
    await producer.send("/queue/r", "before")
    assert (await consumer.message()).body == b"before"
    redis_process.stop(signal.SIGKILL)
    await wait_until(lambda: not a.hub.healthy and not b.hub.healthy)
    await producer.send("/queue/r", "during")
    assert a.hub.queue_figures().dropped == 1
    redis_process.start()
    await wait_until(lambda: a.hub.healthy and b.hub.healthy)
    await producer.send("/queue/r", "after")
    assert (await consumer.message()).body == b"after"
    await nothing_else(consumer)


async def test_the_byte_bound_drops_the_oldest_across_nodes(start_server: ServerFactory,
                                                              connect: Connect) -> None:
    a = await start_server(protocols=STOMP, stomp_queue_bytes=2500)
    b = await start_server(protocols=STOMP, stomp_queue_bytes=2500)
    producer = await connect(a)
    for number in range(5):
        await producer.send("/queue/heavy", f"{number}" * 1000)  # a bit over 1,000 bytes each
    consumer = await connect(b)
    consumer.conn.subscribe("/queue/heavy", id="1", headers={"receipt": "s"})
    messages = await messages_and_receipt(consumer, 2, "s")
    assert [m.body[:1] for m in messages] == [b"3", b"4"]
    await nothing_else(consumer)
    assert a.hub.queue_figures().dropped == 3  # counted by the node whose sends pushed them out


class Keeper(QueueConsumer):
    """A consumer that keeps what it takes, for the test below."""

    def __init__(self) -> None:
        self.taken: asyncio.Queue[QueueMessage] = asyncio.Queue()

    def take(self, queue: str, message: QueueMessage) -> None:
        self.taken.put_nowait(message)


async def test_an_entry_pending_for_a_live_node_and_held_by_nobody_is_delivered_again(
        clean_redis: str, hub: str) -> None:  # hub: "redis", as for the whole module
    """What a failed give-back leaves (pending for this node, no consumer holds it): once idle
    for --redis-ttl the node delivers it again, redelivered."""
    node = RedisHub("orphan", clean_redis, ttl=1.0)
    await node.start()
    try:
        stream = f"{node.keys.prefix}q:lost"
        async with Redis.from_url(clean_redis) as redis:
            await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            await redis.xadd(stream, {"d": b"payload", "r": b"0"})
            await redis.xreadgroup(GROUP, "orphan", {stream: ">"})  # pending for the node now
        keeper = Keeper()
        assert node.queue_consume("lost", keeper)
        message = await asyncio.wait_for(keeper.taken.get(), TIMEOUT)
        assert (message.data, message.redelivered) == (b"payload", True)
        node.queue_settle("lost", [message], consumed=True)
        await node.sync()
        async with Redis.from_url(clean_redis) as redis:
            assert await redis.xlen(stream) == 0  # acknowledged and deleted
    finally:
        await node.stop()
