"""A connection that negotiated permessage-deflate (RFC 7692; SPEC §14).

Connections without it never run a line of this: the listener builds a
:class:`DeflateConnection` only for an :class:`~wsplex.http.handshake.Accept`
that carries a :class:`~wsplex.ws.deflate.Deflate`, and its session is a
:class:`DeflateSession`, whose ``send`` hands the connection the message
rather than its plain frame. Receiving is :class:`~wsplex.ws.deflate.DeflateWebSocket`'s.

Without server context takeover (the default) every receiver that negotiated
the same parameters gets the same bytes, so the compressed frame is computed at
the first of them and kept on the :class:`~wsplex.app.outgoing.Outgoing`, keyed
by the interned :class:`~wsplex.ws.deflate.Deflate`: a fan-out compresses once.
With context takeover each connection has its own compressor.
"""

from __future__ import annotations

from typing import ClassVar

from picows import WSFrame, WSTransport

from wsplex.app.outgoing import Outgoing
from wsplex.app.protocol import Protocol as AppProtocol
from wsplex.app.session import Hook, Session
from wsplex.http.handshake import Accept
from wsplex.transport.connection import Connection, Shared
from wsplex.transport.picows_workarounds import GuardedTransport
from wsplex.ws.connection import State
from wsplex.ws.deflate import Deflate, DeflateWebSocket
from wsplex.ws.frames import Opcode

_TEXT_OPCODE = int(Opcode.TEXT)
_BINARY_OPCODE = int(Opcode.BINARY)
_OPEN = State.OPEN
_FAILING = State.FAILING


class DeflateSession(Session):
    """A session whose messages its connection may compress: same state, another ``send``."""

    __slots__ = ()

    def send(self, message: Outgoing) -> None:
        if not self.closed:
            self._link.send_message(message)  # type: ignore[attr-defined]


class DeflateConnection(Connection):
    """A :class:`~wsplex.transport.connection.Connection` speaking permessage-deflate."""

    __slots__ = ()
    session_type: ClassVar[type[Session]] = DeflateSession
    ws: DeflateWebSocket

    def __init__(
        self, shared: Shared, protocol: AppProtocol, on_message: Hook, accept: Accept, guard: GuardedTransport
    ) -> None:
        super().__init__(shared, protocol, on_message, accept, guard)
        assert accept.deflate is not None
        settings = shared.settings
        self.ws = DeflateWebSocket(settings.max_message_size, accept.deflate, settings.max_fragments,
                                   shared.partial)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.rsv1:
            self.stats.compressed_messages_in += 1
        super().on_ws_frame(transport, frame)

    def send_message(self, message: Outgoing) -> None:
        """Queue ``message``, compressed when worth it (SPEC §14: not below the threshold).

        The fan-out's inner loop for these receivers: ``write_frame`` is inlined.
        """
        ws = self.ws
        state = ws.state
        if state is not _OPEN and state is not _FAILING:
            return  # our close frame is out: nothing more is sent (RFC 6455 §5.5.1)
        frame = message.frame
        deflate = ws.deflate
        if message.size >= deflate.threshold:
            plain = frame
            cache = message.compressed  # never holds a Deflate with context takeover
            cached = cache.get(deflate) if cache is not None else None
            frame = cached if cached is not None else self._compress(message, deflate)
            if frame is not plain:
                stats = self.stats
                stats.compressed_messages_out += 1
                stats.compression_saved_bytes += len(plain) - len(frame)
        pending = self.pending
        if pending is None:
            self.pending = [frame]
            if not self.receiving:
                self.shared.flusher.mark(self)
        else:
            pending.append(frame)

    def _compress(self, message: Outgoing, deflate: Deflate) -> bytes:
        """The first receiver with these parameters compresses, for all of them (no context)."""
        self.stats.compressions += 1
        opcode = _TEXT_OPCODE if message.is_text else _BINARY_OPCODE
        if not deflate.server_no_context_takeover:
            return self.ws.compressed_frame(opcode, message.payload, message.frame)
        frame = deflate.frame(opcode, message.payload, message.frame)
        if message.compressed is None:
            message.compressed = {}
        message.compressed[deflate] = frame
        return frame
