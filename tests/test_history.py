"""The bounds on kept history (issue 17 item 3) and retained publications (item 4), on both hubs.

The memory hub keeps them in ``wsplex.hub.history`` and ``wsplex.hub.retained``;
the Redis hub in scripts that hold the same rules for the whole cluster. The
same assertions run on each (``start_server`` gives both); what a refusal
looks like is read back from the hub and ``/metrics``' counters, since on
Redis ``publish`` cannot wait for the verdict.
"""

from __future__ import annotations

import pytest

from support import ServerFactory
from test_hub import connect
from wsplex.app import Publication, Sender
from wsplex.hub.history import History
from wsplex.hub.redis import RedisHub
from wsplex.server import Server
from wsplex.stats import Stats

SENDER = Sender("chat", "alice")


async def node(start_server: ServerFactory, **settings: object) -> Server:
    server = await start_server(protocols=("echo",), **settings)
    server.hub.keep_history("chat/", 3)
    return server


async def texts(server: Server, topic: str) -> list[str]:
    await server.hub.sync()
    return [p.text or "" for p in await server.hub.history(topic)]


async def test_count_per_topic_and_only_under_a_rule(start_server: ServerFactory) -> None:
    server = await node(start_server)
    for n in range(5):
        server.hub.publish(Publication("chat/a", f"line {n}", SENDER))
    server.hub.publish(Publication("sensors/t", "21", SENDER))
    assert await texts(server, "chat/a") == ["line 2", "line 3", "line 4"]
    assert await texts(server, "sensors/t") == []
    assert server.stats.history_trimmed == 0  # the rule's count is the usual way out


async def test_bytes_per_topic(start_server: ServerFactory) -> None:
    server = await node(start_server, history_bytes=10)
    for line in ("12345", "67890", "x"):
        server.hub.publish(Publication("chat/a", line, SENDER))
    assert await texts(server, "chat/a") == ["67890", "x"]
    assert server.stats.history_trimmed == 1
    server.hub.publish(Publication("chat/a", "y" * 11, SENDER))  # alone over the bound: not kept
    assert await texts(server, "chat/a") == []
    assert server.stats.history_trimmed == 4


async def test_a_new_topic_pushes_out_the_oldest_nobody_listens_to(start_server: ServerFactory) -> None:
    server = await node(start_server, history_topics=3)
    hub = server.hub
    listener, _ = connect(hub)
    assert hub.subscribe("chat/0", listener)
    for n in range(3):
        hub.publish(Publication(f"chat/{n}", "hi", SENDER))
    hub.publish(Publication("chat/3", "hi", SENDER))
    kept = [t for t in ("chat/0", "chat/1", "chat/2", "chat/3") if await texts(server, t)]
    assert kept == ["chat/0", "chat/2", "chat/3"]
    assert server.stats.history_topics_evicted == 1
    hub.detach(listener)


@pytest.mark.memory_only("how the in-memory store holds text; Redis holds envelopes of bytes")
def test_text_is_kept_as_utf8() -> None:
    history = History(Stats(), lambda topic: False)
    history.rules.add("chat/", 3)
    line = "emoji 🙂 " + "x" * 1000
    history.add(Publication("chat/a", line, SENDER))
    kept = history.get("chat/a")[0]
    assert kept.is_text and kept.data == line.encode()
    assert kept._text is False  # not decoded until read
    assert kept.text == line


# -- retained publications (issue 17 item 4) ----------------------------------------------


async def test_retained_bounds(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), retained_value_size=8, retained_max=3,
                                retained_per_sender=2, retained_bytes=20)
    hub = server.hub
    a, b = Sender("JSONsvc", "a"), Sender("mqtt", "b")

    async def kept(topic: str, payload: str, sender: Sender) -> str | None:
        """Publish retained; what the topic then keeps."""
        hub.publish(Publication(topic, payload, sender, retain=True))
        await hub.sync()
        found = await hub.retained(topic)
        return found[0].text if found else None

    assert await kept("t/1", "x" * 8, a) == "x" * 8
    assert not hub.publish(Publication("t/2", "x" * 9, a, retain=True))  # value size: known at once
    assert await kept("t/2", "y", a) == "y"
    assert await kept("t/3", "z", a) is None  # a holds 2 already
    assert await kept("t/1", "replaced", a) == "replaced"  # replacing costs no slot
    assert await kept("t/3", "bbbbbbbb", b) == "bbbbbbbb"
    assert await kept("t/4", "c", b) is None  # 3 topics in all
    assert await kept("t/2", "zzzzzzzz", a) == "y"  # 24 bytes in all: the old value stays
    assert await kept("t/1", "", b) is None  # an empty payload clears, whoever holds it
    assert sorted(p.topic for p in await hub.retained("t/+")) == ["t/2", "t/3"]
    assert server.stats.retained_refused == 4
    if isinstance(hub, RedisHub):  # the count /metrics shows, as a heartbeat reads it
        hub.directory.on_beat()
        await hub.sync()
    assert hub.retained_count() == 2
    assert await kept("t/4", "c", b) == "c"  # a slot freed by the clear


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_a_script_redis_forgot_is_loaded_again(start_server: ServerFactory,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    server = await node(start_server)
    hub = server.hub
    assert isinstance(hub, RedisHub)
    await hub.queue.call(("SCRIPT", "FLUSH"))
    hub.publish(Publication("chat/a", "lost", SENDER))
    await hub.sync()
    assert "loading it again" in caplog.text
    hub.publish(Publication("chat/a", "kept", SENDER))
    assert await texts(server, "chat/a") == ["kept"]


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_the_bounds_are_the_clusters(start_server: ServerFactory) -> None:
    """Two nodes share one count: what one keeps, the other's publications are weighed against."""
    one = await start_server(protocols=("echo",), retained_max=2, history_topics=1)
    two = await start_server(protocols=("echo",), retained_max=2, history_topics=1)
    for server in (one, two):
        server.hub.keep_history("chat/", 3)
    sender = Sender("JSONsvc", "a")
    one.hub.publish(Publication("t/1", "x", sender, retain=True))
    one.hub.publish(Publication("chat/a", "first room", SENDER))
    await one.hub.sync()
    two.hub.publish(Publication("t/2", "y", sender, retain=True))
    two.hub.publish(Publication("t/3", "z", sender, retain=True))  # the cluster's third
    two.hub.publish(Publication("chat/b", "second room", SENDER))  # pushes chat/a out
    await two.hub.sync()
    assert sorted(p.topic for p in await one.hub.retained("t/+")) == ["t/1", "t/2"]
    assert (one.stats.retained_refused, two.stats.retained_refused) == (0, 1)
    assert await texts(one, "chat/a") == [] and await texts(one, "chat/b") == ["second room"]
    assert two.stats.history_topics_evicted == 1
