"""Property tests with hypothesis: the parsers never fail in an unplanned way.

Whatever the bytes, the message layer returns a message or raises
:class:`ProtocolViolation` with the close code the RFC asks for; valid input
always survives fragmentation unchanged. The last test sends hypothesis'
byte strings to a live server and checks it answers each with a close code or
nothing, and stays up for the next client.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets import Subprotocol
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from support import WsplexProcess
from support.rawws import frame_bytes, upgrade_request
from wsplex.app.registry import parse_offer
from wsplex.ws.assembler import MessageAssembler
from wsplex.ws.close import CloseCode, is_valid_close_code
from wsplex.ws.frames import Opcode, ProtocolViolation, parse_close

DATA_OPCODES = st.sampled_from([Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY])
LIMIT = 256


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(st.lists(st.tuples(DATA_OPCODES, st.booleans(), st.binary(max_size=100)), max_size=30))
def test_assembler_never_fails_unexpectedly(frames: list[tuple[int, bool, bytes]]) -> None:
    assembler = MessageAssembler(LIMIT)
    for opcode, fin, payload in frames:
        try:
            message = assembler.feed(opcode, fin, payload)
        except ProtocolViolation as violation:
            assert violation.code in (
                CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA, CloseCode.MESSAGE_TOO_BIG
            )
            assert violation.reason
            return  # the connection is failed: nothing is fed after a violation
        if message is not None:
            assert len(message.encode() if isinstance(message, str) else message) <= LIMIT
            assert not assembler.in_message


@given(st.text(max_size=200), st.lists(st.integers(0, 800), max_size=10))
def test_text_survives_any_fragmentation(text: str, cuts: list[int]) -> None:
    """Fragments may split a UTF-8 sequence anywhere (RFC 6455 §5.6, §8.1)."""
    data = text.encode()
    parts = split(data, cuts)
    assembler = MessageAssembler(1 << 20)
    result = None
    for index, part in enumerate(parts):
        opcode = Opcode.TEXT if index == 0 else Opcode.CONTINUATION
        result = assembler.feed(opcode, index == len(parts) - 1, part)
    assert result == text


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=10))
def test_bytes_are_text_exactly_when_they_are_utf8(data: bytes, cuts: list[int]) -> None:
    try:
        expected: str | None = data.decode()
    except UnicodeDecodeError:
        expected = None
    parts = split(data, cuts)
    assembler = MessageAssembler(1 << 20)
    try:
        for index, part in enumerate(parts):
            opcode = Opcode.TEXT if index == 0 else Opcode.CONTINUATION
            result = assembler.feed(opcode, index == len(parts) - 1, part)
    except ProtocolViolation as violation:
        assert expected is None and violation.code == CloseCode.INVALID_DATA
    else:
        assert result == expected


@given(st.binary(min_size=1, max_size=300), st.lists(st.integers(0, 300), max_size=10))
def test_size_limit_holds_for_any_fragmentation(data: bytes, cuts: list[int]) -> None:
    limit = 100
    parts = split(data, cuts)
    assembler = MessageAssembler(limit)
    try:
        for index, part in enumerate(parts):
            opcode = Opcode.BINARY if index == 0 else Opcode.CONTINUATION
            result = assembler.feed(opcode, index == len(parts) - 1, part)
    except ProtocolViolation as violation:
        assert len(data) > limit and violation.code == CloseCode.MESSAGE_TOO_BIG
    else:
        assert len(data) <= limit and result == data


@given(st.binary(max_size=130))
def test_parse_close_accepts_exactly_the_valid_payloads(payload: bytes) -> None:
    try:
        request = parse_close(payload)
    except ProtocolViolation as violation:
        if violation.code == CloseCode.INVALID_DATA:
            with pytest.raises(UnicodeDecodeError):
                payload[2:].decode()
        else:
            assert violation.code == CloseCode.PROTOCOL_ERROR
            assert len(payload) == 1 or not is_valid_close_code(struct.unpack("!H", payload[:2])[0])
        return
    if not payload:
        assert request.code == CloseCode.NO_STATUS
    else:
        assert is_valid_close_code(request.code)
        assert request.reason.encode() == payload[2:]


@given(st.integers(0, 65535), st.text(max_size=40))
def test_parse_close_round_trip(code: int, reason: str) -> None:
    payload = struct.pack("!H", code) + reason.encode()
    if is_valid_close_code(code):
        assert parse_close(payload) == parse_close(payload)  # frozen, comparable
        assert (parse_close(payload).code, parse_close(payload).reason) == (code, reason)
    else:
        with pytest.raises(ProtocolViolation):
            parse_close(payload)


@given(st.lists(st.text(max_size=40), max_size=5))
def test_parse_offer_yields_clean_tokens(values: list[str]) -> None:
    tokens = parse_offer(values)
    for token in tokens:
        assert token and token == token.strip() and "," not in token
    joined = [t.strip() for v in values for t in v.split(",") if t.strip()]
    assert tokens == joined


# -- bytes at a live server ----------------------------------------------------------


_live: WsplexProcess | None = None  # one server for all of hypothesis' examples


def raw_session(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(upgrade_request(port, ["echo"]))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def drain(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes, or until it goes quiet."""
    received = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        sock.settimeout(0.2)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def echo_works(port: int) -> None:
    with raw_session(port) as sock:
        sock.sendall(frame_bytes(Opcode.TEXT, b"alive"))
        sock.settimeout(5)
        assert sock.recv(100) == b"\x81\x05alive"


