"""The WAMP router end to end (SPEC §13) with the real Autobahn client, over both
serialisations and on both hubs; the wire details (WELCOME's roles, errors Autobahn
would not let us provoke, protocol violations) with a plain WebSocket client.

Every wait is on something the client receives (a join, an event, a call's
result); "nothing arrived" is shown with a marker sent after the action on the
same path, which must be the next thing received.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import (
    CallDetails,
    CallOptions,
    ComponentConfig,
    EventDetails,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)
from websockets.asyncio.client import ClientConnection, connect

from support import ServerFactory, Spawn, ws_url
from support.wamp import SERIALIZERS, TIMEOUT, Client, connect_client, make, wamp_client, wamp_clients
from wsplex.app.users import hash_password
from wsplex.config import Settings
from wsplex.protocols.wamp.router import META_ROLES, ROLES
from wsplex.server import Server

Open = Callable[..., Awaitable[Client]]
OnNode = Callable[[int, str], Awaitable[Client]]
PROTOCOLS = ("wamp.2.json", "wamp.2.msgpack", "chat")


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=PROTOCOLS)


@pytest.fixture
async def join(server: Server) -> AsyncIterator[Open]:
    """``await join("msgpack", realm="x")``: a joined Autobahn session, closed at the end."""
    async with wamp_clients(server) as opened:

        async def open_client(serializer: str = "json", realm: str = "realm1") -> Client:
            client = await wamp_client(server, serializer, realm)
            opened.append(client)
            return client

        yield open_client


class Inbox:
    """What one handler was called with, in order."""

    def __init__(self, result: Any = None) -> None:
        self.queue: asyncio.Queue[tuple[tuple[Any, ...], dict[str, Any]]] = asyncio.Queue()
        self.result = result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.queue.put_nowait((args, kwargs))
        return self.result

    async def next(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    async def next_args(self) -> tuple[Any, ...]:
        return (await self.next())[0]


def other(serializer: str) -> str:
    return "msgpack" if serializer == "json" else "json"


def session_id(client: Client) -> int:
    assert client._session_id is not None
    return int(client._session_id)


async def failure(call: Awaitable[Any]) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await asyncio.wait_for(call, TIMEOUT)
    return caught.value


async def subscribe(client: Client, topic: str, **options: Any) -> Inbox:
    inbox = Inbox()
    await client.subscribe(inbox, topic, options=make(SubscribeOptions, details_arg="details", **options))
    return inbox


async def publish(client: Client, topic: str, *args: Any, **options: Any) -> Any:
    return await client.publish(topic, *args, options=make(PublishOptions, acknowledge=True, **options))


# -- Basic Profile: pub/sub -----------------------------------------------------------


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_pubsub_across_serialisations_with_acknowledge(join: Open, serializer: str) -> None:
    publisher = await join(serializer)
    subscriber = await join(other(serializer))
    inbox = await subscribe(subscriber, "com.example.news")
    publication = await publisher.publish(
        "com.example.news", "hello", 42, b"\x00\xffbin", {"k": [1, 2]}, x=1.5,
        options=make(PublishOptions, acknowledge=True),
    )
    args, kwargs = await inbox.next()
    assert args == ("hello", 42, b"\x00\xffbin", {"k": [1, 2]})
    details = kwargs.pop("details")
    assert kwargs == {"x": 1.5}
    assert isinstance(details, EventDetails)
    assert details.publication == publication.id
    assert details.publisher is None  # no disclosure unless asked


@pytest.mark.parametrize("realm", ["realm1", "com.example.app"])
async def test_publisher_exclusion_exclude_and_eligible(join: Open, realm: str) -> None:
    publisher, alice, bob = [await join(s, realm) for s in ("json", "msgpack", "json")]
    inboxes = {name: await subscribe(c, "t.x") for name, c in
               (("publisher", publisher), ("alice", alice), ("bob", bob))}
    await publish(publisher, "t.x", 1)  # exclude_me is on by default
    await publish(publisher, "t.x", 2, exclude_me=False)
    await publish(publisher, "t.x", 3, exclude=[session_id(alice)])
    await publish(publisher, "t.x", 4, eligible=[session_id(alice)], exclude_me=False)
    await publish(publisher, "t.x", 5, exclude_me=False)  # the marker: everyone
    assert [(await inboxes["publisher"].next_args())[0] for _ in range(2)] == [2, 5]
    assert [(await inboxes["alice"].next_args())[0] for _ in range(3)] == [1, 2, 4] and (
        await inboxes["alice"].next_args())[0] == 5
    assert [(await inboxes["bob"].next_args())[0] for _ in range(4)] == [1, 2, 3, 5]


@pytest.mark.parametrize("realm", ["realm1", "other"])
async def test_publisher_disclosure(server: Server, join: Open, realm: str) -> None:
    """Autobahn has no ``disclose_me`` option: the publisher is a plain client."""
    subscriber = await join("msgpack", realm)
    inbox = await subscribe(subscriber, "t.disclosed")
    ws = await raw(server, realm)
    welcome_session = ws.wamp_session  # type: ignore[attr-defined]
    await ws.send(json.dumps([16, 1, {"disclose_me": True, "acknowledge": True}, "t.disclosed", ["me"]]))
    assert (await receive(ws))[0] == 17
    args, kwargs = await inbox.next()
    details = kwargs["details"]
    assert args == ("me",)
    assert details.publisher == welcome_session
    assert details.publisher_authid == str(welcome_session)
    assert details.publisher_authrole == "anonymous"
    await ws.close()


@pytest.mark.parametrize("realm", ["realm1", "other"])
async def test_prefix_and_wildcard_subscriptions(join: Open, realm: str) -> None:
    publisher, subscriber = await join("json", realm), await join("msgpack", realm)
    prefix = await subscribe(subscriber, "com.my", match="prefix")
    wildcard = await subscribe(subscriber, "com..temp", match="wildcard")
    exact = await subscribe(subscriber, "com.myapp.temp")
    for topic in ("com.myapp.temp", "com.other.temp", "com.myapp.temp.x", "com.mystery"):
        await publish(publisher, topic, topic)
    # A session with several matching subscriptions gets an event for each (§"EVENT").
    got_prefix = [(args[0], kw["details"].topic) for args, kw in [await prefix.next() for _ in range(3)]]
    assert got_prefix == [("com.myapp.temp", "com.myapp.temp"), ("com.myapp.temp.x", "com.myapp.temp.x"),
                          ("com.mystery", "com.mystery")]
    got_wild = [(args[0], kw["details"].topic) for args, kw in [await wildcard.next() for _ in range(2)]]
    assert got_wild == [("com.myapp.temp", "com.myapp.temp"), ("com.other.temp", "com.other.temp")]
    assert await exact.next_args() == ("com.myapp.temp",)


async def test_subscribing_twice_is_one_subscription_and_subscribers_share_its_id(join: Open) -> None:
    a, b = await join("json"), await join("msgpack")
    first = await a.subscribe(Inbox(), "t.same")
    again = await a.subscribe(Inbox(), "t.same")
    theirs = await b.subscribe(Inbox(), "t.same")
    assert first.id == again.id == theirs.id  # router scope, one per topic and match
    await first.unsubscribe()
    await theirs.unsubscribe()


async def test_unsubscribe_stops_events(join: Open) -> None:
    publisher, subscriber = await join("json"), await join("msgpack")
    gone = Inbox()
    subscription = await subscriber.subscribe(gone, "t.gone")
    marker = await subscribe(subscriber, "t.marker")
    await subscription.unsubscribe()
    await publish(publisher, "t.gone", "lost")
    await publish(publisher, "t.marker", "marker")
    assert await marker.next_args() == ("marker",)
    assert gone.queue.empty()


# -- Basic Profile: RPC -------------------------------------------------------------------


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_rpc_across_serialisations(join: Open, serializer: str) -> None:
    callee = await join(serializer)
    caller = await join(other(serializer))

    def add(a: int, b: int, *, scale: int = 1) -> int:
        return (a + b) * scale

    await callee.register(add, "com.example.add")
    assert await caller.call("com.example.add", 2, 3, scale=10) == 50
    assert await caller.call("com.example.add", 1, 1) == 2
    assert await caller.call("com.example.add", b"\x00", b"\x01") == b"\x00\x01"


async def test_callee_errors_reach_the_caller(join: Open) -> None:
    callee, caller = await join("msgpack"), await join("json")

    def fail() -> None:
        error: Any = ApplicationError  # not annotated by Autobahn
        raise error("com.example.error.sad", "so sad", code=7)

    await callee.register(fail, "com.example.fail")
    error = await failure(caller.call("com.example.fail"))
    assert error.error == "com.example.error.sad"
    assert error.args == ("so sad",) and error.kwargs == {"code": 7}


async def test_rpc_errors_as_the_spec_names_them(join: Open) -> None:
    callee, caller = await join("json"), await join("msgpack")
    assert (await failure(caller.call("com.example.nobody"))).error == "wamp.error.no_such_procedure"
    registration = await callee.register(lambda: 1, "com.example.one")
    error = await failure(caller.register(lambda: 2, "com.example.one"))
    assert error.error == "wamp.error.procedure_already_exists"
    assert (await failure(caller.register(lambda: 2, "wamp.mine"))).error == "wamp.error.invalid_uri"
    await registration.unregister()
    assert (await failure(caller.call("com.example.one"))).error == "wamp.error.no_such_procedure"


async def test_realms_are_separate(join: Open) -> None:
    here, there = await join("json", "com.realm.a"), await join("msgpack", "com.realm.b")
    await here.register(lambda: "a", "com.example.where")
    await there.register(lambda: "b", "com.example.where")  # the same URI in another realm
    neighbour = await join("json", "com.realm.a")
    assert await neighbour.call("com.example.where") == "a"
    inbox_b = await subscribe(there, "t.news")
    inbox_a = await subscribe(here, "t.news")
    await publish(neighbour, "t.news", "for a")
    await publish(await join("msgpack", "com.realm.b"), "t.news", "for b")
    assert await inbox_a.next_args() == ("for a",)
    assert await inbox_b.next_args() == ("for b",)


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_a_callee_that_leaves_mid_call_fails_the_call(join: Open, serializer: str) -> None:
    callee, caller = await join(serializer), await join(other(serializer))
    invoked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def stuck() -> None:
        invoked.set_result(None)
        await asyncio.get_running_loop().create_future()  # never answers

    await callee.register(stuck, "com.example.stuck")
    call = asyncio.ensure_future(caller.call("com.example.stuck"))
    await asyncio.wait_for(invoked, TIMEOUT)
    callee.disconnect()
    assert (await failure(call)).error == "wamp.error.canceled"
    assert (await failure(caller.call("com.example.stuck"))).error == "wamp.error.no_such_procedure"


async def test_pattern_registrations(join: Open) -> None:
    callee, caller = await join("msgpack"), await join("json")
    prefix, wildcard, exact = Inbox("prefix"), Inbox("wildcard"), Inbox("exact")
    for handler, uri, match in ((prefix, "com.api", "prefix"), (wildcard, "com..get", "wildcard"),
                                (exact, "com.api.get", "exact")):
        await callee.register(handler, uri, options=make(RegisterOptions, match=match, details_arg="details"))
    assert await caller.call("com.api.get") == "exact"  # exact beats any pattern
    assert await caller.call("com.api.put") == "prefix"
    assert await caller.call("com.x.get") == "wildcard"
    assert await caller.call("com.apix.get") == "prefix"  # a prefix beats a wildcard
    details = (await prefix.next())[1]["details"]
    assert isinstance(details, CallDetails) and details.procedure == "com.api.put"
    assert details.caller is None  # no disclosure unless asked
    assert (await wildcard.next())[1]["details"].procedure == "com.x.get"


async def test_caller_disclosure(server: Server, join: Open) -> None:
    """Autobahn has no ``disclose_me`` option: the caller is a plain client."""
    callee = await join("msgpack")
    handler = Inbox("disclosed")
    await callee.register(handler, "com.example.who", options=make(RegisterOptions, details_arg="details"))
    ws = await raw(server)
    await ws.send(json.dumps([48, 1, {"disclose_me": True}, "com.example.who", []]))
    assert await receive(ws) == [50, 1, {}, ["disclosed"]]
    details = (await handler.next())[1]["details"]
    assert details.caller == ws.wamp_session  # type: ignore[attr-defined]
    assert details.caller_authid == str(ws.wamp_session)  # type: ignore[attr-defined]
    await ws.close()


@pytest.mark.parametrize("policy", ["roundrobin", "first", "last", "random"])
async def test_shared_registrations(join: Open, policy: str) -> None:
    callees = [await join(s) for s in ("json", "msgpack", "json")]
    for number, callee in enumerate(callees):
        await callee.register(lambda n=number: n, "com.example.shared",
                              options=make(RegisterOptions, invoke=policy))
    caller = await join("msgpack")
    answers = [await caller.call("com.example.shared") for _ in range(6)]
    expected = {"roundrobin": [0, 1, 2, 0, 1, 2], "first": [0] * 6, "last": [2] * 6}
    if policy == "random":
        assert set(answers) <= {0, 1, 2}
    else:
        assert answers == expected[policy]
    single = await failure(caller.register(lambda: 9, "com.example.shared"))
    assert single.error == "wamp.error.procedure_already_exists"  # another policy: refused
    # The first callee leaves: the others go on serving.
    await callees[0].leave()
    assert set([await caller.call("com.example.shared") for _ in range(3)]) <= {1, 2}


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_progressive_call_results(join: Open, serializer: str) -> None:
    callee, caller = await join(serializer), await join(other(serializer))

    def count(n: int, details: CallDetails) -> str:
        assert details.progress is not None
        for i in range(n):
            details.progress(i)
        return "done"

    await callee.register(count, "com.example.count", options=make(RegisterOptions, details_arg="details"))
    progress = Inbox()
    result = await caller.call("com.example.count", 3, options=make(CallOptions, on_progress=progress))
    assert result == "done"
    assert [await progress.next_args() for _ in range(3)] == [(0,), (1,), (2,)]


async def test_call_timeout_interrupts_the_callee(join: Open) -> None:
    callee, caller = await join("json"), await join("msgpack")
    interrupted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def slow() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            interrupted.set_result(None)
            raise

    await callee.register(slow, "com.example.slow")
    error = await failure(caller.call("com.example.slow", options=make(CallOptions, timeout=50)))
    assert error.error == "wamp.error.timeout"
    await asyncio.wait_for(interrupted, TIMEOUT)  # INTERRUPT reached the callee


async def test_call_canceling(join: Open) -> None:
    callee, caller = await join("msgpack"), await join("json")
    started: asyncio.Queue[None] = asyncio.Queue()
    interrupted: asyncio.Queue[None] = asyncio.Queue()

    async def slow() -> None:
        started.put_nowait(None)
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            interrupted.put_nowait(None)
            raise

    await callee.register(slow, "com.example.slow")
    call = asyncio.ensure_future(caller.call("com.example.slow"))
    await asyncio.wait_for(started.get(), TIMEOUT)
    call.cancel()  # Autobahn sends CANCEL (mode killnowait, the default)
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(interrupted.get(), TIMEOUT)
    # The router is not stuck on the canceled call: the same callee answers the next one.
    await callee.register(lambda: "alive", "com.example.alive")
    assert await caller.call("com.example.alive") == "alive"


# -- realm1 is the topic space (SPEC §10) ------------------------------------------------


async def chat(server: Server, name: str) -> ClientConnection:
    ws = await connect(ws_url(server) + f"?name={name}", subprotocols=["chat"])  # type: ignore[list-item]
    await ws.send("/who")  # in the room once the answer comes
    while not str(await asyncio.wait_for(ws.recv(), TIMEOUT)).startswith("* in lobby"):
        pass
    return ws


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_chat_lines_are_events_and_wamp_publications_are_chat_lines(
    server: Server, join: Open, serializer: str
) -> None:
    alice = await chat(server, "alice")
    client = await join(serializer)
    inbox = await subscribe(client, "chat.lobby")
    await alice.send("hi from chat")
    args, kwargs = await inbox.next()
    assert args == ("hi from chat",)
    assert kwargs["details"].publisher_authid == "chat:alice"
    await publish(client, "chat.lobby", "hi from wamp")
    assert await asyncio.wait_for(alice.recv(), TIMEOUT) == f"[wamp:{session_id(client)}] hi from wamp"
    await alice.close()


async def test_realm1_prefix_subscription_hears_the_topic_space(server: Server, join: Open) -> None:
    alice = await chat(server, "alice")
    client = await join("msgpack")
    inbox = await subscribe(client, "chat", match="prefix")
    await alice.send("anyone?")
    args, kwargs = await inbox.next()
    assert args == ("anyone?",) and kwargs["details"].topic == "chat.lobby"
    await alice.close()


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_binary_publications_of_other_protocols_are_bytes(
    start_server: ServerFactory, serializer: str
) -> None:
    server = await start_server(protocols=(*PROTOCOLS, "echo"))
    async with wamp_clients(server) as opened:
        client = await wamp_client(server, serializer)
        opened.append(client)
        inbox = await subscribe(client, "echo")
        echo = await connect(ws_url(server), subprotocols=["echo"])  # type: ignore[list-item]
        await echo.send(b"\x00\xffraw")
        assert await asyncio.wait_for(echo.recv(), TIMEOUT) == b"\x00\xffraw"
        args, kwargs = await inbox.next()
        assert args == (b"\x00\xffraw",)
        assert kwargs["details"].publisher_authid.startswith("echo:")
        await publish(client, "echo", b"\x01back")  # one bytes argument: a binary publication
        assert await asyncio.wait_for(echo.recv(), TIMEOUT) == b"\x01back"
        await echo.close()


async def test_other_realms_do_not_reach_the_topic_space(server: Server, join: Open) -> None:
    alice = await chat(server, "alice")
    outsider = await join("json", "com.private")
    await publish(outsider, "chat.lobby", "not for chat")
    await publish(await join("json"), "chat.lobby", "marker")
    assert str(await asyncio.wait_for(alice.recv(), TIMEOUT)).endswith("] marker")
    await alice.close()


# -- the wire, with a plain WebSocket client ---------------------------------------------------


async def raw(server: Server, realm: str | None = "realm1") -> ClientConnection:
    """A plain WebSocket client on ``wamp.2.json``, joined to ``realm`` unless it is None;
    ``ws.wamp_session`` is its WAMP session ID."""
    ws = await connect(ws_url(server), subprotocols=["wamp.2.json"])  # type: ignore[list-item]
    if realm is not None:
        roles: dict[str, Any] = {"caller": {}, "subscriber": {}, "callee": {}, "publisher": {}}
        await ws.send(json.dumps([1, realm, {"roles": roles}]))
        welcome = await receive(ws)
        assert welcome[0] == 2
        ws.wamp_session = welcome[1]  # type: ignore[attr-defined]
    return ws


async def receive(ws: ClientConnection) -> list[Any]:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    decoded = json.loads(message)
    assert isinstance(decoded, list)
    return decoded


@pytest.mark.parametrize("realm", ["realm1", "other"])
async def test_welcome_announces_exactly_the_roles_and_features(server: Server, hub: str, realm: str) -> None:
    """The session meta API only where this node's router sees every session of the realm:
    on one node (with --redis every realm spans the cluster)."""
    ws = await raw(server, None)
    await ws.send(json.dumps([1, realm, {"roles": {"caller": {}}}]))
    code, session, details = await receive(ws)
    assert code == 2 and 1 <= session <= 2**53
    assert details["roles"] == (ROLES if hub == "redis" else META_ROLES)
    assert details["realm"] == realm and details["authid"] == str(session)
    await ws.close()


@pytest.mark.parametrize("realm", ["realm1", "other"])
async def test_invalid_uris(server: Server, realm: str) -> None:
    """Autobahn checks URIs before sending: a plain client shows the router's answers."""
    ws = await raw(server, realm)
    requests: list[tuple[list[Any], int]] = [
        ([64, 1, {}, "bad uri"], 64), ([64, 2, {"match": "prefix"}, "a#"], 64),
        ([48, 3, {}, "bad..uri"], 48), ([32, 4, {}, "a b"], 32),
        ([32, 5, {"match": "wildcard"}, "a. .b"], 32),
        ([16, 6, {"acknowledge": True}, "a#b"], 16), ([16, 7, {"acknowledge": True}, "wamp.x"], 16),
    ]
    for message, request_type in requests:
        await ws.send(json.dumps(message))
        code, answered_type, request, _, error, *_ = await receive(ws)
        assert (code, answered_type, request) == (8, request_type, message[1])
        assert error == "wamp.error.invalid_uri"
    await ws.send(json.dumps([32, 8, {"match": "fuzzy"}, "a"]))
    assert (await receive(ws))[4] == "wamp.error.invalid_argument"
    await ws.close()


