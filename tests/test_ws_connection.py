"""The connection state machine, transition by transition, byte for byte (RFC 6455 §5.5, §7).

No socket: frames go in as (opcode, fin, payload, rsv bits), decisions and
exact frame bytes come out. The rows tested here are the table at the top of
``wsplex/ws/connection.py``.
"""

from __future__ import annotations

import struct

import pytest

from wsplex.ws.close import CloseCode
from wsplex.ws.connection import PONG, After, Close, Failure, Reply, State, WebSocket
from wsplex.ws.frames import Opcode

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
CLOSE, PING, PONG_OP = Opcode.CLOSE, Opcode.PING, Opcode.PONG


def receive(ws: WebSocket, opcode: int, payload: bytes = b"", *, fin: bool = True,
            rsv1: bool = False, rsv2: bool = False, rsv3: bool = False) -> object:
    return ws.receive(opcode, fin, payload, rsv1, rsv2, rsv3)


def code(value: int) -> bytes:
    return struct.pack("!H", value)


def closing(ws: WebSocket) -> WebSocket:
    """A connection that has sent its close (state CLOSING)."""
    assert ws.close(CloseCode.NORMAL, "") is not None
    return ws


def state_of(ws: WebSocket) -> State:
    """Read afresh: mypy would otherwise keep the state it narrowed to before a call."""
    return ws.state


def failed(ws: WebSocket, decision: object) -> Close:
    """A wire error: FAILING until the caller fails, then the close frame (table note [3])."""
    assert isinstance(decision, Failure), decision
    assert ws.state is State.FAILING
    close = ws.fail(decision.code, decision.reason)
    assert close is not None and state_of(ws) is State.CLOSING
    return close


def closed(ws: WebSocket) -> WebSocket:
    """A connection that has answered the peer's close (state CLOSED)."""
    assert isinstance(receive(ws, CLOSE, code(1000)), Close)
    return ws


# -- OPEN --------------------------------------------------------------------


def test_a_whole_message_is_returned_as_itself() -> None:
    ws = WebSocket(100)
    payload = b"\x00\xff"
    assert receive(ws, BINARY, payload) is payload  # no copy on the hot path
    assert receive(ws, TEXT, "héllo".encode()) == "héllo"
    assert ws.state is State.OPEN


def test_fragments_return_nothing_until_the_last() -> None:
    ws = WebSocket(100)
    assert receive(ws, TEXT, b"he", fin=False) is None
    assert receive(ws, PING, b"in between") == Reply(b"\x8a\x0ain between")  # §5.4: control frames interleave
    assert receive(ws, CONT, b"llo") == "hello"


def test_ping_is_answered_with_a_pong_carrying_its_payload() -> None:
    """§5.5.2, §5.5.3: the pong echoes the ping's application data."""
    ws = WebSocket(100)
    assert receive(ws, PING, b"") == Reply(b"\x8a\x00")
    assert receive(ws, PING, b"x" * 125) == Reply(b"\x8a\x7d" + b"x" * 125)
    assert ws.state is State.OPEN


def test_pong_is_reported() -> None:
    ws = WebSocket(100)
    assert receive(ws, PONG_OP, b"anything") is PONG


def test_close_without_code_is_answered_with_1000_and_tcp_dropped() -> None:
    """§5.5.1, §7.1.1: answer at once; a server drops TCP first."""
    ws = WebSocket(100)
    assert receive(ws, CLOSE) == Close(b"\x88\x02\x03\xe8", CloseCode.NO_STATUS, "", After.DISCONNECT)
    assert ws.state is State.CLOSED
    assert (ws.close_code, ws.close_reason) == (CloseCode.NO_STATUS, "")


@pytest.mark.parametrize("value", [1000, 1001, 1003, 1011, 3000, 4321, 4999])
def test_close_with_a_code_is_echoed_without_the_reason(value: int) -> None:
    ws = WebSocket(100)
    decision = receive(ws, CLOSE, code(value) + b"bye")
    assert decision == Close(b"\x88\x02" + code(value), value, "bye", After.DISCONNECT)
    assert (ws.close_code, ws.close_reason) == (value, "bye")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x03", CloseCode.PROTOCOL_ERROR),  # a one-byte payload
        (code(1005), CloseCode.PROTOCOL_ERROR),  # reserved for local use
        (code(999), CloseCode.PROTOCOL_ERROR),
        (code(5000), CloseCode.PROTOCOL_ERROR),
        (code(1000) + b"\xff", CloseCode.INVALID_DATA),  # reason not UTF-8
    ],
)
def test_invalid_close_fails_with_its_code(payload: bytes, expected: CloseCode) -> None:
    ws = WebSocket(100)
    decision = failed(ws, receive(ws, CLOSE, payload))
    frame = decision.frame
    assert frame is not None and frame[:4] == b"\x88" + bytes([len(frame) - 2]) + code(expected)
    assert (decision.code, decision.then) == (expected, After.HALF_CLOSE)
    assert ws.state is State.CLOSING


