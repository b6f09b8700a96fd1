"""permessage-deflate without a socket (RFC 7692): offers in, answers out; frames in, messages out.

The negotiation cases are the header values real clients send and the ones the
RFC says to decline; the codec cases are the RFC's own examples (§7.2.3), byte
for byte, then the rules around them (RSV1 placement, UTF-8, size, bombs).
"""

from __future__ import annotations

import random
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsplex.ws.close import CloseCode
from wsplex.ws.connection import Failure
from wsplex.ws.deflate import (
    TAIL,
    Deflate,
    DeflateSettings,
    DeflateWebSocket,
    negotiate,
    parse_offers,
)
from wsplex.ws.frames import Opcode, encode_frame

TEXT, BINARY, CONT, PING = int(Opcode.TEXT), int(Opcode.BINARY), int(Opcode.CONTINUATION), int(Opcode.PING)
DEFAULT = DeflateSettings()
#: What the server answers by default: no zlib state between messages on either side.
NO_CONTEXT = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
TAKEOVER = DeflateSettings(context_takeover=True)


def answer(*headers: str, settings: DeflateSettings = DEFAULT) -> str | None:
    deflate = negotiate(list(headers), settings)
    return None if deflate is None else deflate.response


# -- negotiation: accept (RFC 7692 §5, §7.1) ------------------------------------------------


@pytest.mark.parametrize("offer", [
    "permessage-deflate",  # Firefox
    "permessage-deflate; client_max_window_bits",  # Chromium, websockets, ws
    "permessage-deflate;client_max_window_bits",
    "permessage-deflate; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover; client_max_window_bits",
    "x-webkit-deflate-frame, permessage-deflate",  # an extension we do not speak is skipped
    "  permessage-deflate  ;  client_max_window_bits  ",
    ", permessage-deflate ,",  # empty list elements (RFC 7230 §7)
])
def test_common_offers_get_no_context_takeover_both_ways(offer: str) -> None:
    assert answer(offer) == NO_CONTEXT


@pytest.mark.parametrize(("offer", "expected"), [
    ("permessage-deflate; server_max_window_bits=10", NO_CONTEXT + "; server_max_window_bits=10"),
    ('permessage-deflate; server_max_window_bits="10"', NO_CONTEXT + "; server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=8", NO_CONTEXT + "; server_max_window_bits=8"),
    ("permessage-deflate; server_max_window_bits=15", NO_CONTEXT + "; server_max_window_bits=15"),
    ("permessage-deflate; client_max_window_bits=12", NO_CONTEXT + "; client_max_window_bits=12"),
    ('permessage-deflate; client_max_window_bits="9"', NO_CONTEXT + "; client_max_window_bits=9"),
    ("permessage-deflate; server_max_window_bits=9; client_max_window_bits=11",
     NO_CONTEXT + "; server_max_window_bits=9; client_max_window_bits=11"),
])
def test_window_bits_are_answered_with_the_value_in_force(offer: str, expected: str) -> None:
    assert answer(offer) == expected


def test_the_first_acceptable_offer_wins() -> None:
    assert answer("permessage-deflate; server_max_window_bits=9, permessage-deflate") == (
        NO_CONTEXT + "; server_max_window_bits=9")
    assert answer("permessage-deflate; nonsense, permessage-deflate; server_max_window_bits=12") == (
        NO_CONTEXT + "; server_max_window_bits=12")
    assert answer("foo", "permessage-deflate; server_max_window_bits=13") == (
        NO_CONTEXT + "; server_max_window_bits=13")  # several header lines are one list


def test_a_quoted_comma_does_not_split_offers() -> None:
    # The first offer's value is not a token once unquoted (RFC 6455 §9.1): declined.
    assert answer('foo; bar="a,b", permessage-deflate') == NO_CONTEXT
    assert answer('permessage-deflate; x="a,permessage-deflate"') is None


# -- negotiation: decline -----------------------------------------------------------------


