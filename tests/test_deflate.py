"""permessage-deflate over real sockets (RFC 7692; SPEC §14): the handshake byte for byte,
compressed and fragmented messages both ways, a bomb, and a fan-out to compressed and
plain receivers at once. Clients: ``websockets`` (which offers deflate by default) and
the raw-socket client for exact bytes.
"""

from __future__ import annotations

import asyncio
import zlib

import aiohttp
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from support import ServerFactory, ws_url
from support.rawws import OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT, RawClient, frame_bytes
from wsplex.cli import settings_from_args
from wsplex.server import Server
from wsplex.ws.close import CloseCode
from wsplex.ws.deflate import TAIL

ECHO = [websockets.Subprotocol("echo")]
NO_CONTEXT = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
COMPRESSED = 4  # RSV1 among the three RSV bits of rawws.Frame
LINE = ("the quick brown fox jumps over the lazy dog, and a sensor says 21.5 degrees; " * 8).encode()


def compress(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def inflate(data: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(data + TAIL)


def extensions_line(client: RawClient) -> str | None:
    """The ``Sec-WebSocket-Extensions`` line of the 101, exactly as sent."""
    for line in client.response_head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("sec-websocket-extensions:"):
            return line
    return None


async def offering(server: Server, offer: str | None) -> RawClient:
    header = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer is not None else ""
    client = await RawClient.connect(server.port, ["echo"], extra_headers=header)
    assert client.status == 101, client.response_head
    return client


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server(protocols=("echo",), max_message_size=64 * 1024)


# -- the handshake, byte for byte ---------------------------------------------------------------


@pytest.mark.parametrize(("offer", "line"), [
    ("permessage-deflate; client_max_window_bits", "Sec-WebSocket-Extensions: " + NO_CONTEXT),
    ("permessage-deflate", "Sec-WebSocket-Extensions: " + NO_CONTEXT),
    ('permessage-deflate; server_max_window_bits="10"',
     "Sec-WebSocket-Extensions: " + NO_CONTEXT + "; server_max_window_bits=10"),
    ("permessage-deflate; client_max_window_bits=9",
     "Sec-WebSocket-Extensions: " + NO_CONTEXT + "; client_max_window_bits=9"),
    ("permessage-deflate; bogus, permessage-deflate; server_max_window_bits=12",
     "Sec-WebSocket-Extensions: " + NO_CONTEXT + "; server_max_window_bits=12"),
    ("permessage-deflate; server_max_window_bits=16", None),  # declined: no compression,
    ("permessage-deflate; server_no_context_takeover=yes", None),  # the handshake still succeeds
    ('permessage-deflate; client_max_window_bits="', None),
    ("x-webkit-deflate-frame", None),
    (None, None),
])
async def test_the_answer_names_exactly_the_parameters_in_force(
    server: Server, offer: str | None, line: str | None
) -> None:
    client = await offering(server, offer)
    assert extensions_line(client) == line
    await client.close()


async def test_no_compression_turns_it_off(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), compression=False)
    client = await offering(server, "permessage-deflate")
    assert extensions_line(client) is None
    client.send_frame(OP_TEXT, compress(b"hello"), rsv=COMPRESSED)  # so RSV1 is no one's: 1002
    _, close = await client.recv_until_close()
    assert close.close_code == CloseCode.PROTOCOL_ERROR
    await client.close()


# -- messages, byte for byte -----------------------------------------------------------------


async def test_a_compressed_message_and_its_compressed_echo(server: Server) -> None:
    client = await offering(server, "permessage-deflate")
    client.send_frame(OP_TEXT, compress(LINE), rsv=COMPRESSED)
    frame = await client.recv_frame()
    assert (frame.fin, frame.opcode, frame.rsv) == (True, OP_TEXT, COMPRESSED)
    assert len(frame.payload) < len(LINE) // 3
    assert inflate(frame.payload) == LINE
    await client.close()


async def test_short_messages_go_plain_and_plain_messages_are_fine(server: Server) -> None:
    client = await offering(server, "permessage-deflate")
    client.send_frame(OP_TEXT, bytes.fromhex("f248cdc9c90700"), rsv=COMPRESSED)  # RFC 7692 §7.2.3.1
    frame = await client.recv_frame()
    assert (frame.rsv, frame.opcode, frame.payload) == (0, OP_TEXT, b"Hello")  # under 128 bytes
    client.send_frame(OP_BINARY, LINE)  # a client need not compress (§6)
    frame = await client.recv_frame()
    assert (frame.rsv, frame.opcode, inflate(frame.payload)) == (COMPRESSED, OP_BINARY, LINE)
    await client.close()


async def test_a_fragmented_compressed_message(server: Server) -> None:
    client = await offering(server, "permessage-deflate")
    data = compress(LINE)
    client.send_frame(OP_TEXT, data[:5], fin=False, rsv=COMPRESSED)
    client.send_frame(OP_CONT, data[5:20], fin=False)
    client.send_frame(OP_CONT, data[20:])
    frame = await client.recv_frame()
    assert frame.rsv == COMPRESSED and inflate(frame.payload) == LINE
    await client.close()


@pytest.mark.parametrize(("frames", "code"), [
    ([(OP_TEXT, compress(b"x" * 200)[:3], False, COMPRESSED), (OP_CONT, compress(b"x" * 200)[3:], True,
                                                                COMPRESSED)], CloseCode.PROTOCOL_ERROR),
    ([(OP_TEXT, compress(b"\xff" * 200), True, COMPRESSED)], CloseCode.INVALID_DATA),
    ([(0x9, b"", True, COMPRESSED)], CloseCode.PROTOCOL_ERROR),  # a compressed ping
    ([(OP_TEXT, b"\x01\x02\x03", True, COMPRESSED)], CloseCode.INVALID_DATA),  # not DEFLATE data
    ([(OP_BINARY, compress(bytes(32 << 20)), True, COMPRESSED)], CloseCode.MESSAGE_TOO_BIG),  # a bomb
])
async def test_broken_compressed_input_closes_with_its_code(
    server: Server, frames: list[tuple[int, bytes, bool, int]], code: int
) -> None:
    client = await offering(server, "permessage-deflate")
    for opcode, payload, fin, rsv in frames:
        client.send_frame(opcode, payload, fin=fin, rsv=rsv)
    before, close = await client.recv_until_close()
    assert before == [] and close.opcode == OP_CLOSE and close.close_code == code
    assert await client.at_eof()
    await client.close()


async def test_a_bomb_closes_with_1009_from_the_websockets_client(server: Server) -> None:
    async with connect(ws_url(server), subprotocols=ECHO, max_size=None) as ws:
        await ws.send(bytes(1 << 20))  # 1 MiB of zeros, ~1 KiB on the wire; the limit is 64 KiB
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.MESSAGE_TOO_BIG


# -- real clients ---------------------------------------------------------------------------------


async def roundtrips(ws: ClientConnection) -> None:
    for message in (LINE.decode(), LINE, "short", LINE.decode() * 50, ["frag", "mented " * 100]):
        await ws.send(message)
        expected = "".join(message) if isinstance(message, list) else message
        assert await ws.recv() == expected


async def test_the_websockets_client_negotiates_and_talks(server: Server) -> None:
    async with connect(ws_url(server), subprotocols=ECHO) as ws:
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Extensions"] == NO_CONTEXT
        await roundtrips(ws)
    assert server.stats.compressed_messages_in >= 4 and server.stats.compressed_messages_out == 4


@pytest.mark.parametrize("factory", [
    ClientPerMessageDeflateFactory(server_max_window_bits=8, client_max_window_bits=True),
    ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=9),
    ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True),
    ClientPerMessageDeflateFactory(client_max_window_bits=True),
], ids=["server-bits-8", "both-bits", "no-context", "default"])
@pytest.mark.parametrize("takeover", [False, True], ids=["server-default", "takeover"])
async def test_parameters_and_context_takeover_with_websockets(
    start_server: ServerFactory, factory: ClientPerMessageDeflateFactory, takeover: bool
) -> None:
    server = await start_server(protocols=("echo",), compression_context_takeover=takeover)
    async with connect(ws_url(server), subprotocols=ECHO, extensions=[factory], compression=None) as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        await roundtrips(ws)
        await roundtrips(ws)  # with context takeover, the second round uses the first's window