@pytest.mark.memory_only("realm1 topic rules are the router's, before the hub")
async def test_realm1_topic_uris_are_topic_names(server: Server) -> None:
    ws = await raw(server)
    await ws.send(json.dumps([16, 1, {"acknowledge": True}, "a/b.c", []]))
    assert (await receive(ws))[4] == "wamp.error.invalid_uri"  # '/' is the topic separator
    await ws.send(json.dumps([16, 2, {"acknowledge": True}, "$SYS.x", []]))
    assert (await receive(ws))[4] == "wamp.error.not_authorized"  # the server's topics (SPEC §10)
    await ws.send(json.dumps([32, 3, {}, "a" * 70_000]))
    assert (await receive(ws))[4] == "wamp.error.invalid_uri"  # past a topic's 65,535 bytes
    await ws.close()


async def test_unknown_subscription_and_registration(server: Server) -> None:
    ws = await raw(server)
    await ws.send(json.dumps([34, 5, 123456]))
    assert await receive(ws) == [8, 34, 5, {}, "wamp.error.no_such_subscription"]
    await ws.send(json.dumps([66, 6, 123456]))
    assert await receive(ws) == [8, 66, 6, {}, "wamp.error.no_such_registration"]
    await ws.close()


async def test_goodbye_and_a_new_session_on_the_same_connection(server: Server) -> None:
    ws = await raw(server)
    await ws.send(json.dumps([6, {}, "wamp.close.close_realm"]))
    assert await receive(ws) == [6, {}, "wamp.close.goodbye_and_out"]
    await ws.send(json.dumps([32, 1, {}, "t.x"]))  # no session: a violation
    code, details, reason = await receive(ws)
    assert (code, reason) == (3, "wamp.error.protocol_violation") and "before HELLO" in details["message"]
    ws2 = await raw(server)
    await ws2.send(json.dumps([6, {}, "wamp.close.close_realm"]))
    assert (await receive(ws2))[0] == 6
    await ws2.send(json.dumps([1, "com.again", {"roles": {"caller": {}}}]))
    assert (await receive(ws2))[0] == 2
    await ws2.close()