@pytest.mark.parametrize("offer", [
    "",
    "deflate-frame",
    "permessage-deflate; unknown",
    "permessage-deflate; unknown=1",
    "permessage-deflate; server_max_window_bits",  # a value is required (§7.1.2.1)
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=08",  # no leading zeros
    "permessage-deflate; server_max_window_bits=1e1",
    "permessage-deflate; client_max_window_bits=abc",
    "permessage-deflate; client_max_window_bits=0",
    "permessage-deflate; server_no_context_takeover=1",  # takes no value (§7.1.1.1)
    'permessage-deflate; client_no_context_takeover=""',
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",  # twice (§7.1)
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    'permessage-deflate; server_max_window_bits="10',  # unterminated quote
    'permessage-deflate; server_max_window_bits="1 0"',
    "permessage-deflate;",
    "permessage-deflate;; client_max_window_bits",
    "permessage-deflate; =10",
    "permessage deflate",
])
def test_bad_offers_are_declined_not_failed(offer: str) -> None:
    assert answer(offer) is None


def test_parse_offers_keeps_names_params_and_unquoted_values() -> None:
    offers = parse_offers(['a; x=1; y="2"', "b", 'c; z="q\\"uoted"'])
    assert [(offer.name, offer.params) for offer in offers] == [
        ("a", (("x", "1"), ("y", "2"))), ("b", ())]  # c's unquoted value is not a token


# -- negotiation: the operator's settings --------------------------------------------------


def test_context_takeover_when_the_operator_allows_it() -> None:
    assert answer("permessage-deflate; client_max_window_bits", settings=TAKEOVER) == "permessage-deflate"
    # The client may still ask for no context on either side (§7.1.1).
    assert answer("permessage-deflate; server_no_context_takeover", settings=TAKEOVER) == (
        "permessage-deflate; server_no_context_takeover")
    assert answer("permessage-deflate; client_no_context_takeover", settings=TAKEOVER) == (
        "permessage-deflate; client_no_context_takeover")


