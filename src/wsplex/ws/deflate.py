"""permessage-deflate (RFC 7692) without I/O: the offer, the answer, and the codec.

Negotiation (§5, §7.1): :func:`parse_offers` reads every offer of every
``Sec-WebSocket-Extensions`` header (RFC 6455 §9.1: tokens, quoted strings);
:func:`negotiate` accepts the first ``permessage-deflate`` offer the server
can honour and returns the :class:`Deflate` in force, whose
:attr:`~Deflate.response` is the answer, with exactly those parameters. An
offer with a bad, repeated or unknown parameter is declined by skipping it
(§5: "the server ... MUST decline"), never by failing the handshake; a header
that does not parse at all declines only the offers it garbles.

Memory first (SPEC §14): by default the answer has both
``server_no_context_takeover`` and ``client_no_context_takeover`` (§7.1.1.1
lets the server ask for the second even when the client did not offer it), so
no zlib object outlives a message. A message is then compressed with a window
just big enough for it (any window up to the negotiated one is valid, §7.1.2.1),
which also makes the compressor cheap to set up: a 15-bit window with memory
level 8 costs ~70 µs of allocation per message, a 9-bit one a few µs. Without
context takeover every receiver that negotiated the same :class:`Deflate`
would get the same bytes, which is why :class:`Deflate` objects are interned:
the fan-out compresses once per :class:`Deflate`, keyed by the object.

Codec (§6, §7.2): the payload is the DEFLATE data of the message with the
trailing ``00 00 ff ff`` of a sync flush removed; the receiver puts it back.
RSV1 marks the first frame of a compressed message and no other
(:class:`Inflater` via :class:`~wsplex.ws.connection.WebSocket`). Inflating is
bounded by the message size limit (``max_length``), whatever the compressed
size: a decompression bomb costs at most the limit.

zlib quirk: since zlib 1.2.9 a raw deflate stream cannot be written with an
8-bit window (``deflateInit2`` refuses it). For ``server_max_window_bits=8``
the compressor runs with 9 bits and the run-length strategy, whose matches are
all one byte back: valid for any window.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Final

from wsplex.ws.assembler import UNBOUNDED, PartialBytes
from wsplex.ws.close import CloseCode
from wsplex.ws.connection import Received, State, WebSocket
from wsplex.ws.frames import Opcode, ProtocolViolation

#: The extension's registered name (RFC 7692 §7).
EXTENSION: Final = "permessage-deflate"
#: The tail of a sync flush: removed by the sender, restored by the receiver (§7.2.1, §7.2.2).
TAIL: Final = b"\x00\x00\xff\xff"
MIN_WINDOW_BITS: Final = 8
MAX_WINDOW_BITS: Final = 15
_OPEN: Final = State.OPEN
#: The smallest window zlib writes a raw stream with (see the module docstring).
_ZLIB_MIN_WINDOW_BITS: Final = 9

SERVER_NO_CONTEXT_TAKEOVER: Final = "server_no_context_takeover"
CLIENT_NO_CONTEXT_TAKEOVER: Final = "client_no_context_takeover"
SERVER_MAX_WINDOW_BITS: Final = "server_max_window_bits"
CLIENT_MAX_WINDOW_BITS: Final = "client_max_window_bits"

# RFC 7230 §3.2.6 (RFC 6455 §9.1 uses its token and quoted-string).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PARAM = re.compile(r'([^=\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^"\s]+))?')
_ESCAPE = re.compile(r"\\(.)")
#: §7.1.2.1: a decimal integer 8 to 15 without leading zeros.
_WINDOW_BITS = re.compile(r"[89]|1[0-5]")

Params = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class Offer:
    """One extension offer: its name and its parameters, in order, values unquoted."""

    name: str
    params: Params


def parse_offers(headers: list[str]) -> list[Offer]:
    """Every well-formed offer of every ``Sec-WebSocket-Extensions`` header, in order.

    An offer that does not parse is left out (so it is declined); the others stand.
    Empty list elements are allowed (RFC 7230 §7).
    """
    offers: list[Offer] = []
    for header in headers:
        for text in split_outside_quotes(header, ","):
            if text.strip():
                offer = _parse_offer(text)
                if offer is not None:
                    offers.append(offer)
    return offers


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """``text`` cut at each ``separator`` that is not inside a quoted string."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == separator:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _parse_offer(text: str) -> Offer | None:
    """``name *( ";" param )``, param ``token [ "=" (token | quoted-string) ]`` (RFC 6455 §9.1)."""
    name, *parts = (part.strip() for part in split_outside_quotes(text, ";"))
    if not _TOKEN.fullmatch(name):
        return None
    params: list[tuple[str, str | None]] = []
    for part in parts:
        match = _PARAM.fullmatch(part)
        if match is None or not _TOKEN.fullmatch(match.group(1)):
            return None
        key, value = match.groups()
        if value is not None:
            if value.startswith('"'):
                value = _ESCAPE.sub(r"\1", value[1:-1])
            if not _TOKEN.fullmatch(value):  # §9.1: a quoted value must still be a token
                return None
        params.append((key, value))
    return Offer(name, tuple(params))


