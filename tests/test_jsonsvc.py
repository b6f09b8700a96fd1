"""JSONsvc end to end (SPEC §5): named peers, services, server commands, errors.

Real clients over real sockets. Everything is asserted through what clients
receive, never through hub internals, so the same tests hold on any hub.
"No message arrived" is shown with a marker: a message sent after the action
on the same path, which must be the next thing the client receives.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from support import ServerFactory, ws_url
from wsplex.protocols.jsonsvc.wire import HEADER_LIMIT
from wsplex.server import Server

TIMEOUT = 5.0
Client = Callable[..., Awaitable[ClientConnection]]


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=("JSONsvc",))


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Client]:
    """``await client("alice")``: a JSONsvc connection, registered as ``alice`` if a name is given."""
    opened: list[ClientConnection] = []

    async def open_client(name: str | None = None) -> ClientConnection:
        ws = await connect(ws_url(server), subprotocols=["JSONsvc"])  # type: ignore[list-item]
        opened.append(ws)
        if name is not None:
            await ws.send(dump({"from": name}))
            assert await whoami(ws, name) == name  # registration was silent
        return ws

    yield open_client
    for ws in opened:
        await ws.close()


def dump(header: dict[str, Any], data: str | None = None) -> str:
    text = json.dumps(header, ensure_ascii=False)
    return text if data is None else f"{text}>{data}"


async def recv_text(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    return message


async def recv(ws: ClientConnection) -> tuple[dict[str, Any], str | None]:
    """The next message as (header, data)."""
    text = await recv_text(ws)
    header, end = json.JSONDecoder().raw_decode(text)
    assert end == len(text) or text[end] == ">"
    return header, (text[end + 1 :] if end < len(text) else None)


async def reply(ws: ClientConnection) -> dict[str, Any]:
    header, data = await recv(ws)
    assert data is None
    return header


async def whoami(ws: ClientConnection, sender: str = "x") -> str:
    await ws.send(dump({"from": sender, "to": "JSONsvc", "cmd": "whoami"}))
    answer = await reply(ws)
    assert answer["from"] == "JSONsvc" and answer["cmd"] == "whoami", answer
    assert answer["to"] == answer["name"]
    return str(answer["name"])


async def command(ws: ClientConnection, name: str, cmd: str) -> dict[str, Any]:
    await ws.send(dump({"from": name, "to": "JSONsvc", "cmd": cmd}))
    answer = await reply(ws)
    assert answer["from"] == "JSONsvc" and answer["to"] == name and answer["cmd"] == cmd, answer
    return answer


async def expect_error(ws: ClientConnection, to: str | None, *fragments: str) -> str:
    answer = await reply(ws)
    assert set(answer) == {"from", "to", "error"}, answer
    assert answer["from"] == "JSONsvc" and answer["to"] == to, answer
    for fragment in fragments:
        assert fragment in answer["error"], answer
    return str(answer["error"])


async def no_more(receiver: ClientConnection, sender: ClientConnection, sender_name: str,
                  receiver_name: str) -> None:
    """Nothing else reached ``receiver`` from ``sender``: a marker sent now arrives next."""
    await sender.send(dump({"from": sender_name, "to": receiver_name, "marker": True}))
    assert await recv(receiver) == ({"from": sender_name, "to": receiver_name, "marker": True}, None)


async def services(ws: ClientConnection, name: str) -> dict[str, Any]:
    listing: dict[str, Any] = (await command(ws, name, "services"))["services"]
    return listing


async def claim_until_free(ws: ClientConnection, name: str) -> None:
    """Claim ``name`` until its old holder's disconnect has been processed.

    Each try waits for the server's answer, so this polls without sleeping.
    """
    for _ in range(200):
        await ws.send(dump({"from": name, "to": "JSONsvc", "cmd": "whoami"}))
        answer = await reply(ws)
        if answer.get("name") == name:
            return
        assert answer["error"] == f"name {name!r} is taken"
    raise AssertionError(f"{name} never became free")


# -- registration ----------------------------------------------------------------


async def test_registration_is_silent_and_whoami_answers(client: Client) -> None:
    alice = await client()
    await alice.send('{"from":"alice"}')
    await alice.send('{"from":"alice","to":"JSONsvc","cmd":"whoami"}')
    assert await recv_text(alice) == '{"from":"JSONsvc","to":"alice","cmd":"whoami","name":"alice"}'


async def test_a_name_in_use_is_refused_and_freed_on_disconnect(client: Client) -> None:
    alice = await client("alice")
    impostor = await client()
    await impostor.send(dump({"from": "alice", "to": "JSONsvc", "cmd": "whoami"}))
    await expect_error(impostor, "alice", "name 'alice' is taken")
    # The refused connection stays open, unregistered, and can pick another name.
    assert await whoami(impostor, "bob") == "bob"
    await alice.close()
    newcomer = await client()
    await claim_until_free(newcomer, "alice")
    await impostor.send(dump({"from": "bob", "to": "alice"}, "hi"))
    assert await recv(newcomer) == ({"from": "bob", "to": "alice"}, "hi")


async def test_names_are_case_sensitive_and_unicode(client: Client) -> None:
    zoe = await client("Zoë-日本語")
    other = await client("zoë-日本語")
    omega = await client("Ωmega 🎉")
    await zoe.send(dump({"from": "Zoë-日本語", "to": "Ωmega 🎉"}, "данные > } 🎉"))
    assert await recv(omega) == ({"from": "Zoë-日本語", "to": "Ωmega 🎉"}, "данные > } 🎉")
    assert (await command(other, "zoë-日本語", "clients"))["clients"] == sorted(
        ["Zoë-日本語", "zoë-日本語", "Ωmega 🎉"]
    )


@pytest.mark.parametrize(
    ("claimed", "fragment"),
    [
        ("", "invalid name ''"),
        ("x" * 65, "1-64 printable characters"),
        ("tab\there", "invalid name"),
        ("JSONsvc", "name 'JSONsvc' is reserved"),
    ],
)
async def test_invalid_names_are_refused(client: Client, claimed: str, fragment: str) -> None:
    ws = await client()
    await ws.send(dump({"from": claimed}))
    await expect_error(ws, claimed, fragment)
    assert await whoami(ws, "fine") == "fine"


async def test_a_client_keeps_its_name(client: Client) -> None:
    """A later ``from`` does not rename: the server answers as the registered name."""
    alice = await client("alice")
    assert await whoami(alice, "someone-else") == "alice"
    other = await client()
    assert await whoami(other, "someone-else") == "someone-else"  # that name was never taken


# -- peer messages ---------------------------------------------------------------


async def test_peer_message_is_delivered_unchanged(client: Client) -> None:
    alice = await client("alice")
    bob = await client("bob")
    text = '{"from":"alice", "to":"bob","note":"a > b } c","n":[1,{"x":null}]} >{"not":"header"}>}}>> \n'
    await alice.send(text)
    assert await recv_text(bob) == text  # byte for byte: spacing, key order, data


async def test_peer_message_without_data_and_to_self(client: Client) -> None:
    alice = await client("alice")
    await alice.send('{"from":"alice","to":"alice","ping":1}')
    assert await recv_text(alice) == '{"from":"alice","to":"alice","ping":1}'


async def test_big_data_passes_exactly(client: Client) -> None:
    alice = await client("alice")
    bob = await client("bob")
    data = ("}>{" * 50_000) + "é"
    await alice.send(dump({"from": "alice", "to": "bob"}, data))
    assert await recv(bob) == ({"from": "alice", "to": "bob"}, data)


async def test_unknown_destination(client: Client) -> None:
    alice = await client("alice")
    await alice.send(dump({"from": "alice", "to": "nobody"}, "x"))
    await expect_error(alice, "alice", "unknown destination 'nobody'")


async def test_spoofed_from_is_replaced_by_the_registered_name(client: Client) -> None:
    alice = await client("alice")
    bob = await client("bob")
    carol = await client("carol")
    await alice.send('{"from":"bob","to":"carol","kind":"x>y"}>as bob? } >')
    assert await recv(carol) == ({"from": "alice", "to": "carol", "kind": "x>y"}, "as bob? } >")
    # A service message cannot be put in another's name either.
    await carol.send(dump({"from": "carol", "requests": "temp"}))
    await whoami(carol)
    await alice.send(dump({"from": "bob", "put": "temp"}, "-1"))
    assert await recv(carol) == ({"from": "alice", "put": "temp"}, "-1")
    listing = await services(bob, "bob")
    assert listing["temp"]["providers"] == ["alice"] and listing["temp"]["updated_by"] == "alice"


# -- services --------------------------------------------------------------------


async def test_put_reaches_every_requester_as_the_providers_message(client: Client) -> None:
    sensor = await client("sensor")
    d1 = await client("d1")
    d2 = await client("d2")
    bystander = await client("bystander")
    await sensor.send('{"from":"sensor","provides":"temp"}')
    await d1.send('{"from":"d1","requests":"temp"}')
    await d2.send('{"from":"d2","requests":["temp","humidity"]}')
    await whoami(d1)  # the subscriptions are in place once these answer
    await whoami(d2)
    await sensor.send('{"from":"sensor","put":"temp"}>21.5')
    assert await recv_text(d1) == '{"from":"sensor","put":"temp"}>21.5'
    assert await recv_text(d2) == '{"from":"sensor","put":"temp"}>21.5'
    await sensor.send('{"from":"sensor","put":"temp","unit":"C"}>22 > 21.5 }')
    assert await recv_text(d1) == '{"from":"sensor","put":"temp","unit":"C"}>22 > 21.5 }'
    assert await recv_text(d2) == '{"from":"sensor","put":"temp","unit":"C"}>22 > 21.5 }'
    await no_more(bystander, sensor, "sensor", "bystander")


async def test_get_answers_from_the_latest_value(client: Client) -> None:
    sensor = await client("sensor")
    reader = await client("reader")
    await sensor.send('{"from":"sensor","provides":"temp"}')
    await sensor.send('{"from":"sensor","put":"temp"}>21.5')
    await sensor.send('{"from":"sensor","put":"temp"}>22.0')
    await whoami(sensor)
    await reader.send('{"from":"reader","get":"temp"}')
    assert await recv_text(reader) == '{"from":"sensor","put":"temp"}>22.0'
    # get and requests together: the current value now, later ones as they come.
    await reader.send('{"from":"reader","get":"temp","requests":"temp"}')
    assert await recv_text(reader) == '{"from":"sensor","put":"temp"}>22.0'
    await sensor.send('{"from":"sensor","put":"temp"}>23')
    assert await recv_text(reader) == '{"from":"sensor","put":"temp"}>23'
    await no_more(sensor, reader, "reader", "sensor")  # the provider was not asked


async def test_get_without_value_is_forwarded_to_the_provider(client: Client) -> None:
    sensor = await client("sensor")
    asker = await client("asker")
    other = await client("other")
    watcher = await client("watcher")
    await sensor.send('{"from":"sensor","provides":"temp"}')
    await watcher.send('{"from":"watcher","requests":"temp"}')
    await whoami(sensor)
    await whoami(watcher)
    await asker.send('{"from":"asker","get":"temp","why":"dashboard"}')
    assert await recv_text(sensor) == '{"from":"asker","get":"temp","why":"dashboard"}'
    await other.send('{"from":"spoof","get":"temp"}')
    assert await recv_text(sensor) == '{"from":"other","get":"temp"}'
    # The provider answers with a put: stored, pushed to requesters and to the askers, once.
    await sensor.send('{"from":"sensor","put":"temp"}>19')
    assert await recv_text(asker) == '{"from":"sensor","put":"temp"}>19'
    assert await recv_text(other) == '{"from":"sensor","put":"temp"}>19'
    assert await recv_text(watcher) == '{"from":"sensor","put":"temp"}>19'
    await sensor.send('{"from":"sensor","put":"temp"}>20')
    assert await recv_text(watcher) == '{"from":"sensor","put":"temp"}>20'
    await no_more(asker, sensor, "sensor", "asker")  # one answer per get
    await no_more(other, sensor, "sensor", "other")


async def test_forwarded_get_to_a_requester_is_answered_once(client: Client) -> None:
    sensor = await client("sensor")
    fan = await client("fan")
    await sensor.send('{"from":"sensor","provides":"temp"}')
    await whoami(sensor)
    await fan.send('{"from":"fan","requests":"temp","get":"temp"}')
    assert await recv_text(sensor) == '{"from":"fan","requests":"temp","get":"temp"}'
    await sensor.send('{"from":"sensor","put":"temp"}>5')
    assert await recv_text(fan) == '{"from":"sensor","put":"temp"}>5'
    await no_more(fan, sensor, "sensor", "fan")


async def test_provider_may_answer_a_forwarded_get_privately(client: Client) -> None:
    sensor = await client("sensor")
    asker = await client("asker")
    await sensor.send('{"from":"sensor","provides":"temp"}')
    await whoami(sensor)
    await asker.send('{"from":"asker","get":"temp"}')
    assert await recv_text(sensor) == '{"from":"asker","get":"temp"}'
    await sensor.send('{"from":"sensor","to":"asker","put":"temp"}>7')
    assert await recv_text(asker) == '{"from":"sensor","to":"asker","put":"temp"}>7'
    # A private message is only routed: no value was stored, so get asks the provider again.
    await asker.send('{"from":"asker","get":"temp"}')
    assert await recv_text(sensor) == '{"from":"asker","get":"temp"}'


async def test_get_of_a_service_nobody_provides(client: Client) -> None:
    alice = await client("alice")
    await alice.send('{"from":"alice","get":"nothing"}')
    await expect_error(alice, "alice", "service 'nothing' has no provider")
    await alice.send('{"from":"alice","requests":"nothing"}')  # requesting alone is no error
    await alice.send('{"from":"alice","get":["nothing","void"]}')
    await expect_error(alice, "alice", "service 'nothing' has no provider")
    await expect_error(alice, "alice", "service 'void' has no provider")


async def test_several_providers_are_all_asked(client: Client) -> None:
    p1 = await client("p1")
    p2 = await client("p2")
    asker = await client("asker")
    await p1.send('{"from":"p1","provides":["weather","time"]}')
    await p2.send('{"from":"p2","provides":"weather"}')
    await whoami(p1)
    await whoami(p2)
    await asker.send('{"from":"asker","get":["weather","time"]}')
    assert await recv_text(p1) == '{"from":"asker","get":["weather","time"]}'  # once, not twice
    assert await recv_text(p2) == '{"from":"asker","get":["weather","time"]}'
    await no_more(p1, asker, "asker", "p1")
    await p2.send('{"from":"p2","put":"weather"}>rain')
    assert await recv_text(asker) == '{"from":"p2","put":"weather"}>rain'


async def test_providers_and_requesters_coming_and_going(client: Client) -> None:
    p1 = await client("p1")
    p2 = await client("p2")
    r1 = await client("r1")
    admin = await client("admin")
    await p1.send('{"from":"p1","provides":"svc"}')
    await p2.send('{"from":"p2","provides":"svc"}')
    await r1.send('{"from":"r1","requests":"svc"}')
    await whoami(p1)
    await whoami(p2)
    await whoami(r1)
    listing = await services(admin, "admin")
    assert listing["svc"] == {"providers": ["p1", "p2"], "requesters": ["r1"],
                              "updated": None, "updated_by": None}
    await p1.close()
    await r1.close()
    await wait_for_services(admin, lambda s: s["svc"]["providers"] == ["p2"] and not s["svc"]["requesters"])
    await admin.send('{"from":"admin","get":"svc"}')  # p2 still provides: it is asked
    assert await recv_text(p2) == '{"from":"admin","get":"svc"}'
    await p2.close()
    await wait_for_services(admin, lambda s: "svc" not in s)
    await admin.send('{"from":"admin","get":"svc"}')
    await expect_error(admin, "admin", "service 'svc' has no provider")


async def test_the_latest_value_outlives_its_provider(client: Client) -> None:
    sensor = await client("sensor")
    admin = await client("admin")
    await sensor.send('{"from":"sensor","put":"temp"}>1')  # put alone makes a provider
    await whoami(sensor)
    assert (await services(admin, "admin"))["temp"]["providers"] == ["sensor"]
    await sensor.close()
    await wait_for_services(admin, lambda s: s["temp"]["providers"] == [])
    await admin.send('{"from":"admin","get":"temp"}')
    assert await recv_text(admin) == '{"from":"sensor","put":"temp"}>1'


async def test_put_to_several_services(client: Client) -> None:
    sensor = await client("sensor")
    a = await client("a")
    b = await client("b")
    await a.send('{"from":"a","requests":"x"}')
    await b.send('{"from":"b","requests":"y"}')
    await whoami(a)
    await whoami(b)
    await sensor.send('{"from":"sensor","put":["x","y","x"]}>both')
    assert await recv_text(a) == '{"from":"sensor","put":["x","y","x"]}>both'
    assert await recv_text(b) == '{"from":"sensor","put":["x","y","x"]}>both'
    await no_more(a, sensor, "sensor", "a")  # a repeated name is one service


async def test_service_keys_addressed_to_the_server(client: Client) -> None:
    sensor = await client("sensor")
    await sensor.send('{"from":"sensor","to":"JSONsvc","provides":"ü-svc","put":"ü-svc"}>ß')
    await sensor.send('{"from":"sensor","get":"ü-svc"}')
    assert await recv_text(sensor) == '{"from":"sensor","to":"JSONsvc","provides":"ü-svc","put":"ü-svc"}>ß'


async def wait_for_services(ws: ClientConnection, ready: Callable[[dict[str, Any]], bool]) -> None:
    """Ask ``services`` until it shows the disconnects (each try waits for its answer)."""
    for _ in range(200):
        listing = await services(ws, "admin")
        if ready(listing):
            return
    raise AssertionError(f"services never became as expected: {listing}")


# -- server commands -----------------------------------------------------------------


async def test_clients_command(client: Client) -> None:
    b = await client("bob")
    await client("alice")
    await client()  # not registered: not a named client
    answer = await command(b, "bob", "clients")
    assert answer == {"from": "JSONsvc", "to": "bob", "cmd": "clients", "clients": ["alice", "bob"]}


async def test_services_command(client: Client) -> None:
    sensor = await client("sensor")
    dash = await client("dash")
    await sensor.send('{"from":"sensor","provides":["temp","hum"]}')
    await dash.send('{"from":"dash","requests":["temp","wind"]}')
    await whoami(dash)
    await sensor.send('{"from":"sensor","put":"temp"}>3')
    assert await recv_text(dash) == '{"from":"sensor","put":"temp"}>3'
    listing = await services(dash, "dash")
    assert set(listing) == {"temp", "hum", "wind"}
    assert listing["hum"] == {"providers": ["sensor"], "requesters": [], "updated": None, "updated_by": None}
    assert listing["wind"] == {"providers": [], "requesters": ["dash"], "updated": None, "updated_by": None}
    temp = listing["temp"]
    assert temp["providers"] == ["sensor"] and temp["requesters"] == ["dash"]
    assert isinstance(temp["updated"], float) and temp["updated"] > 1.7e9
    assert temp["updated_by"] == "sensor"


async def test_help_command(client: Client) -> None:
    alice = await client("alice")
    answer = await command(alice, "alice", "help")
    assert answer["commands"] == ["clients", "services", "whoami", "help"]
    for word in ("from", "to", "provides", "requests", "get", "put", "cmd"):
        assert word in answer["help"]


async def test_unknown_command(client: Client) -> None:
    alice = await client("alice")
    await alice.send('{"from":"alice","to":"JSONsvc","cmd":"shutdown"}')
    await expect_error(alice, "alice", "unknown command 'shutdown' (try: help)")
    await alice.send('{"from":"alice","to":"JSONsvc","cmd":["help"]}')
    await expect_error(alice, "alice", "unknown command")


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "to", "fragment"),
    [
        ("hello", None, "bad JSON in header"),
        ('{"from":"a"', None, "bad JSON in header"),
        ('{"from":"a",}>x', None, "bad JSON in header"),
        ("", None, "empty message"),
        ('["from","a"]', None, "header must be a JSON object, not an array"),
        ('"a">x', None, "header must be a JSON object, not a string"),
        ('{"to":"b"}>x', None, 'missing "from"'),
        ('{"from":7}', None, '"from" must be a string, not a number'),
        ('{"from":null}', None, 'missing "from"'),
        ('{"from":"a","to":["b"]}', "a", '"to" must be a string, not an array'),
        ('{"from":"a","put":3}>1', "a", '"put" must be a service name or a list of them, not a number'),
        ('{"from":"a","get":["x",null]}', "a", '"get" must be a service name'),
        ('{"from":"a","provides":{"x":1}}', "a", '"provides" must be a service name'),
        ('{"from":"a","requests":""}', "a", "invalid service name ''"),
        ('{"from":"a"} x', "a", "unexpected 'x' after the header"),
        ('{"from":"a"}{"to":"b"}', "a", "unexpected '{' after the header"),
        ('{"from":"a","v":NaN}', None, "NaN is not valid JSON"),
        ("[" * 100_000, None, "bad JSON in header"),
    ],
)
async def test_bad_messages_get_an_error_and_the_connection_stays(
    client: Client, text: str, to: str | None, fragment: str
) -> None:
    ws = await client()
    await ws.send(text)
    await expect_error(ws, to, fragment)
    assert await whoami(ws, "a") == "a"


async def test_errors_are_addressed_to_the_registered_name(client: Client) -> None:
    alice = await client("alice")
    await alice.send("not json")
    await expect_error(alice, "alice", "bad JSON")
    await alice.send('{"from":"mallory","put":false}')
    await expect_error(alice, "alice", '"put" must be')
    await alice.send(b'{"from":"alice"}')
    await expect_error(alice, "alice", "text messages")


async def test_binary_frame_before_registration(client: Client) -> None:
    ws = await client()
    await ws.send(b"\x00\xff")
    await expect_error(ws, None, "JSONsvc takes text messages")
    assert await whoami(ws, "x") == "x"


async def test_oversize_header(client: Client) -> None:
    alice = await client("alice")
    bob = await client("bob")
    await alice.send(dump({"from": "alice", "to": "bob", "pad": "p" * HEADER_LIMIT}))
    await expect_error(alice, "alice", f"header longer than {HEADER_LIMIT} characters")
    await alice.send(dump({"from": "alice", "to": "bob", "pad": "p" * (HEADER_LIMIT - 100)}, "d" * 100_000))
    assert (await recv(bob))[1] == "d" * 100_000  # big headers within the limit and big data pass
    await alice.send('{"from":"alice","pad":"' + "p" * (2 * HEADER_LIMIT))  # unterminated too
    await expect_error(alice, "alice", "header longer than")


async def test_errors_do_not_disturb_other_clients(client: Client) -> None:
    alice = await client("alice")
    bob = await client("bob")
    for bad in ("{", "[]", '{"from":1}', '{"from":"alice","to":"nobody"}>x'):
        await alice.send(bad)
        await reply(alice)
    await alice.send('{"from":"alice","to":"bob"}>still here')
    assert await recv(bob) == ({"from": "alice", "to": "bob"}, "still here")


async def test_the_readme_session_is_what_the_server_does(client: Client) -> None:
    """Play the example session in README.md's JSONsvc section, line by line."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### JSONsvc", 1)[1]
    block = section.split("```\n", 2)[1]
    steps = [re.match(r"(\w+)([<>])\s+(.*)", line).groups() for line in block.splitlines()]  # type: ignore[union-attr]
    peers: dict[str, ClientConnection] = {}
    for (who, arrow, text), after in zip(steps, [*steps[1:], ("", "", "")], strict=True):
        if who not in peers:
            peers[who] = await client()
        if arrow == ">":
            await peers[who].send(text)
            if after[:2] != (who, "<"):  # nothing to wait for: make sure it was handled
                await whoami(peers[who], who)
            continue
        got = await recv_text(peers[who])
        if '"updated":' in text:  # a time: compare the rest
            got, text = (re.sub(r'"updated":[0-9.]+', '"updated":T', t) for t in (got, text))
        assert got == text
