"""The ``chat`` protocol (SPEC §3), driven by real ``websockets`` clients.

"Nothing else arrived" is shown without sleeping: the client sends ``/who``
and the next line it receives must be the answer, since a connection's
messages are handled and answered in order.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from support import ServerFactory, ws_url
from wsplex.server import Server

PROTOCOLS = ("echo", "chat", "command")
TIMEOUT = 5.0


async def recv(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    return message


async def who(ws: ClientConnection) -> str:
    await ws.send("/who")
    line = await recv(ws)
    assert line.startswith("* in "), line
    return line


async def enter(server: Server, name: str | None = None) -> tuple[ClientConnection, list[str]]:
    """Connect a chat client; return it once it is in its room, with what it got first."""
    url = ws_url(server) + (f"?name={quote(name)}" if name is not None else "")
    ws = await connect(url, subprotocols=[Subprotocol("chat")], open_timeout=TIMEOUT)
    assert ws.subprotocol == "chat"
    await ws.send("/who")
    before = []
    while not (line := await recv(ws)).startswith("* in "):
        before.append(line)
    return ws, before


async def expect(ws: ClientConnection, *lines: str) -> None:
    for line in lines:
        assert await recv(ws) == line


async def test_message_reaches_the_others_in_the_room_but_not_the_sender(
    start_server: ServerFactory,
) -> None:
    server = await start_server(protocols=PROTOCOLS)
    alice, _ = await enter(server, "alice")
    bob, _ = await enter(server, "bob")
    await expect(alice, "* bob joined")
    carol, _ = await enter(server, "carol")
    await expect(alice, "* carol joined")
    await expect(bob, "* carol joined")

    await alice.send("hello, room")
    await expect(bob, "[alice] hello, room")
    await expect(carol, "[alice] hello, room")
    assert await who(alice) == "* in lobby: alice, bob, carol"


async def test_clients_without_a_name_are_guests(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    first, _ = await enter(server)
    second, _ = await enter(server)
    await expect(first, "* guest-2 joined")
    assert await who(second) == "* in lobby: guest-1, guest-2"
    await second.send("/name guest-3")  # a name a future guest would get
    await expect(second, "* guest-2 is now guest-3")
    third, _ = await enter(server)
    assert await who(third) == "* in lobby: guest-1, guest-3, guest-4"


async def test_rooms_keep_conversations_apart(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    alice, _ = await enter(server, "alice")
    bob, _ = await enter(server, "bob")
    await expect(alice, "* bob joined")
    carol, _ = await enter(server, "carol")
    await expect(alice, "* carol joined")
    await expect(bob, "* carol joined")

    await carol.send("/join dev")
    await expect(carol, "* carol joined")  # the joiner sees its own arrival
    await expect(alice, "* carol left")
    await expect(bob, "* carol left")
    await bob.send("/join dev")
    await expect(bob, "* bob joined")
    await expect(carol, "* bob joined")
    await expect(alice, "* bob left")

    await carol.send("in dev")
    await expect(bob, "[carol] in dev")
    await alice.send("in lobby")
    assert await who(alice) == "* in lobby: alice"  # nothing from dev reached alice
    assert await who(carol) == "* in dev: bob, carol"  # nor from lobby to carol

    await alice.send("/rooms")
    assert await recv(alice) == "* rooms: dev (2), lobby (1)"
    await carol.send("/join dev")
    assert await recv(carol) == "! you are already in dev"


async def test_invalid_room_names_are_refused(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    alice, _ = await enter(server, "alice")
    for line in ("/join two words", "/join " + "r" * 33, "/join bell\x07"):
        await alice.send(line)
        assert (await recv(alice)).startswith("! invalid room: ")
    await alice.send("/join")
    assert await recv(alice) == "! usage: /join ROOM"
    assert await who(alice) == "* in lobby: alice"


async def test_rename_is_announced_and_frees_the_old_name(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    alice, _ = await enter(server, "alice")
    bob, _ = await enter(server, "bob")
    await expect(alice, "* bob joined")

    await alice.send("/name alicia")
    await expect(alice, "* alice is now alicia")
    await expect(bob, "* alice is now alicia")
    await alice.send("/nick ally")
    await expect(bob, "* alicia is now ally")
    await alice.send("hi")
    await expect(bob, "[ally] hi")

    newcomer, before = await enter(server, "alice")  # the first name is free again
    assert before == ["* history: 1 message", "[ally] hi", "* end of history"]
    assert await who(newcomer) == "* in lobby: alice, ally, bob"


async def test_taken_and_invalid_names_keep_the_old_name(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    alice, _ = await enter(server, "alice")
    bob, _ = await enter(server, "bob")

    await bob.send("/name alice")
    assert await recv(bob) == "! name 'alice' is taken"
    for bad in ("two words", "x" * 33, "tab\tinside", "bell\x07"):
        await bob.send(f"/name {bad}")
        assert (await recv(bob)).startswith("! invalid name: "), bad
    await bob.send("/name")
    assert await recv(bob) == "! usage: /name NEW"
    await bob.send("/name bob")
    assert await recv(bob) == "! you are already bob"
    await bob.send("/name " + "b" * 32)  # 32 characters is the limit, not over it
    assert await recv(bob) == f"* bob is now {'b' * 32}"
    await bob.send("/name bøb✓")  # printable is not ASCII-only
    assert await recv(bob) == f"* {'b' * 32} is now bøb✓"
    await expect(alice, "* bob joined", f"* bob is now {'b' * 32}", f"* {'b' * 32} is now bøb✓")


async def test_a_taken_or_invalid_url_name_falls_back_to_a_guest_name(
    start_server: ServerFactory,
) -> None:
    server = await start_server(protocols=PROTOCOLS)
    await enter(server, "alice")
    _, before = await enter(server, "alice")
    assert before == ["! name 'alice' is taken; you are guest-1"]
    _, before = await enter(server, "has space")
    assert len(before) == 1
    assert before[0].startswith("! invalid name: ") and before[0].endswith("; you are guest-2")


async def test_an_empty_url_name_is_invalid_not_ignored(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    _, before = await enter(server, "")
    assert len(before) == 1
    assert before[0].startswith("! invalid name: ") and before[0].endswith("; you are guest-1")


async def test_a_line_ending_sent_with_the_line_is_not_part_of_it(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    alice, _ = await enter(server, "alice")
    bob, _ = await enter(server, "bob")
    await expect(alice, "* bob joined")
    await bob.send("hello\r\n")
    await bob.send("two\nlines\n")
    await expect(alice, "[bob] hello", "[bob] two\nlines")
    await bob.send("/name robert\n")
    assert await recv(bob) == "* bob is now robert"
    await bob.send("\r\n")
    assert await recv(bob) == "! empty message, not sent"


async def test_leaving_is_announced_and_frees_the_name(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    alice, _ = await enter(server, "alice")
    bob, _ = await enter(server, "bob")
    await expect(alice, "* bob joined")
    await bob.close()
    await expect(alice, "* bob left")
    again, before = await enter(server, "bob")
    assert before == []
    assert await who(again) == "* in lobby: alice, bob"


async def test_history_is_sent_to_a_joining_client_marked_as_history(
    start_server: ServerFactory,
) -> None:
    server = await start_server(protocols=PROTOCOLS, chat_history=2)
    alice, before = await enter(server, "alice")
    assert before == []  # an empty room has no history block
    for text in ("one", "two", "three"):
        await alice.send(text)
    await who(alice)  # alice's messages are all handled, history included

    bob, before = await enter(server, "bob")
    assert before == ["* history: 2 messages", "[alice] two", "[alice] three", "* end of history"]
    await alice.send("/join dev")
    await expect(alice, "* bob joined", "* alice joined")  # dev has no history yet
    await alice.send("in dev")
    await who(alice)
    await bob.send("/join dev")
    await expect(bob, "* alice left")
    await expect(bob, "* history: 1 message", "[alice] in dev", "* end of history", "* bob joined")


async def test_history_zero_disables_it(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS, chat_history=0)
    alice, _ = await enter(server, "alice")
    await alice.send("not kept")
    await who(alice)
    _, before = await enter(server, "bob")
    assert before == []


async def test_binary_frame_closes_with_1003(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    alice, _ = await enter(server, "alice")
    bob, _ = await enter(server, "bob")
    await expect(alice, "* bob joined")
    await bob.send(b"\x00\x01")
    with pytest.raises(ConnectionClosed) as closed:
        await recv(bob)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1003
    assert "text" in closed.value.rcvd.reason
    await expect(alice, "* bob left")
    assert await who(alice) == "* in lobby: alice"


async def test_commands_help_errors_and_slash_escape(start_server: ServerFactory) -> None:
    server = await start_server(protocols=PROTOCOLS)
    alice, _ = await enter(server, "alice")
    bob, _ = await enter(server, "bob")

    await bob.send("/help")
    help_text = await recv(bob)
    assert all(line.startswith("* ") for line in help_text.splitlines())
    for command in ("/name", "/nick", "/join", "/who", "/rooms", "/help"):
        assert command in help_text
    await bob.send("/dance")
    assert await recv(bob) == "! unknown command /dance (try /help)"
    await bob.send("   ")
    assert await recv(bob) == "! empty message, not sent"
    await bob.send("//shrug")
    await expect(alice, "* bob joined", "[bob] /shrug")
    await bob.send("/WHO")  # commands are not case-sensitive
    assert await recv(bob) == "* in lobby: alice, bob"