# -- fan-out ---------------------------------------------------------------------------------------


async def test_a_fan_out_is_compressed_once_for_compressed_and_plain_receivers(server: Server) -> None:
    url = ws_url(server)
    async with connect(url, subprotocols=ECHO) as deflating, \
            connect(url, subprotocols=ECHO, compression=None) as plain:
        raw_deflating = await offering(server, "permessage-deflate")
        raw_plain = await offering(server, None)
        await deflating.send("ready")  # every receiver is attached once this comes back
        assert await deflating.recv() == "ready"
        for receiver in (raw_deflating, raw_plain):
            await receiver.recv_frame()
        assert await plain.recv() == "ready"
        before = server.stats.compressions, server.stats.compressed_messages_out
        await plain.send(LINE)
        assert await deflating.recv() == LINE
        assert await plain.recv() == LINE
        compressed, uncompressed = await raw_deflating.recv_frame(), await raw_plain.recv_frame()
        assert compressed.rsv == COMPRESSED and inflate(compressed.payload) == LINE
        assert (uncompressed.rsv, uncompressed.payload) == (0, LINE)
        after = server.stats.compressions, server.stats.compressed_messages_out
        assert (after[0] - before[0], after[1] - before[1]) == (1, 2)  # one deflate, two receivers
        for raw in (raw_deflating, raw_plain):
            await raw.close()


