"""Acceptance: SPEC §1-§5 checked sentence by sentence against a spawned ``wsplex``.

These tests use wsplex only as a user following the SPEC and the README would:
the ``wsplex`` command with its default protocol set, independent clients (the
``websockets`` library, raw sockets for the handshake bytes, ``urllib`` for
plain HTTP), and nothing from the package itself. Each test names the SPEC
sentence it checks.

Most tests share one default server (``server``); a test that needs a flag, a
token or a fresh server (guest numbering, history) spawns its own. Names,
rooms and services are unique per test so tests on the shared server cannot
see each other. "Nothing else arrived" is shown without sleeping: the client
sends a request whose answer must be the very next message it receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from support import WsplexProcess, free_port
from support.rawws import OP_CLOSE, OP_PING, OP_PONG, RawClient

Spawn = Callable[..., WsplexProcess]
TIMEOUT = 5.0
BUILTINS = ["echo", "chat", "command", "JSONsvc", "mqtt", "v12.stomp", "v11.stomp", "v10.stomp",
            "wamp.2.json", "wamp.2.msgpack"]
WSPLEX = str(Path(sys.executable).parent / "wsplex")


# -- plumbing --------------------------------------------------------------------


def start_wsplex(*args: str, env: dict[str, str] | None = None, port: int | None = None,
                 port_args: tuple[str, ...] | None = None) -> WsplexProcess:
    """``wsplex --host 127.0.0.1 -p PORT ARGS``, the installed console script, ready to serve."""
    port = free_port() if port is None else port
    argv = [WSPLEX, "--host", "127.0.0.1", *(port_args or ("-p", str(port))), *args]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    child = WsplexProcess(proc, port)
    child.read_until("listening on")
    return child


@pytest.fixture(scope="module")
def server() -> Iterator[WsplexProcess]:
    """One ``wsplex`` with every default, shared by the tests that leave no trace."""
    child = start_wsplex()
    yield child
    child.stop(signal.SIGKILL)


@pytest.fixture
def fresh() -> Iterator[Spawn]:
    """``fresh(*flags)``: a ``wsplex`` of this test's own (default protocols)."""
    children: list[WsplexProcess] = []

    def run(*args: str, **kwargs: Any) -> WsplexProcess:
        child = start_wsplex(*args, **kwargs)
        children.append(child)
        return child

    yield run
    for child in children:
        child.stop(signal.SIGKILL)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def http_get(child: WsplexProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(child.http + path, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def open_ws(child: WsplexProcess, *protocols: str, path: str = "/",
            query: str = "") -> Any:
    url = f"ws://127.0.0.1:{child.port}{path}{query}"
    return connect(url, subprotocols=[Subprotocol(p) for p in protocols] or None,
                   open_timeout=TIMEOUT)


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def recv_text(ws: ClientConnection) -> str:
    message = await recv(ws)
    assert isinstance(message, str), message
    return message


async def close_code(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Wait for the server to close ``ws``; its close frame's code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await recv(ws)
    frame = closed.value.rcvd
    return (frame.code, frame.reason) if frame is not None else (None, None)


async def raw_handshake(child: WsplexProcess, offer: list[str] | None,
                        path: str = "/") -> tuple[int, dict[str, list[str]], bytes]:
    """Status, headers (all values of each) and body of a hand-written upgrade request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", child.port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{child.port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if offer is not None:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(offer)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    body = b""
    if "content-length" in headers:
        body = await asyncio.wait_for(
            reader.readexactly(int(headers["content-length"][0])), TIMEOUT)
    writer.close()
    return int(status_line.split()[1]), headers, body


# -- §1 handshake and negotiation ------------------------------------------------


async def test_builtin_names_are_accepted_and_echoed_exactly(server: WsplexProcess) -> None:
    """§1: built in, with these exact names; the server echoes exactly that one name."""
    for name in BUILTINS:
        async with open_ws(server, name) as ws:
            assert ws.subprotocol == name


async def test_names_are_case_sensitive(server: WsplexProcess) -> None:
    """§1: exact, case-sensitive names: ``ECHO`` or ``jsonsvc`` are not offers we have."""
    for wrong in ["ECHO", "Chat", "jsonsvc", "JSONSVC"]:
        with pytest.raises(InvalidStatus) as refused:
            async with open_ws(server, wrong):
                pass
        assert refused.value.response.status_code == 400


async def test_first_protocol_in_the_clients_list_wins(server: WsplexProcess) -> None:
    """§1: new WebSocket(url, ["JSONsvc", "chat"]) gets the first one the server has."""
    cases = [(["JSONsvc", "chat"], "JSONsvc"), (["chat", "JSONsvc"], "chat"),
             (["nope", "command", "echo"], "command"), (["x", "y", "echo"], "echo")]
    for offer, chosen in cases:
        async with open_ws(server, *offer) as ws:
            assert ws.subprotocol == chosen


async def test_one_name_echoed_never_zero_never_two(server: WsplexProcess) -> None:
    """§1: exactly one Sec-WebSocket-Protocol value in the 101, the chosen name."""
    status, headers, _ = await raw_handshake(server, ["JSONsvc", "chat", "echo"])
    assert status == 101
    assert headers["sec-websocket-protocol"] == ["JSONsvc"]


@pytest.mark.parametrize("offer", [None, ["nope"], ["Echo", "CHAT"]])
async def test_no_usable_offer_is_400_naming_the_protocols(
    server: WsplexProcess, offer: list[str] | None,
) -> None:
    """§1: offering none, or none the server has: HTTP 400, short plain text naming them."""
    status, headers, body = await raw_handshake(server, offer)
    assert status == 400
    assert headers["content-type"][0].startswith("text/plain")
    text = body.decode()
    assert len(text.strip().splitlines()) == 1
    for name in BUILTINS:
        assert name in text


async def test_websockets_client_sees_the_400(server: WsplexProcess) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(server):
            pass
    assert refused.value.response.status_code == 400
    assert all(name in refused.value.response.body.decode() for name in BUILTINS)


async def test_prefer_server_uses_the_server_table_order(fresh: Spawn) -> None:
    """§1: ``--prefer server`` switches to the server table's order."""
    child = fresh("--prefer", "server")
    for offer, chosen in [(["JSONsvc", "chat", "echo"], "echo"), (["JSONsvc", "command"], "command"),
                          (["JSONsvc", "chat"], "chat"), (["nope", "JSONsvc"], "JSONsvc")]:
        async with open_ws(child, *offer) as ws:
            assert ws.subprotocol == chosen


async def test_prefer_client_is_the_default_and_explicit(fresh: Spawn) -> None:
    child = fresh("--prefer", "client")
    async with open_ws(child, "JSONsvc", "echo") as ws:
        assert ws.subprotocol == "JSONsvc"


async def test_default_protocol_for_clients_that_offer_nothing(fresh: Spawn) -> None:
    """§1: ``--default-protocol NAME`` lets clients that offer nothing fall back to NAME."""
    child = fresh("--default-protocol", "chat")
    async with open_ws(child, query="?name=dflt") as ws:
        assert ws.subprotocol is None  # RFC 6455 §4.2.2: nothing offered, nothing echoed
        await ws.send("/who")
        assert await recv_text(ws) == "* in lobby: dflt"
    async with open_ws(child, "command") as ws:  # an offer still wins
        assert ws.subprotocol == "command"
        await ws.send("frobnicate")
        assert await recv_text(ws) == "error: unknown command 'frobnicate' (try: help)"
    status, _, body = await raw_handshake(child, ["nope"])
    assert status == 400 and b"chat" in body  # only clients that offer *nothing* fall back


async def test_upgrades_on_root_and_ws_only(server: WsplexProcess) -> None:
    """§1: upgrades are accepted on / (and /ws)."""
    for path in ["/", "/ws", "/?x=1", "/ws?name=a"]:
        async with connect(f"ws://127.0.0.1:{server.port}{path}",
                           subprotocols=[Subprotocol("echo")]) as ws:
            await ws.send("ping?")
            assert await recv(ws) == "ping?"
    status, _, _ = await raw_handshake(server, ["echo"], path="/elsewhere")
    assert status == 404


def test_http_routes(server: WsplexProcess) -> None:
    """§1: GET / the web client, /healthz, /metrics (Prometheus), anything else 404."""
    status, headers, body = http_get(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<html" in body.lower()
    status, _, body = http_get(server, "/healthz")
    assert status == 200
    for path in ["/nope", "/protocols/echo", "/index.html.bak", "/ws/x"]:
        assert http_get(server, path)[0] == 404


def test_metrics_in_prometheus_text_format(server: WsplexProcess) -> None:
    """§1: ``GET /metrics`` (Prometheus text format)."""
    status, headers, body = http_get(server, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert re.search(rb"^# TYPE \w+ (counter|gauge)$", body, re.MULTILINE)


def test_protocols_json_is_the_table_in_order(server: WsplexProcess) -> None:
    """§1: GET /protocols: JSON of the table, a one-line description and help per protocol."""
    status, headers, body = http_get(server, "/protocols")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    table = json.loads(body)["protocols"]
    assert [entry["name"] for entry in table] == BUILTINS
    for entry in table:
        assert set(entry) >= {"name", "description", "help"}
        assert entry["description"] and "\n" not in entry["description"]
        assert entry["help"].strip()


def test_port_glued_and_apart(fresh: Spawn) -> None:
    """§1: ``-p9999`` or ``-p 9999`` for the port (the original command line)."""
    for style in ("glued", "apart"):
        port = free_port()
        args = (f"-p{port}",) if style == "glued" else ("-p", str(port))
        child = fresh(port=port, port_args=args)
        assert http_get(child, "/healthz")[0] == 200


def test_default_port_is_12352() -> None:
    """§1: default port 12352 (``--help`` says so; the port itself may be busy here)."""
    result = subprocess.run([WSPLEX, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "12352" in result.stdout


async def test_debug_logs_connections_and_closes(fresh: Spawn) -> None:
    """§1 ``-d`` debug logging; issue 2: remote address, offered and chosen protocol, close code."""
    child = fresh("-d")
    async with open_ws(child, "nope", "echo") as ws:
        await ws.send("x")
        await recv(ws)
        await ws.close(4001, "bye now")
    line = child.read_until(r"127\.0\.0\.1:\d+")
    assert "nope" in line and "echo" in line
    closed = child.read_until(r"4001")
    assert "bye now" in closed


async def test_keepalive_pings_and_closes_a_silent_peer(fresh: Spawn) -> None:
    """§1: the server pings every --ping-interval and closes a peer that does not answer."""
    child = fresh("--ping-interval", "0.3", "--ping-timeout", "0.3")
    answering = await RawClient.connect(child.port, ["echo"])
    silent = await RawClient.connect(child.port, ["echo"])
    for _ in range(3):  # an answering peer gets ping after ping and stays
        frame = await answering.recv_frame()
        assert frame.opcode == OP_PING
        answering.send_frame(OP_PONG, frame.payload)
    assert (await silent.recv_frame()).opcode == OP_PING
    _, close = await silent.recv_until_close()
    assert close.opcode == OP_CLOSE and close.close_code == 1011
    await answering.close()
    await silent.close()


async def test_sigterm_and_sigint_close_clients_with_1001(fresh: Spawn) -> None:
    """§1/issue 2: SIGTERM (and SIGINT) close every connection with 1001, then exit."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        child = fresh()
        async with open_ws(child, "echo") as echo, open_ws(child, "chat") as chat:
            await echo.send("x")
            await recv(echo)
            await chat.send("/who")
            await recv(chat)
            child.proc.send_signal(sig)
            assert (await close_code(echo))[0] == 1001
            assert (await close_code(chat))[0] == 1001
        assert await asyncio.to_thread(child.proc.wait, 10) == 0


# -- §2 echo ------------------------------------------------------------------------


async def test_echo_goes_to_all_echo_clients_with_its_frame_type(server: WsplexProcess) -> None:
    """§2: to ALL connected echo clients, the sender included, text or binary unchanged."""
    async with open_ws(server, "echo") as a, open_ws(server, "echo") as b, \
            open_ws(server, "chat", query=f"?name={unique('bystander')}") as other:
        for message in ["hello", "", "ünïcödé ✓", b"\x00\xffbinary", b""]:
            await a.send(message)
            assert await recv(a) == message
            assert await recv(b) == message
        await other.send("/who")  # the chat client got no echo traffic: its reply is next
        assert (await recv_text(other)).startswith("* in lobby: ")


# -- §3 chat ------------------------------------------------------------------------

CHAT_LINE = re.compile(r"^(\[[^\]\s]+\] |\* |! )", re.DOTALL)


async def chat_client(child: WsplexProcess, name: str | None = None) -> ClientConnection:
    """A chat client, returned once it is in the lobby (its history, if any, read)."""
    query = f"?name={urllib.parse.quote(name)}" if name is not None else ""
    ws: ClientConnection = await open_ws(child, "chat", query=query)
    assert ws.subprotocol == "chat"
    await ws.send("/who")
    while not (await recv_text(ws)).startswith("* in "):
        pass
    return ws


async def who(ws: ClientConnection) -> str:
    await ws.send("/who")
    line = await recv_text(ws)
    assert line.startswith("* in "), line
    return line


async def test_chat_messages_go_to_the_others_as_name_message(fresh: Spawn) -> None:
    """§3: a plain text message goes to all OTHER chat clients in the room as [name] message;
    joining is announced as ``* alice joined``; leaving as ``* alice left``."""
    child = fresh()
    alice = await chat_client(child, "alice")
    bob = await chat_client(child, "bob")
    assert await recv_text(alice) == "* bob joined"
    carol = await chat_client(child, "carol")
    assert await recv_text(alice) == "* carol joined"
    assert await recv_text(bob) == "* carol joined"

    await alice.send("hello everyone")
    assert await recv_text(bob) == "[alice] hello everyone"
    assert await recv_text(carol) == "[alice] hello everyone"
    assert await who(alice) == "* in lobby: alice, bob, carol"  # alice got no copy

    await carol.close()
    assert await recv_text(alice) == "* carol left"
    assert await recv_text(bob) == "* carol left"
    assert await who(alice) == "* in lobby: alice, bob"
    await alice.close()
    await bob.close()


async def test_guests_are_numbered(fresh: Spawn) -> None:
    """§3: a client without ``?name=`` is ``guest-N``."""
    child = fresh()
    first = await chat_client(child)
    second = await chat_client(child)
    assert await recv_text(first) == "* guest-2 joined"
    assert await who(second) == "* in lobby: guest-1, guest-2"
    await second.send("hi")
    assert await recv_text(first) == "[guest-2] hi"


async def test_name_and_nick_rename_and_are_announced(fresh: Spawn) -> None:
    """§3: ``/name NEW`` (alias ``/nick``) renames, announced to the room."""
    child = fresh()
    alice = await chat_client(child, "alice")
    bob = await chat_client(child, "bob")
    await recv_text(alice)  # * bob joined
    await alice.send("/name alicia")
    assert await recv_text(bob) == "* alice is now alicia"
    await bob.send("/nick robert")
    assert await recv_text(bob) == "* bob is now robert"  # bob saw alice's rename first
    while (line := await recv_text(alice)) != "* bob is now robert":
        assert line == "* alice is now alicia"  # her own rename, if announced to her too
    await bob.send("still here")
    assert await recv_text(alice) == "[robert] still here"
    assert await who(alice) == "* in lobby: alicia, robert"


async def test_a_taken_or_invalid_name_is_an_error_and_the_old_name_stays(fresh: Spawn) -> None:
    """§3: names are 1-32 printable characters without spaces, unique; a taken or invalid
    name gets an error line (``! ``) and the old name stays."""
    child = fresh()
    alice = await chat_client(child, "alice")
    bob = await chat_client(child, "bob")
    await recv_text(alice)  # * bob joined
    for bad in ["alice", "two words", "x" * 33, "tab\there", "bell\x07"]:
        for command in ("/name", "/nick"):
            await bob.send(f"{command} {bad}")
            line = await recv_text(bob)
            assert line.startswith("! "), (bad, line)
    await bob.send("/name")  # no name at all
    assert (await recv_text(bob)).startswith("! ")
    assert await who(bob) == "* in lobby: alice, bob"
    await bob.send("still bob")
    assert await recv_text(alice) == "[bob] still bob"
    await bob.send("/name " + "y" * 32)  # 32 is allowed
    assert await recv_text(alice) == f"* bob is now {'y' * 32}"
    await bob.send("/name Z")  # so is 1, and any printable character
    assert await recv_text(alice) == f"* {'y' * 32} is now Z"
    await bob.send("/name élan·∑")
    assert await recv_text(alice) == "* Z is now élan·∑"


async def test_url_name_taken_or_invalid(fresh: Spawn) -> None:
    """§3: ``?name=`` taken or invalid gets an error line; the client still gets a name."""
    child = fresh()
    alice = await chat_client(child, "alice")
    for wanted in ["alice", "has space", "z" * 33]:
        ws = await open_ws(child, "chat", query=f"?name={urllib.parse.quote(wanted)}")
        line = await recv_text(ws)
        assert line.startswith("! "), line
        joined = await recv_text(alice)
        match = re.fullmatch(r"\* (guest-\d+) joined", joined)
        assert match, joined
        assert match.group(1) in await who(ws)
        await ws.close()
        assert await recv_text(alice) == f"* {match.group(1)} left"


async def test_rooms_join_who_rooms_help(fresh: Spawn) -> None:
    """§3: ``/join ROOM`` (default room lobby), ``/who``, ``/rooms``, ``/help``."""
    child = fresh()
    alice = await chat_client(child, "alice")
    bob = await chat_client(child, "bob")
    await recv_text(alice)  # * bob joined
    carol = await chat_client(child, "carol")
    await recv_text(alice)
    await recv_text(bob)

    await bob.send("/join dev")
    assert await recv_text(alice) == "* bob left"
    assert await recv_text(carol) == "* bob left"
    lines = [await recv_text(bob)]
    while not lines[-1].startswith("* in ") and "joined" not in lines[-1]:
        lines.append(await recv_text(bob))
    assert await who(bob) == "* in dev: bob"
    assert await who(alice) == "* in lobby: alice, carol"

    await carol.send("/join dev")
    assert await recv_text(alice) == "* carol left"
    assert await recv_text(bob) == "* carol joined"
    while "joined" not in await recv_text(carol):
        pass  # carol may get the room's history and her own join notice

    await bob.send("dev talk")
    assert await recv_text(carol) == "[bob] dev talk"
    await alice.send("lobby talk")
    assert await who(bob) == "* in dev: bob, carol"  # lobby talk did not reach dev
    await carol.send("/rooms")
    rooms = await recv_text(carol)
    assert rooms.startswith("* ") and "dev" in rooms and "lobby" in rooms

    await carol.send("/join lobby")
    assert await recv_text(bob) == "* carol left"
    assert await recv_text(alice) == "* carol joined"
    lobby = []
    while "joined" not in (line := await recv_text(carol)):
        lobby.append(line)
    assert "[alice] lobby talk" in lobby  # the room's history, on /join
    await carol.send("/help")
    help_text = await recv_text(carol)
    for command in ["/name", "/nick", "/join", "/who", "/rooms", "/help"]:
        assert command in help_text
    assert all(line.startswith("* ") for line in help_text.splitlines())


async def test_every_server_line_is_a_message_a_notice_or_an_error(fresh: Spawn) -> None:
    """§3: lines that are not chat messages start with ``* `` (notice) or ``! `` (error)."""
    child = fresh()
    alice = await chat_client(child, "alice")
    bob = await chat_client(child, "taken")
    seen = [await recv_text(alice)]
    for line in ["hi", "/who", "/rooms", "/help", "/join x", "/join lobby", "/name taken",
                 "/name bad name", "/frobnicate", "/join", "   ", "/nick al", "/who",
                 "/name END"]:
        await alice.send(line)
    while (line := await recv_text(alice)) != "* al is now END":
        seen.append(line)
    await bob.send("bye")
    assert await recv_text(alice) == "[taken] bye"
    for line in seen:
        assert CHAT_LINE.match(line), line
    assert any(line.startswith("! ") for line in seen)


async def test_binary_frame_closes_with_1003(fresh: Spawn) -> None:
    """§3: chat is text only: a binary frame is answered with close code 1003."""
    child = fresh()
    alice = await chat_client(child, "alice")
    bob = await chat_client(child, "bob")
    await recv_text(alice)
    await bob.send(b"\x01\x02")
    assert (await close_code(bob))[0] == 1003
    assert await recv_text(alice) == "* bob left"
    assert await who(alice) == "* in lobby: alice"


def history_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("[")]


async def arrive(child: WsplexProcess, name: str) -> list[str]:
    """Connect ``name`` and collect what it receives before its ``/who`` answer."""
    ws = await open_ws(child, "chat", query=f"?name={name}")
    await ws.send("/who")
    lines = []
    while not (line := await recv_text(ws)).startswith("* in "):
        lines.append(line)
    await ws.close()
    return lines


async def test_history_on_join_default_20(fresh: Spawn) -> None:
    """§3: a client joining a room receives that room's last messages (default 20)."""
    child = fresh()
    talker = await chat_client(child, "talker")
    assert await arrive(child, "early") == []  # an empty room has no history
    await recv_text(talker)
    await recv_text(talker)  # early joined, early left
    for n in range(25):
        await talker.send(f"message {n}")
    await who(talker)  # all 25 handled
    lines = await arrive(child, "late")
    assert history_lines(lines) == [f"[talker] message {n}" for n in range(5, 25)]
    assert all(CHAT_LINE.match(line) for line in lines)
    await recv_text(talker)
    await recv_text(talker)

    # /join gives the entered room's history too
    await talker.send("/join den")
    await recv_text(talker)  # * talker joined (its own join, in den)
    await talker.send("in the den")
    listener = await chat_client(child, "listener")
    await listener.send("/join den")
    lines = []
    while "joined" not in (line := await recv_text(listener)):
        lines.append(line)
    assert history_lines(lines) == ["[talker] in the den"]


@pytest.mark.parametrize(("flag", "kept"), [("3", 3), ("0", 0)])
async def test_chat_history_flag(fresh: Spawn, flag: str, kept: int) -> None:
    """§3: ``--chat-history N``, 0 disables."""
    child = fresh("--chat-history", flag)
    talker = await chat_client(child, "talker")
    for n in range(5):
        await talker.send(f"m{n}")
    await who(talker)
    lines = await arrive(child, "late")
    assert history_lines(lines) == [f"[talker] m{n}" for n in range(5 - kept, 5)]
    if kept == 0:
        assert lines == []


# -- §4 command ---------------------------------------------------------------------


async def command(ws: ClientConnection, line: str) -> str:
    await ws.send(line)
    return await recv_text(ws)


async def command_json(ws: ClientConnection, line: str) -> dict[str, Any]:
    reply = json.loads(await command(ws, f"{line} --json"))
    assert isinstance(reply, dict)
    return reply


async def test_every_command_has_one_reply_in_text_and_json(server: WsplexProcess) -> None:
    """§4: one command per message, one reply per command; ``--json`` gives a JSON object."""
    async with open_ws(server, "command") as ws:
        for line in ["help", "date", "time", "status", "protocols", "clients",
                     "kick 1", "broadcast echo hi", "killserver", "auth x", "frobnicate", ""]:
            text = await command(ws, line)
            assert text
            data = await command_json(ws, line)
            assert data
        # The very next message answers the very next command: nothing extra was queued.
        assert await command(ws, "frobnicate") == "error: unknown command 'frobnicate' (try: help)"


async def test_help_lists_every_command(server: WsplexProcess) -> None:
    async with open_ws(server, "command") as ws:
        text = await command(ws, "help")
        for name in ["help", "date", "time", "status", "protocols", "clients", "auth", "kick",
                     "broadcast", "killserver"]:
            assert re.search(rf"\b{name}\b", text), name


async def test_date_and_time(server: WsplexProcess) -> None:
    async with open_ws(server, "command") as ws:
        assert re.search(r"\d{4}-\d{2}-\d{2}", await command(ws, "date"))
        assert re.search(r"\d{2}:\d{2}:\d{2}", await command(ws, "time"))


async def test_status_reports_what_the_spec_lists(server: WsplexProcess) -> None:
    """§4: status: version, uptime, node id, connections per protocol, messages in/out."""
    async with open_ws(server, "command") as ws, open_ws(server, "echo") as echo:
        await echo.send("x")
        await recv(echo)
        text = await command(ws, "status")
        lowered = text.lower()
        for word in ["uptime", "node", "connections", "in", "out"]:
            assert word in lowered, word
        assert re.search(r"\d+\.\d+", text)  # a version
        for name in BUILTINS:
            assert name in text
        data = await command_json(ws, "status")
        assert data["connections"]["echo"] >= 1 and data["connections"]["command"] >= 1
        assert set(data["connections"]) >= set(BUILTINS)
        for key in ["version", "uptime", "node", "messages_in", "messages_out"]:
            assert key in data, key


async def test_protocols_lists_the_table(server: WsplexProcess) -> None:
    async with open_ws(server, "command") as ws:
        text = await command(ws, "protocols")
        positions = [text.index(name) for name in BUILTINS]
        assert positions == sorted(positions)
        data = await command_json(ws, "protocols")
        assert [p["name"] for p in data["protocols"]] == BUILTINS


async def test_clients_text_and_json_shape(server: WsplexProcess) -> None:
    """§4: ``clients --json``: {"clients": [{"id","protocol","remote","name","since"}, ...]}."""
    name = unique("listed")
    async with open_ws(server, "command") as ws, \
            open_ws(server, "chat", query=f"?name={name}") as chat:
        await chat.send("/who")
        await recv(chat)
        data = await command_json(ws, "clients")
        assert list(data) == ["clients"]
        for row in data["clients"]:
            assert set(row) == {"id", "protocol", "remote", "name", "since"}
            assert isinstance(row["id"], str | int)
            assert row["protocol"] in BUILTINS
            assert row["remote"] is None  # §15: addresses only to an authenticated connection
        mine = [row for row in data["clients"] if row["name"] == name]
        assert len(mine) == 1 and mine[0]["protocol"] == "chat"
        assert re.match(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", mine[0]["since"])
        text = await command(ws, "clients")
        row_line = next(line for line in text.splitlines() if name in line)
        assert str(mine[0]["id"]) in row_line and "chat" in row_line
        assert row_line.split()[2] == "-"  # no remote address before auth


async def test_unknown_command(server: WsplexProcess) -> None:
    """§4: ``error: unknown command 'x' (try: help)``."""
    async with open_ws(server, "command") as ws:
        assert await command(ws, "x") == "error: unknown command 'x' (try: help)"
        assert await command(ws, "frob nicate") == "error: unknown command 'frob' (try: help)"
        assert "error" in await command_json(ws, "x")


async def test_privileged_commands_are_disabled_without_a_token(server: WsplexProcess) -> None:
    """§4: with no token configured, privileged commands are disabled and say so."""
    async with open_ws(server, "command") as ws:
        for line in ["kick 1", "broadcast echo hello", "killserver", "auth anything"]:
            reply = await command(ws, line)
            assert reply.startswith("error: ") and "disabled" in reply, reply
        assert http_get(server, "/healthz")[0] == 200  # killserver did not kill it


async def test_auth_kick_broadcast_killserver(fresh: Spawn, tmp_path: Path) -> None:
    """§4: ``auth TOKEN`` first; ``kick ID`` closes with 1008 "kicked"; ``broadcast``;
    ``killserver`` shuts down gracefully (1001 to everyone)."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    child = fresh("--admin-token-file", str(token_file))
    async with open_ws(child, "command") as op, open_ws(child, "echo") as echo, \
            open_ws(child, "chat", query="?name=victim") as victim, \
            open_ws(child, "chat", query="?name=witness") as witness:
        await victim.send("/who")
        await recv(victim)
        rows = (await command_json(op, "clients"))["clients"]
        victim_id = next(row["id"] for row in rows if row["name"] == "victim")
        assert (await command(op, f"kick {victim_id}")).startswith("error: ")  # not yet
        assert (await command(op, "auth wrong")).startswith("error: ")
        assert (await command(op, f"kick {victim_id}")).startswith("error: ")
        assert not (await command(op, "auth s3cret-token")).startswith("error")
        reply = await command(op, f"kick {victim_id}")
        assert not reply.startswith("error"), reply
        assert await close_code(victim) == (1008, "kicked")
        assert (await command(op, "kick 999999")).startswith("error: ")

        assert not (await command(op, "broadcast echo hello echoes")).startswith("error")
        assert await recv(echo) == "hello echoes"
        assert (await command(op, "broadcast nope hi")).startswith("error: ")
        assert not (await command(op, "broadcast\techo\ttabbed")).startswith("error")
        assert await recv(echo) == "tabbed"  # words are split on any whitespace

        assert not (await command(op, "killserver")).startswith("error")
        assert (await close_code(echo))[0] == 1001
        assert (await close_code(witness))[0] == 1001
        assert (await close_code(op))[0] == 1001
    assert await asyncio.to_thread(child.proc.wait, 10) == 0


async def test_token_from_the_environment(fresh: Spawn) -> None:
    """§4: or the ``WSPLEX_ADMIN_TOKEN`` variable."""
    child = fresh(env={"WSPLEX_ADMIN_TOKEN": "envtoken"})
    async with open_ws(child, "command") as op:
        assert (await command(op, "broadcast echo x")).startswith("error: ")
        assert "disabled" not in await command(op, "broadcast echo x")
        assert not (await command(op, "auth envtoken")).startswith("error")
        assert not (await command(op, "broadcast echo x")).startswith("error")
        assert (await command_json(op, "auth envtoken")) == {"authenticated": True}


async def test_auth_is_per_connection(fresh: Spawn) -> None:
    child = fresh(env={"WSPLEX_ADMIN_TOKEN": "t0k"})
    async with open_ws(child, "command") as first, open_ws(child, "command") as second:
        assert not (await command(first, "auth t0k")).startswith("error")
        assert (await command(second, "broadcast echo x")).startswith("error: ")


# -- §5 JSONsvc ---------------------------------------------------------------------


@pytest.fixture
async def peers(server: WsplexProcess) -> AsyncIterator[Callable[..., Any]]:
    """``await peers("sensor")``: a JSONsvc client registered as a unique name; returns
    (connection, name)."""
    opened: list[ClientConnection] = []

    async def open_peer(base: str | None = None) -> tuple[ClientConnection, str]:
        ws: ClientConnection = await open_ws(server, "JSONsvc")
        assert ws.subprotocol == "JSONsvc"
        opened.append(ws)
        if base is None:
            return ws, ""
        name = unique(base)
        await ws.send(json.dumps({"from": name}))
        assert await whoami(ws, name) == name  # registration was silent
        return ws, name

    yield open_peer
    for ws in opened:
        await ws.close()


async def svc(ws: ClientConnection, name: str, cmd: str) -> dict[str, Any]:
    await ws.send(json.dumps({"from": name, "to": "JSONsvc", "cmd": cmd}))
    reply = json.loads(await recv_text(ws))
    assert reply["from"] == "JSONsvc" and reply["to"] == name, reply
    assert "error" not in reply, reply
    return reply  # type: ignore[no-any-return]


async def whoami(ws: ClientConnection, name: str) -> str:
    reply = await svc(ws, name, "whoami")
    assert name in reply.values()
    return name


def is_error(text: str, sender: str | None) -> str:
    """The ``error`` of a SPEC §5 error reply to ``sender``, asserting its exact shape."""
    reply = json.loads(text)
    assert set(reply) == {"from", "to", "error"}, reply
    assert reply["from"] == "JSONsvc" and reply["to"] == sender, reply
    assert isinstance(reply["error"], str) and reply["error"]
    return str(reply["error"])


async def test_registration_is_silent_and_whoami_tells_the_name(peers: Any) -> None:
    """§5: the first message registers ``from``; silent; ``whoami`` tells the name."""
    ws, name = await peers("quiet")
    await ws.send(json.dumps({"from": name, "cmd": "whoami", "to": "JSONsvc"}))
    reply = json.loads(await recv_text(ws))
    assert reply["from"] == "JSONsvc" and reply["to"] == name
    assert reply.get("name") == name


async def test_a_name_in_use_is_refused_and_the_connection_stays(peers: Any) -> None:
    """§5: a name in use by another live connection is refused (an error reply)."""
    _, taken = await peers("holder")
    ws, _ = await peers()
    await ws.send(json.dumps({"from": taken}))
    assert "taken" in is_error(await recv_text(ws), taken)
    other = unique("second-choice")
    await ws.send(json.dumps({"from": other}))
    assert await whoami(ws, other) == other


async def test_a_freed_name_can_be_registered_again(peers: Any, server: WsplexProcess) -> None:
    first, name = await peers("comer")
    await first.close()
    async with open_ws(server, "JSONsvc") as again:
        await again.send(json.dumps({"from": name}))
        assert await whoami(again, name) == name


async def test_put_reaches_every_requester_unchanged(peers: Any) -> None:
    """§5: a put reaches each requester as the provider's message itself."""
    sensor, s = await peers("sensor")
    dash, d = await peers("dash")
    wall, w = await peers("wall")
    temp = unique("temp")
    await sensor.send(json.dumps({"from": s, "provides": temp}))
    await dash.send(json.dumps({"from": d, "requests": temp}))
    await wall.send(json.dumps({"from": w, "requests": [temp, unique("other")]}))
    await whoami(dash, d)
    await whoami(wall, w)
    put = f'{{"from":"{s}","put":"{temp}"}}>21.5'
    await sensor.send(put)
    assert await recv_text(dash) == put
    assert await recv_text(wall) == put
    spaced = f'{{ "from" : "{s}" , "put" : "{temp}" }}>22.0 > 21.5 }}'
    await sensor.send(spaced)
    assert await recv_text(dash) == spaced
    assert await recv_text(wall) == spaced


async def test_get_is_answered_with_the_same_shape(peers: Any) -> None:
    """§5: get is answered from the latest value; the answer has the put's shape."""
    sensor, s = await peers("sensor")
    phone, p = await peers("phone")
    temp = unique("temp")
    put = f'{{"from":"{s}","put":"{temp}"}}>21.5'
    await sensor.send(put)
    await whoami(sensor, s)
    await phone.send(json.dumps({"from": p, "get": temp}))
    assert await recv_text(phone) == put
    await sensor.close()  # the latest value outlives its provider
    await phone.send(json.dumps({"from": p, "get": temp}))
    assert await recv_text(phone) == put


async def test_get_without_a_value_goes_to_the_provider(peers: Any) -> None:
    """§5: get ... forwarded to its provider when there is none (no value yet)."""
    sensor, s = await peers("sensor")
    phone, p = await peers("phone")
    hum = unique("humidity")
    await sensor.send(json.dumps({"from": s, "provides": hum}))
    await whoami(sensor, s)
    get = json.dumps({"from": p, "get": hum})
    await phone.send(get)
    assert json.loads(await recv_text(sensor)) == json.loads(get)
    put = f'{{"from":"{s}","put":"{hum}"}}>40%'
    await sensor.send(put)
    assert await recv_text(phone) == put


async def test_messages_to_a_client_arrive_unchanged(peers: Any) -> None:
    """§5: ``to`` a client name: delivered unchanged (header plus data)."""
    a, na = await peers("a")
    b, nb = await peers("b")
    for data in ["", "plain", "has > and } and {\"json\": true}", "ünï ✓ 𝄞", "line\nbreak"]:
        message = json.dumps({"from": na, "to": nb, "kind": "note", "n": [1, 2.5, None]}) + ">" + data
        await a.send(message)
        assert await recv_text(b) == message
    no_data = json.dumps({"from": na, "to": nb, "x": {"y": "}>"}})
    await a.send(no_data)
    assert await recv_text(b) == no_data


async def test_nobody_can_speak_as_another(peers: Any) -> None:
    """§5: the server may set ``from`` to the registered name so no client speaks as another."""
    a, na = await peers("honest")
    b, nb = await peers("liar")
    await b.send(json.dumps({"from": na, "to": na, "kind": "spoof"}) + ">hi")
    received = await recv_text(a)
    header, _, data = received.partition(">")
    assert json.loads(header) == {"from": nb, "to": na, "kind": "spoof"} and data == "hi"


async def test_server_commands(peers: Any) -> None:
    """§5: ``"to":"JSONsvc"`` with ``cmd`` clients, services, whoami, help; reply from JSONsvc."""
    sensor, s = await peers("sensor")
    dash, d = await peers("dash")
    temp = unique("temp")
    await sensor.send(json.dumps({"from": s, "provides": temp}))
    await dash.send(json.dumps({"from": d, "requests": temp}))
    await whoami(sensor, s)
    clients = (await svc(dash, d, "clients"))["clients"]
    assert s in clients and d in clients
    services = (await svc(dash, d, "services"))["services"]
    assert temp in services
    entry = services[temp]
    assert s in json.dumps(entry) and d in json.dumps(entry)
    help_reply = await svc(dash, d, "help")
    assert any(isinstance(v, str) and "put" in v for v in help_reply.values())
    assert (await svc(dash, d, "whoami"))["name"] == d


async def test_every_error_is_a_reply_and_the_connection_stays(peers: Any) -> None:
    """§5: errors are ``{"from":"JSONsvc","to":SENDER,"error":"..."}``: bad JSON, a header
    that is not an object, missing ``from``, an unknown destination, a name taken, a
    service with no provider. The connection stays open."""
    ws, me = await peers("erring")
    _, taken = await peers("holder")
    cases = [
        "not json at all",
        '{"from": "x"',
        "[1, 2, 3]",
        '"a string"',
        "",
        json.dumps({"to": "JSONsvc", "cmd": "whoami"}),
        json.dumps({"from": me, "to": unique("nobody")}) + ">hello?",
        json.dumps({"from": me, "get": unique("nothing")}),
        json.dumps({"from": me, "to": "JSONsvc", "cmd": "frobnicate"}),
    ]
    for text in cases:
        await ws.send(text)
        is_error(await recv_text(ws), me)
        assert await whoami(ws, me) == me
    await ws.send(b"\x00binary")
    is_error(await recv_text(ws), me)
    fresh_ws, _ = await peers()
    for text in ["nope", "[]", json.dumps({"to": "x"})]:
        await fresh_ws.send(text)
        is_error(await recv_text(fresh_ws), None)  # no name yet: SENDER unknown
    await fresh_ws.send(json.dumps({"from": taken}))
    is_error(await recv_text(fresh_ws), taken)


async def test_json_stays_open_under_hostile_headers(peers: Any) -> None:
    """Bad input of any kind gets an error reply and never closes the connection."""
    ws, me = await peers("fuzz")
    newcomer, _ = await peers()
    hostile = ["[" * 100_000, '{"from":' + '"x' * 10, "{}" * 1000, '{"from":1e999}',
               '{"from":NaN}', "\x00", '{"from":"' + "a" * 70_000 + '"}', "{" + "}" * 5,
               json.dumps({"from": me, "get": [1]}), json.dumps({"from": me, "to": 5}),
               json.dumps({"from": me, "put": {"a": 1}}), json.dumps({"from": me, "requests": ""})]
    for text in hostile:
        await ws.send(text)
        is_error(await recv_text(ws), me)
    assert await whoami(ws, me) == me
    for claim in [r'{"from":"\ud800"}', '{"from":""}', '{"from":"JSONsvc"}',
                  json.dumps({"from": "x" * 65}), '{"from":"tab\\there"}', '{"from":null}']:
        await newcomer.send(claim)
        reply = json.loads(await recv_text(newcomer))
        assert set(reply) == {"from", "to", "error"} and reply["from"] == "JSONsvc", reply


async def test_a_leaver_stops_providing_and_requesting_and_frees_its_name(
    peers: Any, server: WsplexProcess,
) -> None:
    """§5 / issue 4: a client that disconnects stops providing and requesting; its name is free."""
    sensor, s = await peers("sensor")
    dash, d = await peers("dash")
    phone, p = await peers("phone")
    temp = unique("temp")
    await sensor.send(json.dumps({"from": s, "provides": temp}))
    await dash.send(json.dumps({"from": d, "requests": temp}))
    await whoami(sensor, s)
    await whoami(dash, d)
    await dash.close()
    await sensor.close()
    async with open_ws(server, "command") as ws:  # both gone from the server's view
        while any(row["name"] in (s, d) for row in (await command_json(ws, "clients"))["clients"]):
            pass
    await phone.send(json.dumps({"from": p, "get": temp}))
    assert "provider" in is_error(await recv_text(phone), p)
    services = (await svc(phone, p, "services"))["services"]
    assert s not in json.dumps(services.get(temp, {})) and d not in json.dumps(services.get(temp, {}))
    async with open_ws(server, "JSONsvc") as again:
        await again.send(json.dumps({"from": s, "put": temp}) + ">back")
        assert await whoami(again, s) == s
    await phone.send(json.dumps({"from": p, "get": temp}))
    assert await recv_text(phone) == json.dumps({"from": s, "put": temp}) + ">back"


async def test_kicked_jsonsvc_client_frees_its_name(fresh: Spawn) -> None:
    child = fresh(env={"WSPLEX_ADMIN_TOKEN": "k"})
    async with open_ws(child, "JSONsvc") as victim, open_ws(child, "command") as op:
        await victim.send(json.dumps({"from": "victim"}))
        await whoami(victim, "victim")
        await command(op, "auth k")
        rows = (await command_json(op, "clients"))["clients"]
        assert [row["protocol"] for row in rows if row["name"] == "victim"] == ["JSONsvc"]
        victim_id = next(row["id"] for row in rows if row["name"] == "victim")
        assert (await command_json(op, f"kick {victim_id}")) == {"kicked": victim_id}
        assert await close_code(victim) == (1008, "kicked")
    async with open_ws(child, "JSONsvc") as again:
        await again.send(json.dumps({"from": "victim"}))
        assert await whoami(again, "victim") == "victim"


async def test_chat_double_slash_says_a_line_starting_with_slash(fresh: Spawn) -> None:
    child = fresh()
    alice = await chat_client(child, "alice")
    bob = await chat_client(child, "bob")
    await recv_text(alice)
    await bob.send("//shrug")
    assert await recv_text(alice) == "[bob] /shrug"
    await bob.send("not /a command")
    assert await recv_text(alice) == "[bob] not /a command"
    await bob.send("multi\nline ✓")
    assert await recv_text(alice) == "[bob] multi\nline ✓"