@pytest.mark.parametrize("frame", [
    "not json", "[]", '[2, 1, {}]', '[32, "one", {}, "t"]', '[1, "realm1", {"roles": {}}]',
    '[48, 1, {}, "p", {}]', b"binary on wamp.2.json",
])
async def test_a_protocol_violation_aborts_that_session_only(
    server: Server, join: Open, frame: str | bytes
) -> None:
    bystander = await join("msgpack")
    await bystander.register(lambda: "still here", "com.example.alive")
    ws = await raw(server)
    await ws.send(frame)
    code, details, reason = await receive(ws)
    assert (code, reason) == (3, "wamp.error.protocol_violation") and details["message"]
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    assert ws.close_code == 1002
    caller = await join("json")
    assert await caller.call("com.example.alive") == "still here"


async def test_hello_needs_a_realm_uri(server: Server) -> None:
    ws = await raw(server, None)
    await ws.send(json.dumps([1, "not a uri", {"roles": {"caller": {}}}]))
    assert (await receive(ws))[2] == "wamp.error.invalid_uri"
    await ws.send(json.dumps([1, "realm1", {"roles": {"caller": {}}}]))
    assert (await receive(ws))[0] == 2  # the connection stays for another try
    await ws.close()


# -- several nodes (SPEC §9, §13) ------------------------------------------------------------


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_realm1_pubsub_across_nodes(start_server: ServerFactory) -> None:
    """Realm1's pub/sub is the topic space, so it spans the cluster: an event published
    on one node reaches a subscriber of the other with its arguments as published."""
    first, second = await start_server(protocols=PROTOCOLS), await start_server(protocols=PROTOCOLS)
    async with wamp_clients(first) as opened:
        subscriber = await wamp_client(first, "msgpack")
        publisher = await wamp_client(second, "json")
        opened += [subscriber, publisher]
        inbox = await subscribe(subscriber, "com.cluster", match="prefix")
        await publisher.publish("com.cluster.news", "hi", b"\x01", n=2,
                                options=make(PublishOptions, acknowledge=True))
        args, kwargs = await inbox.next()
        details = kwargs.pop("details")
        assert args == ("hi", b"\x01") and kwargs == {"n": 2}
        assert details.topic == "com.cluster.news"


