"""Every Hub method, against both hubs (SPEC §9, §10): one fixture, two implementations.

``cluster`` gives "nodes": on the memory hub every node is the same hub (a
cluster of one), on the Redis hub each is a RedisHub of its own sharing one
freshly emptied Redis. A test written for two nodes therefore checks the
single-process behaviour and the cross-process one with the same assertions.
Sessions are real :class:`Session` objects whose link records frames. Nothing
here sleeps: ``settle`` waits until what a node queued has reached Redis, and
"nothing else arrived" is shown by a later message from the same publisher
(per-publisher order is promised, nothing else is).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import pytest

from support import RecordingLink
from wsplex.app.hub import protocol_channel
from wsplex.app.outgoing import Outgoing
from wsplex.app.protocol import Protocol
from wsplex.app.publication import Publication, Sender
from wsplex.app.session import Session
from wsplex.hub import MemoryHub, NodeHub
from wsplex.hub.redis import RedisHub
from wsplex.hub.redis.schema import glob_of
from wsplex.ws.close import CloseCode

Cluster = Callable[[], Awaitable[NodeHub]]
ALICE = Sender("test", "alice")


@pytest.fixture(params=["memory", "redis"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    hubs: list[NodeHub] = []
    memory = MemoryHub("solo")

    async def node() -> NodeHub:
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


def connect(hub: NodeHub, protocol: str = "test", name: str | None = None) -> tuple[Session, RecordingLink]:
    """A session attached to ``hub``, as the server attaches one after its handshake."""
    link = RecordingLink()
    session = Session(hub.new_session_id(), protocol, "127.0.0.1:1", link)
    session.name = name
    hub.attach(session)
    return session, link


def text(topic: str, payload: str, sender: Sender = ALICE, **options: object) -> Publication:
    return Publication(topic, payload, sender, **options)  # type: ignore[arg-type]


def frame(payload: str | bytes) -> bytes:
    return (Outgoing.text(payload) if isinstance(payload, str) else Outgoing.binary(payload)).frame


async def settle(*hubs: NodeHub) -> None:
    """What each node queued has reached the store (what a message between them would ensure)."""
    for hub in hubs:
        await hub.sync()


async def frames(link: RecordingLink, count: int) -> list[bytes]:
    return [await link.next() for _ in range(count)]


class Counting(Protocol):
    """A protocol that renders ``<SENDER> TEXT`` and counts how often it was asked."""

    name = "count"
    text_only = True

    def __init__(self) -> None:  # no server around it: the hub only needs render/deliver
        self.rendered: list[str] = []

    def kicked(self, session: Session, code: int, reason: str) -> None:
        session.send_text(f"bye: {reason}")  # the last word a protocol may say

    def render(self, publication: Publication) -> Outgoing | None:
        self.rendered.append(publication.topic)
        return Outgoing.text(f"<{publication.sender.seen_by(self.name)}> {publication.text}")


def bind_counting(*hubs: NodeHub) -> dict[int, Counting]:
    """One Counting protocol per distinct hub (the memory cluster is one hub)."""
    protocols: dict[int, Counting] = {}
    for hub in hubs:
        if id(hub) not in protocols:
            protocols[id(hub)] = Counting()
            receivers: Mapping[str, Protocol] = {"count": protocols[id(hub)]}
            hub.bind(receivers)
    return protocols


# -- nodes and sessions ---------------------------------------------------------


async def test_session_ids_are_unique_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    ids = [a.new_session_id() for _ in range(3)] + [b.new_session_id() for _ in range(3)]
    assert len(set(ids)) == 6
    if isinstance(a, MemoryHub):
        assert ids[:3] == ["1", "2", "3"]


async def test_healthy_after_start(cluster: Cluster) -> None:
    assert (await cluster()).healthy


# -- the topic space: publish and subscribe ----------------------------------------


async def test_publish_reaches_every_node_except_the_excluded(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, l1), (s2, l2), (s3, l3) = connect(a), connect(b), connect(b)
    for hub, session in ((a, s1), (b, s2), (b, s3)):
        hub.subscribe("room", session)
    await settle(a, b)
    a.publish(text("room", "hi"))
    a.publish(Publication("room", b"\x00\x01", ALICE), exclude=s2.id)
    assert await frames(l1, 2) == [frame("hi"), frame(b"\x00\x01")]
    assert await frames(l3, 2) == [frame("hi"), frame(b"\x00\x01")]
    assert await l2.next() == frame("hi")
    a.publish(text("room", "last"))
    assert await l2.next() == frame("last")  # the excluded one never came


async def test_one_publisher_keeps_its_order_on_other_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, _), (s2, l2) = connect(a), connect(b)
    a.subscribe("t", s1)
    b.subscribe("t", s2)
    await settle(a, b)
    for i in range(200):
        a.publish(text("t", str(i)))
    assert await frames(l2, 200) == [frame(str(i)) for i in range(200)]


async def test_unsubscribe_and_detach_stop_delivery(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, l1), (s2, l2), (s3, l3) = connect(a), connect(b), connect(b)
    for hub, session in ((a, s1), (b, s2), (b, s3)):
        hub.subscribe("t", session)
    await settle(a, b)
    b.unsubscribe("t", s2)
    b.unsubscribe("never-subscribed", s2)  # ignored
    b.detach(s3)
    await settle(b)
    a.publish(text("t", "one"))
    b.subscribe("t", s2)
    await settle(b)
    a.publish(text("t", "two"))
    assert await frames(l1, 2) == [frame("one"), frame("two")]
    assert await l2.next() == frame("two")
    assert l3.frames.empty()


async def test_wildcard_filters_match_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (plus, plus_link), (multi, multi_link), (root, root_link) = connect(b), connect(b), connect(b)
    b.subscribe("sport/+/score", plus)
    b.subscribe("sport/#", multi)
    b.subscribe("#", root)
    await settle(b)
    for topic in ("sport/tennis/score", "sport", "sport/tennis/player/score", "news", "$SYS/uptime", "end"):
        a.publish(text(topic, topic))
    assert await frames(plus_link, 1) == [frame("sport/tennis/score")]
    assert await frames(multi_link, 3) == [frame("sport/tennis/score"), frame("sport"),
                                           frame("sport/tennis/player/score")]
    # "#" sees everything but $-topics (MQTT 3.1.1 §4.7.2).
    assert await frames(root_link, 5) == [frame(t) for t in (
        "sport/tennis/score", "sport", "sport/tennis/player/score", "news", "end")]
    a.publish(text("sport/x/score", "last"))
    assert await plus_link.next() == frame("last")
    assert await multi_link.next() == frame("last")


async def test_dollar_topics_need_a_filter_that_names_them(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s, link) = connect(b)
    b.subscribe("+/uptime", s)
    b.subscribe("$SYS/#", s)
    await settle(b)
    a.publish(text("$SYS/uptime", "42"))
    assert await link.next() == frame("42")  # once: "+/uptime" does not match it, "$SYS/#" does
    a.publish(text("a/uptime", "1"))
    assert await link.next() == frame("1")


async def test_glob_metacharacters_in_topics_are_literal(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s, link) = connect(b)
    b.subscribe("a*b/[x]/+", s)
    b.subscribe("q?/#", s)
    await settle(b)
    for topic in ("aXb/[x]/1", "a*b/x/1", "a*b/[x]/1", "qq/1", "q?/1", "q?"):
        a.publish(text(topic, topic))
    assert await frames(link, 3) == [frame("a*b/[x]/1"), frame("q?/1"), frame("q?")]
    a.publish(text("a*b/[x]/end", "end"))
    assert await link.next() == frame("end")


def test_the_redis_glob_of_a_filter_is_a_superset() -> None:
    assert glob_of("sport/+/score") == "sport/*/score"
    assert glob_of("sport/#") == "sport*"  # "sport" itself, too
    assert glob_of("#") == "*"
    assert glob_of("a*b/[x]/?\\") == "a\\*b/\\[x\\]/\\?\\\\"


async def test_a_pinned_filter_hears_other_nodes_without_waiting(cluster: Cluster) -> None:
    """What a session subscribes to on connect (echo) reaches it from its first
    publication on when the protocol pinned the filter (``Hub.pin``)."""
    a, b = await cluster(), await cluster()
    b.pin("news/#")
    await settle(b)
    (s, link) = connect(b)
    b.subscribe("news/today", s)
    a.publish(text("news/today", "at once"))  # nothing settled in between
    assert await link.next() == frame("at once")


async def test_overlapping_filters_deliver_once(cluster: Cluster) -> None:
    """Exact plus patterns on one session, and on one node across sessions (SPEC §10):
    on Redis one PUBLISH reaches the node once per matching subscription."""
    a, b = await cluster(), await cluster()
    (_, _), (greedy, greedy_link), (exact, exact_link), (pattern, pattern_link) = (
        connect(a), connect(b), connect(b), connect(b))
    for topic_filter in ("a/b", "a/+", "a/#", "#", "+/b"):
        b.subscribe(topic_filter, greedy)
    b.subscribe("a/b", exact)
    b.subscribe("a/+", pattern)
    await settle(b)
    for payload in ("one", "two", "end"):
        a.publish(text("a/b", payload))
    for link in (greedy_link, exact_link, pattern_link):
        assert await frames(link, 3) == [frame("one"), frame("two"), frame("end")]


async def test_publications_from_different_nodes_are_not_taken_for_repeats(cluster: Cluster) -> None:
    a, b, c = await cluster(), await cluster(), await cluster()
    (s, link) = connect(c)
    c.subscribe("t", s)
    c.subscribe("#", s)
    await settle(c)
    a.publish(text("t", "from a"))  # both the first of their node
    b.publish(text("t", "from b"))
    assert sorted(await frames(link, 2)) == sorted([frame("from a"), frame("from b")])
    a.publish(text("t", "a again"))
    assert await link.next() == frame("a again")


async def test_each_protocol_renders_once_and_natives_travel(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    counters = bind_counting(a, b)
    (sender, sender_link) = connect(a, "count")
    receivers = [connect(b, "count") for _ in range(3)] + [connect(a, "count")]
    (plain, plain_link) = connect(b)
    for hub, (session, _) in [(b, r) for r in receivers[:3]] + [(a, receivers[3]), (b, (plain, plain_link))]:
        hub.subscribe("room/+", session)
    a.subscribe("room/#", sender)
    await settle(a, b)
    a.publish(text("room/1", "hi", Sender("mqtt", "m1")), exclude=sender.id)
    rendered = frame("<mqtt:m1> hi")
    for _, link in receivers:
        assert await link.next() == rendered
    assert await plain_link.next() == frame("hi")
    assert [c.rendered for c in counters.values()] == [["room/1"]] * len(counters)  # once per node

    native = Outgoing.text("[alice] native")
    a.publish(text("room/1", "hi", Sender("count", "alice"), native=native), exclude=sender.id)
    for _, link in receivers:
        assert await link.next() == native.frame  # the sender protocol's own rendering, unchanged
    assert await plain_link.next() == frame("hi")
    assert [c.rendered for c in counters.values()] == [["room/1"]] * len(counters)
    assert sender_link.frames.empty()


async def test_text_protocols_do_not_receive_binary_that_is_not_utf8(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    bind_counting(a, b)
    (s, link), (plain, plain_link) = connect(b, "count"), connect(b)
    b.subscribe("t", s)
    b.subscribe("t", plain)
    await settle(b)
    a.publish(Publication("t", b"\xff\xfe", ALICE))
    a.publish(Publication("t", b"ok", ALICE))
    assert await frames(plain_link, 2) == [frame(b"\xff\xfe"), frame(b"ok")]
    assert await link.next() == frame("<test:alice> ok")
    assert b.stats.not_text_dropped["count"] == 1


# -- retained publications and history ------------------------------------------------


async def test_retained_publications_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    native = Outgoing.text("{native}")
    a.publish(text("svc/temp", "21.5", Sender("JSONsvc", "sensor"), retain=True, native=native))
    a.publish(Publication("svc/raw", b"\x00\x01", ALICE, retain=True))
    b.publish(text("svc/wind", "3", retain=True))
    a.publish(text("svc/not-kept", "x"))
    b.publish(text("$SYS/uptime", "9", retain=True))
    await settle(a, b)
    [temp] = await b.retained("svc/temp")
    assert (temp.topic, temp.text, temp.retain) == ("svc/temp", "21.5", True)
    assert temp.sender == Sender("JSONsvc", "sensor")
    assert temp.native is not None and temp.native.frame == native.frame
    [raw] = await b.retained("svc/raw")
    assert (raw.is_text, raw.data) == (False, b"\x00\x01")
    assert await a.retained("svc/not-kept") == []
    assert sorted(p.topic for p in await a.retained("svc/+")) == ["svc/raw", "svc/temp", "svc/wind"]
    assert sorted(p.topic for p in await a.retained("#")) == ["svc/raw", "svc/temp", "svc/wind"]
    assert [p.text for p in await b.retained("$SYS/#")] == ["9"]

    b.publish(text("svc/temp", "22", retain=True))  # replaces
    a.publish(text("svc/wind", "", retain=True))  # an empty retained payload clears
    await settle(a, b)
    assert [p.text for p in await a.retained("svc/temp")] == ["22"]
    assert await b.retained("svc/wind") == []
    assert sorted(p.topic for p in await b.retained("svc/#")) == ["svc/raw", "svc/temp"]


async def test_history_keeps_the_last_publications_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    for hub in (a, b):
        hub.keep_history("chat/", 3)
    for i in range(4):
        a.publish(text("chat/lobby", f"line {i}"))
    await settle(a)
    b.publish(text("chat/lobby", "line 4", Sender("chat", "bob"), native=Outgoing.text("[bob] line 4")))
    a.publish(text("other/topic", "not kept"))
    await settle(a, b)
    kept = await a.history("chat/lobby")
    assert [p.text for p in kept] == ["line 2", "line 3", "line 4"]
    assert kept[-1].sender == Sender("chat", "bob")
    assert kept[-1].native is not None and kept[-1].native.payload == b"[bob] line 4"
    assert await b.history("other/topic") == []
    assert await b.history("chat/empty") == []


# -- listings ------------------------------------------------------------------------------


async def test_subscribers_and_filters_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, _), (s2, _), (s3, _) = connect(a, name="ann"), connect(b, name="bea"), connect(b)
    a.subscribe("svc/temp", s1)
    b.subscribe("svc/temp", s2)
    b.subscribe("svc/+", s3)
    b.subscribe("other", s3)
    await settle(a, b)
    for hub in (a, b):
        assert sorted(c.name or "" for c in await hub.subscribers("svc/temp")) == ["ann", "bea"]
        assert [c.id for c in await hub.subscribers("svc/+")] == [s3.id]  # the filter as given
        assert sorted(await hub.filters("svc/")) == ["svc/+", "svc/temp"]
    b.unsubscribe("svc/temp", s2)
    b.unsubscribe("svc/+", s3)
    await settle(b)
    assert [c.id for c in await a.subscribers("svc/temp")] == [s1.id]
    assert await a.filters("svc/") == ["svc/temp"]
    assert await a.subscribers("svc/+") == []


async def test_a_subscriber_is_listed_everywhere_before_its_next_event(cluster: Cluster) -> None:
    """The barrier: after subscribe or join, a session's next event runs once the
    directory knows, so whatever it answers is consistent on every node (SPEC §9)."""
    a, b = await cluster(), await cluster()
    (s, _) = connect(b)
    seen: asyncio.Future[tuple[list[str], list[str]]] = asyncio.get_running_loop().create_future()

    async def next_event(session: Session) -> None:
        subscribers = [c.id for c in await a.subscribers("room/1")]
        members = [c.id for c in await a.members("room:1")]
        seen.set_result((subscribers, members))

    b.subscribe("room/1", s)
    b.join("room:1", s)
    s.run(next_event)
    assert await asyncio.wait_for(seen, 5) == ([s.id], [s.id])


async def test_a_hook_that_subscribes_before_its_first_wait_keeps_the_event_order(cluster: Cluster) -> None:
    """The barrier a subscribe puts on the session does not let later events
    overtake the rest of the hook that subscribed (``Session.run``)."""
    b = await cluster()
    (s, _) = connect(b)
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    done: asyncio.Future[None] = loop.create_future()
    order: list[str] = []

    async def subscribing(session: Session) -> None:
        b.subscribe("t", session)
        await gate
        order.append("subscribing hook done")

    def next_event(session: Session) -> None:
        order.append("next event")
        done.set_result(None)

    s.run(subscribing)
    s.run(next_event)
    await settle(b)  # the barrier has opened
    await settle(b)
    assert order == []
    gate.set_result(None)
    await asyncio.wait_for(done, 5)
    assert order == ["subscribing hook done", "next event"]


async def test_clients_lists_every_node_and_follows_touch(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, _), (s2, _) = connect(a, "echo"), connect(b, "chat", name="bob")
    await settle(a, b)
    seen = {c.id: c for c in await a.clients()}
    assert set(seen) == {s1.id, s2.id}
    assert (seen[s2.id].protocol, seen[s2.id].name, seen[s2.id].node) == ("chat", "bob", b.node_id)
    assert (seen[s2.id].remote, seen[s2.id].since) == (s2.remote, s2.since)
    s2.name = "robert"
    b.touch(s2)
    a.detach(s1)
    await settle(a, b)
    assert [(c.id, c.name) for c in await a.clients()] == [(s2.id, "robert")]


# -- channels -------------------------------------------------------------------------------


async def test_channels_broadcast_members_and_listing(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, l1), (s2, l2), (s3, l3) = connect(a, name="ann"), connect(b, name="bea"), connect(b)
    a.join("chat:room:lobby", s1)
    b.join("chat:room:lobby", s2)
    b.join("chat:room:cellar", s3)
    await settle(a, b)
    a.broadcast("chat:room:lobby", Outgoing.text("* ann joined"), exclude=s1.id)
    b.broadcast("chat:room:lobby", Outgoing.binary(b"raw"))
    assert sorted(await frames(l2, 2)) == sorted([frame("* ann joined"), frame(b"raw")])  # no common order
    assert await l1.next() == frame(b"raw")
    for hub in (a, b):
        assert sorted(c.name or "" for c in await hub.members("chat:room:lobby")) == ["ann", "bea"]
        assert sorted(await hub.channels("chat:room:")) == ["chat:room:cellar", "chat:room:lobby"]
    b.leave("chat:room:cellar", s3)
    b.leave("chat:room:lobby", s2)
    b.leave("chat:room:lobby", s2)  # twice: ignored
    await settle(b)
    assert [c.id for c in await a.members("chat:room:lobby")] == [s1.id]
    assert await a.channels("chat:room:") == ["chat:room:lobby"]
    assert await a.members("chat:room:cellar") == []
    a.broadcast("chat:room:lobby", Outgoing.text("end"))
    assert await l1.next() == frame("end")
    assert l2.frames.empty() and l3.frames.empty()


async def test_a_channel_of_thousands_is_listed_whole(cluster: Cluster) -> None:
    """A protocol's channel holds every session of the protocol (10,000 idle echo clients)."""
    a, b = await cluster(), await cluster()
    sessions = [connect(b, "many")[0] for _ in range(9000)]
    await settle(b)
    members = await a.members(protocol_channel("many"))
    assert sorted(c.id for c in members) == sorted(s.id for s in sessions)


