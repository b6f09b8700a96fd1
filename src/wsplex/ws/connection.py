"""The server side of one RFC 6455 connection, as a state machine without I/O.

Everything that moves the connection from one :class:`State` to the next is in
this file, in this table (the habit of h11's ``_state.py``). "Sends" is the
frame the caller must write; "then" is what it does with TCP afterwards.

===========  ===============================  =====================================  ==========  ===========
state        event                            result (returned to the caller)        sends       next state
===========  ===============================  =====================================  ==========  ===========
OPEN         data frame that ends a message   the message (``str`` text, ``bytes``)  -           OPEN
OPEN         data frame inside a message      ``None``                               -           OPEN
OPEN         ping (§5.5.2)                    :class:`Reply`                         pong        OPEN
OPEN         pong (§5.5.3)                    :data:`PONG`                           -           OPEN
OPEN         close, valid (§5.5.1)            :class:`Close` then DISCONNECT         close [1]   CLOSED
OPEN         wire error (§7.1.7)              :class:`Failure` [2]                   -           FAILING
OPEN         local ``close(code, reason)``    :class:`Close` then WAIT               close       CLOSING
OPEN         local ``fail(code, reason)``     :class:`Close` then HALF_CLOSE         close       CLOSING
FAILING      anything                         ``None`` (discarded)                   -           FAILING
FAILING      local ``fail`` [3] or ``close``  :class:`Close` as from OPEN            close       CLOSING
CLOSING      data, ping, pong (§5.5.1)        ``None`` (discarded)                   -           CLOSING
CLOSING      close, any payload (§7.1.2)      :class:`Close` then DISCONNECT         -           CLOSED
CLOSING      local close or fail              ``None``                               -           CLOSING
CLOSED       anything (a second close, 7.1.2) ``None``                               -           CLOSED
any          TCP gone: ``connection_lost()``  -                                      -           CLOSED
===========  ===============================  =====================================  ==========  ===========

[1] Echoing the peer's code, or 1000 when its close had none (§5.5.1, §7.4.1).
    A server drops TCP first once the handshake is complete (§7.1.1).
[2] 1002 for framing errors, 1007 for invalid UTF-8 (§8.1), 1009 for a message
    over the size limit (§7.4.1).
[3] The caller fails with the :class:`Failure`'s code once the replies to the
    peer's earlier, valid messages are queued: a protocol hook may still be
    awaiting something when the bad frame arrives, and its reply must not be
    lost behind our close frame. Until then the peer's input is discarded.

Nothing is sent after our close frame (§5.5.1: it is the last frame an endpoint
sends); the caller asks :attr:`WebSocket.can_send` before queueing data.

Reserved bits (§5.2) are an extension's to define; here any RSV bit fails the
connection with 1002. :attr:`WebSocket.rsv1_allowed` lets one through untouched.
permessage-deflate (RFC 7692 §6) is :class:`wsplex.ws.deflate.DeflateWebSocket`,
which inflates RSV1 messages before they reach the table above.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from wsplex.ws.assembler import UNBOUNDED, MessageAssembler, PartialBytes
from wsplex.ws.close import CloseCode
from wsplex.ws.frames import (
    Limit,
    Opcode,
    ProtocolViolation,
    check_rsv,
    close_frame,
    encode_frame,
    parse_close,
)


class State(Enum):
    """Where the closing handshake stands (RFC 6455 §7.1)."""

    OPEN = "open"
    FAILING = "failing"  # the peer broke a rule; our close follows the replies already due (§7.1.7)
    CLOSING = "closing"  # we sent a close frame and wait for the peer's (§7.1.2)
    CLOSED = "closed"  # both close frames are exchanged: TCP goes (§7.1.1)


class After(Enum):
    """What the caller does with TCP once a :class:`Close` frame is written."""

    DISCONNECT = "disconnect"  # drop TCP now: the server closes first (§7.1.1)
    HALF_CLOSE = "half-close"  # failing (§7.1.7): FIN now, discard input until the peer hangs up
    WAIT = "wait"  # wait for the peer's close frame, up to a timeout (§7.1.1)


@dataclass(frozen=True, slots=True)
class Reply:
    """A control frame to write at once: the pong that answers a ping (§5.5.3)."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The connection is closing: write ``frame`` (if any), then do ``then``.

    ``code`` and ``reason`` are what the connection closed with: the peer's for
    a close it started, ours otherwise.
    """

    frame: bytes | None
    code: int
    reason: str
    then: After


@dataclass(frozen=True, slots=True)
class Failure:
    """The peer broke a wire rule: fail the connection with ``code`` (§7.1.7), see [3] above.

    ``limit``: the server limit it went past, when it is one (SPEC §8), for the log and metrics.
    """

    code: int
    reason: str
    limit: Limit | None = None


@dataclass(frozen=True, slots=True)
class PongReceived:
    """A pong arrived: the peer is alive (the keepalive of SPEC §1)."""


#: The one :class:`PongReceived`: pongs carry nothing the server keeps.
PONG: Final = PongReceived()

Received = str | bytes | Reply | Close | Failure | PongReceived | None

_OPEN: Final = State.OPEN
_FAILING: Final = State.FAILING
_CLOSING: Final = State.CLOSING
_CLOSED: Final = State.CLOSED
# Plain ints: compared once per frame, cheaper than IntEnum members.
_LAST_DATA_OPCODE: Final = int(Opcode.BINARY)
_CLOSE_OPCODE: Final = int(Opcode.CLOSE)
_PING_OPCODE: Final = int(Opcode.PING)
_PONG_OPCODE: Final = int(Opcode.PONG)


class WebSocket(MessageAssembler):
    """One server-side connection: frames in, decisions and frames out (see the table above).

    The caller reads frames from the wire (the WebSocket library parses them:
    length, masking, control-frame size) and feeds each to :meth:`receive`; it
    writes what comes back. Messages and pings per second are the caller's
    business (SPEC §8), not RFC 6455's.

    It *is* its message assembler (RFC 6455 §5.4, :mod:`wsplex.ws.assembler`)
    rather than holding one: one object less per idle connection, one
    attribute less per message.
    """

    __slots__ = ("close_code", "close_reason", "rsv1_allowed", "state")

    def __init__(self, max_message_size: int, max_fragments: int = UNBOUNDED,
                 partial: PartialBytes | None = None) -> None:
        super().__init__(max_message_size, max_fragments, partial)
        self.state = _OPEN
        #: Set by a negotiated extension that defines RSV1 (RFC 7692 §6).
        self.rsv1_allowed = False
        #: What the connection closed with (RFC 6455 §7.1.5); 1006 until a close happens.
        self.close_code: int = CloseCode.ABNORMAL
        self.close_reason = ""

    def receive(self, opcode: int, fin: bool, payload: bytes, rsv1: bool, rsv2: bool, rsv3: bool) -> Received:
        """Handle one frame from the peer; the rows of the table above."""
        try:
            if rsv1 or rsv2 or rsv3:
                check_rsv(rsv1, rsv2, rsv3, rsv1_allowed=self.rsv1_allowed)
            if opcode <= _LAST_DATA_OPCODE:  # the hot path: TEXT, BINARY, CONTINUATION
                if self.state is not _OPEN:
                    return None  # §5.5.1: data after a close frame is discarded
                return self.feed(opcode, fin, payload)
            if opcode == _PING_OPCODE:
                return Reply(encode_frame(Opcode.PONG, payload)) if self.state is _OPEN else None
            if opcode == _PONG_OPCODE:
                return PONG if self.state is _OPEN else None
            if opcode == _CLOSE_OPCODE:
                return self._receive_close(payload)
            # The library refuses reserved opcodes itself; this is the rule should it not.
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        except ProtocolViolation as violation:
            return self.violated(violation.code, violation.reason, violation.limit)

    def _receive_close(self, payload: bytes) -> Close | None:
        state = self.state
        if state is _CLOSED or state is _FAILING:
            return None  # a second close frame (Autobahn 7.1.2), or input after a wire error
        self.state = _CLOSED
        if state is _CLOSING:  # the peer answered our close: §7.1.1, drop TCP
            return Close(None, self.close_code, self.close_reason, After.DISCONNECT)
        try:
            request = parse_close(payload)
        except ProtocolViolation:
            self.state = state
            raise
        reply = CloseCode.NORMAL if request.code == CloseCode.NO_STATUS else request.code
        self.close_code, self.close_reason = request.code, request.reason
        return Close(close_frame(reply, ""), request.code, request.reason, After.DISCONNECT)

    @property
    def can_send(self) -> bool:
        """Frames may still be queued: no close frame of ours has gone out."""
        return self.state is _OPEN or self.state is _FAILING

    def violated(self, code: int, reason: str, limit: Limit | None = None) -> Failure | None:
        """The peer broke a wire rule, found here or by the frame parser: OPEN -> FAILING.

        Its unfinished message, if any, is dropped: nothing more of it is read.
        """
        if self.state is not _OPEN:
            return None
        self.state = _FAILING
        self.drop_message()
        self.close_code, self.close_reason = code, reason
        return Failure(code, reason, limit)

    def close(self, code: int, reason: str) -> Close | None:
        """Start the closing handshake (§7.1.2); ``None`` when it has started already."""
        return self._start_closing(code, reason, After.WAIT)

    def fail(self, code: int, reason: str) -> Close | None:
        """Fail the connection (§7.1.7): our close frame, then FIN; ``None`` if already closing."""
        return self._start_closing(code, reason, After.HALF_CLOSE)

    def _start_closing(self, code: int, reason: str, then: After) -> Close | None:
        if self.state is not _OPEN and self.state is not _FAILING:
            return None
        self.state = _CLOSING
        self.close_code, self.close_reason = code, reason
        return Close(close_frame(code, reason), code, reason, then)

    def connection_lost(self) -> None:
        """TCP is gone, whatever the handshake had reached (§7.1.4: "The WebSocket Connection is Closed")."""
        self.state = _CLOSED
        self.drop_message()  # its bytes go back to the node's budget
