"""The message layer: RFC 6455 frames in, whole messages or a close decision out.

The WebSocket library hands us single frames. This module owns every rule that
turns them into messages, so the rules live in one place and can be tested byte
for byte without a socket:

* RFC 6455 §5.2: no extension is negotiated, so any RSV bit is a protocol error.
* §5.4: a message is a TEXT or BINARY frame followed by CONTINUATION frames up to
  one with FIN set; a CONTINUATION with no message open, or a new data frame
  while one is open, is a protocol error. Control frames may arrive in between.
* §8.1: a text message must be valid UTF-8, checked as fragments arrive so a bad
  sequence fails fast (close 1007).
* A message larger than the configured limit is refused (close 1009) as soon as
  the running total exceeds it, before it is buffered whole.
* §5.5.1 / §7.4: a close frame carries nothing, or a valid code and a UTF-8
  reason of at most 123 bytes.

The assembler is a small state machine: ``IDLE`` (no message open) and
``FRAGMENTED`` (a message is open and collecting continuation frames).
"""

from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from wsplex.close import CloseCode, is_valid_close_code


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Exception):
    """The peer broke a wire rule; the connection closes with ``code`` and ``reason``."""

    code: CloseCode
    reason: str

    def __str__(self) -> str:
        return f"{int(self.code)} {self.reason}"


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """A valid close frame from the peer: its code (1005 when absent) and reason."""

    code: int
    reason: str


_utf8_decoder = codecs.getincrementaldecoder("utf-8")
# Plain ints: compared once per frame, cheaper than IntEnum members.
_CONTINUATION_OPCODE: Final = int(Opcode.CONTINUATION)
_TEXT_OPCODE: Final = int(Opcode.TEXT)
_BINARY_OPCODE: Final = int(Opcode.BINARY)


class MessageAssembler:
    """Turns data frames into whole messages under the rules at the top of the module.

    ``feed`` returns ``None`` while a fragmented message is still open, the message
    (``str`` for text, ``bytes`` for binary) when it completes, and raises
    :class:`ProtocolViolation` when the peer broke a rule.
    """

    __slots__ = ("_chunks", "_decoder", "_max_size", "_opcode", "_size", "_text")

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._opcode: int = 0  # 0 = IDLE, else the opcode of the open message
        # Message parts exist only while a message is open: most messages are one
        # frame, and an idle connection should not carry two empty lists.
        self._chunks: list[bytes] | None = None  # binary message parts
        self._text: list[str] | None = None  # text message parts, already decoded
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def in_message(self) -> bool:
        """True while a fragmented message is open (state ``FRAGMENTED``)."""
        return self._opcode != 0

    def feed(self, opcode: int, fin: bool, payload: bytes) -> str | bytes | None:
        """Add one TEXT, BINARY or CONTINUATION frame's payload."""
        if opcode == _CONTINUATION_OPCODE:
            if not self._opcode:
                raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "continuation frame outside a message")
            return self._continue(fin, payload)
        if self._opcode:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "new message before the last one ended")
        if len(payload) > self._max_size:
            raise _too_big(self._max_size)
        if fin:  # the common case, a whole message in one frame
            if opcode != _TEXT_OPCODE:
                return payload
            try:
                return payload.decode()
            except UnicodeDecodeError:
                raise _bad_utf8() from None
        self._open(opcode, payload)
        return None

    def _open(self, opcode: int, payload: bytes) -> None:
        self._opcode = opcode
        self._size = len(payload)
        if opcode == _TEXT_OPCODE:
            self._decoder = _utf8_decoder()
            self._text = []
            self._add_text(payload, final=False)
        else:
            self._chunks = [payload]

    def _continue(self, fin: bool, payload: bytes) -> str | bytes | None:
        self._size += len(payload)
        if self._size > self._max_size:
            raise _too_big(self._max_size)
        if self._decoder is not None:
            self._add_text(payload, final=fin)
        else:
            assert self._chunks is not None
            self._chunks.append(payload)
        if not fin:
            return None
        if self._text is not None:
            message: str | bytes = "".join(self._text)
        else:
            assert self._chunks is not None
            message = b"".join(self._chunks)
        self._reset()
        return message

    def _add_text(self, payload: bytes, *, final: bool) -> None:
        assert self._decoder is not None and self._text is not None
        try:
            self._text.append(self._decoder.decode(payload, final))
        except UnicodeDecodeError:
            self._reset()
            raise _bad_utf8() from None

    def _reset(self) -> None:
        self._opcode = 0
        self._chunks = None
        self._text = None
        self._size = 0
        self._decoder = None


def _bad_utf8() -> ProtocolViolation:
    return ProtocolViolation(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")


def _too_big(limit: int) -> ProtocolViolation:
    return ProtocolViolation(CloseCode.MESSAGE_TOO_BIG, f"message larger than {limit} bytes")


def check_rsv(rsv1: bool, rsv2: bool, rsv3: bool) -> None:
    """RFC 6455 §5.2: without a negotiated extension every RSV bit must be 0."""
    if rsv1 or rsv2 or rsv3:
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


class Outgoing:
    """A message on its way out: its type, its payload, and its frame, encoded once.

    The hub hands the same ``Outgoing`` to every receiver, so a message sent to
    a room of 500 is framed once, not 500 times. The frame is built up front: a
    plain attribute is the cheapest thing to read 500 times.
    """

    __slots__ = ("frame", "is_text", "payload")

    def __init__(self, payload: bytes, *, is_text: bool) -> None:
        self.payload = payload
        self.is_text = is_text
        #: The complete server frame (RFC 6455 §5.2).
        self.frame = encode_frame(_TEXT_OPCODE if is_text else _BINARY_OPCODE, payload)

    @classmethod
    def text(cls, text: str) -> Outgoing:
        return cls(text.encode(), is_text=True)

    @classmethod
    def binary(cls, data: bytes) -> Outgoing:
        return cls(data, is_text=False)

    def __repr__(self) -> str:
        kind = "text" if self.is_text else "binary"
        return f"<Outgoing {kind} {len(self.payload)} bytes>"