# -- Choosing ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeflateSettings:
    """What the operator allows (the ``--compression-*`` flags, SPEC §14)."""

    #: Keep zlib state between messages: better ratios, memory per connection.
    context_takeover: bool = False
    server_max_window_bits: int = MAX_WINDOW_BITS
    client_max_window_bits: int = MAX_WINDOW_BITS
    memory_level: int = 8
    level: int = 6
    #: Messages shorter than this (payload bytes) go out uncompressed.
    threshold: int = 128


@dataclass(frozen=True, slots=True, eq=False)
class Deflate:
    """The parameters in force on a connection (interned: compare with ``is``).

    Equality and hash are identity's: the fan-out looks one up per receiver, and a
    generated hash of ten fields would cost more than the rest of the delivery.
    """

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int
    client_max_window_bits: int
    #: Did the answer name ``server_max_window_bits`` / ``client_max_window_bits``.
    server_bits_named: bool
    client_bits_named: bool
    memory_level: int
    level: int
    threshold: int
    response: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "response", self._format())

    def _format(self) -> str:
        """The ``Sec-WebSocket-Extensions`` answer: exactly the parameters in force (§7.1)."""
        parts = [EXTENSION]
        if self.server_no_context_takeover:
            parts.append(SERVER_NO_CONTEXT_TAKEOVER)
        if self.client_no_context_takeover:
            parts.append(CLIENT_NO_CONTEXT_TAKEOVER)
        if self.server_bits_named:
            parts.append(f"{SERVER_MAX_WINDOW_BITS}={self.server_max_window_bits}")
        if self.client_bits_named:
            parts.append(f"{CLIENT_MAX_WINDOW_BITS}={self.client_max_window_bits}")
        return "; ".join(parts)

    def compress(self, payload: bytes) -> bytes:
        """One message's compressed payload, without context (§7.2.1); see the module docstring."""
        bits = min(self.server_max_window_bits, max(_ZLIB_MIN_WINDOW_BITS, len(payload).bit_length()))
        memory = min(self.memory_level, max(5, bits - 7))
        compressor = zlib.compressobj(self.level, zlib.DEFLATED, -max(bits, _ZLIB_MIN_WINDOW_BITS), memory,
                                      _strategy(self.server_max_window_bits))
        data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return data[:-4]  # a sync flush ends with TAIL (§7.2.1)

    def frame(self, opcode: int, payload: bytes, plain: bytes) -> bytes:
        """The frame to send without context: compressed, or ``plain`` when that is no bigger.

        Below the threshold it is not even tried (SPEC §14).
        """
        if len(payload) < self.threshold:
            return plain
        frame = encode_compressed_frame(opcode, self.compress(payload))
        return frame if len(frame) < len(plain) else plain


@functools.cache
def intern_deflate(
    server_no_context_takeover: bool, client_no_context_takeover: bool, server_max_window_bits: int,
    client_max_window_bits: int, server_bits_named: bool, client_bits_named: bool,
    memory_level: int, level: int, threshold: int,
) -> Deflate:
    """One :class:`Deflate` per parameter set, so the fan-out can key its cache by identity."""
    return Deflate(server_no_context_takeover, client_no_context_takeover, server_max_window_bits,
                   client_max_window_bits, server_bits_named, client_bits_named,
                   memory_level, level, threshold)


def _strategy(window_bits: int) -> int:
    """Run-length matches only for an 8-bit window (see the module docstring)."""
    return zlib.Z_RLE if window_bits < _ZLIB_MIN_WINDOW_BITS else zlib.Z_DEFAULT_STRATEGY


class Declined(Exception):
    """This offer cannot be accepted; the next one is tried (§5)."""


