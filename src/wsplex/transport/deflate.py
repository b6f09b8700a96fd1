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
from wsplex.ws.deflate import DeflateWebSocket
from wsplex.ws.frames import Opcode

_TEXT_OPCODE = int(Opcode.TEXT)
_BINARY_OPCODE = int(Opcode.BINARY)


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
        self.ws = DeflateWebSocket(shared.settings.max_message_size, accept.deflate)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.rsv1:
            self.stats.compressed_messages_in += 1
        super().on_ws_frame(transport, frame)

    def send_message(self, message: Outgoing) -> None:
        """Queue ``message``, compressed when worth it (SPEC §14: not below the threshold)."""
        plain = message.frame
        payload = message.payload
        ws = self.ws
        deflate = ws.deflate
        if len(payload) < deflate.threshold:
            self.write_frame(plain)
            return
        opcode = _TEXT_OPCODE if message.is_text else _BINARY_OPCODE
        if deflate.server_no_context_takeover:
            cache = message.compressed
            if cache is None:
                cache = message.compressed = {}
            frame = cache.get(deflate)
            if frame is None:
                frame = cache[deflate] = deflate.frame(opcode, payload, plain)
                self.stats.compressions += 1
        else:
            frame = ws.compressed_frame(opcode, payload, plain)
            self.stats.compressions += 1
        if frame is not plain:
            stats = self.stats
            stats.compressed_messages_out += 1
            stats.compression_saved_bytes += len(plain) - len(frame)
        self.write_frame(frame)
