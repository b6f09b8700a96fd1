"""STOMP frames without I/O: bytes in, frames out, and frames to bytes (STOMP 1.2 "STOMP Frames").

The grammar (STOMP 1.2 "Augmented BNF")::

    frame   = command EOL *( header EOL ) EOL *OCTET NULL *( EOL )
    EOL     = [CR] LF
    header  = header-name ":" header-value

* A frame may arrive in pieces and one piece may hold several frames: the
  parser keeps what it has not used (SPEC §12: a frame may span WebSocket
  messages, a message may hold several frames).
* EOLs between frames are heart-beats (STOMP 1.2 "Heart-beating"); the
  parser counts them and returns no frame for them.
* A ``content-length`` header gives the body's size in octets, so a body may
  hold NUL; the octet after it must be the frame's NUL. Without it the body
  ends at the first NUL (STOMP 1.2 "Body", "Header content-length").
* Header values are escaped per version (STOMP 1.2 "Value Encoding"): 1.2
  escapes ``\\r``, ``\\n``, ``:`` and ``\\`` as ``\\r``, ``\\n``, ``\\c``, ``\\\\``; 1.1 the
  same but ``\\r`` (a CR sent to a 1.1 client becomes a space); 1.0 nothing
  (CR and LF become spaces). CONNECT, STOMP and CONNECTED frames are never
  escaped, for 1.0 clients. An undefined escape is a fatal error.
* Repeated headers: the first one counts (STOMP 1.2 "Repeated Header Entries").
* Lines are split at the first ``:``, so a value may hold raw colons (what 1.0
  clients send); CR before LF is taken as part of the EOL in every version.

Every problem raises :class:`FrameError` with the text of the ERROR frame's
``message`` header; after one, the parser is not to be fed again (the
connection closes: STOMP 1.2 "ERROR").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

V10: Final = "1.0"
V11: Final = "1.1"
V12: Final = "1.2"
#: Oldest first: negotiation picks the last one both sides have (STOMP 1.2 "Protocol Negotiation").
VERSIONS: Final = (V10, V11, V12)

#: Frames whose headers are never escaped (STOMP 1.2 "Value Encoding").
UNESCAPED_COMMANDS: Final = frozenset({"CONNECT", "STOMP", "CONNECTED"})

#: Size limits a server may set (STOMP 1.2 "Size Limits"), besides the whole frame's.
MAX_HEADERS: Final = 1000

_HEAD_END = re.compile(rb"\n\r?\n")
_DIGITS = re.compile(r"[0-9]+")

_UNESCAPE_11 = {"n": "\n", "c": ":", "\\": "\\"}
_UNESCAPE_12 = {**_UNESCAPE_11, "r": "\r"}
_ESCAPE_11 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": " "})  # 1.1: no escape for CR
_ESCAPE_12 = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"})
_FLATTEN_10 = str.maketrans({"\r": " ", "\n": " "})  # 1.0 cannot carry them at all


class FrameError(Exception):
    """A frame this server refuses; ``str()`` is the ERROR frame's ``message``.

    ``frames`` are the good frames that came before it in the same :meth:`FrameParser.feed`.
    """

    frames: list[Frame]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.frames = []


@dataclass(frozen=True, slots=True)
class Frame:
    """One STOMP frame: a command, its headers in wire order (repeats kept), a body."""

    command: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    _first: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        first = self._first
        for name, value in self.headers:
            first.setdefault(name, value)

    def get(self, name: str) -> str | None:
        """The header's first value (STOMP 1.2 "Repeated Header Entries"), or None."""
        return self._first.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._first


def unescape(value: str, version: str) -> str:
    """A header value as the client meant it (STOMP 1.2 "Value Encoding")."""
    if version == V10 or "\\" not in value:
        return value
    table = _UNESCAPE_12 if version == V12 else _UNESCAPE_11
    out: list[str] = []
    pieces = iter(value.split("\\"))
    out.append(next(pieces))
    for piece in pieces:
        if not piece:
            # "\\\\" splits into an empty piece followed by the rest: the pair is one backslash.
            try:
                piece = next(pieces)
            except StopIteration:
                raise FrameError("header value ends with a lone backslash") from None
            out.append("\\" + piece)
            continue
        replacement = table.get(piece[0])
        if replacement is None:
            raise FrameError(f"undefined escape sequence \\{piece[0]} in a header (STOMP {version})")
        out.append(replacement + piece[1:])
    return "".join(out)


def escape(value: str, version: str) -> str:
    """``value`` as a header of a frame for a client of ``version``."""
    if "\\" not in value and ":" not in value and "\n" not in value and "\r" not in value:
        return value  # the common case, and four scans cost less than one translate()
    if version == V12:
        return value.translate(_ESCAPE_12)
    if version == V11:
        return value.translate(_ESCAPE_11)
    return value.translate(_FLATTEN_10)


def encode_headers(headers: Iterable[tuple[str, str]], version: str) -> bytes:
    """Header lines, each ending in LF, escaped for ``version``."""
    return "".join(f"{escape(name, version)}:{escape(value, version)}\n" for name, value in headers).encode()