def test_framing_error_fails_with_1002() -> None:
    """§7.1.7: fail the connection; 1002 for a protocol error (§7.4.1)."""
    ws = WebSocket(100)
    decision = failed(ws, receive(ws, CONT, b"x"))
    reason = b"continuation frame outside a message"
    assert decision == Close(b"\x88" + bytes([2 + len(reason)]) + code(1002) + reason,
                             CloseCode.PROTOCOL_ERROR, reason.decode(), After.HALF_CLOSE)
    assert ws.state is State.CLOSING


def test_invalid_utf8_fails_with_1007() -> None:
    """§8.1: a text message must be UTF-8."""
    ws = WebSocket(100)
    decision = failed(ws, receive(ws, TEXT, b"\xc0\xaf"))
    reason = b"invalid UTF-8 in text message"
    assert decision == Close(b"\x88" + bytes([2 + len(reason)]) + code(1007) + reason,
                             CloseCode.INVALID_DATA, reason.decode(), After.HALF_CLOSE)


def test_oversize_message_fails_with_1009() -> None:
    ws = WebSocket(10)
    assert receive(ws, BINARY, b"x" * 6, fin=False) is None
    decision = failed(ws, receive(ws, CONT, b"x" * 5))
    reason = b"message larger than 10 bytes"
    assert decision == Close(b"\x88" + bytes([2 + len(reason)]) + code(1009) + reason,
                             CloseCode.MESSAGE_TOO_BIG, reason.decode(), After.HALF_CLOSE)


@pytest.mark.parametrize("bits", [(True, False, False), (False, True, False), (False, False, True)])
def test_reserved_bits_fail_with_1002_without_an_extension(bits: tuple[bool, bool, bool]) -> None:
    """§5.2: RSV bits are 0 unless an extension defines them."""
    ws = WebSocket(100)
    rsv1, rsv2, rsv3 = bits
    decision = failed(ws, receive(ws, TEXT, b"x", rsv1=rsv1, rsv2=rsv2, rsv3=rsv3))
    assert decision.code == CloseCode.PROTOCOL_ERROR
    assert decision.frame is not None and decision.frame[2:4] == code(1002)


def test_rsv1_is_the_extension_hook() -> None:
    """RFC 7692 §6: a negotiated permessage-deflate owns RSV1 (and only RSV1)."""
    ws = WebSocket(100)
    ws.rsv1_allowed = True
    assert receive(ws, BINARY, b"x", rsv1=True) == b"x"
    assert receive(ws, BINARY, b"x", rsv2=True) == Failure(CloseCode.PROTOCOL_ERROR,
                                                          "reserved bits set without an extension")


def test_reserved_opcode_fails_with_1002() -> None:
    ws = WebSocket(100)
    assert failed(ws, receive(ws, 0xB, b"")).code == CloseCode.PROTOCOL_ERROR


def test_local_close_sends_the_code_and_reason_and_waits() -> None:
    """§7.1.2: start the closing handshake, wait for the peer's close frame."""
    ws = WebSocket(100)
    assert ws.close(CloseCode.GOING_AWAY, "server shutting down") == Close(
        b"\x88\x16" + code(1001) + b"server shutting down", CloseCode.GOING_AWAY,
        "server shutting down", After.WAIT,
    )
    assert ws.state is State.CLOSING


def test_local_close_reason_is_cut_to_fit_a_control_frame() -> None:
    """§5.5: a control frame's payload is at most 125 bytes."""
    decision = WebSocket(100).close(4000, "é" * 100)
    assert decision is not None and decision.frame is not None
    assert decision.frame[:2] == b"\x88\x7c"  # 2 + 61 * 2 = 124 bytes: no split character
    assert decision.frame[4:].decode() == "é" * 61