def negotiate(headers: list[str], settings: DeflateSettings) -> Deflate | None:
    """The first ``permessage-deflate`` offer the server honours, or None (no compression)."""
    for offer in parse_offers(headers):
        if offer.name.lower() != EXTENSION:
            continue
        try:
            return accept(offer.params, settings)
        except Declined:
            continue
    return None


def accept(params: Params, settings: DeflateSettings) -> Deflate:
    """The answer to one offer (RFC 7692 §7.1), or :class:`Declined`."""
    seen: dict[str, str | None] = {}
    for key, value in params:
        if key in seen:
            raise Declined(f"{key} twice")  # §7.1: each parameter at most once
        seen[key] = value
        if key in (SERVER_NO_CONTEXT_TAKEOVER, CLIENT_NO_CONTEXT_TAKEOVER):
            if value is not None:
                raise Declined(f"{key} takes no value")  # §7.1.1.1, §7.1.1.2
        elif key == SERVER_MAX_WINDOW_BITS:
            if value is None or not _WINDOW_BITS.fullmatch(value):
                raise Declined(f"bad {key}")  # §7.1.2.1: a value is required
        elif key == CLIENT_MAX_WINDOW_BITS:
            if value is not None and not _WINDOW_BITS.fullmatch(value):
                raise Declined(f"bad {key}")  # §7.1.2.2: the value is optional
        else:
            raise Declined(f"unknown parameter {key}")
    takeover = settings.context_takeover
    server_no_takeover = SERVER_NO_CONTEXT_TAKEOVER in seen or not takeover
    # §7.1.2.1: the client's bound, answered with it or smaller; without one, ours if smaller.
    offered_server_bits = seen.get(SERVER_MAX_WINDOW_BITS)
    server_bits = settings.server_max_window_bits
    if offered_server_bits is not None:
        server_bits = min(server_bits, int(offered_server_bits))
    server_named = offered_server_bits is not None or server_bits < MAX_WINDOW_BITS
    # §7.1.2.2: the client's window can be bounded only if the offer has client_max_window_bits.
    client_no_takeover = CLIENT_NO_CONTEXT_TAKEOVER in seen or not takeover
    client_bits, client_named = MAX_WINDOW_BITS, False
    if CLIENT_MAX_WINDOW_BITS in seen:
        offered_client = seen[CLIENT_MAX_WINDOW_BITS]
        client_bits = min(settings.client_max_window_bits,
                          int(offered_client) if offered_client is not None else MAX_WINDOW_BITS)
        client_named = offered_client is not None or client_bits < MAX_WINDOW_BITS
    elif not client_no_takeover and settings.client_max_window_bits < MAX_WINDOW_BITS:
        # The operator bounds the memory a client's context costs, and this client
        # cannot be told the bound: ask it to keep no context instead (§7.1.1.2).
        client_no_takeover = True
    if client_no_takeover and not client_named:
        client_bits = MAX_WINDOW_BITS  # a fresh inflater per message: any window is fine
    return intern_deflate(server_no_takeover, client_no_takeover, server_bits, client_bits,
                          server_named, client_named, settings.memory_level, settings.level,
                          settings.threshold)


# -- The codec -------------------------------------------------------------------------

_FIN_RSV1: Final = 0xC0


def encode_compressed_frame(opcode: int, data: bytes) -> bytes:
    """A server frame of a compressed message: FIN, RSV1 (§6), unmasked (RFC 6455 §5.1)."""
    size = len(data)
    if size < 126:
        return bytes((_FIN_RSV1 | opcode, size)) + data
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN_RSV1 | opcode, 126, size) + data
    return struct.pack("!BBQ", _FIN_RSV1 | opcode, 127, size) + data


class Compressor:
    """Server context takeover (§7.1.1.1 not in force): one zlib stream for the connection's life.

    Created at the first message, so a connection that never receives one costs nothing.
    """

    __slots__ = ("_zlib",)

    def __init__(self, deflate: Deflate) -> None:
        bits = deflate.server_max_window_bits
        self._zlib = zlib.compressobj(deflate.level, zlib.DEFLATED, -max(bits, _ZLIB_MIN_WINDOW_BITS),
                                      deflate.memory_level, _strategy(bits))

    def compress(self, payload: bytes) -> bytes:
        data = self._zlib.compress(payload) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        return data[:-4]