# -- --users: ticket authentication (SPEC §15) ------------------------------------------------


@pytest.fixture
async def guarded(start_server: ServerFactory, tmp_path: Path) -> Server:
    users = tmp_path / "users.toml"
    users.write_text(f'[users]\nalice = "{hash_password("s3cret", n=16, r=1, p=1)}"\n')
    return await start_server(protocols=PROTOCOLS, users_file=str(users))


@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_ticket_authentication(guarded: Server, serializer: str) -> None:
    async with wamp_clients(guarded) as opened:
        alice = await wamp_client(guarded, serializer, ticket=("alice", "s3cret"))
        opened.append(alice)
        details = await alice.joined
        assert (details.authid, details.authrole, details.authmethod) == ("alice", "user", "ticket")
        await alice.register(lambda: "hi alice", "com.example.hi")
        assert await alice.call("com.example.hi") == "hi alice"


@pytest.mark.parametrize(("ticket", "reason"), [
    (("alice", "wrong"), "wamp.error.authentication_failed"),
    (("mallory", "s3cret"), "wamp.error.authentication_failed"),
    (None, "wamp.error.no_auth_method"),
])
async def test_ticket_authentication_refusals(
    guarded: Server, ticket: tuple[str, str] | None, reason: str
) -> None:
    client = Client(make(ComponentConfig, realm="realm1"), ticket)
    with pytest.raises(RuntimeError, match=reason):
        await connect_client(guarded, client)
    assert (await client.left).reason == reason