async def test_channels_and_topics_do_not_mix(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s, link) = connect(b)
    b.subscribe("#", s)
    b.join("news", s)
    await settle(b)
    a.broadcast("news", Outgoing.text("channel"))
    a.publish(text("news", "topic"))
    assert await frames(link, 2) == [frame("channel"), frame("topic")]
    assert await b.channels("news") == ["news"] and await b.filters("news") == []


async def test_every_session_is_in_its_protocols_channel(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, l1), (s2, l2), (s3, l3) = connect(a, "echo"), connect(b, "echo"), connect(b, "chat")
    await settle(a, b)
    assert sorted(c.id for c in await a.members(protocol_channel("echo"))) == sorted([s1.id, s2.id])
    b.broadcast(protocol_channel("echo"), Outgoing.text("to every echo client"))
    assert [await l1.next(), await l2.next()] == [frame("to every echo client")] * 2
    b.detach(s2)
    await settle(b)
    assert [c.id for c in await a.members(protocol_channel("echo"))] == [s1.id]
    assert [c.id for c in await a.members(protocol_channel("chat"))] == [s3.id]
    assert l3.frames.empty()


# -- one session ------------------------------------------------------------------------


async def test_send_to_a_session_on_any_node(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, l1), (s2, l2) = connect(a), connect(b)
    a.send_to(s2.id, Outgoing.text("to two"))
    b.send_to(s1.id, Outgoing.binary(b"to one"))
    a.send_to("nobody-99", Outgoing.text("lost"))
    assert await l2.next() == frame("to two")
    assert await l1.next() == frame(b"to one")


