"""Message assembly: RFC 6455 data frames in, whole messages out.

* §5.4: a message is a TEXT or BINARY frame followed by CONTINUATION frames up to
  one with FIN set; a CONTINUATION with no message open, or a new data frame
  while one is open, is a protocol error. Control frames may arrive in between.
* §8.1: a text message must be valid UTF-8, checked as fragments arrive so a bad
  sequence fails fast (close 1007).
* A message larger than the configured limit is refused (close 1009) as soon as
  the running total exceeds it, before it is buffered whole.

Server policy, not RFC 6455 (SPEC §8, issue 17): every frame of an open message
counts, empty ones too. A message of more than ``max_fragments`` frames is
refused (close 1008), and the bytes held by the open messages of all
connections of a node are one :class:`PartialBytes` budget: the frame that would
take it past its limit closes its connection with 1013. A message in progress
is held as one ``bytearray`` it is joined into as fragments arrive, so the
budget counts the memory it really takes (a list of two-byte ``bytes`` objects
would take some 37 times its payload).

The assembler is a small state machine: ``IDLE`` (no message open) and
``FRAGMENTED`` (a message is open and collecting continuation frames).
"""

from __future__ import annotations

import codecs
from typing import Final

from wsplex.ws.close import CloseCode
from wsplex.ws.frames import Limit, Opcode, ProtocolViolation

_utf8_decoder = codecs.getincrementaldecoder("utf-8")
# Plain ints: compared once per frame, cheaper than IntEnum members.
_CONTINUATION_OPCODE: Final = int(Opcode.CONTINUATION)
_TEXT_OPCODE: Final = int(Opcode.TEXT)
_BINARY_OPCODE: Final = int(Opcode.BINARY)


class PartialBytes:
    """The bytes held by every open (fragmented) message of one node, and their cap."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0


#: A budget that never refuses: for an assembler built without a node's budget (tests, tools).
UNBOUNDED: Final = 1 << 62


class MessageAssembler:
    """Turns data frames into whole messages under the rules at the top of the module.

    ``feed`` returns ``None`` while a fragmented message is still open, the message
    (``str`` for text, ``bytes`` for binary) when it completes, and raises
    :class:`ProtocolViolation` when the peer broke a rule.
    """

    __slots__ = ("_buffer", "_decoder", "_fragments", "_max_fragments", "_max_size", "_opcode",
                 "_partial", "_size", "messages_opened")

    def __init__(self, max_size: int, max_fragments: int = UNBOUNDED,
                 partial: PartialBytes | None = None) -> None:
        self._max_size = max_size
        self._max_fragments = max_fragments
        self._partial = partial if partial is not None else PartialBytes(UNBOUNDED)
        self._opcode: int = 0  # 0 = IDLE, else the opcode of the open message
        # The open message's bytes exist only while it is open: most messages are one frame.
        self._buffer: bytearray | None = None
        self._size = 0  # bytes in ``_buffer``, and so in ``_partial.held`` on its behalf
        self._fragments = 0  # frames of the open message so far
        self._decoder: codecs.IncrementalDecoder | None = None  # text: validates as it goes
        #: Fragmented messages opened so far: tells the keepalive sweep whether the
        #: message open now is the one it saw last time (the fragment timeout).
        self.messages_opened = 0

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
        self._opcode = opcode
        self._buffer = bytearray()
        self._fragments = 0
        self.messages_opened += 1
        if opcode == _TEXT_OPCODE:
            self._decoder = _utf8_decoder()
        self._add(payload, final=False)
        return None

    def _continue(self, fin: bool, payload: bytes) -> str | bytes | None:
        if self._size + len(payload) > self._max_size:
            self.drop_message()
            raise _too_big(self._max_size)
        self._add(payload, final=fin)
        if not fin:
            return None
        buffer = self._buffer
        assert buffer is not None
        message: str | bytes = buffer.decode() if self._decoder is not None else bytes(buffer)
        self.drop_message()
        return message

    def _add(self, payload: bytes, *, final: bool) -> None:
        """Count the frame, check the UTF-8 so far, and join the payload in."""
        self._fragments += 1
        if self._fragments > self._max_fragments:
            self.drop_message()
            raise ProtocolViolation(CloseCode.POLICY_VIOLATION,
                                    f"message in more than {self._max_fragments} frames", Limit.FRAGMENTS)
        if self._decoder is not None:
            try:
                self._decoder.decode(payload, final)
            except UnicodeDecodeError:
                self.drop_message()
                raise _bad_utf8() from None
        size = len(payload)
        if size:
            partial = self._partial
            if partial.held + size > partial.limit:
                self.drop_message()
                raise ProtocolViolation(CloseCode.TRY_AGAIN_LATER,
                                        f"server busy: unfinished messages hold {partial.limit} bytes",
                                        Limit.PARTIAL_BYTES)
            partial.held += size
            self._size += size
            assert self._buffer is not None
            self._buffer += payload

    def drop_message(self) -> None:
        """Forget the open message, if any, and give its bytes back to the node's budget."""
        self._partial.held -= self._size
        self._opcode = 0
        self._buffer = None
        self._size = 0
        self._fragments = 0
        self._decoder = None


def _bad_utf8() -> ProtocolViolation:
    return ProtocolViolation(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")


def _too_big(limit: int) -> ProtocolViolation:
    return ProtocolViolation(CloseCode.MESSAGE_TOO_BIG, f"message larger than {limit} bytes")