async def test_a_challenge_wants_authenticate(guarded: Server) -> None:
    ws = await raw(guarded, None)
    await ws.send(json.dumps([1, "realm1", {"roles": {"caller": {}}, "authmethods": ["ticket"],
                                            "authid": "alice"}]))
    assert await receive(ws) == [4, "ticket", {}]
    await ws.send(json.dumps([48, 1, {}, "com.example.x", []]))
    code, _, reason = await receive(ws)
    assert (code, reason) == (3, "wamp.error.protocol_violation")


@pytest.mark.parametrize("mode", ["skip", "kill", "killnowait"])
async def test_cancel_modes(server: Server, join: Open, mode: str) -> None:
    """Advanced Profile, "Call Canceling": skip answers the caller and leaves the callee
    alone; kill interrupts the callee and forwards its answer; killnowait does both."""
    callee = await join("msgpack")
    started: asyncio.Queue[None] = asyncio.Queue()
    interrupted: asyncio.Queue[None] = asyncio.Queue()

    async def slow() -> None:
        started.put_nowait(None)
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            interrupted.put_nowait(None)
            error: Any = ApplicationError  # not annotated by Autobahn
            raise error("com.example.interrupted") from None

    await callee.register(slow, "com.example.slow")
    await callee.register(lambda: "marker", "com.example.marker")
    ws = await raw(server)
    await ws.send(json.dumps([48, 1, {}, "com.example.slow", []]))
    await asyncio.wait_for(started.get(), TIMEOUT)
    await ws.send(json.dumps([49, 1, {"mode": mode}]))
    code, request_type, request, _, error, *_ = await receive(ws)
    expected = "com.example.interrupted" if mode == "kill" else "wamp.error.canceled"  # kill: the callee's
    assert (code, request_type, request, error) == (8, 48, 1, expected)
    await ws.send(json.dumps([48, 2, {}, "com.example.marker", []]))
    assert await receive(ws) == [50, 2, {}, ["marker"]]  # nothing more about call 1 came first
    if mode == "skip":
        assert interrupted.empty()  # the INTERRUPT would have reached the callee before the marker
    else:
        await asyncio.wait_for(interrupted.get(), TIMEOUT)
    await ws.close()


