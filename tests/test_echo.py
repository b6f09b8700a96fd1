"""The echo protocol (SPEC §2) and the message layer seen from real clients."""

from __future__ import annotations

from websockets.asyncio.client import connect

from support import ServerFactory, ws_url
from support.rawws import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawClient

ECHO = ["echo"]


async def test_echo_goes_to_every_echo_client_sender_included(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    async with (
        connect(ws_url(server), subprotocols=ECHO) as a,  # type: ignore[arg-type]
        connect(ws_url(server), subprotocols=ECHO) as b,  # type: ignore[arg-type]
        connect(ws_url(server), subprotocols=ECHO) as c,  # type: ignore[arg-type]
    ):
        await a.send("hello")
        assert [await a.recv(), await b.recv(), await c.recv()] == ["hello"] * 3
        await b.send(b"\x00\xffbin")
        assert [await a.recv(), await b.recv(), await c.recv()] == [b"\x00\xffbin"] * 3


async def test_text_and_binary_keep_their_frame_type(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    client = await RawClient.connect(server.port, ECHO)
    client.send_frame(OP_TEXT, "text ✓".encode())
    client.send_frame(OP_BINARY, b"\x01\x02")
    first, second = await client.recv_frame(), await client.recv_frame()
    assert (first.opcode, first.payload) == (OP_TEXT, "text ✓".encode())
    assert (second.opcode, second.payload) == (OP_BINARY, b"\x01\x02")
    await client.close()


async def test_fragments_with_a_ping_between_them(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    client = await RawClient.connect(server.port, ECHO)
    client.send_frame(OP_TEXT, b"frag", fin=False)
    client.send_frame(OP_PING, b"mid")
    client.send_frame(OP_CONT, b"men", fin=False)
    client.send_frame(OP_CONT, b"ted")
    pong = await client.recv_frame()
    assert (pong.opcode, pong.payload) == (OP_PONG, b"mid")
    echoed = await client.recv_frame()
    assert (echoed.opcode, echoed.fin, echoed.payload) == (OP_TEXT, True, b"fragmented")
    await client.close()


async def test_large_messages_round_trip(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_message_size=4 << 20)
    payload = bytes(range(256)) * 8192  # 2 MiB
    async with connect(ws_url(server), subprotocols=ECHO, max_size=None) as ws:  # type: ignore[arg-type]
        await ws.send(payload)
        assert await ws.recv() == payload


async def test_leaving_clients_stop_receiving(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    async with connect(ws_url(server), subprotocols=ECHO) as stayer:  # type: ignore[arg-type]
        async with connect(ws_url(server), subprotocols=ECHO) as leaver:  # type: ignore[arg-type]
            await leaver.send("bye")
            assert await stayer.recv() == "bye"
        await stayer.send("still here")
        assert await stayer.recv() == "still here"
        assert server.stats.connections["echo"] == 1


async def test_many_messages_arrive_in_order(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    async with connect(ws_url(server), subprotocols=ECHO) as ws:  # type: ignore[arg-type]
        for i in range(500):
            await ws.send(str(i))
        assert [await ws.recv() for _ in range(500)] == [str(i) for i in range(500)]


async def test_a_closed_client_does_not_disturb_the_others(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    raw = await RawClient.connect(server.port, ECHO)
    async with connect(ws_url(server), subprotocols=ECHO) as ws:  # type: ignore[arg-type]
        raw.send_frame(OP_TEXT, b"half a mess", fin=False)
        await raw.close()  # abrupt: no close frame, message unfinished
        await ws.send("fine")
        assert await ws.recv() == "fine"