async def test_close_session_on_any_node(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (_, l1), (s2, l2) = connect(a), connect(b)
    await settle(b)
    assert await a.close_session(s2.id, CloseCode.POLICY_VIOLATION, "kicked")
    assert await asyncio.wait_for(l2.closed, 5) == (CloseCode.POLICY_VIOLATION, "kicked")
    assert not await a.close_session("no-such-session", CloseCode.POLICY_VIOLATION, "kicked")
    assert not await a.close_session("999", CloseCode.POLICY_VIOLATION, "kicked")
    assert not l1.closed.done()


async def test_a_session_closed_on_any_node_hears_its_protocols_last_word(cluster: Cluster) -> None:
    """``Protocol.kicked`` runs on the session's own node, just before the close."""
    a, b = await cluster(), await cluster()
    bind_counting(a, b)
    s2, l2 = connect(b, "count")
    await settle(b)
    assert await a.close_session(s2.id, CloseCode.POLICY_VIOLATION, "kicked")
    assert await l2.next() == frame("bye: kicked")
    assert await asyncio.wait_for(l2.closed, 5) == (CloseCode.POLICY_VIOLATION, "kicked")


async def test_retained_count_without_a_round_trip(cluster: Cluster) -> None:
    """What ``/metrics`` shows: exact on one node; on Redis the cluster's, as of this
    node's last heartbeat (run here by hand: ``Directory.on_beat``)."""
    a, b = await cluster(), await cluster()
    for topic in ("svc/x", "svc/y", "svc/z"):
        a.publish(text(topic, "1", retain=True))
    a.publish(text("svc/x", "2", retain=True))  # a new value, the same topic
    a.publish(text("svc/y", "", retain=True))  # cleared
    a.publish(text("svc/w", "not kept"))
    await settle(a)
    for hub in (a, b):
        if isinstance(hub, RedisHub):
            hub.directory.on_beat()
            await settle(hub)
        assert hub.retained_count() == 2


# -- names and values -----------------------------------------------------------------------


async def test_names_are_unique_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster(), await cluster()
    (s1, _), (s2, _) = connect(a), connect(b)
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
    (s1, _), (s2, _) = connect(a), connect(b)
    assert await a.claim_name("chat", "carol", s1)
    a.detach(s1)
    await settle(a)
    assert await b.lookup_name("chat", "carol") is None
    assert await b.claim_name("chat", "carol", s2)


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
