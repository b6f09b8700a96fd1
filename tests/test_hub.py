"""Every Hub method, against both hubs (SPEC §9): one fixture, two implementations.

``cluster`` gives "nodes": on the memory hub every node is the same hub (a
cluster of one), on the Redis hub each is a RedisHub of its own sharing one
freshly emptied Redis. A test written for two nodes therefore checks the
single-process behaviour and the cross-process one with the same assertions.
Sessions here are real :class:`Session` objects whose link records frames.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from support import RecordingLink
from wsplex.app.outgoing import Outgoing
from wsplex.app.session import Session
from wsplex.hub import Hub, MemoryHub
from wsplex.hub.redis import RedisHub
from wsplex.ws.close import CloseCode

Cluster = Callable[[], Awaitable[Hub]]


@pytest.fixture(params=["memory", "redis"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    hubs: list[Hub] = []
    memory = MemoryHub("solo")

    async def node() -> Hub:
        if request.param == "memory":
            return memory
        hub = RedisHub(os.urandom(3).hex(), request.getfixturevalue("clean_redis"), ttl=5.0)
        await hub.start()
        assert hub.healthy
        hubs.append(hub)
        return hub

    yield node
    for hub in hubs:
        await hub.stop()


def join(hub: Hub, protocol: str = "test", name: str | None = None) -> tuple[Session, RecordingLink]:
    link = RecordingLink()
    session = Session(hub.new_session_id(), protocol, "127.0.0.1:1", link)
    session.name = name
    hub.attach(session)
    return session, link


async def settle(*hubs: Hub) -> None:
    """What each node queued has reached the store (what a message between them would ensure)."""
    for hub in hubs:
        await hub.sync()


async def test_session_ids_are_unique_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    ids = [a.new_session_id() for _ in range(3)] + [b.new_session_id() for _ in range(3)]
    assert len(set(ids)) == 6
    if isinstance(a, MemoryHub):
        assert ids[:3] == ["1", "2", "3"]


async def test_healthy_after_start(cluster: Cluster) -> None:
    assert (await cluster()).healthy


async def test_publish_reaches_every_node_except_the_excluded(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, l1), (s2, l2), (s3, l3) = join(a), join(b), join(b)
    for hub, session in ((a, s1), (b, s2), (b, s3)):
        hub.subscribe("room", session)
    await settle(a, b)
    a.publish("room", Outgoing.text("hi"))
    a.publish("room", Outgoing.binary(b"\x00\x01"), exclude=s2.id)
    text, binary = Outgoing.text("hi").frame, Outgoing.binary(b"\x00\x01").frame
    assert [await l1.next(), await l1.next()] == [text, binary]
    assert [await l3.next(), await l3.next()] == [text, binary]
    assert await l2.next() == text
    b.publish("room", Outgoing.text("last"))
    assert await l2.next() == Outgoing.text("last").frame  # nothing else came in between


async def test_one_publisher_keeps_its_order_on_other_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, _), (s2, l2) = join(a), join(b)
    a.subscribe("t", s1)
    b.subscribe("t", s2)
    await settle(a, b)
    for i in range(200):
        a.publish("t", Outgoing.text(str(i)))
    assert [await l2.next() for _ in range(200)] == [Outgoing.text(str(i)).frame for i in range(200)]


async def test_unsubscribe_and_detach_stop_delivery(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, l1), (s2, l2), (s3, l3) = join(a), join(b), join(b)
    for hub, session in ((a, s1), (b, s2), (b, s3)):
        hub.subscribe("t", session)
    await settle(a, b)
    b.unsubscribe("t", s2)
    b.detach(s3)
    await settle(b)
    a.publish("t", Outgoing.text("one"))
    b.subscribe("t", s2)
    await settle(b)
    a.publish("t", Outgoing.text("two"))
    assert await l1.next() == Outgoing.text("one").frame
    assert await l2.next() == Outgoing.text("two").frame
    assert l3.frames.empty() and (await l1.next()) == Outgoing.text("two").frame


async def test_send_to_a_session_on_any_node(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, l1), (s2, l2) = join(a), join(b)
    a.send_to(s2.id, Outgoing.text("to two"))
    b.send_to(s1.id, Outgoing.binary(b"to one"))
    a.send_to("nobody-99", Outgoing.text("lost"))
    assert await l2.next() == Outgoing.text("to two").frame
    assert await l1.next() == Outgoing.binary(b"to one").frame


async def test_close_session_on_any_node(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (_, l1), (s2, l2) = join(a), join(b)
    await settle(b)
    assert await a.close_session(s2.id, CloseCode.POLICY_VIOLATION, "kicked")
    assert await asyncio.wait_for(l2.closed, 5) == (CloseCode.POLICY_VIOLATION, "kicked")
    assert not await a.close_session("no-such-session", CloseCode.POLICY_VIOLATION, "kicked")
    assert not await a.close_session("999", CloseCode.POLICY_VIOLATION, "kicked")
    assert not l1.closed.done()


async def test_clients_lists_every_node_and_follows_touch(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, _), (s2, _) = join(a, "echo"), join(b, "chat", name="bob")
    await settle(a, b)
    seen = {c.id: c for c in await a.clients()}
    assert set(seen) == {s1.id, s2.id}
    assert (seen[s2.id].protocol, seen[s2.id].name, seen[s2.id].node) == ("chat", "bob", b.node_id)
    assert (seen[s2.id].remote, seen[s2.id].since) == (s2.remote, s2.since)
    s2.name = "robert"
    b.touch(s2)
    b.detach(s1) if a is b else a.detach(s1)
    await settle(a, b)
    assert [(c.id, c.name) for c in await a.clients()] == [(s2.id, "robert")]


async def test_members_and_topics_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, _), (s2, _), (s3, _) = join(a, name="ann"), join(b, name="bea"), join(b)
    a.subscribe("chat:room:lobby", s1)
    b.subscribe("chat:room:lobby", s2)
    b.subscribe("chat:room:cellar", s3)
    b.subscribe("other", s3)
    await settle(a, b)
    for hub in (a, b):
        assert sorted(c.name or "" for c in await hub.members("chat:room:lobby")) == ["ann", "bea"]
        assert sorted(await hub.topics("chat:room:")) == ["chat:room:cellar", "chat:room:lobby"]
    b.unsubscribe("chat:room:cellar", s3)
    b.unsubscribe("chat:room:lobby", s2)
    await settle(b)
    assert [c.id for c in await a.members("chat:room:lobby")] == [s1.id]
    assert await a.topics("chat:room:") == ["chat:room:lobby"]
    assert await a.members("chat:room:cellar") == []


async def test_names_are_unique_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, _), (s2, _) = join(a), join(b)
    assert await a.claim_name("chat", "alice", s1)
    assert await a.claim_name("chat", "alice", s1)  # again by its holder: fine
    assert not await b.claim_name("chat", "alice", s2)
    assert await b.claim_name("chat", "Alice", s2)  # case-sensitive
    assert await b.claim_name("other-scope", "alice", s2)  # per scope
    assert await b.lookup_name("chat", "alice") == s1.id
    assert await a.lookup_name("chat", "nobody") is None
    assert await b.names("chat") == {"alice": s1.id, "Alice": s2.id}
    await b.release_name("chat", "alice", s2)  # not its name: nothing happens
    assert await b.lookup_name("chat", "alice") == s1.id
    await a.release_name("chat", "alice", s1)
    assert await b.lookup_name("chat", "alice") is None
    assert await b.claim_name("chat", "alice", s2)
    assert await a.names("chat") == {"alice": s2.id, "Alice": s2.id}


async def test_detach_frees_names(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, _), (s2, _) = join(a), join(b)
    assert await a.claim_name("chat", "carol", s1)
    a.detach(s1)
    await settle(a)
    assert await b.lookup_name("chat", "carol") is None
    assert await b.claim_name("chat", "carol", s2)


async def test_history_keeps_the_last_items_oldest_first(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    for i in range(4):
        await a.append_history("room", f"line {i}", 3)
    await settle(a)
    await b.append_history("room", "line 4", 3)
    await settle(b)
    assert await a.history("room") == ["line 2", "line 3", "line 4"]
    await a.append_history("room", "never kept", 0)
    await settle(a)
    assert await b.history("room") == ["line 2", "line 3", "line 4"]
    assert await b.history("empty") == []


async def test_values_set_get_delete_and_list(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    await a.set_value("svc:temp", "21.5")
    await a.set_value("svc:wind", "3")
    await b.set_value("other", "x")
    await settle(a, b)
    assert await b.get_value("svc:temp") == "21.5"
    assert await b.values("svc:") == {"svc:temp": "21.5", "svc:wind": "3"}
    await b.set_value("svc:temp", "22")
    await a.delete_value("svc:wind")
    await settle(a, b)
    assert await a.values("svc:") == {"svc:temp": "22"}
    assert await a.get_value("svc:wind") is None