def server_close_code(received: bytes) -> int | None:
    """The code of the close frame in what the server sent, if any (frames are unmasked)."""
    offset = 0
    while offset + 2 <= len(received):
        opcode, size = received[offset] & 0x0F, received[offset + 1] & 0x7F
        offset += 2
        if size == 126:
            size = struct.unpack_from("!H", received, offset)[0]
            offset += 2
        elif size == 127:
            size = struct.unpack_from("!Q", received, offset)[0]
            offset += 8
        if opcode == Opcode.CLOSE:
            return int(struct.unpack_from("!H", received, offset)[0]) if size >= 2 else None
        offset += size
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.binary(max_size=64),
    st.builds(lambda op, fin, rsv, payload, mask: frame_bytes(op, payload, fin=fin, rsv=rsv, mask=mask),
              st.integers(0, 15), st.booleans(), st.integers(0, 7), st.binary(max_size=200),
              st.sampled_from([True, True, True, False])),
), min_size=1, max_size=6))
def test_live_server_survives_random_frames(
    spawn: Callable[..., WsplexProcess], chunks: list[bytes]
) -> None:
    global _live
    if _live is None or _live.proc.poll() is not None:
        _live = spawn("--protocols", "echo", "--max-message-size", "4096")
    live_server = _live
    with raw_session(live_server.port) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(b"".join(chunks))
        code = server_close_code(drain(sock))
        # A close code the peer may legally see, and never "internal error" (a bug of ours).
        assert code is None or (is_valid_close_code(code) and code != CloseCode.INTERNAL_ERROR)
    echo_works(live_server.port)
    assert live_server.proc.poll() is None




# -- every protocol's parser, through a live server -------------------------------

COMMAND_WORDS = ["help", "date", "time", "status", "protocols", "clients", "auth", "kick",
                 "broadcast", "killserver", "--json", "/name", "/nick", "/join", "/who", "/rooms",
                 "/help", "//", "/"]
JSON_BITS = ['{"from":"a"}', '{"from":"a","to":"JSONsvc","cmd":"help"}', '{"from":', "{", "}",
             '"put":"t"', '"get":"t"', '"to":"b"', ">", "<", "[1,2]", "null", "NaN", "1e999", "\\u0000"]
protocol_lines = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(COMMAND_WORDS + JSON_BITS) | st.text(max_size=8), max_size=6).map(" ".join),
    st.lists(st.sampled_from(JSON_BITS) | st.text(max_size=4), max_size=8).map("".join),
)


@given(st.text(max_size=60))
def test_command_request_parse(line: str) -> None:
    from wsplex.protocols.command import JSON_FLAG, Request

    request = Request.parse(line)
    assert request.word == request.word.strip() and not any(c.isspace() for c in request.word)
    assert request.argument == request.argument.strip()
    assert request.as_json == (line.split()[-1:] == [JSON_FLAG])


class LiveSessions:
    """One server with every protocol and one connection per protocol, reopened when closed."""

    def __init__(self, server: WsplexProcess) -> None:
        self.server = server
        self.sockets: dict[str, Any] = {}
        self.stack = contextlib.ExitStack()  # the connections die with the server process

    def session(self, protocol: str) -> Any:
        ws = self.sockets.get(protocol)
        if ws is None:
            ws = self.stack.enter_context(
                sync_connect(self.server.url, subprotocols=[Subprotocol(protocol)], open_timeout=10)
            )
            if protocol == "JSONsvc":
                ws.send('{"from":"fuzzer","to":"JSONsvc","cmd":"whoami"}')
                ws.recv(timeout=10)
            self.sockets[protocol] = ws
        return ws

    def send(self, protocol: str, line: str) -> None:
        ws = self.session(protocol)
        try:
            ws.send(line)
            with contextlib.suppress(TimeoutError):
                while True:  # read the replies, so the server never sees a slow consumer
                    ws.recv(timeout=0.05)
            ws.ping().wait(10) or pytest.fail(f"{protocol}: no pong after {line!r}")
        except ConnectionClosed as closed:
            self.sockets.pop(protocol)
            code = closed.rcvd.code if closed.rcvd else None
            assert code != CloseCode.INTERNAL_ERROR, f"{protocol} crashed on {line!r}: {closed}"


_sessions: LiveSessions | None = None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["chat", "command", "JSONsvc"]), protocol_lines)
def test_protocols_survive_any_line(spawn: Callable[..., WsplexProcess], protocol: str, line: str) -> None:
    """Any text to any protocol: replies or a deliberate close, never a crash (1011)."""
    global _sessions
    if _sessions is None or _sessions.server.proc.poll() is not None:
        _sessions = LiveSessions(spawn())
    _sessions.send(protocol, line)
    assert _sessions.server.proc.poll() is None
