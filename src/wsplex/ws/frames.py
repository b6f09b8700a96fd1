"""RFC 6455 frames: opcodes, the server's frame encoder, close frames, reserved bits.

Servers never mask (RFC 6455 §5.1), so a server frame is a two-to-ten byte
header and the payload. Everything here is pure: bytes in, bytes or a
:class:`ProtocolViolation` out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

from wsplex.ws.close import CloseCode, is_valid_close_code, truncate_reason


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class Limit(StrEnum):
    """A server limit (SPEC §8) a peer went past, rather than an RFC rule it broke.

    The value is the ``limit`` label of ``wsplex_limit_closes_total`` in ``/metrics``.
    """

    RATE = "rate"  # frames per second, --max-messages-per-second
    FRAGMENTS = "fragments"  # frames in one message, --max-fragments
    FRAGMENT_TIMEOUT = "fragment_timeout"  # a message left unfinished, --fragment-timeout
    PARTIAL_BYTES = "partial_bytes"  # bytes of all unfinished messages, --max-partial-bytes
    SEND_BUFFERS_TOTAL = "send_buffers_total"  # bytes waiting for all clients, --max-send-buffers-total


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Exception):
    """The peer broke a wire rule, or went past a server :class:`Limit`; the connection
    closes with ``code`` and ``reason``."""

    code: CloseCode
    reason: str
    limit: Limit | None = None

    def __str__(self) -> str:
        return f"{int(self.code)} {self.reason}"


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """A valid close frame from the peer: its code (1005 when absent) and reason."""

    code: int
    reason: str


def check_rsv(rsv1: bool, rsv2: bool, rsv3: bool, *, rsv1_allowed: bool = False) -> None:
    """RFC 6455 §5.2: an RSV bit must be 0 unless a negotiated extension defines it.

    ``rsv1_allowed``: an extension owns RSV1 (permessage-deflate, RFC 7692 §6).
    """
    if (rsv1 and not rsv1_allowed) or rsv2 or rsv3:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")


def parse_close(payload: bytes) -> CloseRequest:
    """Validate a close frame's payload (RFC 6455 §5.5.1, §7.4)."""
    if not payload:
        return CloseRequest(CloseCode.NO_STATUS, "")
    if len(payload) == 1:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "close frame with a one-byte payload")
    (code,) = struct.unpack_from("!H", payload)
    if not is_valid_close_code(code):
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(CloseCode.INVALID_DATA, "invalid UTF-8 in close reason") from None
    return CloseRequest(code, reason)


_FIN: Final = 0x80


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, unfragmented server frame (RFC 6455 §5.2; servers never mask, §5.1).

    Fan-out encodes a message once with this and writes the same bytes to every
    receiver, instead of asking the WebSocket library to frame it per receiver.
    """
    size = len(payload)
    if size < 126:
        return bytes((_FIN | opcode, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN | opcode, 126, size) + payload
    return struct.pack("!BBQ", _FIN | opcode, 127, size) + payload


def close_frame(code: int, reason: str) -> bytes:
    """A close frame with a code and a reason cut to fit (RFC 6455 §5.5.1)."""
    return encode_frame(Opcode.CLOSE, struct.pack("!H", code) + truncate_reason(reason).encode())
