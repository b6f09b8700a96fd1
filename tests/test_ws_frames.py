"""The message layer, rule by rule, without a socket (RFC 6455 §5.2-§5.6, §7.4, §8.1)."""

from __future__ import annotations

import struct

import pytest

from wsplex.app.outgoing import Outgoing
from wsplex.ws.assembler import MessageAssembler
from wsplex.ws.close import CloseCode, is_valid_close_code, truncate_reason
from wsplex.ws.frames import Opcode, ProtocolViolation, check_rsv, encode_frame, parse_close

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION


def violation(code: CloseCode) -> pytest.RaisesExc[ProtocolViolation]:
    return pytest.raises(ProtocolViolation, check=lambda e: e.code == code)


def test_single_frames_are_whole_messages() -> None:
    assembler = MessageAssembler(100)
    assert assembler.feed(TEXT, True, "héllo".encode()) == "héllo"
    assert assembler.feed(BINARY, True, b"\xff\x00") == b"\xff\x00"
    assert not assembler.in_message


def test_fragments_are_reassembled_in_order() -> None:
    assembler = MessageAssembler(100)
    assert assembler.feed(TEXT, False, b"he") is None
    assert assembler.in_message
    assert assembler.feed(CONT, False, b"") is None
    assert assembler.feed(CONT, True, b"llo") == "hello"
    assert assembler.feed(BINARY, False, b"\x01") is None
    assert assembler.feed(CONT, True, b"\x02") == b"\x01\x02"


def test_utf8_sequence_split_across_fragments_is_valid() -> None:
    encoded = "€".encode()
    assembler = MessageAssembler(100)
    assert assembler.feed(TEXT, False, encoded[:1]) is None
    assert assembler.feed(CONT, True, encoded[1:]) == "€"


def test_invalid_utf8_fails_fast_in_the_first_fragment() -> None:
    assembler = MessageAssembler(100)
    with violation(CloseCode.INVALID_DATA):
        assembler.feed(TEXT, False, b"ok\xc0\xafmore")


def test_truncated_utf8_at_the_end_of_a_message_is_invalid() -> None:
    assembler = MessageAssembler(100)
    assembler.feed(TEXT, False, b"\xe2\x82")
    with violation(CloseCode.INVALID_DATA):
        assembler.feed(CONT, True, b"")


def test_invalid_utf8_in_a_single_frame() -> None:
    with violation(CloseCode.INVALID_DATA):
        MessageAssembler(100).feed(TEXT, True, b"\xed\xa0\x80")  # a UTF-16 surrogate


def test_binary_is_not_utf8_checked() -> None:
    assert MessageAssembler(100).feed(BINARY, True, b"\xc0\xaf") == b"\xc0\xaf"


def test_continuation_without_a_message_is_a_protocol_error() -> None:
    with violation(CloseCode.PROTOCOL_ERROR):
        MessageAssembler(100).feed(CONT, True, b"x")


def test_new_data_frame_inside_a_message_is_a_protocol_error() -> None:
    assembler = MessageAssembler(100)
    assembler.feed(TEXT, False, b"a")
    with violation(CloseCode.PROTOCOL_ERROR):
        assembler.feed(TEXT, True, b"b")


def test_message_size_limit_counts_every_fragment() -> None:
    assembler = MessageAssembler(10)
    assert assembler.feed(BINARY, True, b"x" * 10) == b"x" * 10
    assembler.feed(BINARY, False, b"x" * 6)
    with violation(CloseCode.MESSAGE_TOO_BIG):
        assembler.feed(CONT, False, b"x" * 5)
    with violation(CloseCode.MESSAGE_TOO_BIG):
        MessageAssembler(10).feed(TEXT, True, b"x" * 11)


def test_reserved_bits_are_refused() -> None:
    check_rsv(False, False, False)
    for bits in [(True, False, False), (False, True, False), (False, False, True)]:
        with violation(CloseCode.PROTOCOL_ERROR):
            check_rsv(*bits)


def test_an_extension_may_own_rsv1_only() -> None:
    """RFC 7692 §6: permessage-deflate defines RSV1; RSV2 and RSV3 stay reserved."""
    check_rsv(True, False, False, rsv1_allowed=True)
    with violation(CloseCode.PROTOCOL_ERROR):
        check_rsv(True, True, False, rsv1_allowed=True)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes(code: int) -> None:
    request = parse_close(struct.pack("!H", code) + "bye ✓".encode())
    assert (request.code, request.reason) == (code, "bye ✓")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(code: int) -> None:
    with violation(CloseCode.PROTOCOL_ERROR):
        parse_close(struct.pack("!H", code))
    assert not is_valid_close_code(code)


def test_close_payload_rules() -> None:
    assert parse_close(b"").code == CloseCode.NO_STATUS
    with violation(CloseCode.PROTOCOL_ERROR):
        parse_close(b"\x03")
    with violation(CloseCode.INVALID_DATA):
        parse_close(struct.pack("!H", 1000) + b"\xff")


def test_frames_are_encoded_byte_for_byte() -> None:
    assert encode_frame(Opcode.TEXT, b"hi") == b"\x81\x02hi"
    assert encode_frame(Opcode.BINARY, b"") == b"\x82\x00"
    assert encode_frame(Opcode.TEXT, b"x" * 125)[:2] == b"\x81\x7d"
    assert encode_frame(Opcode.TEXT, b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert encode_frame(Opcode.BINARY, b"x" * 65536)[:10] == b"\x82\x7f" + struct.pack("!Q", 65536)
    assert encode_frame(Opcode.CLOSE, b"\x03\xe8") == b"\x88\x02\x03\xe8"


def test_outgoing_frames_once() -> None:
    message = Outgoing.text("hi")
    assert message.frame is message.frame
    assert Outgoing.binary(b"\x00").frame == b"\x82\x01\x00"


def test_reasons_are_cut_on_character_boundaries() -> None:
    reason = truncate_reason("é" * 100)
    assert len(reason.encode()) <= 123
    assert reason == "é" * 61