@pytest.fixture
async def two_nodes(start_server: ServerFactory) -> AsyncIterator[OnNode]:
    """``await on(0, "json")``: a client joined to realm1 on node 0 or 1 of a cluster."""
    nodes = [await start_server(protocols=PROTOCOLS), await start_server(protocols=PROTOCOLS)]
    async with wamp_clients(nodes[0]) as opened:

        async def on(node: int, serializer: str) -> Client:
            client = await wamp_client(nodes[node], serializer)
            opened.append(client)
            return client

        yield on


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
@pytest.mark.parametrize("serializer", SERIALIZERS)
async def test_calls_across_nodes(two_nodes: OnNode, serializer: str) -> None:
    """Realm1's exact, single registrations are the cluster's: a caller on one node
    reaches a callee on another, results, errors and progressive results come back."""
    callee, caller = await two_nodes(0, serializer), await two_nodes(1, other(serializer))

    def count(n: int, details: CallDetails) -> str:
        assert details.progress is not None
        for i in range(n):
            details.progress(i)
        return f"counted to {n}"

    def fail() -> None:
        error: Any = ApplicationError
        raise error("com.example.error.sad", "so sad", code=7)

    await callee.register(count, "com.cluster.count", options=make(RegisterOptions, details_arg="details"))
    await callee.register(fail, "com.cluster.fail")
    await callee.register(lambda a, b: a + b, "com.cluster.add")
    assert await caller.call("com.cluster.add", 2, 3) == 5
    assert await caller.call("com.cluster.add", b"\x00", b"\x01") == b"\x00\x01"
    progress = Inbox()
    result = await caller.call("com.cluster.count", 2, options=make(CallOptions, on_progress=progress))
    assert result == "counted to 2"
    assert [await progress.next_args() for _ in range(2)] == [(0,), (1,)]
    error = await failure(caller.call("com.cluster.fail"))
    assert (error.error, error.args, error.kwargs) == ("com.example.error.sad", ("so sad",), {"code": 7})
    taken = await failure(caller.register(lambda: 0, "com.cluster.add"))
    assert taken.error == "wamp.error.procedure_already_exists"  # registered on the other node
    assert (await failure(caller.call("com.cluster.nobody"))).error == "wamp.error.no_such_procedure"


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_calls_across_nodes_end_when_the_callee_leaves_or_the_caller_gives_up(
    two_nodes: OnNode
) -> None:
    callee, caller = await two_nodes(0, "msgpack"), await two_nodes(1, "json")
    started: asyncio.Queue[None] = asyncio.Queue()
    interrupted: asyncio.Queue[None] = asyncio.Queue()

    async def stuck() -> None:
        started.put_nowait(None)
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            interrupted.put_nowait(None)
            raise

    await callee.register(stuck, "com.cluster.stuck")
    timed_out = await failure(caller.call("com.cluster.stuck", options=make(CallOptions, timeout=50)))
    assert timed_out.error == "wamp.error.timeout"
    await asyncio.wait_for(started.get(), TIMEOUT)
    await asyncio.wait_for(interrupted.get(), TIMEOUT)
    call = asyncio.ensure_future(caller.call("com.cluster.stuck"))
    await asyncio.wait_for(started.get(), TIMEOUT)
    call.cancel()  # CANCEL, killnowait
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(interrupted.get(), TIMEOUT)
    call = asyncio.ensure_future(caller.call("com.cluster.stuck"))
    await asyncio.wait_for(started.get(), TIMEOUT)
    callee.disconnect()
    assert (await failure(call)).error == "wamp.error.canceled"
    assert (await failure(caller.call("com.cluster.stuck"))).error == "wamp.error.no_such_procedure"