def test_local_fail_half_closes() -> None:
    decision = WebSocket(100).fail(CloseCode.POLICY_VIOLATION, "slow consumer")
    assert decision == Close(b"\x88\x0f" + code(1008) + b"slow consumer", CloseCode.POLICY_VIOLATION,
                             "slow consumer", After.HALF_CLOSE)


# -- FAILING -------------------------------------------------------------------


def test_input_after_a_wire_error_is_discarded_and_replies_still_go_out() -> None:
    """§7.1.7: after a wire error nothing the peer sends is processed; note [3]: the
    replies owed for its earlier messages may still be queued, then our close."""
    ws = WebSocket(100)
    reason = "continuation frame outside a message"
    assert receive(ws, CONT, b"x") == Failure(CloseCode.PROTOCOL_ERROR, reason)
    assert ws.can_send
    assert receive(ws, TEXT, b"after") is None
    assert receive(ws, PING, b"after") is None
    assert receive(ws, CLOSE, code(1000)) is None
    assert receive(ws, TEXT, b"\xff") is None  # no second failure
    assert ws.violated(CloseCode.PROTOCOL_ERROR, "the parser's, too") is None
    close = ws.fail(CloseCode.PROTOCOL_ERROR, reason)
    assert close is not None and close.then is After.HALF_CLOSE
    assert not ws.can_send


def test_the_frame_parsers_error_fails_the_same_way() -> None:
    """The library's parser found the bad frame (picows parses one ahead)."""
    ws = WebSocket(100)
    failure = ws.violated(CloseCode.PROTOCOL_ERROR, "bad opcode")
    assert failure == Failure(CloseCode.PROTOCOL_ERROR, "bad opcode")
    assert ws.state is State.FAILING
    assert ws.close(CloseCode.GOING_AWAY, "shutting down") is not None  # a local close ends it too
    assert state_of(ws) is State.CLOSING


# -- CLOSING -------------------------------------------------------------------


def test_nothing_is_sent_after_our_close() -> None:
    """§5.5.1: the close frame is the last frame an endpoint sends."""
    ws = closing(WebSocket(100))
    assert not ws.can_send
    assert receive(ws, PING, b"late") is None  # no pong
    assert ws.close(CloseCode.NORMAL, "again") is None
    assert ws.fail(CloseCode.PROTOCOL_ERROR, "again") is None
    assert ws.state is State.CLOSING


def test_data_after_our_close_is_discarded() -> None:
    ws = closing(WebSocket(100))
    assert receive(ws, TEXT, b"late") is None
    assert receive(ws, CONT, b"even a bad one") is None  # no error either
    assert receive(ws, PONG_OP) is None
    assert receive(ws, TEXT, b"x", rsv2=True) is None


def test_the_peers_answer_to_our_close_drops_tcp() -> None:
    """§7.1.1: both close frames exchanged, the server closes TCP; nothing more to send."""
    ws = WebSocket(100)
    ws.close(4000, "bye")
    assert receive(ws, CLOSE, code(1000)) == Close(None, 4000, "bye", After.DISCONNECT)
    assert ws.state is State.CLOSED
    assert (ws.close_code, ws.close_reason) == (4000, "bye")


def test_the_peers_answer_is_not_validated() -> None:
    """Whatever the peer's close says, it ends the handshake we started."""
    ws = closing(WebSocket(100))
    decision = receive(ws, CLOSE, b"\x03")
    assert isinstance(decision, Close) and decision.frame is None and decision.then is After.DISCONNECT


# -- CLOSED --------------------------------------------------------------------


def test_a_second_close_frame_is_ignored() -> None:
    """Autobahn 7.1.2: two close frames in one packet; the first is answered with 1000."""
    ws = closed(WebSocket(100))
    assert receive(ws, CLOSE, code(1000)) is None
    assert receive(ws, CLOSE, b"\x03") is None  # not even a bad one fails it
    assert ws.state is State.CLOSED


def test_data_after_the_peers_close_is_discarded() -> None:
    ws = closed(WebSocket(100))
    assert receive(ws, TEXT, b"late") is None
    assert receive(ws, PING, b"late") is None
    assert ws.close(CloseCode.NORMAL, "") is None


def test_tcp_gone_closes_from_any_state() -> None:
    for ws in (WebSocket(100), closing(WebSocket(100))):
        ws.connection_lost()
        assert ws.state is State.CLOSED
        assert receive(ws, TEXT, b"x") is None
    ws = WebSocket(100)
    ws.connection_lost()
    assert ws.close_code == CloseCode.ABNORMAL  # 1006: no close frame was exchanged (§7.1.5)