def test_smaller_windows_for_the_operator() -> None:
    small = DeflateSettings(context_takeover=True, server_max_window_bits=10, client_max_window_bits=11)
    assert answer("permessage-deflate; client_max_window_bits", settings=small) == (
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=11")
    assert answer("permessage-deflate; server_max_window_bits=9; client_max_window_bits=12",
                  settings=small) == "permessage-deflate; server_max_window_bits=9; client_max_window_bits=11"
    # A client that cannot be told a window keeps no context instead (§7.1.1.2, §7.1.2.2).
    assert answer("permessage-deflate", settings=small) == (
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10")


def test_parameter_sets_are_interned() -> None:
    first = negotiate(["permessage-deflate"], DEFAULT)
    assert first is negotiate(["permessage-deflate; client_max_window_bits"], DEFAULT)
    assert first is not negotiate(["permessage-deflate; server_max_window_bits=9"], DEFAULT)


_PIECES = st.sampled_from([
    "permessage-deflate", "x-other", ";", ",", "=", '"', "\\", " ", "\t", "server_max_window_bits",
    "client_max_window_bits", "server_no_context_takeover", "client_no_context_takeover",
    "8", "9", "15", "16", "08", "a",
])


@given(st.lists(st.lists(_PIECES, max_size=12).map("".join), max_size=3))
def test_negotiation_never_raises_and_answers_what_it_accepts(headers: list[str]) -> None:
    deflate = negotiate(headers, DEFAULT)
    if deflate is not None:
        # The answer is itself a well-formed, acceptable offer with the same parameters.
        assert negotiate([deflate.response], DEFAULT) is deflate


# -- the codec: RFC 7692 §7.2.3's examples ------------------------------------------------------


def websocket(deflate: Deflate | None = None, max_size: int = 1 << 20) -> DeflateWebSocket:
    chosen = negotiate(["permessage-deflate"], DEFAULT) if deflate is None else deflate
    assert chosen is not None
    return DeflateWebSocket(max_size, chosen)


def receive(ws: DeflateWebSocket, opcode: int, payload: bytes, *,
            fin: bool = True, rsv1: bool = False) -> object:
    return ws.receive(opcode, fin, payload, rsv1, False, False)


def test_rfc_7692_7_2_3_1_a_message_compressed_in_one_frame() -> None:
    assert receive(websocket(), TEXT, bytes.fromhex("f248cdc9c90700"), rsv1=True) == "Hello"


def test_rfc_7692_7_2_3_1_a_compressed_message_in_two_fragments() -> None:
    ws = websocket()
    assert receive(ws, TEXT, bytes.fromhex("f248cd"), fin=False, rsv1=True) is None
    assert receive(ws, CONT, bytes.fromhex("c9c90700")) == "Hello"


def test_rfc_7692_7_2_3_2_sharing_the_window_with_client_context_takeover() -> None:
    takeover = negotiate(["permessage-deflate"], TAKEOVER)
    assert takeover is not None and not takeover.client_no_context_takeover
    ws = websocket(takeover)
    assert receive(ws, TEXT, bytes.fromhex("f248cdc9c90700"), rsv1=True) == "Hello"
    assert receive(ws, TEXT, bytes.fromhex("f200110000"), rsv1=True) == "Hello"


def test_rfc_7692_7_2_3_3_and_4_stored_and_final_blocks() -> None:
    ws = websocket()
    assert receive(ws, TEXT, bytes.fromhex("000500faff48656c6c6f00"), rsv1=True) == "Hello"
    assert receive(ws, TEXT, bytes.fromhex("f348cdc9c9070000"), rsv1=True) == "Hello"


def test_uncompressed_messages_still_pass_on_a_deflate_connection() -> None:
    ws = websocket()
    assert receive(ws, BINARY, b"\x00\xff") == b"\x00\xff"
    assert receive(ws, TEXT, b"plain", fin=False) is None
    assert receive(ws, CONT, b" text") == "plain text"


def compress(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def failure(decision: object) -> tuple[int, str]:
    assert isinstance(decision, Failure), decision
    return decision.code, decision.reason


def test_rsv1_on_a_continuation_is_a_protocol_error() -> None:
    ws = websocket()
    assert receive(ws, TEXT, compress(b"ab")[:1], fin=False, rsv1=True) is None
    code, reason = failure(receive(ws, CONT, compress(b"ab")[1:], rsv1=True))
    assert code == CloseCode.PROTOCOL_ERROR and "continuation" in reason


def test_rsv1_on_a_control_frame_is_a_protocol_error() -> None:
    assert failure(receive(websocket(), PING, b"", rsv1=True))[0] == CloseCode.PROTOCOL_ERROR


def test_rsv2_and_rsv3_stay_reserved() -> None:
    ws = websocket()
    assert failure(ws.receive(TEXT, True, b"x", False, True, False))[0] == CloseCode.PROTOCOL_ERROR


def test_the_inflated_text_must_be_utf8() -> None:
    assert failure(receive(websocket(), TEXT, compress(b"caf\xc3"), rsv1=True))[0] == CloseCode.INVALID_DATA
    ws = websocket()  # a character cut between two fragments is fine
    assert receive(ws, TEXT, compress("é".encode())[:2], fin=False, rsv1=True) is None
    assert receive(ws, CONT, compress("é".encode())[2:]) == "é"


def test_corrupt_compressed_data_is_invalid_data() -> None:
    assert failure(receive(websocket(), BINARY, b"\xff\xff\xff", rsv1=True))[0] == CloseCode.INVALID_DATA


def test_a_bomb_closes_with_1009_whatever_its_compressed_size() -> None:
    bomb = compress(bytes(16 << 20))  # 16 MiB of zeros in ~16 KiB
    assert len(bomb) < 20_000
    code, _ = failure(receive(websocket(max_size=1 << 20), BINARY, bomb, rsv1=True))
    assert code == CloseCode.MESSAGE_TOO_BIG


def test_the_limit_counts_inflated_bytes_across_fragments() -> None:
    ws = websocket(max_size=1000)
    data = compress(bytes(1001))
    assert receive(ws, BINARY, data[:3], fin=False, rsv1=True) is None
    assert failure(receive(ws, CONT, data[3:]))[0] == CloseCode.MESSAGE_TOO_BIG
    exact = websocket(max_size=1000)
    assert receive(exact, BINARY, compress(bytes(1000)), rsv1=True) == bytes(1000)


def test_a_new_message_inside_a_compressed_one_is_a_protocol_error() -> None:
    ws = websocket()
    assert receive(ws, TEXT, compress(b"abc")[:1], fin=False, rsv1=True) is None
    assert failure(receive(ws, TEXT, compress(b"x"), rsv1=True))[0] == CloseCode.PROTOCOL_ERROR


# -- the codec: what the server sends -------------------------------------------------------


def inflate_in_small_steps(data: bytes, window_bits: int) -> bytes:
    """Inflate with a window of 2^bits and a small output buffer, so that a match further
    back than the window fails ("invalid distance too far back")."""
    decompressor = zlib.decompressobj(-window_bits)
    out, pending = b"", data + TAIL
    while pending:
        out += decompressor.decompress(pending, 64)
        pending = decompressor.unconsumed_tail
    return out


_WORDS = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"consectetur", b"adipiscing", b"elit",
          b"sed", b"do", b"eiusmod", b"tempor", b"incididunt", b"ut", b"labore", b"et", b"dolore"]
#: Text that compresses like text: words repeat, their order does not.
TEXT_BODY = b" ".join(random.Random(7).choices(_WORDS, k=4000))


def payload_of(frame: bytes) -> bytes:
    """A server frame's payload (unmasked, RFC 6455 §5.2)."""
    size = frame[1] & 0x7F
    start = 2 if size < 126 else 4 if size == 126 else 10
    return frame[start:]


@pytest.mark.parametrize("bits", range(8, 16))
def test_the_server_keeps_to_the_negotiated_window(bits: int) -> None:
    deflate = negotiate([f"permessage-deflate; server_max_window_bits={bits}"], DEFAULT)
    assert deflate is not None
    frame = deflate.frame(TEXT, TEXT_BODY, encode_frame(TEXT, TEXT_BODY))
    assert frame[0] == 0xC1  # FIN, RSV1, TEXT: RSV1 on the (only) frame of the message (§6)
    assert inflate_in_small_steps(payload_of(frame), bits) == TEXT_BODY


def test_below_the_threshold_or_when_it_does_not_help_the_plain_frame_goes() -> None:
    deflate = negotiate(["permessage-deflate"], DEFAULT)
    assert deflate is not None and deflate.threshold == 128
    plain = b"\x81\x05hello"
    assert deflate.frame(TEXT, b"hello", plain) is plain
    noise = bytes(range(256)) * 1  # incompressible at this size
    assert deflate.frame(BINARY, noise, b"P" * 258) == b"P" * 258


def test_server_context_takeover_shares_the_window_between_messages() -> None:
    takeover = negotiate(["permessage-deflate"], TAKEOVER)
    assert takeover is not None and not takeover.server_no_context_takeover
    ws = websocket(takeover)
    body = TEXT_BODY[:4000]
    first = ws.compressed_frame(TEXT, body, b"")
    second = ws.compressed_frame(TEXT, body, b"")
    assert len(second) < len(first) // 5  # the second is mostly references to the first
    decompressor = zlib.decompressobj(-15)
    for frame in (first, second):
        assert decompressor.decompress(payload_of(frame) + TAIL) == body


@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=4000), max_size=5),
       st.booleans())
def test_any_message_in_any_fragments_inflates_to_itself(data: bytes, cuts: list[int], text: bool) -> None:
    payload = data.decode("latin-1").encode() if text else data  # valid UTF-8 for text
    compressed = compress(payload)
    points = sorted({min(cut, len(compressed)) for cut in cuts})
    pieces = [compressed[a:b] for a, b in zip([0, *points], [*points, len(compressed)], strict=True)]
    ws = websocket()
    for index, piece in enumerate(pieces):
        first, last = index == 0, index == len(pieces) - 1
        result = receive(ws, (TEXT if text else BINARY) if first else CONT, piece, fin=last, rsv1=first)
        assert result is None if not last else result == (payload.decode() if text else payload)
