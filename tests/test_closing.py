"""Close codes and the closing handshake, byte for byte (RFC 6455 §5, §7)."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from support import ServerFactory, ws_url
from support.rawws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    RawClient,
    close_payload,
    frame_bytes,
)
from wsplex.config import Settings
from wsplex.ws.close import CloseCode

ECHO = ["echo"]


async def echo_client(server_port: int) -> RawClient:
    return await RawClient.connect(server_port, ECHO)


async def expect_close(client: RawClient, code: int) -> str:
    _, close = await client.recv_until_close()
    assert close.close_code == code, close
    assert await client.at_eof()
    return close.close_reason


async def test_client_close_is_echoed_then_tcp_dropped(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    client = await echo_client(server.port)
    client.send_frame(OP_CLOSE, close_payload(1000, "bye"))
    await expect_close(client, 1000)


async def test_client_close_with_application_code(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    client = await echo_client(server.port)
    client.send_frame(OP_CLOSE, close_payload(4321))
    await expect_close(client, 4321)


async def test_empty_close_is_answered_with_1000(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    client = await echo_client(server.port)
    client.send_frame(OP_CLOSE)
    await expect_close(client, 1000)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (frame_bytes(OP_TEXT, b"x", rsv=4), CloseCode.PROTOCOL_ERROR),  # RSV1
        (frame_bytes(OP_TEXT, b"x", rsv=1), CloseCode.PROTOCOL_ERROR),  # RSV3
        (frame_bytes(0x3, b"x"), CloseCode.PROTOCOL_ERROR),  # reserved data opcode
        (frame_bytes(0xB, b""), CloseCode.PROTOCOL_ERROR),  # reserved control opcode
        (frame_bytes(OP_TEXT, b"x", mask=False), CloseCode.PROTOCOL_ERROR),  # unmasked (§5.1)
        (frame_bytes(OP_PING, b"x" * 126), CloseCode.PROTOCOL_ERROR),  # control > 125 bytes
        (frame_bytes(OP_PING, b"x", fin=False), CloseCode.PROTOCOL_ERROR),  # fragmented control
        (frame_bytes(OP_CONT, b"x"), CloseCode.PROTOCOL_ERROR),  # continuation, no message
        (frame_bytes(OP_CLOSE, b"\x03"), CloseCode.PROTOCOL_ERROR),  # 1-byte close payload
        (frame_bytes(OP_CLOSE, close_payload(1005)), CloseCode.PROTOCOL_ERROR),  # reserved code
        (frame_bytes(OP_CLOSE, close_payload(999)), CloseCode.PROTOCOL_ERROR),
        (frame_bytes(OP_CLOSE, close_payload(5000)), CloseCode.PROTOCOL_ERROR),
        (frame_bytes(OP_CLOSE, b"\x03\xe8\xff"), CloseCode.INVALID_DATA),  # bad UTF-8 reason
        (frame_bytes(OP_TEXT, b"\xc0\xaf"), CloseCode.INVALID_DATA),
        (frame_bytes(OP_TEXT, "€".encode()[:2], fin=False) + frame_bytes(OP_CONT, b"\xff"),
         CloseCode.INVALID_DATA),  # invalid UTF-8 split across fragments
        (frame_bytes(OP_TEXT, b"a", fin=False) + frame_bytes(OP_BINARY, b"b"),
         CloseCode.PROTOCOL_ERROR),  # new message inside a fragmented one
    ],
)
async def test_wire_errors_close_with_their_code(
    start_server: ServerFactory, frame: bytes, code: int
) -> None:
    server = await start_server(protocols=("echo",))
    bystander = await echo_client(server.port)
    client = await echo_client(server.port)
    client.send(frame)
    await expect_close(client, code)
    bystander.send_frame(OP_TEXT, b"still fine")
    assert (await bystander.recv_frame()).payload == b"still fine"
    await bystander.close()


async def test_too_big_message_closes_with_1009(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_message_size=1000)
    one_frame = await echo_client(server.port)
    one_frame.send_frame(OP_BINARY, b"x" * 1001)
    await expect_close(one_frame, CloseCode.MESSAGE_TOO_BIG)
    fragmented = await echo_client(server.port)
    fragmented.send_frame(OP_BINARY, b"x" * 600, fin=False)
    fragmented.send_frame(OP_CONT, b"x" * 600)
    await expect_close(fragmented, CloseCode.MESSAGE_TOO_BIG)


async def test_reply_to_a_valid_message_comes_before_the_close_for_the_next(
    start_server: ServerFactory,
) -> None:
    """picows parses one frame ahead; the guard keeps the wire order right."""
    server = await start_server(protocols=("echo",))
    client = await echo_client(server.port)
    client.send(frame_bytes(OP_TEXT, b"valid") + frame_bytes(OP_TEXT, b"x", rsv=2))
    before, close = await client.recv_until_close()
    assert [f.payload for f in before] == [b"valid"]
    assert close.close_code == CloseCode.PROTOCOL_ERROR


async def test_two_close_frames_in_one_packet(start_server: ServerFactory) -> None:
    """Autobahn 7.1.2: the first close is answered with 1000, the second ignored."""
    server = await start_server(protocols=("echo",))
    client = await echo_client(server.port)
    client.send(frame_bytes(OP_CLOSE, close_payload(1000)) + frame_bytes(OP_CLOSE, close_payload(1000)))
    await expect_close(client, 1000)


async def test_data_after_close_is_ignored(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    client = await echo_client(server.port)
    client.send(frame_bytes(OP_CLOSE, close_payload(1000)) + frame_bytes(OP_TEXT, b"late"))
    before, close = await client.recv_until_close()
    assert before == [] and close.close_code == 1000


async def test_crashing_protocol_closes_only_its_connection(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo", "fragile"),
                                protocol_modules=("support.sample_protocols:Fragile",))
    async with (
        connect(ws_url(server), subprotocols=["fragile"]) as victim,  # type: ignore[list-item]
        connect(ws_url(server), subprotocols=["fragile"]) as later,  # type: ignore[list-item]
        connect(ws_url(server), subprotocols=["echo"]) as bystander,  # type: ignore[list-item]
    ):
        await victim.send("boom")
        with pytest.raises(ConnectionClosedError) as closed:
            await victim.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.INTERNAL_ERROR
        await later.send("later")
        with pytest.raises(ConnectionClosedError) as closed:
            await later.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.INTERNAL_ERROR
        await bystander.send("alive")
        assert await bystander.recv() == "alive"


async def test_async_hooks_keep_message_order(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("fragile",),
                                protocol_modules=("support.sample_protocols:Fragile",))
    async with connect(ws_url(server), subprotocols=["fragile"]) as ws:  # type: ignore[list-item]
        await ws.send("slow")
        await ws.send("fast")
        assert [await ws.recv(), await ws.recv()] == ["slow done", "ok fast"]


async def test_keepalive_closes_a_peer_that_never_answers(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), ping_interval=0.2, ping_timeout=0.2)
    silent = await RawClient.connect(server.port, ECHO)  # reads, but never answers pings
    frame = await silent.recv_frame()
    assert frame.opcode == OP_PING
    _, close = await silent.recv_until_close()
    assert close.close_code == CloseCode.INTERNAL_ERROR
    assert close.close_reason == "keepalive ping timeout"
    assert await silent.at_eof()


async def test_keepalive_keeps_a_peer_that_answers(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), ping_interval=0.1, ping_timeout=0.1)
    async with connect(ws_url(server), subprotocols=ECHO, ping_interval=None) as ws:  # type: ignore[arg-type]
        pinged = 0
        raw = await RawClient.connect(server.port, ECHO)
        while pinged < 3:  # the raw client answers three pings by hand
            frame = await raw.recv_frame()
            if frame.opcode == OP_PING:
                pinged += 1
                raw.send_frame(0xA, frame.payload)
        raw.send_frame(OP_TEXT, b"alive")
        assert (await raw.recv_frame()).payload == b"alive"
        assert await ws.recv() == "alive"  # websockets answers pings by itself
        await raw.close()


def test_settings_default_limits_match_the_spec() -> None:
    settings = Settings()
    assert settings.port == 12352
    assert settings.max_message_size == 1 << 20
    assert (settings.ping_interval, settings.ping_timeout) == (20.0, 20.0)
