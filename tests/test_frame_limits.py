"""Frame-level limits of issue 17 (SPEC §8): every frame counts, and unfinished messages are bounded.

Each refusal is checked on the wire (close code and reason), in ``/metrics``, and
with a bystander that is still served afterwards.
"""

from __future__ import annotations

import pytest
from websockets import Subprotocol
from websockets.asyncio.client import connect

from support import ServerFactory, ws_url
from support.rawws import RawClient, frame_bytes
from test_bad_input import upgraded
from test_limits import echo_round_trip
from test_tls_metrics import http_get, samples
from wsplex.transport.listener import MAX_READ, PicowsProtocol
from wsplex.ws.assembler import MessageAssembler, PartialBytes
from wsplex.ws.close import CloseCode
from wsplex.ws.connection import Failure, WebSocket
from wsplex.ws.frames import Limit, Opcode, ProtocolViolation

pytestmark = pytest.mark.memory_only("frame limits live in the transport: no hub involved")

TEXT, CONT, BINARY = int(Opcode.TEXT), int(Opcode.CONTINUATION), int(Opcode.BINARY)


# -- the assembler on its own -------------------------------------------------------


def test_fragments_are_joined_as_they_arrive() -> None:
    assembler = MessageAssembler(100)
    euro = "€".encode()  # three bytes, split across frames
    assert assembler.feed(TEXT, False, b"a" + euro[:1]) is None
    assert assembler.feed(CONT, False, b"") is None
    assert assembler.feed(CONT, False, euro[1:]) is None
    assert assembler.feed(CONT, True, b"b") == "a€b"
    assert assembler.feed(BINARY, False, b"\x00") is None
    assert assembler.feed(CONT, True, b"\x01") == b"\x00\x01"


def test_frames_per_message_are_capped_empty_ones_too() -> None:
    assembler = MessageAssembler(100, max_fragments=3)
    assembler.feed(TEXT, False, b"")
    assembler.feed(CONT, False, b"")
    assembler.feed(CONT, False, b"")
    with pytest.raises(ProtocolViolation) as caught:
        assembler.feed(CONT, True, b"")
    assert caught.value == ProtocolViolation(CloseCode.POLICY_VIOLATION, "message in more than 3 frames",
                                             Limit.FRAGMENTS)
    assert not assembler.in_message
    assert assembler.feed(TEXT, True, b"next") == "next"  # a whole message is one frame


def test_partial_bytes_are_one_budget_for_the_node() -> None:
    partial = PartialBytes(10)
    first, second = WebSocket(100, partial=partial), WebSocket(100, partial=partial)
    first.receive(TEXT, False, b"123456", False, False, False)
    assert partial.held == 6
    failure = second.receive(BINARY, False, b"12345", False, False, False)
    assert failure == Failure(CloseCode.TRY_AGAIN_LATER,
                              "server busy: unfinished messages hold 10 bytes", Limit.PARTIAL_BYTES)
    assert partial.held == 6  # the refused message holds nothing
    assert first.receive(CONT, True, b"7", False, False, False) == "1234567"
    assert partial.held == 0


def test_partial_bytes_come_back_however_the_message_ends() -> None:
    partial = PartialBytes(1000)
    lost = WebSocket(100, partial=partial)
    lost.receive(BINARY, False, b"x" * 50, False, False, False)
    lost.connection_lost()
    too_big = WebSocket(100, partial=partial)
    too_big.receive(BINARY, False, b"x" * 60, False, False, False)
    assert too_big.receive(CONT, False, b"x" * 60, False, False, False) == Failure(
        CloseCode.MESSAGE_TOO_BIG, "message larger than 100 bytes")
    bad_utf8 = WebSocket(100, partial=partial)
    bad_utf8.receive(TEXT, False, b"ok", False, False, False)
    assert type(bad_utf8.receive(CONT, False, b"\xff", False, False, False)) is Failure
    interrupted = WebSocket(100, partial=partial)
    interrupted.receive(TEXT, False, b"ok", False, False, False)
    assert type(interrupted.receive(TEXT, True, b"new", False, False, False)) is Failure
    assert partial.held == 0


# -- on the wire --------------------------------------------------------------------


async def limit_closes(port: int) -> dict[str, float]:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return {dict(labels)["limit"]: value for (name, labels), value in samples(body.decode()).items()
            if name == "wsplex_limit_closes_total"}


async def assert_closed(client: RawClient, code: int, reason: str) -> None:
    close = (await client.recv_until_close())[1]
    assert (close.close_code, close.close_reason) == (code, reason)
    await client.close()


async def test_too_many_fragments_close_with_1008(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_fragments=10)
    client = await upgraded(server.port)
    client.send(frame_bytes(Opcode.TEXT, b"a", fin=False)
                + b"".join(frame_bytes(Opcode.CONTINUATION, b"", fin=False) for _ in range(50)))
    await assert_closed(client, CloseCode.POLICY_VIOLATION, "message in more than 10 frames")
    await echo_round_trip(ws_url(server))
    assert await limit_closes(server.port) == {"fragments": 1}


async def test_a_message_of_many_fragments_within_the_cap_arrives(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_fragments=10)
    client = await upgraded(server.port)
    client.send(frame_bytes(Opcode.TEXT, b"a", fin=False)
                + b"".join(frame_bytes(Opcode.CONTINUATION, b"b", fin=False) for _ in range(8))
                + frame_bytes(Opcode.CONTINUATION, b"c"))
    echoed = await client.recv_frame()
    assert (echoed.opcode, echoed.payload) == (Opcode.TEXT, b"abbbbbbbbc")
    await client.close()


