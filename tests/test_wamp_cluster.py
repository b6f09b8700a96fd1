"""Realm1's pattern-based and shared registrations across the nodes of a cluster (SPEC §9,
§13), with the real Autobahn client: a caller on a node without a callee of the procedure
reaches the callees of other nodes, ranked and picked as one router would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from autobahn.wamp.types import CallDetails, PublishOptions, RegisterOptions

from support import ServerFactory
from support.wamp import SERIALIZERS, TIMEOUT, Client, make, wamp_client, wamp_clients
from test_wamp import Inbox, failure, other, publish, session_id, subscribe

PROTOCOLS = ("wamp.2.json", "wamp.2.msgpack")
OnNode = Callable[..., Awaitable[Client]]

pytestmark = pytest.mark.parametrize("hub", ["redis"], indirect=True)


@pytest.fixture
async def on_node(start_server: ServerFactory) -> AsyncIterator[OnNode]:
    """``await on_node(2, "json")``: a client joined to realm1 (or the realm given third)
    on node 0, 1 or 2 of a cluster."""
    nodes = [await start_server(protocols=PROTOCOLS) for _ in range(3)]
    async with wamp_clients(nodes[0]) as opened:

        async def on(node: int, serializer: str, realm: str = "realm1") -> Client:
            client = await wamp_client(nodes[node], serializer, realm)
            opened.append(client)
            return client

        yield on


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_pattern_registrations_across_nodes(on_node: OnNode, serializer: str) -> None:
    callee, caller = await on_node(0, serializer), await on_node(1, other(serializer))
    prefix, wildcard, exact = Inbox("prefix"), Inbox("wildcard"), Inbox("exact")
    registrations = {}
    for handler, uri, match, invoke in ((prefix, "com.api", "prefix", "single"),
                                        (wildcard, "com..get", "wildcard", "single"),
                                        (exact, "com.api.get", "exact", "roundrobin")):
        registrations[match] = await callee.register(handler, uri, options=make(
            RegisterOptions, match=match, invoke=invoke, details_arg="details"))
    assert await caller.call("com.api.get") == "exact"  # exact beats any pattern
    assert await caller.call("com.api.put", 1, k=2) == "prefix"
    assert await caller.call("com.x.get") == "wildcard"
    assert await caller.call("com.apix.get") == "prefix"  # a prefix beats a wildcard
    args, kwargs = await prefix.next()
    details = kwargs.pop("details")
    assert (args, kwargs) == ((1,), {"k": 2})
    assert isinstance(details, CallDetails) and details.procedure == "com.api.put"
    assert (await wildcard.next())[1]["details"].procedure == "com.x.get"

    prefix_options = make(RegisterOptions, match="prefix")
    taken = await failure(caller.register(lambda: 0, "com.api", options=prefix_options))
    assert taken.error == "wamp.error.procedure_already_exists"  # single, on the other node
    await registrations["prefix"].unregister()
    assert (await failure(caller.call("com.api.put"))).error == "wamp.error.no_such_procedure"
    assert await caller.call("com.apix.get") == "wildcard"


@pytest.mark.parametrize("policy", ["roundrobin", "first", "last", "random"])
async def test_shared_registrations_across_nodes(on_node: OnNode, policy: str) -> None:
    """Callees on nodes 0 and 1, the caller on node 2: the policy picks among all of them,
    in the order they registered (roundrobin's turn is the caller's node's)."""
    callees = [await on_node(node, serializer)
               for node, serializer in ((0, "json"), (1, "msgpack"), (0, "msgpack"))]
    for number, callee in enumerate(callees):
        await callee.register(lambda n=number: n, "com.example.shared",
                              options=make(RegisterOptions, invoke=policy))
    caller = await on_node(2, "json")
    answers = [await caller.call("com.example.shared") for _ in range(6)]
    expected = {"roundrobin": [0, 1, 2, 0, 1, 2], "first": [0] * 6, "last": [2] * 6}
    if policy == "random":
        assert set(answers) <= {0, 1, 2}
    else:
        assert answers == expected[policy]
    for invoke in ("single", "roundrobin" if policy != "roundrobin" else "first"):
        refused = await failure(caller.register(lambda: 9, "com.example.shared",
                                                options=make(RegisterOptions, invoke=invoke)))
        assert refused.error == "wamp.error.procedure_already_exists"  # another policy, another node
    joined = await on_node(2, "msgpack")
    await joined.register(lambda: 3, "com.example.shared", options=make(RegisterOptions, invoke=policy))
    await callees[1].leave()  # the callee of node 1 goes: the others go on serving
    # Node 2 has a callee of its own now: its callers are served there.
    assert [await caller.call("com.example.shared") for _ in range(3)] == [3, 3, 3]
    other_caller = await on_node(1, "json")  # node 1 has none any more: nodes 0 and 2 serve it
    answers = [await other_caller.call("com.example.shared") for _ in range(6)]
    assert set(answers) <= {0, 2, 3}
    if policy != "random":
        assert 1 not in answers and len(set(answers)) == (3 if policy == "roundrobin" else 1)


async def test_single_and_shared_registrations_exclude_each_other_across_nodes(on_node: OnNode) -> None:
    first, second = await on_node(0, "json"), await on_node(1, "msgpack")
    await first.register(lambda: 1, "com.example.one")
    shared = await failure(second.register(lambda: 2, "com.example.one",
                                           options=make(RegisterOptions, invoke="roundrobin")))
    assert shared.error == "wamp.error.procedure_already_exists"
    await second.register(lambda: 2, "com.example.many", options=make(RegisterOptions, invoke="roundrobin"))
    single = await failure(first.register(lambda: 1, "com.example.many"))
    assert single.error == "wamp.error.procedure_already_exists"
    assert await first.call("com.example.many") == 2
    assert await second.call("com.example.one") == 1


async def test_a_pattern_callee_that_leaves_mid_call_fails_the_call_across_nodes(on_node: OnNode) -> None:
    callee, caller = await on_node(0, "msgpack"), await on_node(1, "json")
    started: asyncio.Queue[None] = asyncio.Queue()

    async def stuck() -> None:
        started.put_nowait(None)
        await asyncio.get_running_loop().create_future()

    await callee.register(stuck, "com.stuck.", options=make(RegisterOptions, match="prefix", invoke="last"))
    call = asyncio.ensure_future(caller.call("com.stuck.forever"))
    await asyncio.wait_for(started.get(), TIMEOUT)
    callee.disconnect()
    assert (await failure(call)).error == "wamp.error.canceled"
    assert (await failure(caller.call("com.stuck.again"))).error == "wamp.error.no_such_procedure"


# -- realms other than realm1 span the cluster too ----------------------------------------------


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_other_realms_pubsub_across_nodes(on_node: OnNode, serializer: str) -> None:
    """Events of a realm reach its subscribers on every node, with patterns, publisher
    exclusion and black- and whitelisting, and stay in their realm."""
    publisher = await on_node(0, serializer, "com.example.app")
    near = await on_node(0, other(serializer), "com.example.app")
    far = await on_node(1, other(serializer), "com.example.app")
    elsewhere = await on_node(1, serializer, "com.example.other")
    near_inbox = await subscribe(near, "com.example.news")
    far_inbox = await subscribe(far, "com.example", match="prefix")
    elsewhere_inbox = await subscribe(elsewhere, "com.example.news")
    own = await subscribe(publisher, "com.example.news")
    await publisher.publish("com.example.news", "hi", b"\x01", n=2,
                            options=make(PublishOptions, acknowledge=True))
    for inbox in (near_inbox, far_inbox):
        args, kwargs = await inbox.next()
        details = kwargs.pop("details")
        assert args == ("hi", b"\x01") and kwargs == {"n": 2}
    assert details.topic == "com.example.news"  # the prefix subscription's
    await publish(publisher, "com.example.news", "for far only", eligible=[session_id(far)])
    await publish(publisher, "com.example.news", "not for far", exclude=[session_id(far)],
                  exclude_me=False)
    assert await far_inbox.next_args() == ("for far only",)
    assert await near_inbox.next_args() == ("not for far",)  # nothing came before it
    assert await own.next_args() == ("not for far",)  # exclude_me false: the publisher hears it
    await publish(await on_node(1, serializer, "com.example.other"), "com.example.news", "marker")
    assert await elsewhere_inbox.next_args() == ("marker",)  # and never com.example.app's events


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_other_realms_rpc_across_nodes(on_node: OnNode, serializer: str) -> None:
    callee = await on_node(0, serializer, "com.example.app")
    shared = await on_node(2, serializer, "com.example.app")
    caller = await on_node(1, other(serializer), "com.example.app")
    await callee.register(lambda a, b: a + b, "com.example.add")
    await callee.register(Inbox("prefix"), "com.example.math.", options=make(RegisterOptions, match="prefix"))
    for number, client in enumerate((callee, shared)):
        await client.register(lambda n=number: n, "com.example.shared",
                              options=make(RegisterOptions, invoke="roundrobin"))
    assert await caller.call("com.example.add", 2, 3) == 5
    assert await caller.call("com.example.math.pow") == "prefix"
    assert [await caller.call("com.example.shared") for _ in range(4)] == [0, 1, 0, 1]
    taken = await failure(caller.register(lambda: 0, "com.example.add"))
    assert taken.error == "wamp.error.procedure_already_exists"
    # The same procedure in another realm is another procedure.
    stranger = await on_node(1, serializer, "com.example.other")
    assert (await failure(stranger.call("com.example.add"))).error == "wamp.error.no_such_procedure"
    await stranger.register(lambda: "other", "com.example.add")
    assert await caller.call("com.example.add", 1, 1) == 2


async def test_registrations_rank_across_nodes(on_node: OnNode) -> None:
    """A pattern of the caller's node serves it unless another node's registration ranks
    higher: an exact one, or a longer prefix."""
    near, far = await on_node(0, "json"), await on_node(1, "msgpack")
    caller = await on_node(0, "msgpack")
    await near.register(lambda: "near prefix", "com.rank.", options=make(RegisterOptions, match="prefix"))
    await near.register(lambda: "near wildcard", "com..get", options=make(RegisterOptions, match="wildcard"))
    await far.register(lambda: "far exact", "com.rank.get")
    await far.register(lambda: "far prefix", "com.rank.long", options=make(RegisterOptions, match="prefix"))
    await far.register(lambda: "far wildcard", "com.x.", options=make(RegisterOptions, match="wildcard",
                                                                         invoke="roundrobin"))
    assert await caller.call("com.rank.get") == "far exact"  # exact beats the prefix here
    assert await caller.call("com.rank.longer") == "far prefix"  # the longer prefix
    assert await caller.call("com.rank.other") == "near prefix"
    assert await caller.call("com.y.get") == "near wildcard"
    assert await caller.call("com.x.get") == "far wildcard"  # its first wildcard comes later