@pytest.mark.parametrize("hub", ["redis"], indirect=True)
async def test_a_call_to_a_node_that_dies_fails(
    start_server: ServerFactory, spawn: Spawn, clean_redis: str
) -> None:
    """Nobody is left to answer: the callee's name goes with its node's TTL, and the
    call fails then rather than wait for ever."""
    doomed = spawn("--redis", clean_redis, "--redis-ttl", "2", "--protocols", "wamp.2.json,wamp.2.msgpack")
    survivor = await start_server(protocols=PROTOCOLS, redis_ttl=2.0)
    invoked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def stuck() -> None:
        invoked.set_result(None)
        await asyncio.get_running_loop().create_future()

    async with wamp_clients(survivor) as opened:
        callee = await wamp_client(doomed, "msgpack")
        await callee.register(stuck, "com.cluster.doomed")
        caller = await wamp_client(survivor, "json")
        opened.append(caller)
        call = asyncio.ensure_future(caller.call("com.cluster.doomed"))
        await asyncio.wait_for(invoked, TIMEOUT)
        doomed.stop(signal.SIGKILL)
        with pytest.raises(ApplicationError) as caught:
            await asyncio.wait_for(call, 2 + 10)  # the TTL, and a guard
        assert caught.value.error == "wamp.error.canceled"
        await asyncio.wait_for(callee.closed, TIMEOUT)