def encode(command: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
           version: str = V12, *, raw_headers: bytes = b"") -> bytes:
    """A whole frame. ``content-length`` is added when there is a body, so a body
    may hold NUL; ``raw_headers`` are lines already encoded for ``version``."""
    if command in UNESCAPED_COMMANDS:
        lines = "".join(f"{name}:{value}\n" for name, value in headers).encode()
    else:
        lines = encode_headers(headers, version)
    length = f"content-length:{len(body)}\n".encode() if body else b""
    return b"".join((command.encode(), b"\n", lines, raw_headers, length, b"\n", body, b"\0"))


HEART_BEAT: Final = b"\n"


class FrameParser:
    """Frames from a stream of bytes fed in any pieces (see the module doc).

    ``version`` is the escaping in force: 1.0 until CONNECTED, then what was
    negotiated (set it between two :meth:`feed` calls, or from a frame's handler,
    since :meth:`feed` returns the frames of one piece together: CONNECT is the
    only frame of its piece that matters before the version changes, and it is
    never escaped).
    """

    __slots__ = ("_buffer", "_head", "_scanned", "heart_beats", "max_frame_size", "version")

    def __init__(self, max_frame_size: int, version: str = V10) -> None:
        self.max_frame_size = max_frame_size
        self.version = version
        self.heart_beats = 0
        self._buffer = bytearray()
        self._head: tuple[str, tuple[tuple[str, str], ...], int, int | None] | None = None
        self._scanned = 0  # how far the search for a head's end or a NUL has looked

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by ``data``, in order; raises :class:`FrameError`."""
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        start = 0
        try:
            while True:
                start = self._skip_heart_beats(start)
                frame, end = self._frame_at(start)
                if frame is None:
                    break
                frames.append(frame)
                start = end
        except FrameError as exc:
            exc.frames = frames  # what came before the bad frame is still owed its handling
            raise
        if start:
            del buffer[:start]
            self._scanned = max(0, self._scanned - start)
        if len(buffer) > self.max_frame_size:
            raise FrameError(f"frame larger than {self.max_frame_size} bytes")
        return frames

    def _skip_heart_beats(self, start: int) -> int:
        buffer = self._buffer
        if self._head is not None:
            return start
        while start < len(buffer):
            octet = buffer[start]
            if octet == 0x0A:
                start += 1
            elif octet == 0x0D and start + 1 < len(buffer) and buffer[start + 1] == 0x0A:
                start += 2
            else:
                break
            self.heart_beats += 1
        return start

    def _frame_at(self, start: int) -> tuple[Frame | None, int]:
        buffer = self._buffer
        if start >= len(buffer):
            return None, start
        if self._head is None and not self._read_head(start):
            return None, start
        assert self._head is not None
        command, headers, body_offset, length = self._head
        body_start = start + body_offset
        if length is not None:
            end = body_start + length
            if len(buffer) <= end:
                return None, start
            if buffer[end] != 0:
                raise FrameError("frame body is not followed by NUL after content-length octets")
        else:
            end = buffer.find(b"\0", max(body_start, self._scanned))
            if end < 0:
                self._scanned = len(buffer)
                return None, start
        if end + 1 - start > self.max_frame_size:
            raise FrameError(f"frame larger than {self.max_frame_size} bytes")
        body = bytes(buffer[body_start:end])
        self._head = None
        self._scanned = end + 1
        return Frame(command, headers, body), end + 1

    def _read_head(self, start: int) -> bool:
        """Parse the command and headers at ``start`` once they are all here."""
        buffer = self._buffer
        if buffer[start] == 0:
            raise FrameError("empty frame: NUL where a command was expected")
        found = _HEAD_END.search(buffer, max(start, self._scanned - 2))
        if found is None:
            self._scanned = len(buffer)
            return False
        lines = bytes(buffer[start:found.start()]).split(b"\n")
        command = _text(lines[0].removesuffix(b"\r"), "command")
        if not command or not command.isalpha():
            raise FrameError(f"invalid command {command[:40]!r}")
        if len(lines) - 1 > MAX_HEADERS:
            raise FrameError(f"more than {MAX_HEADERS} headers")
        version = V10 if command in UNESCAPED_COMMANDS else self.version
        headers = tuple(_header(line.removesuffix(b"\r"), version) for line in lines[1:])
        length = _content_length(headers, self.max_frame_size)
        self._head = (command, headers, found.end() - start, length)  # the body's offset in the frame
        self._scanned = found.end()
        return True


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise FrameError(f"{what} is not UTF-8") from None


def _header(line: bytes, version: str) -> tuple[str, str]:
    name, colon, value = line.partition(b":")
    if not colon:
        raise FrameError(f"header line without ':': {line[:40]!r}")
    if not name:
        raise FrameError("header with an empty name")
    return unescape(_text(name, "header name"), version), unescape(_text(value, "header value"), version)


def _content_length(headers: tuple[tuple[str, str], ...], limit: int) -> int | None:
    """The first ``content-length``: octets of body, or None to read up to a NUL."""
    for name, value in headers:
        if name == "content-length":
            if not _DIGITS.fullmatch(value):
                raise FrameError(f"invalid content-length {value[:20]!r}")
            length = int(value)
            if length > limit:
                raise FrameError(f"frame larger than {limit} bytes (content-length {length})")
            return length
    return None
