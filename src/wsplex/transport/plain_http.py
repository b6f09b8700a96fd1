"""Reading the request line before picows does, to answer HEAD and HTTP/1.0 ourselves.

picows refuses anything but ``GET ... HTTP/1.1`` with 400 (see
:mod:`wsplex.http.plain` for why health checks need more). Between accept and
the end of the request line the socket's protocol is a
:class:`RequestLineReader`: it reads into its own buffer, and once the line is
there either

* hands the connection to picows: the transport's protocol becomes picows'
  again (``set_protocol``) and the bytes read so far are fed to it as if they
  had just arrived, so from then on reads go straight to picows, at no cost
  per message; or
* for a line :func:`~wsplex.http.plain.answered_here` picks, reads the rest of
  the head (bounded by picows' own 16 KiB cap), writes the answer the
  listener gives for it, and closes.

picows has seen the connection from the start (``connection_made``), so its
handshake timeout (408) covers a slow request line too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, Protocol

from wsplex.http.plain import END_OF_HEAD, answered_here
from wsplex.transport.picows_workarounds import PICOWS_MAX_HEADER_SIZE

#: The first read's buffer; it doubles up to the header cap.
FIRST_READ: Final = 1024


class Reader(Protocol):
    """picows' buffered-protocol side, as :class:`RequestLineReader` feeds it."""

    def get_buffer(self, sizehint: int) -> memoryview: ...

    def buffer_updated(self, nbytes: int) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def eof_received(self) -> bool | None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class RequestLineReader(asyncio.BufferedProtocol):
    """The socket's protocol until the request line says who answers it."""

    __slots__ = ("answer", "answered", "buffer", "filled", "ours", "picows", "too_large", "transport")

    def __init__(self, picows: Reader, transport: asyncio.BaseTransport,
                 answer: Callable[[bytes], None], too_large: Callable[[], None]) -> None:
        self.picows = picows
        self.transport = transport
        #: Answers a head of ours (request line and headers) and closes the connection.
        self.answer = answer
        self.too_large = too_large
        self.buffer = bytearray(FIRST_READ)
        self.filled = 0
        self.ours = False
        self.answered = False  # what the client sends after its head is read and dropped

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buffer) - self.filled < FIRST_READ // 4:
            self.buffer.extend(bytes(len(self.buffer)))
        return memoryview(self.buffer)[self.filled:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.answered:
            return
        self.filled += nbytes
        data = self.buffer[:self.filled]
        if not self.ours:
            end = data.find(b"\r\n")
            if end < 0 and self.filled <= PICOWS_MAX_HEADER_SIZE:
                return
            if end < 0 or not answered_here(bytes(data[:end])):
                self._hand_over(bytes(data))
                return
            self.ours = True
        end = data.find(END_OF_HEAD)
        if 0 <= end <= PICOWS_MAX_HEADER_SIZE:
            self._answered()
            self.answer(bytes(data[:end]))
        elif self.filled > PICOWS_MAX_HEADER_SIZE + len(END_OF_HEAD):
            self._answered()
            self.too_large()

    def _answered(self) -> None:
        self.answered = True
        self.buffer = bytearray(FIRST_READ)  # a scratch buffer for reads before the close
        self.filled = 0

    def _hand_over(self, data: bytes) -> None:
        """picows reads from now on, starting with what came so far."""
        self.buffer = bytearray()
        self.transport.set_protocol(self.picows)  # type: ignore[arg-type]
        view = memoryview(data)
        while view and not self.transport.is_closing():
            room = self.picows.get_buffer(len(view))
            size = min(len(room), len(view))
            room[:size] = view[:size]
            self.picows.buffer_updated(size)
            view = view[size:]

    # -- the rest of the protocol is picows' -------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self.picows.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.picows.eof_received()

    def pause_writing(self) -> None:
        self.picows.pause_writing()

    def resume_writing(self) -> None:
        self.picows.resume_writing()