class Inflater:
    """The receiving side of one compressed message, or of all of them with client context takeover."""

    __slots__ = ("_bits", "_zlib")

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._zlib = zlib.decompressobj(-max(bits, _ZLIB_MIN_WINDOW_BITS))

    def inflate(self, data: bytes, final: bool, limit: int) -> bytes:
        """Inflate one frame's payload; at most ``limit`` bytes, past that 1009 (SPEC §14).

        ``final``: the message's last frame, after which the tail goes back (§7.2.2).
        """
        if final:
            data += TAIL
        try:
            out = self._zlib.decompress(data, limit + 1)
        except zlib.error:
            raise ProtocolViolation(CloseCode.INVALID_DATA, "invalid compressed data") from None
        if len(out) > limit:
            raise ProtocolViolation(CloseCode.MESSAGE_TOO_BIG, "message larger than the limit once inflated")
        return out


_LAST_DATA_OPCODE: Final = int(Opcode.BINARY)


class DeflateWebSocket(WebSocket):
    """A :class:`~wsplex.ws.connection.WebSocket` that negotiated permessage-deflate.

    Only data frames differ (RFC 7692 §6): RSV1 on a TEXT or BINARY frame opens a
    compressed message, whose frames are inflated before message assembly, so the
    size limit (1009) and the UTF-8 check (1007) apply to the inflated bytes. RSV1
    on a continuation or a control frame is a protocol error (1002, §6.1). Everything
    else is the plain state machine's.

    Without context takeover (the default) the inflater lives for one message and
    the compressor for one call: an idle connection holds no zlib object.
    """

    __slots__ = ("_compressed", "_compressor", "_inflater", "deflate")

    def __init__(self, max_message_size: int, deflate: Deflate, max_fragments: int = UNBOUNDED,
                 partial: PartialBytes | None = None) -> None:
        super().__init__(max_message_size, max_fragments, partial)
        self.deflate = deflate
        self._inflater: Inflater | None = None  # the open message's, or the connection's (client takeover)
        self._compressor: Compressor | None = None  # server context takeover only, from the first message
        self._compressed = False  # the open message is compressed

    def receive(self, opcode: int, fin: bool, payload: bytes, rsv1: bool, rsv2: bool, rsv3: bool) -> Received:
        if opcode > _LAST_DATA_OPCODE or rsv2 or rsv3 or self.state is not _OPEN:
            if rsv1 and opcode > _LAST_DATA_OPCODE:
                return self.violated(CloseCode.PROTOCOL_ERROR, "RSV1 set on a control frame (RFC 7692 §6)")
            return super().receive(opcode, fin, payload, False, rsv2, rsv3)
        try:
            if opcode:  # TEXT or BINARY: the first frame of a message
                if self.in_message:
                    return self.feed(opcode, fin, payload)  # raises: the last message is still open
                self._compressed = rsv1
            elif rsv1:
                raise ProtocolViolation(CloseCode.PROTOCOL_ERROR,
                                        "RSV1 set on a continuation frame (RFC 7692 §6.1)")
            if self._compressed:
                payload = self._inflate(payload, fin)
            return self.feed(opcode, fin, payload)
        except ProtocolViolation as violation:
            self._compressed = False
            self._inflater = None
            return self.violated(violation.code, violation.reason, violation.limit)

    def _inflate(self, payload: bytes, fin: bool) -> bytes:
        inflater = self._inflater
        if inflater is None:
            # A context kept between messages needs the negotiated window; one for a single
            # message may as well take the largest, whatever the client claimed it uses.
            deflate = self.deflate
            bits = MAX_WINDOW_BITS if deflate.client_no_context_takeover else deflate.client_max_window_bits
            inflater = self._inflater = Inflater(bits)
        limit = self._max_size - self._size if self.in_message else self._max_size
        data = inflater.inflate(payload, fin, limit)
        if fin:
            self._compressed = False
            if self.deflate.client_no_context_takeover:
                self._inflater = None
        return data

    def compressed_frame(self, opcode: int, payload: bytes, plain: bytes) -> bytes:
        """The frame for one message to this peer with server context takeover.

        The context follows every compressed message, so once compressed it must be
        sent compressed; below the threshold it is sent plain and leaves the context alone.
        """
        deflate = self.deflate
        if len(payload) < deflate.threshold:
            return plain
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = Compressor(deflate)
        return encode_compressed_frame(opcode, compressor.compress(payload))
