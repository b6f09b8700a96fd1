"""Message assembly: RFC 6455 data frames in, whole messages out.

* §5.4: a message is a TEXT or BINARY frame followed by CONTINUATION frames up to
  one with FIN set; a CONTINUATION with no message open, or a new data frame
  while one is open, is a protocol error. Control frames may arrive in between.
* §8.1: a text message must be valid UTF-8, checked as fragments arrive so a bad
  sequence fails fast (close 1007).
* A message larger than the configured limit is refused (close 1009) as soon as
  the running total exceeds it, before it is buffered whole.

The assembler is a small state machine: ``IDLE`` (no message open) and
``FRAGMENTED`` (a message is open and collecting continuation frames).
"""

from __future__ import annotations

import codecs
from typing import Final

from wsplex.ws.close import CloseCode
from wsplex.ws.frames import Opcode, ProtocolViolation

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