@pytest.mark.parametrize("realm", ["realm1", "other"])
async def test_max_subscriptions(start_server: ServerFactory, realm: str) -> None:
    """--max-subscriptions bounds what a session holds; in realm1 the hub counts (its
    session's topic for other nodes' routers is one), elsewhere the router."""
    server = await start_server(protocols=PROTOCOLS, max_subscriptions=3)
    ws = await raw(server, realm)
    allowed = 2 if realm == "realm1" else 3
    for request in range(1, allowed + 1):
        await ws.send(json.dumps([32, request, {}, f"t.n{request}"]))
        assert (await receive(ws))[0] == 33
    await ws.send(json.dumps([32, 1, {}, "t.n1"]))  # the same again: nothing more to hold
    assert (await receive(ws))[0] == 33
    await ws.send(json.dumps([32, 9, {}, "t.more"]))
    assert (await receive(ws))[:5] == [8, 32, 9, {}, "wamp.error.not_authorized"]
    await ws.close()


@pytest.mark.parametrize("realm", ["realm1", "com.meta"])
async def test_session_meta_api(join: Open, hub: str, realm: str) -> None:
    watcher = await join("json", realm)
    if hub == "redis":  # not announced: a realm's sessions are on every node
        assert (await failure(watcher.call("wamp.session.count"))).error == "wamp.error.no_such_procedure"
        return
    joins = await subscribe(watcher, "wamp.session.on_join")
    leaves = await subscribe(watcher, "wamp.session.on_leave")
    other = await join("msgpack", realm)
    details = (await joins.next_args())[0]
    assert details["session"] == session_id(other) and details["authid"] == str(session_id(other))
    assert details["authrole"] == "anonymous"
    assert await watcher.call("wamp.session.count") == 2
    assert await watcher.call("wamp.session.count", ["user"]) == 0
    assert sorted(await watcher.call("wamp.session.list")) == sorted([session_id(watcher), session_id(other)])
    assert (await watcher.call("wamp.session.get", session_id(other)))["session"] == session_id(other)
    missing = await failure(watcher.call("wamp.session.get", 1))
    assert missing.error == "wamp.error.no_such_session"
    gone = session_id(other)
    await other.leave()
    assert (await leaves.next_args())[:2] == (gone, str(gone))
    assert await watcher.call("wamp.session.count") == 1


# -- shutdown (SPEC §8) -------------------------------------------------------------------------


async def test_shutdown_says_goodbye_system_shutdown() -> None:
    """§"Session Closing": a router that stops ends each session with GOODBYE
    ``wamp.close.system_shutdown``, in its own serialisation, then the server closes
    the connection with 1001."""
    server = Server(Settings(host="127.0.0.1", port=0, protocols=PROTOCOLS, shutdown_timeout=2.0))
    await server.start()
    stopping: asyncio.Task[None] | None = None
    try:
        ws = await raw(server, "com.example.app")
        autobahn = await wamp_client(server, "msgpack")
        stopping = asyncio.create_task(server.stop())
        code, details, reason = await receive(ws)
        assert (code, reason) == (6, "wamp.close.system_shutdown") and isinstance(details, dict)
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1001
        left = await asyncio.wait_for(autobahn.left, TIMEOUT)
        assert left.reason == "wamp.close.system_shutdown"
        await asyncio.wait_for(autobahn.closed, TIMEOUT)
    finally:
        await (stopping if stopping is not None else server.stop())
