"""One client connection: picows' frames into :mod:`wsplex.ws`, its decisions onto the socket.

:class:`Connection` is a picows ``WSListener`` and the session's
:class:`~wsplex.app.session.Link`. It owns no WebSocket rules: each frame goes
to :class:`wsplex.ws.connection.WebSocket`, and the connection does what comes
back (deliver a message, queue a pong, write a close and drop TCP). The close
handshake's state is that machine's :class:`~wsplex.ws.connection.State`, and
nothing else.

One write path: every frame, data, pong, ping or close, is appended to the
connection's queue and written by :meth:`Connection.flush`, so frames leave in
the order they were queued. Data and pongs wait for the end of the loop turn
(:mod:`.flusher`: one ``write()`` per connection per turn); a ping or a close
is queued after them and flushed at once (a close because TCP goes next).

Limits (SPEC §8): frames per second are counted here, since they are a server
policy and not RFC 6455: every frame counts, data and control alike, an empty
continuation as much as a whole message (issue 17), and by arrival rather than
by processing (:class:`~wsplex.transport.pacing.FrameRate`); a connection
whose send buffer passes the send-buffer cap after a write is a slow consumer
and is closed with 1008, and past the node's total (:class:`SendBuffers`) the
connections with the most waiting are closed with 1013. What one connection
gets handled per loop turn is bounded (``--read-per-turn``), and a connection
whose replies wait unread is not read until they drain; these pauses and the
session's backlog pause share one set of reasons (:class:`~.pacing.Pause`).
Pings are answered here rather than by picows, so pongs are coalesced with
other frames and count towards the send-buffer cap. The keepalive sweep
(:meth:`Connection.ping`) also bounds how long a fragmented message may stay
unfinished. A limit's close is logged at WARNING and counted by
:class:`~wsplex.ws.frames.Limit` (``wsplex_limit_closes_total``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import ClassVar, Final, Protocol

from multidict import CIMultiDict, CIMultiDictProxy
from picows import WSFrame, WSListener, WSTransport

from wsplex.app.protocol import Protocol as AppProtocol
from wsplex.app.session import Hook, Session
from wsplex.config import Settings
from wsplex.http.admission import ConnectionCounter
from wsplex.http.handshake import Accept
from wsplex.logs import connection_fields
from wsplex.stats import Stats
from wsplex.transport.flusher import Flusher
from wsplex.transport.pacing import FRAME_COST, LONG_PAUSES, FrameRate, LoopLag, Pause
from wsplex.transport.picows_workarounds import GuardedTransport
from wsplex.ws.assembler import PartialBytes
from wsplex.ws.close import CloseCode
from wsplex.ws.connection import After, Close, Failure, PongReceived, Reply, State, WebSocket
from wsplex.ws.frames import Limit, Opcode, encode_frame

log = logging.getLogger("wsplex.server")

_PING_FRAME: Final = encode_frame(Opcode.PING, b"")
_EMPTY_HEADERS: Final[CIMultiDictProxy[str]] = CIMultiDictProxy(CIMultiDict())
#: asyncio's and uvloop's default high-water mark for a transport's write buffer.
_DEFAULT_HIGH_WATER: Final = 64 * 1024
_OPEN: Final = State.OPEN
_FAILING: Final = State.FAILING
_DISCONNECT: Final = After.DISCONNECT
_HALF_CLOSE: Final = After.HALF_CLOSE
#: After a keepalive timeout the peer is not reading: abort this long after the close frame.
_ABORT_AFTER_PING_TIMEOUT: Final = 0.1


class Sessions(Protocol):
    """What a connection needs from the hub: an id, and to be attached and detached."""

    def new_session_id(self) -> str: ...

    def attach(self, session: Session) -> None: ...

    def detach(self, session: Session) -> None: ...


@dataclass(eq=False, slots=True)
class Shared:
    """What every connection of one listener uses, built once by the listener."""

    settings: Settings
    stats: Stats
    hub: Sessions
    counter: ConnectionCounter
    flusher: Flusher
    #: One message of the largest allowed size always fits, whatever the flag says.
    send_buffer_cap: int
    connections: set[Connection]
    #: The bytes held by every connection's unfinished message: ``--max-partial-bytes``.
    partial: PartialBytes = field(init=False)
    #: The bytes waiting in every connection's send buffer: ``--max-send-buffers-total``.
    send_buffers: SendBuffers = field(init=False)
    #: The loop-lag clock the frame rate counts stalls by (:mod:`.pacing`).
    lag: LoopLag = field(init=False)

    def __post_init__(self) -> None:
        self.partial = PartialBytes(self.settings.max_partial_bytes)
        self.send_buffers = SendBuffers(self.settings.max_send_buffers_total)
        self.lag = LoopLag(self.connections, self._publish_lag)

    def _publish_lag(self, total: float) -> None:
        self.stats.loop_lag = total


#: The node-wide send-buffer total is recounted exactly at most this often (seconds).
_RECOUNT_INTERVAL: Final = 0.1


class SendBuffers:
    """The bytes waiting to be sent to the clients of one node, and their cap (SPEC §8).

    Each connection adds what its transport buffers after each write
    (:attr:`Connection.buffered`), and takes it back when the buffer drains
    (``resume_writing``), when it starts closing, and when it goes. A buffer
    can drain without a word from the transport below its high-water mark, so
    the running total can only overestimate: past the cap it is recounted from
    every open connection's transport, and only if the recount is still past
    it are the connections with the most waiting closed, largest first, until
    it is not. A connection that is closing no longer counts: its bytes go
    within ``close_timeout``.
    """

    __slots__ = ("limit", "recounted_at", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.recounted_at = float("-inf")

    def over(self, connections: set[Connection]) -> list[Connection]:
        """The total passed the cap: recount, and the connections to close to get under it."""
        now = asyncio.get_running_loop().time()
        if now - self.recounted_at < _RECOUNT_INTERVAL:
            return []
        self.recounted_at = now
        open_ones = [c for c in connections if c.refresh_buffered()]
        self.total = sum(c.buffered for c in open_ones)
        excess = self.total - self.limit
        victims: list[Connection] = []
        for connection in sorted(open_ones, key=_buffered, reverse=True):
            if excess <= 0:
                break
            victims.append(connection)
            excess -= connection.buffered
        return victims


def _buffered(connection: Connection) -> int:
    return connection.buffered


class Connection(WSListener):
    """One client connection: the session's :class:`~wsplex.app.session.Link`.

    It exists from the accepted handshake; ``out`` is set once picows has upgraded.
    """

    __slots__ = (
        "_close_timer",
        "admitted",
        "buffered",
        "failure",
        "guard",
        "offered",
        "on_message",
        "out",
        "paused",
        "paused_at",
        "pending",
        "ping_sent_at",
        "protocol",
        "rate",
        "receiving",
        "session",
        "shared",
        "squeezed",
        "stats",
        "subprotocol",
        "transport",
        "turn_budget",
        "turn_used",
        "unfinished",
        "unfinished_since",
        "ws",
    )
    #: permessage-deflate's connection gives its sessions another ``send`` (:mod:`.deflate`).
    session_type: ClassVar[type[Session]] = Session

    def __init__(
        self, shared: Shared, protocol: AppProtocol, on_message: Hook, accept: Accept, guard: GuardedTransport
    ) -> None:
        self.shared = shared
        self.stats = shared.stats
        self.admitted = True  # counted by ``shared.counter`` until :meth:`release`
        self.protocol = protocol
        self.on_message = on_message  # ``protocol.on_message``, bound once per protocol, not per message
        self.session = self.session_type(shared.hub.new_session_id(), protocol.name, accept.remote, self,
                               accept.query, accept.address)
        self.subprotocol = accept.subprotocol  # for the 101 response (RFC 6455 §4.2.2)
        self.offered = accept.offered  # for the connect log line, then dropped
        settings = shared.settings
        self.ws = WebSocket(settings.max_message_size, settings.max_fragments, shared.partial)
        self.guard = guard
        self.transport: WSTransport | None = None
        self.out: asyncio.Transport | None = None  # the socket's transport, not picows' view of it
        self.pending: list[bytes] | None = None
        #: Inside a read that began with nothing queued: writes wait for its end (``_end_read``).
        self.receiving = False
        self.failure: tuple[int, str] | None = None  # picows' parser error, see parser_failed
        self.ping_sent_at: float | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        #: Why the socket is not read (:class:`~wsplex.transport.pacing.Pause`); 0: it is read.
        self.paused = 0
        self.paused_at = 0.0  # when the first of LONG_PAUSES began
        #: This connection's part of ``shared.send_buffers.total``: its buffer after the last write.
        self.buffered = 0
        self.rate = FrameRate(settings.max_messages_per_second)
        #: What the frames handled since the last yield cost (``--read-per-turn``, :mod:`.pacing`).
        self.turn_used = 0
        self.turn_budget = settings.read_per_turn
        #: It spent its budget: its reads are small and one a turn until one drains its
        #: socket (``transport.listener.SQUEEZED_READ``), so a fleet of flooders cannot make
        #: every loop turn long for the connections that are not flooding.
        self.squeezed = False
        #: The unfinished message the keepalive sweep last saw (``ws.messages_opened``), and when.
        self.unfinished = 0
        self.unfinished_since = 0.0

    def __repr__(self) -> str:
        return f"<Connection {self.session.id} {self.ws.state.value}>"

    # -- picows callbacks ----------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.guard.upgraded = True
        out = self.out = self.guard.real
        # The handshake is done: free its headers (kilobytes per idle connection).
        request = transport.request
        request.headers = _EMPTY_HEADERS  # type: ignore[assignment]
        request.method = request.path = request.version = b""
        shared = self.shared
        session = self.session
        loop = asyncio.get_running_loop()
        lag = shared.lag
        if not lag.running:
            lag.start(loop)
        rate = self.rate
        rate.window_start = now = loop.time()
        rate.lag_start = lag.now(now)
        if shared.send_buffer_cap < _DEFAULT_HIGH_WATER:  # pause_writing must come no later than the cap
            out.set_write_buffer_limits(high=shared.send_buffer_cap)
        shared.connections.add(self)
        shared.hub.attach(session)  # and so into its protocol's channel
        self.stats.connections_total += 1
        self.stats.connections[session.protocol] += 1
        log.debug("connect %s from %s offered=%s chose=%s",
                  session.id, session.remote, ",".join(self.offered) or "-", session.protocol,
                  extra=connection_fields(session))
        self.offered = ()
        session.run(self.protocol.on_connect)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.pending is None:
            self.receiving = True  # what this read makes us send waits for its end, see _end_read
        rate = self.rate
        rate.count += 1  # every frame, see the module docstring
        if rate.count <= rate.allowance or not self._over_rate():
            payload = frame.get_payload_as_bytes()
            try:
                # WSMsgType is an IntEnum at run time (its stub says Enum): it compares as the opcode.
                result = self.ws.receive(frame.msg_type, frame.fin, payload,  # type: ignore[arg-type]
                                         frame.rsv1, frame.rsv2, frame.rsv3)
                if result is not None:
                    kind = type(result)
                    if kind is str or kind is bytes:  # the hot path: a whole message
                        stats = self.stats
                        stats.bytes_in += len(payload)
                        stats.messages_in += 1
                        self.session.run(self.on_message, result)
                    else:
                        self._act(result)  # type: ignore[arg-type]
            except Exception:  # a bug of ours must not reach picows, which would send 1011 itself
                log.exception("frame handling failed for %s", self.session)
                self.fail(CloseCode.INTERNAL_ERROR, "internal error")
        self.turn_used += frame.payload_size + FRAME_COST
        if frame.last_in_buffer:
            if self.receiving:
                self._end_read()
            if self.failure is not None:
                self._fail_parsed()
            if self.turn_used > self.turn_budget or self.squeezed:
                self._yield_turn()

    def _end_read(self) -> None:
        """The last frame of a read is handled: write what it made us send.

        A connection that answers its own message (an echo with one client, a
        command) writes at once, skipping the flusher's extra callback. If
        this turn has fanned out already, it joins the flusher instead, so
        each receiver still gets one ``write()`` for the turn.
        """
        self.receiving = False
        if self.pending is not None:
            flusher = self.shared.flusher
            if flusher.dirty:
                flusher.mark(self)
            else:
                self.flush()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        shared = self.shared
        session = self.session
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.pending = None
        self._stop_counting_buffer()
        self.ws.connection_lost()
        session.closed = True
        self.release()
        shared.connections.discard(self)
        stats = self.stats
        stats.connections[session.protocol] -= 1
        stats.closes[self.ws.close_code] += 1
        log.debug("close %s code=%d reason=%r", session.id, self.ws.close_code, self.ws.close_reason,
                  extra=connection_fields(session))
        session.run(self.protocol.on_disconnect, self.ws.close_code)
        session.run(shared.hub.detach)

    def release(self) -> None:
        """Give back the connection slot taken at the handshake, exactly once."""
        if self.admitted:
            self.admitted = False
            self.shared.counter.release(self.session.address)

    def pause_writing(self) -> None:
        """The transport buffers past its high-water mark: the peer does not read what we
        send, so stop reading what it sends until it does (issue 17 item 14).

        Replies (pongs, echoes, answers) are built only from what is read, so
        the bytes queued for a never-reading client stay at the high-water mark
        plus one read's replies; what others send it is still capped by
        ``--max-send-buffer`` (:meth:`flush`).
        """
        if self._pause(Pause.SEND):
            self.stats.send_pauses += 1
            log.debug("not reading %s: %d bytes sent to it wait unread", self.session,
                      self.out.get_write_buffer_size() if self.out is not None else 0)

    def resume_writing(self) -> None:
        """The buffer drained below the low-water mark: the peer reads again."""
        self.refresh_buffered()
        self._resume(Pause.SEND)

    def refresh_buffered(self) -> bool:
        """Count what the transport buffers now in the node's total; False once closing."""
        state = self.ws.state
        out = self.out
        if out is None or (state is not _OPEN and state is not _FAILING):
            return False
        size = out.get_write_buffer_size()
        self.shared.send_buffers.total += size - self.buffered
        self.buffered = size
        return True

    def _stop_counting_buffer(self) -> None:
        self.shared.send_buffers.total -= self.buffered
        self.buffered = 0

    def pause_reading(self) -> None:
        """The session's hooks are behind (a Session's backlog): read no more for now."""
        if self._pause(Pause.BACKLOG):
            self.stats.reads_paused += 1

    def resume_reading(self) -> None:
        """The session caught up: read again, unless another pause holds."""
        self._resume(Pause.BACKLOG)

    def _yield_turn(self) -> None:
        """``--read-per-turn`` is spent: read no more until the next loop turn (:mod:`.pacing`)."""
        self.turn_used = 0
        self.squeezed = True
        lag = self.shared.lag
        if lag.loop is not None and not self.paused & Pause.TURN and self._pause(Pause.TURN):
            self.stats.turn_yields += 1
            lag.loop.call_soon(self._resume, Pause.TURN)

    def _pause(self, reason: Pause) -> bool:
        """Stop reading the socket for ``reason``; the first reason pauses the transport.

        False when there is nothing to pause: the socket is closing, or a close
        frame is out (then reading goes on, see :meth:`_apply`), but for a turn.
        """
        out = self.out
        if out is None or out.is_closing():
            return False
        if reason & LONG_PAUSES and self.ws.state is not _OPEN and self.ws.state is not _FAILING:
            return False
        paused = self.paused
        if not paused:
            out.pause_reading()
        if reason & LONG_PAUSES and not paused & LONG_PAUSES:
            self.paused_at = asyncio.get_running_loop().time()
        self.paused = paused | reason
        return True

    def _resume(self, reason: Pause) -> None:
        """``reason`` no longer holds; read again once no other reason does.

        The time reading was paused by a lasting reason is credited to the rate:
        the frames the peer sent meanwhile arrive at once (:class:`FrameRate`).
        """
        paused = self.paused
        if not paused & reason:
            return
        self.paused = paused = paused & ~reason
        if reason & LONG_PAUSES and not paused & LONG_PAUSES:
            self.rate.paused += asyncio.get_running_loop().time() - self.paused_at
        out = self.out
        if not paused and out is not None and not out.is_closing():
            out.resume_reading()

    # -- incoming ------------------------------------------------------------

    def _act(self, result: Reply | Close | Failure | PongReceived) -> None:
        """A decision of :meth:`WebSocket.receive` other than a message."""
        if type(result) is Reply:
            self._queue(result.frame)
        elif type(result) is PongReceived:
            self.ping_sent_at = None
        elif type(result) is Failure:
            if result.limit is not None:
                self._limit_reached(result.limit, result.reason)
            self._fail_after_replies(result)
        else:
            self._apply(result)  # type: ignore[arg-type]

    def _over_rate(self) -> bool:
        """SPEC §8: at most ``max_messages_per_second`` frames per second, by arrival.

        Called once the count has passed the window's allowance (the caller
        counts): is that within the window, allowing for the time the loop ran
        late and the reading was paused (:class:`~.pacing.FrameRate`)? Then the
        connection fails with 1008 and the frame is dropped. Once closing, the state
        machine discards all but a close frame anyway, so the rate stops mattering:
        the peer's close still gets through.
        """
        if self.ws.state is not _OPEN:
            return False
        rate = self.rate
        now = asyncio.get_running_loop().time()
        if rate.exceeded(now, self.shared.lag.now(now)):
            reason = f"more than {rate.limit} messages per second"
            self._limit_reached(Limit.RATE, reason)
            self.ws.drop_message()
            self.fail(CloseCode.POLICY_VIOLATION, reason)
            return True
        return False

    def _limit_reached(self, limit: Limit, reason: str) -> None:
        """A server limit closes this connection: log it and count it (SPEC §8)."""
        self.stats.limit_closes[limit] += 1
        log.warning("closing %s: %s (%s)", self.session, reason, limit, extra=connection_fields(self.session))

    # -- outgoing (the session's Link) -----------------------------------------

    def write_frame(self, frame: bytes) -> None:
        """Queue one frame for this turn's write; the fan-out calls this once per receiver."""
        state = self.ws.state  # ``WebSocket.can_send``, without a property call per frame
        if state is _OPEN or state is _FAILING:
            pending = self.pending  # _queue, inlined: this is the fan-out's inner loop
            if pending is None:
                self.pending = [frame]
                if not self.receiving:
                    self.shared.flusher.mark(self)
            else:
                pending.append(frame)

    def _queue(self, frame: bytes) -> None:
        """Queue a frame for :meth:`flush`: at the end of this read, or of this loop turn."""
        pending = self.pending
        if pending is None:
            self.pending = [frame]
            if not self.receiving:
                self.shared.flusher.mark(self)
        else:
            pending.append(frame)

    def _send_now(self, frame: bytes) -> None:
        """Queue a ping or close after what is queued, and write them all now.

        ``messages_out`` and ``bytes_out`` count messages and pongs, not these:
        they are read at scrape time, and the write is done when this returns.
        """
        pending = self.pending
        if pending is None:
            self.pending = [frame]
        else:
            pending.append(frame)
        self.flush()
        stats = self.stats
        stats.messages_out -= 1
        stats.bytes_out -= len(frame)

    def flush(self) -> None:
        """Write what is queued in one ``write()``: cheaper in uvloop than writelines()."""
        frames = self.pending
        out = self.out
        if not frames or out is None:
            return
        self.pending = None
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        out.write(data)
        stats = self.stats  # counted per write, not per frame: the fan-out is the hot path
        stats.messages_out += len(frames)
        stats.bytes_out += len(data)
        # After every write, not only once the transport paused us: one C call.
        size = out.get_write_buffer_size()
        if size != self.buffered and self.ws.state is _OPEN:  # not for the close frame that drops it
            shared = self.shared
            send_buffers = shared.send_buffers
            send_buffers.total += size - self.buffered
            self.buffered = size
            if size > shared.send_buffer_cap:
                self._drop_slow_consumer()
            elif send_buffers.total > send_buffers.limit:
                self._over_total()

    def _over_total(self) -> None:
        """SPEC §8: the node's send buffers passed ``--max-send-buffers-total``: close the worst."""
        limit = self.shared.send_buffers.limit
        for victim in self.shared.send_buffers.over(self.shared.connections):
            victim.stats.slow_consumer_drops += 1
            reason = f"slow consumer: the server's send buffers hold more than {limit} bytes"
            victim._limit_reached(Limit.SEND_BUFFERS_TOTAL, reason)
            victim.close(CloseCode.TRY_AGAIN_LATER, "slow consumer: server send buffers full")

    def _drop_slow_consumer(self) -> None:
        """SPEC §8: past the cap, stop queueing and close with 1008.

        The close frame goes after what is already buffered, so a peer that is
        slow rather than gone still learns why; one that never reads is aborted
        after ``close_timeout``. From here on nothing more is queued, so the
        buffer stays at most the cap plus one loop turn of frames and the close.
        """
        self.stats.slow_consumer_drops += 1
        log.warning("closing %s: more than %d bytes waiting to be sent (slow consumer)",
                    self.session, self.shared.send_buffer_cap)
        self.close(CloseCode.POLICY_VIOLATION, "slow consumer")

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (RFC 6455 §7.1.2); drop TCP if the peer never answers."""
        if self.out is not None:
            self._apply(self.ws.close(code, reason))

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection for a wire error (RFC 6455 §7.1.7)."""
        log.debug("failing %s: %d %s", self.session, code, reason)
        if self.out is not None:
            self._apply(self.ws.fail(code, reason))

    def _apply(self, close: Close | None) -> None:
        """Write a close decided by :mod:`wsplex.ws`, then do what it says with TCP.

        ``HALF_CLOSE`` (failing, §7.1.7) sends a FIN at once: nothing more is
        coming from us, and the peer need not answer. Reading goes on (and is
        discarded) until the peer hangs up, so unread input never turns our FIN
        into a reset that could destroy the close frame. TLS cannot half-close:
        there the peer's close frame or ``close_timeout`` ends it.
        """
        if close is None:
            return
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.session.closed = True
        self._stop_counting_buffer()  # closing: its bytes go within close_timeout
        # From here what the peer sends is discarded (but for its close frame), so it
        # costs nothing to read: read on, or unread input would turn our FIN into a reset.
        self._resume(LONG_PAUSES)
        if close.frame is not None:
            self._send_now(close.frame)
        out = self.out
        if close.then is _DISCONNECT:
            if self.transport is not None:
                self.transport.disconnect()
            return
        loop = asyncio.get_running_loop()
        self._close_timer = loop.call_later(self.shared.settings.close_timeout, self._close_timed_out)
        if close.then is _HALF_CLOSE and out is not None and out.can_write_eof() and not out.is_closing():
            out.write_eof()

    def _close_timed_out(self) -> None:
        """No close frame came back in time (RFC 6455 §7.1.1): drop TCP.

        If the peer has not even read what was sent, a graceful close would wait
        for it forever, holding the buffer: abort instead.
        """
        if self.transport is None or self.out is None:
            return
        if self.out.get_write_buffer_size() > 0:
            self.out.abort()
        else:
            self.transport.disconnect()

    # -- picows parse-ahead (see picows_workarounds) ---------------------------

    def parser_failed(self, code: int, reason: str) -> None:
        """picows found a bad frame after the one it is about to deliver.

        Fail with its code once that frame is handled: at the end of
        :meth:`on_ws_frame`, or next loop turn if picows delivers nothing.
        """
        log.debug("parser error on %s: %s %s", self.session, code, reason)
        self.failure = (code, reason)
        asyncio.get_running_loop().call_soon(self._fail_parsed)

    def _fail_parsed(self) -> None:
        failure, self.failure = self.failure, None
        if failure is not None:
            violation = self.ws.violated(*failure)
            if violation is not None:
                self._fail_after_replies(violation)

    def _fail_after_replies(self, failure: Failure) -> None:
        """Fail for a wire error once the hooks of earlier messages have run.

        A hook still awaiting something (a Redis round trip) owes the peer a
        reply that must go out before our close frame ([3] in
        :mod:`wsplex.ws.connection`): the failure joins the session's queue of
        hooks. A hook that never finishes cannot keep the connection open:
        ``close_timeout`` later it fails anyway.
        """
        self.session.run(self._fail_hook, failure.code, failure.reason)
        if self.ws.state is _FAILING:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(self.shared.settings.close_timeout, self.fail,
                                                failure.code, failure.reason)

    def _fail_hook(self, session: Session, code: int, reason: str) -> None:
        self.fail(code, reason)

    # -- keepalive -------------------------------------------------------------

    def ping(self, now: float) -> None:
        """The keepalive sweep's visit: a ping unless one is unanswered (SPEC §1), and the
        fragment timeout.

        A message still unfinished ``--fragment-timeout`` after the sweep first saw it
        fails the connection with 1008: the sweep, not a timer per connection, so the
        bound is the timeout plus up to one ``--ping-interval``.
        """
        ws = self.ws
        if ws.in_message and self.shared.settings.fragment_timeout > 0:
            if self.unfinished != ws.messages_opened:
                self.unfinished, self.unfinished_since = ws.messages_opened, now
            elif now - self.unfinished_since >= self.shared.settings.fragment_timeout and ws.state is _OPEN:
                reason = f"message not finished within {self.shared.settings.fragment_timeout:g} s"
                self._limit_reached(Limit.FRAGMENT_TIMEOUT, reason)
                ws.drop_message()
                self.fail(CloseCode.POLICY_VIOLATION, reason)
                return
        if self.ping_sent_at is None and self.ws.state is _OPEN and self.out is not None:
            self.ping_sent_at = now
            self._send_now(_PING_FRAME)

    def check_pong(self, deadline: float) -> None:
        """Close the connection if a ping sent at or before ``deadline`` is unanswered."""
        if self.ping_sent_at is not None and self.ping_sent_at <= deadline:
            log.info("closing %s: no pong within %ss", self.session, self.shared.settings.ping_timeout)
            self.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            if self.out is not None:
                # The peer is not reading: don't wait for its close frame.
                asyncio.get_running_loop().call_later(_ABORT_AFTER_PING_TIMEOUT, self.out.abort)

    def abort(self) -> None:
        """Drop TCP now (shutdown past its deadline)."""
        if self.out is not None:
            self.out.abort()
