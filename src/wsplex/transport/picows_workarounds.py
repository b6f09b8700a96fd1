"""What picows does that a production server must not, and what we do instead.

Each workaround was checked against the picows versions in :data:`TESTED`;
:func:`check_picows_version` refuses to start on any other, since each of them
leans on picows internals (its log messages, its write path, a private callback).

* **Parse-ahead.** picows parses one frame ahead. When the *next* frame breaks
  a wire rule it sends its own close frame before delivering the *current*
  one, so the peer would see the close before the reply to a valid message,
  and two close frames in one packet (Autobahn 7.1.2) would be answered 1002
  instead of 1000. So after the upgrade picows writes nothing at all: the
  connection writes every frame itself, straight to the socket's transport,
  and :class:`GuardedTransport` (the transport picows is given) drops what
  picows writes. picows logs its parser error just before it sends that
  close; :func:`parser_error` reads the code from the log call and the
  connection fails with it once the current frame is handled.
* **Close code 0.** ``send_close()`` without a code sends code 0, an invalid
  code (RFC 6455 §7.4.2): close frames are built by :mod:`wsplex.ws`.
* **Silent refusals.** picows caps request headers at 16 KiB and closes an
  oversize request, or one whose handshake timed out, without a word. Before
  the upgrade those are the only ways it closes without writing a response,
  so the guard writes one first: 431 for the headers, 408 for the timeout.
* **Connection: keep-alive, Upgrade.** RFC 6455 §4.2.1 asks for a Connection
  header that *includes* the token "Upgrade" (Firefox sends
  ``keep-alive, Upgrade``); picows accepts only the exact value, so
  :func:`normalise_connection_header` rewrites it before picows checks.
* **HEAD and HTTP/1.0.** picows refuses both with 400, yet health checks
  send them: :mod:`wsplex.transport.plain_http` reads the request line
  before picows and answers those from the routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from http import HTTPStatus
from importlib.metadata import version
from typing import Any, Final

log = logging.getLogger("wsplex.transport")

#: picows versions these workarounds were checked against: from, up to (excluded).
#: pyproject.toml pins the same range.
TESTED: Final = ((2, 3, 1), (2, 4))
#: picows' own, fixed cap on the request line and headers.
PICOWS_MAX_HEADER_SIZE: Final = 16 * 1024
#: The message picows logs (``logger.error``) right before its own close frame.
_PARSER_ERROR: Final = "WS parser error"
#: The message picows logs (``logger.exception``) for an unexpected parser failure.
_PARSER_FAILURE: Final = "WS parser failure"
#: The message picows logs (``logger.info``) before dropping an oversize request.
_HEADER_OVERFLOW: Final = "Disconnect because HTTP request violated max_size"


class UntestedPicows(RuntimeError):
    """The installed picows is outside :data:`TESTED`."""


def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


def check_picows_version(installed: str | None = None) -> str:
    """The installed picows version, or :class:`UntestedPicows` naming it and the range."""
    text = installed if installed is not None else version("picows")
    low, high = TESTED
    if not low <= _parse_version(text) < high:
        wanted = f">={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
        raise UntestedPicows(
            f"picows {text} is installed, but wsplex's picows workarounds were checked only "
            f"against picows{wanted}: install picows{wanted}"
        )
    return text


def parser_error(msg: str, args: tuple[Any, ...]) -> tuple[int, str] | None:
    """The close code and reason of picows' "WS parser error" log call, else None."""
    if msg.startswith(_PARSER_ERROR) and args and isinstance(args[0], tuple) and len(args[0]) >= 2:
        return int(args[0][0]), str(args[0][1])
    return None


def is_parser_failure(msg: str) -> bool:
    """picows' parser raised something unexpected; it would close with 1002."""
    return msg.startswith(_PARSER_FAILURE)


def is_header_overflow(msg: str) -> bool:
    """picows is about to drop a request whose headers passed its 16 KiB cap."""
    return msg.startswith(_HEADER_OVERFLOW)


def raw_response(status: HTTPStatus, text: str) -> bytes:
    """A complete plain-text HTTP response, for the cases picows does not answer."""
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def normalise_connection_header(headers: MutableMapping[str, str]) -> None:
    """Let ``Connection: keep-alive, Upgrade`` through picows' exact-match check.

    Without the "Upgrade" token picows still refuses with 400 (RFC 6455 §4.2.1).
    """
    value = headers.get("Connection", "")
    if value.lower() != "upgrade" and "upgrade" in (t.strip().lower() for t in value.split(",")):
        headers["Connection"] = "upgrade"


class GuardedTransport:
    """The transport picows writes through; see the module docstring for why.

    Before the upgrade it passes picows' writes (the 101, picows' own 400s)
    through, and remembers whether anything was written: ``unanswered`` is
    what :meth:`close` writes if picows closes without a response. Once
    ``upgraded`` is set, picows' writes are dropped, and the buffer size it
    reads is never 0, which keeps it off its direct ``send()`` fast path.
    """

    __slots__ = ("real", "unanswered", "upgraded", "wrote")

    def __init__(self, real: asyncio.Transport, unanswered: bytes) -> None:
        self.real = real
        self.upgraded = False
        self.unanswered = unanswered
        self.wrote = False

    def get_write_buffer_size(self) -> int:
        if self.upgraded:
            return 1
        return self.real.get_write_buffer_size()

    def write(self, data: bytes) -> None:
        if not self.upgraded:
            self.wrote = True
            self.real.write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.real.get_extra_info(name, default)

    def close(self) -> None:
        if not self.wrote:
            self.wrote = True
            self.real.write(self.unanswered)
        self.real.close()

    def abort(self) -> None:
        self.real.abort()

    def is_closing(self) -> bool:
        return self.real.is_closing()