async def test_empty_continuations_count_toward_the_rate(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_messages_per_second=20)
    client = await upgraded(server.port)
    client.send(frame_bytes(Opcode.TEXT, b"a", fin=False)
                + b"".join(frame_bytes(Opcode.CONTINUATION, b"", fin=False) for _ in range(200)))
    await assert_closed(client, CloseCode.POLICY_VIOLATION, "more than 20 messages per second")
    await echo_round_trip(ws_url(server))
    assert await limit_closes(server.port) == {"rate": 1}
    assert server.listener.shared.partial.held == 0


async def test_pongs_count_toward_the_rate(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_messages_per_second=20)
    client = await upgraded(server.port)
    client.send(b"".join(frame_bytes(Opcode.PONG, b"") for _ in range(200)))
    await assert_closed(client, CloseCode.POLICY_VIOLATION, "more than 20 messages per second")
    await echo_round_trip(ws_url(server))


async def test_an_unfinished_message_times_out(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), ping_interval=0.05, fragment_timeout=0.1)
    client = await upgraded(server.port)
    client.send(frame_bytes(Opcode.BINARY, b"never finished", fin=False))
    await assert_closed(client, CloseCode.POLICY_VIOLATION, "message not finished within 0.1 s")
    await echo_round_trip(ws_url(server))
    assert await limit_closes(server.port) == {"fragment_timeout": 1}
    assert server.listener.shared.partial.held == 0


async def test_unfinished_messages_of_the_node_are_capped(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",), max_partial_bytes=1000)
    partial = server.listener.shared.partial
    holder = await upgraded(server.port)
    holder.send(frame_bytes(Opcode.BINARY, b"h" * 600, fin=False) + frame_bytes(Opcode.PING, b"sync"))
    assert (await holder.recv_frame()).opcode == Opcode.PONG  # so the fragment before it is in
    assert partial.held == 600
    refused = await upgraded(server.port)
    refused.send(frame_bytes(Opcode.BINARY, b"r" * 300, fin=False)
                 + frame_bytes(Opcode.CONTINUATION, b"r" * 300, fin=False))
    await assert_closed(refused, CloseCode.TRY_AGAIN_LATER,
                        "server busy: unfinished messages hold 1000 bytes")
    assert partial.held == 600
    holder.send(frame_bytes(Opcode.CONTINUATION, b"!"))  # the holder is still served
    echoed = await holder.recv_frame()
    assert (echoed.opcode, echoed.payload) == (Opcode.BINARY, b"h" * 600 + b"!")
    assert partial.held == 0
    await holder.close()
    assert await limit_closes(server.port) == {"partial_bytes": 1}


# -- the node's send buffers ----------------------------------------------------------


async def test_send_buffers_of_the_node_are_capped(start_server: ServerFactory) -> None:
    """A never-reader in a flooded echo passes the node's cap before its own: it is closed, 1013.

    The flood is what others send it: its own pings would only stop it being read
    (``tests/test_turn_bounds.py``).
    """
    server = await start_server(protocols=("echo", "chat"), max_send_buffer=64 << 20,
                                max_message_size=8192, max_send_buffers_total=256 * 1024,
                                close_timeout=30.0, max_messages_per_second=10_000_000)
    lagging = await RawClient.connect(server.port, ["chat"])  # not reading either, little waiting
    lagging.send_frame(Opcode.PING, b"lagging")
    client = await upgraded(server.port)
    message = b"x" * 8000
    async with connect(ws_url(server), subprotocols=[Subprotocol("echo")], max_size=None) as sender:
        for _ in range(10_000):  # up to 80 MB for the never-reader; the kernel buffers hold a few MB
            if server.stats.limit_closes:
                break
            await sender.send(message)
            assert await sender.recv() == message
    assert server.stats.limit_closes == {"send_buffers_total": 1}
    assert server.stats.slow_consumer_drops == 1
    await echo_round_trip(ws_url(server))  # a reader is served meanwhile
    while (received := await lagging.recv_frame()).opcode != Opcode.PONG:
        pass  # chat's welcome
    assert received.payload == b"lagging"  # the worst went first, and alone
    lagging.send_frame(Opcode.PING, b"still open")
    assert (await lagging.recv_frame()).payload == b"still open"
    await lagging.close()
    while (received := await client.recv_frame()).opcode != Opcode.CLOSE:
        pass  # the echoes it could take
    assert (received.close_code, received.close_reason) == (
        CloseCode.TRY_AGAIN_LATER, "slow consumer: server send buffers full")
    await client.close()
    assert server.listener.shared.send_buffers.total <= 256 * 1024
    assert await limit_closes(server.port) == {"send_buffers_total": 1}


# -- the work done for one connection at a time -------------------------------------


async def test_reads_are_capped_however_fast_frames_come(start_server: ServerFactory,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """picows grows its buffer as reads fill it: a flood must not make one read (and the
    frames handled in one go) grow with it. The real reads are watched, not replaced."""
    reads: list[int] = []
    get_buffer = PicowsProtocol.get_buffer

    def watched(protocol: PicowsProtocol, size_hint: int) -> memoryview:
        buffer = get_buffer(protocol, size_hint)
        reads.append(len(buffer))
        return buffer

    monkeypatch.setattr(PicowsProtocol, "get_buffer", watched)
    server = await start_server(protocols=("echo",), max_messages_per_second=10_000_000)
    client = await upgraded(server.port)
    client.send(frame_bytes(Opcode.PONG, b"") * 200_000 + frame_bytes(Opcode.PING, b"end"))
    while (received := await client.recv_frame()).opcode != Opcode.PONG:
        pass
    assert received.payload == b"end"
    assert len(reads) > 1_200_000 // MAX_READ and max(reads) == MAX_READ
    await echo_round_trip(ws_url(server))
    await client.close()
