"""The bad-input battery (SPEC §8): raw bytes in, the exact refusal out.

Every case is sent byte for byte over a raw socket and checked for its refusal
(an HTTP status, or a close code with a reason, then TCP closed), and in every
case a bystander echo connection on the same server keeps working.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from support import ServerFactory, ws_url
from support.rawws import RawClient, close_payload, frame_bytes, upgrade_request
from wsplex.http.admission import Refusal
from wsplex.server import Server
from wsplex.ws.close import CloseCode
from wsplex.ws.frames import Opcode

ECHO = [websockets.Subprotocol("echo")]
MAX_MESSAGE = 64 * 1024


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=("echo",), max_message_size=MAX_MESSAGE, handshake_timeout=2.0)


@pytest.fixture
async def bystander(server: Server) -> AsyncIterator[ClientConnection]:
    ws = await connect(ws_url(server), subprotocols=ECHO)
    yield ws
    await ws.close()


async def upgraded(port: int) -> RawClient:
    """A raw client past the handshake, speaking echo."""
    client = await RawClient.connect(port, ["echo"])
    assert client.status == 101, client.response_head
    return client


async def still_chatting(ws: ClientConnection) -> None:
    await ws.send("bystander")
    while (message := await asyncio.wait_for(ws.recv(), 5)) != "bystander":
        pass  # echoes of the bad client's valid messages
    assert message == "bystander"


# -- HTTP ---------------------------------------------------------------------------

HTTP_CASES = {
    "garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", 400),
    "unknown method": (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "post with body": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 400),
    "HTTP/1.0 upgrade": (b"GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", 400),
    "no target": (b"GET  HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "bad header line": (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
    "header name with space": (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
    "chunked": (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    "too many headers": (
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", 400
    ),
    "huge header": (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    "huge header, no end": (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000, 431),
    "unknown path": (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
}


@pytest.mark.parametrize("case", HTTP_CASES)
async def test_bad_http_gets_a_status(server: Server, bystander: ClientConnection, case: str) -> None:
    request, status = HTTP_CASES[case]
    client = await RawClient.open(server.port)
    client.send(request)
    response = await client.read_response()
    assert response.status == status
    assert response.body.strip(), "every refusal says why"
    assert await client.at_eof()
    await still_chatting(bystander)
    reason = {400: Refusal.BAD_REQUEST, 431: Refusal.HEADER_SIZE, 404: None}[status]
    assert sum(server.stats.refusals.values()) == (reason is not None)
    if reason is not None:
        assert server.stats.refusals[reason] == 1


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ((b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), 426),
        ((b"Sec-WebSocket-Version: 13\r\n", b""), 426),
        ((b"Connection: Upgrade", b"Connection: keep-alive"), 400),
        ((b"Sec-WebSocket-Key", b"X-No-Key"), 400),
        ((b"Sec-WebSocket-Protocol: echo", b"Sec-WebSocket-Protocol: nope"), 400),
        ((b"Sec-WebSocket-Protocol: echo", b"Sec-WebSocket-Protocol: ,,,"), 400),
        ((b"GET / ", b"GET /elsewhere "), 404),
    ],
)
async def test_bad_upgrade_gets_a_status(
    server: Server, bystander: ClientConnection, change: tuple[bytes, bytes], status: int
) -> None:
    client = await RawClient.open(server.port)
    client.send(upgrade_request(server.port, ["echo"]).replace(*change))
    response = await client.read_response()
    assert response.status == status and response.body.strip()
    assert await client.at_eof()
    await still_chatting(bystander)


async def test_connection_header_with_several_tokens(server: Server) -> None:
    """Firefox sends ``Connection: keep-alive, Upgrade`` (RFC 6455 §4.2.1 allows it)."""
    client = await RawClient.open(server.port)
    request = upgrade_request(server.port, ["echo"]).replace(
        b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"
    )
    client.send(request)
    assert (await client.read_response()).status == 101
    client.send(frame_bytes(Opcode.TEXT, b"firefox"))
    assert (await client.recv_frame()).payload == b"firefox"
    await client.close()


async def test_426_names_the_version(server: Server) -> None:
    client = await RawClient.open(server.port)
    client.send(upgrade_request(server.port, ["echo"]).replace(b"Version: 13", b"Version: 7"))
    response = await client.read_response()
    assert response.status == 426 and response.headers["sec-websocket-version"] == "13"


async def test_truncated_request_then_hang_up(server: Server, bystander: ClientConnection) -> None:
    client = await RawClient.open(server.port)
    client.send(upgrade_request(server.port, ["echo"])[:40])
    client.writer.write_eof()
    assert await client.at_eof()
    await still_chatting(bystander)


async def test_slowloris_drip(start_server: ServerFactory) -> None:
    """One byte at a time, never finishing within the handshake timeout: 408, then gone."""
    server = await start_server(protocols=("echo",), handshake_timeout=0.5)
    async with connect(ws_url(server), subprotocols=ECHO) as bystander:
        client = await RawClient.open(server.port)
        request = upgrade_request(server.port, ["echo"])

        async def drip() -> None:
            for byte in request:
                client.writer.write(bytes([byte]))
                await asyncio.sleep(0.05)  # pacing the attack, not waiting for the server

        dripping = asyncio.create_task(drip())
        response = await client.read_response()
        dripping.cancel()
        assert response.status == 408
        await still_chatting(bystander)


# -- frames -----------------------------------------------------------------------

PROTOCOL = CloseCode.PROTOCOL_ERROR
INVALID = CloseCode.INVALID_DATA

FRAME_CASES: dict[str, tuple[bytes, CloseCode]] = {
    "rsv1": (frame_bytes(Opcode.TEXT, b"x", rsv=4), PROTOCOL),
    "rsv2": (frame_bytes(Opcode.BINARY, b"x", rsv=2), PROTOCOL),
    "rsv3 on a ping": (frame_bytes(Opcode.PING, b"", rsv=1), PROTOCOL),
    "opcode 3": (frame_bytes(0x3, b"x"), PROTOCOL),
    "opcode 0xB": (frame_bytes(0xB, b"x"), PROTOCOL),
    "unmasked": (frame_bytes(Opcode.TEXT, b"hello", mask=False), PROTOCOL),
    "ping over 125 bytes": (frame_bytes(Opcode.PING, b"p" * 126), PROTOCOL),
    "close over 125 bytes": (frame_bytes(Opcode.CLOSE, close_payload(1000, "r" * 124)), PROTOCOL),
    "fragmented ping": (frame_bytes(Opcode.PING, b"p", fin=False), PROTOCOL),
    "close code 999": (frame_bytes(Opcode.CLOSE, close_payload(999)), PROTOCOL),
    "close code 1004": (frame_bytes(Opcode.CLOSE, close_payload(1004)), PROTOCOL),
    "close code 1005": (frame_bytes(Opcode.CLOSE, close_payload(1005)), PROTOCOL),
    "close code 1006": (frame_bytes(Opcode.CLOSE, close_payload(1006)), PROTOCOL),
    "close code 1016": (frame_bytes(Opcode.CLOSE, close_payload(1016)), PROTOCOL),
    "close code 2999": (frame_bytes(Opcode.CLOSE, close_payload(2999)), PROTOCOL),
    "close code 5000": (frame_bytes(Opcode.CLOSE, close_payload(5000)), PROTOCOL),
    "close with one byte": (frame_bytes(Opcode.CLOSE, b"\x03"), PROTOCOL),
    "close reason not UTF-8": (frame_bytes(Opcode.CLOSE, struct.pack("!H", 1000) + b"\xff\xfe"), INVALID),
    "text not UTF-8": (frame_bytes(Opcode.TEXT, b"caf\xc3"), INVALID),
    "UTF-8 surrogate": (frame_bytes(Opcode.TEXT, b"\xed\xa0\x80"), INVALID),
    "invalid UTF-8 split across fragments": (
        frame_bytes(Opcode.TEXT, "κό".encode(), fin=False)
        + frame_bytes(Opcode.CONTINUATION, b"\xce", fin=False)
        + frame_bytes(Opcode.CONTINUATION, b"\xff", fin=True),
        INVALID,
    ),
    "continuation first": (frame_bytes(Opcode.CONTINUATION, b"x"), PROTOCOL),
    "new message inside a fragmented one": (
        frame_bytes(Opcode.TEXT, b"a", fin=False) + frame_bytes(Opcode.TEXT, b"b"), PROTOCOL
    ),
    "non-minimal 16-bit length": (
        bytes([0x81, 0x80 | 126, 0, 5]) + b"\x00\x00\x00\x00" + b"hello", PROTOCOL
    ),
    "64-bit length with the top bit set": (bytes([0x82, 0x80 | 127]) + b"\x80" + b"\x00" * 7, PROTOCOL),
    "frame over the message size": (
        frame_bytes(Opcode.BINARY, b"x" * (MAX_MESSAGE + 1)), CloseCode.MESSAGE_TOO_BIG
    ),
    "frame header claiming 1 GiB": (
        bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 30) + b"\x00" * 4, CloseCode.MESSAGE_TOO_BIG
    ),
    "fragments over the message size": (
        frame_bytes(Opcode.BINARY, b"x" * MAX_MESSAGE, fin=False) + frame_bytes(Opcode.CONTINUATION, b"x"),
        CloseCode.MESSAGE_TOO_BIG,
    ),
}


@pytest.mark.parametrize("case", FRAME_CASES)
async def test_bad_frame_gets_its_close_code(
    server: Server, bystander: ClientConnection, case: str
) -> None:
    data, code = FRAME_CASES[case]
    client = await upgraded(server.port)
    client.send(data)
    close = (await client.recv_until_close())[1]
    assert close.close_code == code, close
    assert close.close_reason, "every close says why"
    assert await client.at_eof()
    await client.close()
    await still_chatting(bystander)
    assert server.counter.total == 1  # the bad client's slot is back


async def test_reply_comes_before_the_close_for_the_next_bad_frame(
    server: Server, bystander: ClientConnection
) -> None:
    """picows parses one frame ahead; the valid message's echo still goes out first."""
    client = await upgraded(server.port)
    client.send(frame_bytes(Opcode.TEXT, b"valid") + frame_bytes(0x3, b"bad"))
    first = await client.recv_frame()
    assert (first.opcode, first.payload) == (Opcode.TEXT, b"valid")
    close = (await client.recv_until_close())[1]
    assert close.close_code == PROTOCOL
    await still_chatting(bystander)