async def test_metrics_count_compressed_messages_and_bytes_saved(server: Server) -> None:
    async with connect(ws_url(server), subprotocols=ECHO) as ws:
        await ws.send(LINE)
        assert await ws.recv() == LINE
    client = await RawClient.open(server.port)
    client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    body = (await client.read_response()).body.decode()
    await client.close()
    values = dict(line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#"))
    assert float(values["wsplex_compressed_messages_received_total"]) == 1
    assert float(values["wsplex_compressed_messages_sent_total"]) == 1
    saved = float(values["wsplex_compression_saved_bytes_total"])
    assert len(LINE) // 2 < saved < len(LINE)
    assert float(values["wsplex_compressions_total"]) == 1


async def test_many_messages_in_one_read(server: Server) -> None:
    """A burst of compressed messages in one TCP segment, each inflated on its own (no context)."""
    client = await offering(server, "permessage-deflate")
    client.send(b"".join(frame_bytes(OP_TEXT, compress(LINE + b"%d" % i), rsv=COMPRESSED) for i in range(50)))
    for i in range(50):
        frame = await asyncio.wait_for(client.recv_frame(), 10)
        assert inflate(frame.payload) == LINE + b"%d" % i
    await client.close()


@pytest.mark.parametrize("window", [15, 10, 9])
async def test_the_aiohttp_client_negotiates_and_talks(server: Server, window: int) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(
        ws_url(server), protocols=["echo"], compress=window
    ) as ws:
        expected = NO_CONTEXT + (f"; server_max_window_bits={window}" if window < 15 else "")
        assert ws._response.headers["Sec-WebSocket-Extensions"] == expected
        for _ in range(3):
            await ws.send_str(LINE.decode())
            assert (await ws.receive()).data == LINE.decode()
        await ws.send_bytes(bytes(5000))
        assert (await ws.receive()).data == bytes(5000)
    assert server.stats.compressed_messages_out == 4


# -- the flags ---------------------------------------------------------------------------------------


def test_the_compression_flags() -> None:
    default = settings_from_args([], {})
    assert (default.compression, default.compression_threshold, default.compression_context_takeover) == (
        True, 128, False)
    chosen = settings_from_args(["--no-compression", "--compression-threshold", "1K",
                                 "--compression-context-takeover", "--compression-server-window-bits", "9",
                                 "--compression-client-window-bits", "8", "--compression-memory-level", "1",
                                 "--compression-level", "9"], {})
    assert (chosen.compression, chosen.compression_threshold, chosen.compression_context_takeover) == (
        False, 1024, True)
    assert (chosen.compression_server_window_bits, chosen.compression_client_window_bits) == (9, 8)
    assert (chosen.compression_memory_level, chosen.compression_level) == (1, 9)
    assert settings_from_args([], {"WSPLEX_COMPRESSION": "false"}).compression is False


@pytest.mark.parametrize("argv", [
    ["--compression-server-window-bits", "16"], ["--compression-client-window-bits", "7"],
    ["--compression-memory-level", "0"], ["--compression-level", "10"], ["--compression-threshold", "0"],
])
def test_bad_compression_values_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        settings_from_args(argv, {})
    assert exited.value.code == 2
    assert argv[0] in capsys.readouterr().err
