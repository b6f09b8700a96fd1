"""The ``command`` protocol (SPEC §4), driven by real ``websockets`` clients."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from support import ServerFactory, ws_url
from wsplex import __version__
from wsplex.protocols.command import AuthThrottle
from wsplex.server import Server

PROTOCOLS = ("echo", "chat", "command")
TOKEN = "s3cret-token"
TIMEOUT = 5.0


async def open_client(server: Server, protocol: str = "command", query: str = "") -> ClientConnection:
    ws = await connect(ws_url(server) + query, subprotocols=[Subprotocol(protocol)], open_timeout=TIMEOUT)
    assert ws.subprotocol == protocol
    return ws


async def ask(ws: ClientConnection, line: str | bytes) -> str:
    await ws.send(line)
    reply = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(reply, str)
    return reply


async def ask_json(ws: ClientConnection, line: str) -> dict[str, Any]:
    reply = json.loads(await ask(ws, line))
    assert isinstance(reply, dict)
    return reply


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert closed.value.rcvd is not None, "no close frame from the server"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_help_lists_every_command(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    ws = await open_client(server)
    text = await ask(ws, "help")
    names = ["help", "date", "time", "status", "protocols", "clients", "auth", "kick", "broadcast",
             "killserver"]
    for name in names:
        assert re.search(rf"^\s+{name}\b", text, re.M), name
    assert "disabled" in text
    data = await ask_json(ws, "help --json")
    assert [c["name"] for c in data["commands"]] == names
    assert {c["name"] for c in data["commands"] if c["privileged"]} == {"kick", "broadcast", "killserver"}
    assert data["privileged_enabled"] is False


async def test_date_and_time(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    ws = await open_client(server)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \(\w+day\)", await ask(ws, "date"))
    data = await ask_json(ws, "date --json")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", data["date"])
    assert re.fullmatch(r"\d\d:\d\d:\d\d \S+", await ask(ws, "time"))
    data = await ask_json(ws, "time --json")
    assert re.fullmatch(r"\d\d:\d\d:\d\d", data["time"])
    assert re.fullmatch(r"[+-]\d{4}", data["utc_offset"])
    assert isinstance(data["unix"], float)


async def test_status_counts_connections_per_protocol(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    await open_client(server, "echo")
    await open_client(server, "echo")
    ws = await open_client(server)
    text = await ask(ws, "status")
    assert f"wsplex {__version__} on node {server.node_id}" in text
    assert "connections: 3 (echo 2, chat 0, command 1)" in text
    assert re.search(r"^uptime: \d+m \d\ds$", text, re.M)
    assert re.search(r"^messages: \d+ in, \d+ out", text, re.M)
    data = await ask_json(ws, "status --json")
    assert data["version"] == __version__
    assert data["node"] == server.node_id
    assert data["connections"] == {"echo": 2, "chat": 0, "command": 1}
    assert data["connections_total"] == 3
    assert data["messages_in"] >= 2  # the two status commands
    assert data["messages_out"] >= 1
    assert isinstance(data["uptime"], float)


async def test_protocols(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    ws = await open_client(server)
    lines = (await ask(ws, "protocols")).splitlines()
    assert [line.split(":")[0] for line in lines] == list(PROTOCOLS)
    data = await ask_json(ws, "protocols --json")
    assert [p["name"] for p in data["protocols"]] == list(PROTOCOLS)
    assert all(p["description"] and p["help"] for p in data["protocols"])


async def test_clients_lists_everyone(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS, admin_token="tok")
    chat = await open_client(server, "chat", "?name=alice")
    await ask(chat, "/who")  # alice has her name
    await open_client(server, "echo")
    ws = await open_client(server)
    unauthenticated = (await ask_json(ws, "clients --json"))["clients"]
    assert [row["remote"] for row in unauthenticated] == [None, None, None]
    assert (await ask(ws, "clients")).splitlines()[2].split()[2] == "-"
    assert await ask(ws, "auth tok") == "ok: authenticated"
    data = await ask_json(ws, "clients --json")
    rows = data["clients"]
    assert [row["protocol"] for row in rows] == ["chat", "echo", "command"]
    assert all(set(row) == {"id", "protocol", "remote", "name", "since"} for row in rows)
    assert rows[0]["name"] == "alice"
    assert rows[1]["name"] is None
    assert len({row["id"] for row in rows}) == 3
    for row in rows:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", row["remote"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["since"])

    lines = (await ask(ws, "clients")).splitlines()
    assert lines[0] == "3 clients"
    assert lines[1].split() == ["id", "protocol", "remote", "name", "since"]
    assert lines[2].split() == [rows[0][k] for k in ("id", "protocol", "remote", "name", "since")]
    assert lines[3].split()[3] == "-"  # no name


async def test_unknown_empty_oversize_and_binary_get_errors(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    ws = await open_client(server)
    assert await ask(ws, "x") == "error: unknown command 'x' (try: help)"
    assert await ask(ws, "frobnicate now") == "error: unknown command 'frobnicate' (try: help)"
    assert await ask_json(ws, "x --json") == {"error": "unknown command 'x' (try: help)"}
    assert await ask(ws, "") == "error: empty command (try: help)"
    assert await ask(ws, "  \t ") == "error: empty command (try: help)"
    assert (await ask(ws, "status " + "y" * 10_000)).startswith("error: command longer than ")
    assert (await ask(ws, b"help")).startswith("error: binary messages are not commands")
    assert await ask(ws, "date please") == "error: date takes no argument (usage: date)"
    assert await ask(ws, "auth") == "error: usage: auth TOKEN"
    assert (await ask(ws, "HELP")).startswith("commands")  # still alive, case-insensitive


async def test_privileged_commands_are_disabled_without_a_token(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    ws = await open_client(server)
    disabled = "error: privileged commands are disabled (no admin token configured)"
    for line in ("auth anything", "kick 1", "broadcast echo hi", "killserver"):
        assert await ask(ws, line) == disabled
    assert await ask_json(ws, "kick 1 --json") == {"error": disabled.removeprefix("error: ")}
    assert (await ask(ws, "status")).startswith("wsplex")  # the server is still up


async def test_auth_right_and_wrong(start_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    server = await start_server(protocols=PROTOCOLS, admin_token=TOKEN)
    ws = await open_client(server)
    assert await ask(ws, "kick 1") == "error: not authorized (auth TOKEN first)"
    with caplog.at_level(logging.WARNING, logger="wsplex.command"):
        assert await ask(ws, "auth wrong") == "error: wrong token"
    assert any("wrong admin token" in r.getMessage() for r in caplog.records)
    assert await ask(ws, "killserver") == "error: not authorized (auth TOKEN first)"
    assert await ask_json(ws, f"auth {TOKEN} --json") == {"authenticated": True}
    assert await ask(ws, "kick nobody") == "error: no client with id 'nobody'"

    other = await open_client(server)  # authentication belongs to one connection
    assert await ask(other, "kick 1") == "error: not authorized (auth TOKEN first)"


async def test_wrong_tokens_lock_the_address_out(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS, admin_token=TOKEN)
    ws = await open_client(server)
    for _ in range(AuthThrottle.FREE_ATTEMPTS):
        assert await ask(ws, "auth guess") == "error: wrong token"
    locked = re.compile(r"error: too many failed auth attempts; try again in \d+ s")
    assert locked.fullmatch(await ask(ws, f"auth {TOKEN}"))  # not even checked
    other = await open_client(server)  # reconnecting does not reset it
    assert locked.fullmatch(await ask(other, f"auth {TOKEN}"))


def test_throttle_lockout_doubles_and_expires() -> None:
    now = [1000.0]
    throttle = AuthThrottle(clock=lambda: now[0])
    for _ in range(AuthThrottle.FREE_ATTEMPTS - 1):
        throttle.failed("a")
        assert throttle.wait("a") == 0
    lockouts = []
    for _ in range(9):
        throttle.failed("a")
        lockouts.append(throttle.wait("a"))
        now[0] += lockouts[-1]
    assert lockouts == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert throttle.wait("b") == 0  # other addresses are not affected
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.wait("a") == 0


async def test_kick_closes_the_client_with_1008(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS, admin_token=TOKEN)
    victim = await open_client(server, "chat", "?name=victim")
    await ask(victim, "/who")
    admin = await open_client(server)
    assert await ask(admin, f"auth {TOKEN}") == "ok: authenticated"
    rows = (await ask_json(admin, "clients --json"))["clients"]
    victim_id = next(row["id"] for row in rows if row["name"] == "victim")
    assert await ask(admin, f"kick {victim_id}") == f"ok: kicked {victim_id}"
    assert await closed_with(victim) == (1008, "kicked")
    rows = (await ask_json(admin, "clients --json"))["clients"]
    assert victim_id not in {row["id"] for row in rows}
    assert await ask(admin, f"kick {victim_id}") == f"error: no client with id '{victim_id}'"

    own_id = next(row["id"] for row in rows if row["protocol"] == "command")
    assert await ask_json(admin, f"kick {own_id} --json") == {"kicked": own_id}
    assert await closed_with(admin) == (1008, "kicked")


async def test_broadcast_reaches_every_client_of_one_protocol(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS, admin_token=TOKEN)
    echoes = [await open_client(server, "echo") for _ in range(2)]
    chat = await open_client(server, "chat", "?name=alice")
    admin = await open_client(server)
    await ask(admin, f"auth {TOKEN}")
    assert await ask(admin, "broadcast echo  hello  echo people") == "ok: broadcast to echo"
    for ws in echoes:
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello  echo people"
    assert await ask(chat, "/who") == "* in lobby: alice"  # chat got nothing
    assert await ask_json(admin, "broadcast chat * maintenance soon --json") == {
        "broadcast": "chat", "text": "* maintenance soon"}
    assert await asyncio.wait_for(chat.recv(), TIMEOUT) == "* maintenance soon"

    assert await ask(admin, "broadcast nosuch hi") == (
        "error: unknown protocol 'nosuch' (enabled: echo, chat, command)")
    assert await ask(admin, "broadcast echo") == "error: usage: broadcast PROTOCOL TEXT"
    # The sender is left out of a broadcast to its own protocol: its next message is the reply.
    listener = await open_client(server)
    assert await ask(admin, "broadcast command attention") == "ok: broadcast to command"
    assert await asyncio.wait_for(listener.recv(), TIMEOUT) == "attention"


def test_killserver_closes_every_client_with_1001(spawn: Any) -> None:
    child = spawn("--protocols", "echo,chat,command", env={"WSPLEX_ADMIN_TOKEN": TOKEN})

    async def scenario() -> list[tuple[int, str]]:
        url = child.url
        echo = await connect(url, subprotocols=[Subprotocol("echo")], open_timeout=TIMEOUT)
        chat = await connect(url, subprotocols=[Subprotocol("chat")], open_timeout=TIMEOUT)
        admin = await connect(url, subprotocols=[Subprotocol("command")], open_timeout=TIMEOUT)
        assert await ask(admin, "killserver") == "error: not authorized (auth TOKEN first)"
        assert await ask(admin, f"auth {TOKEN}") == "ok: authenticated"
        assert await ask(admin, "killserver") == "ok: shutting down"
        return [await closed_with(ws) for ws in (echo, chat, admin)]

    closes = asyncio.run(scenario())
    assert [code for code, _ in closes] == [1001, 1001, 1001]
    assert child.proc.wait(15) == 0
    child.read_until("killserver from session")


async def test_no_broadcast_of_raw_text_to_framed_protocols(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("command", "mqtt", "v12.stomp"), admin_token=TOKEN)
    admin = await open_client(server)
    await ask(admin, f"auth {TOKEN}")
    for protocol in ("mqtt", "v12.stomp"):
        assert await ask(admin, f"broadcast {protocol} hello") == (
            f"error: {protocol} clients read framed messages, not lines of text: "
            "publish on a topic they subscribe to instead")


async def test_clients_is_rate_limited(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    asker = await open_client(server)
    for _ in range(10):
        assert (await ask(asker, "clients")).startswith("1 client\n")
    assert (await ask(asker, "clients")).startswith("error: too many listings; try again in ")


async def test_status_spends_the_listing_budget(start_server: ServerFactory) -> None:
    """``status`` counts the cluster's clients as ``clients`` lists them: one budget for both."""
    server = await start_server(protocols=PROTOCOLS)
    asker = await open_client(server)
    for line in ["status", "clients"] * 5:
        assert not (await ask(asker, line)).startswith("error:")
    assert (await ask(asker, "status")).startswith("error: too many listings; try again in ")
    assert (await ask(asker, "help")).startswith("commands")  # only the listings wait
    other = await open_client(server)  # the budget is the connection's
    assert (await ask(other, "status")).startswith("wsplex")