async def test_ping_flood_within_the_rate_gets_every_pong(
    server: Server, bystander: ClientConnection
) -> None:
    client = await upgraded(server.port)
    client.send(b"".join(frame_bytes(Opcode.PING, str(i).encode()) for i in range(500)))
    for i in range(500):
        pong = await client.recv_frame()
        assert (pong.opcode, pong.payload) == (Opcode.PONG, str(i).encode())
    await still_chatting(bystander)
    await client.close()


@pytest.mark.parametrize(
    "cut",
    [
        frame_bytes(Opcode.TEXT, b"x" * 1000)[:300],  # inside a frame's payload
        frame_bytes(Opcode.BINARY, b"x" * 1000)[:1],  # inside a frame's header
        frame_bytes(Opcode.TEXT, b"part", fin=False),  # between fragments of a message
    ],
    ids=["mid-payload", "mid-header", "mid-message"],
)
async def test_abrupt_disconnect_mid_message(
    server: Server, bystander: ClientConnection, cut: bytes
) -> None:
    client = await upgraded(server.port)
    client.send(cut)
    client.writer.transport.abort()
    await still_chatting(bystander)
    assert server.counter.total == 1
    assert server.stats.closes[CloseCode.ABNORMAL] == 1


async def test_clean_close_after_bad_input_elsewhere(server: Server, bystander: ClientConnection) -> None:
    client = await upgraded(server.port)
    client.send(frame_bytes(Opcode.CLOSE, close_payload(CloseCode.NORMAL, "bye")))
    close = (await client.recv_until_close())[1]
    assert close.close_code == CloseCode.NORMAL
    assert await client.at_eof()
    await still_chatting(bystander)
