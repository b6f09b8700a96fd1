"""The one module that touches the WebSocket library (picows).

Everything above it (sessions, protocols, the hub, HTTP routes) works with
plain values, so the library can be swapped by rewriting this file.

What lives here:

* the listener factory: plain HTTP routes, WebSocket path and subprotocol
  selection, refusals with a status and a plain-text body (SPEC §1);
* :class:`Connection`, one per client: frames in through :mod:`wsplex.ws`,
  messages out coalesced into one ``write()`` per event-loop turn, the closing
  handshake (RFC 6455 §7), keepalive pings;
* :class:`Server`: start, keepalive sweep, graceful shutdown with 1001.

Three picows behaviours are worked around here, and only here:

* picows parses one frame ahead. When the *next* frame breaks a wire rule it
  sends its own close frame before delivering the *current* one, so the
  peer would see the close before the reply to a valid message, and two close
  frames in one packet (Autobahn 7.1.2) would be answered 1002 instead of 1000.
  picows logs the error just before it sends that close; the connection's
  logger hook (:meth:`PicowsProtocol.error`) raises a guard on the transport
  picows writes through (:class:`_GuardedTransport`), which holds that one close
  frame until the current frame has been handled, then sends or drops it.
* picows' ``send_close()`` without a code sends code 0, so close frames are
  built by :func:`wsplex.ws.frames.encode_frame` instead.
* picows caps request headers at 16 KiB and closes an oversize request, or one
  that times out, without a word. Before the upgrade those are the only two
  ways it closes without writing a response, so the guard writes one first:
  431 for the headers, 408 when the handshake timeout fired.

Limits (SPEC §8, :mod:`wsplex.http.admission`): connections are counted at the
handshake and released once when they go; messages and pings per second are
counted per connection; a connection whose send buffer passes
the send-buffer cap is a slow consumer and is closed with 1008. Pings are
answered here rather than by picows, so pongs are coalesced with other frames,
count towards the rate and towards the send-buffer cap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import struct
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy
from picows import (
    PICOWS_DEBUG_LL,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSAutoPingStrategy, WSProtocol  # type: ignore[attr-defined]

from wsplex.app.hub import Hub, protocol_topic
from wsplex.app.protocol import Context, Protocol
from wsplex.app.registry import ProtocolRegistry, parse_offer
from wsplex.app.session import Session
from wsplex.config import Settings
from wsplex.http.admission import (
    ConnectionCounter,
    MessageRate,
    Refusal,
    Refused,
    header_size,
    origin_allowed,
)
from wsplex.http.metrics import MetricsEndpoint
from wsplex.http.routes import WEBSOCKET_PATHS, HttpApp, Response
from wsplex.hub import create_hub
from wsplex.stats import Stats
from wsplex.ws.assembler import MessageAssembler
from wsplex.ws.close import CloseCode, truncate_reason
from wsplex.ws.frames import Opcode, ProtocolViolation, encode_frame, parse_close

log = logging.getLogger("wsplex.server")

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_PONG = WSMsgType.PONG
_PING = WSMsgType.PING

#: picows starts each read buffer at 16 KiB; it grows on demand, so start small
#: and keep idle connections cheap (picows' own floor is 2 KiB).
_READ_BUFFER = 2048
_PING_FRAME = encode_frame(Opcode.PING, b"")
_EMPTY_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
#: picows' own, fixed cap on the request line and headers.
PICOWS_MAX_HEADER_SIZE = 16 * 1024
#: asyncio's and uvloop's default high-water mark for a transport's write buffer.
_DEFAULT_HIGH_WATER = 64 * 1024


def close_frame(code: int, reason: str) -> bytes:
    """A close frame with a code and a reason cut to fit (RFC 6455 §5.5.1)."""
    return encode_frame(Opcode.CLOSE, struct.pack("!H", code) + truncate_reason(reason).encode())


def raw_response(status: HTTPStatus, text: str) -> bytes:
    """A complete plain-text HTTP response, for the cases picows does not answer."""
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def client_address(peer: Any) -> str:
    """The host part of a peer address: what per-address limits count."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "unknown")


def format_peer(peer: Any) -> str:
    """``host:port`` for IPv4, ``[host]:port`` for IPv6."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer or "unknown")


class _Flusher:
    """Writes each connection's queued frames once per event-loop turn.

    A fan-out to N receivers queues N frames; the write() syscall is the cost,
    so a receiver that gets several messages in one turn gets one write.
    """

    __slots__ = ("_dirty", "_loop")

    def __init__(self) -> None:
        self._dirty: list[Connection] = []
        # Kept, not looked up per turn: get_running_loop() costs a getpid() syscall.
        self._loop: asyncio.AbstractEventLoop | None = None

    def mark(self, connection: Connection) -> None:
        if not self._dirty:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.flush)
        self._dirty.append(connection)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection.flush()


class _GuardedTransport:
    """The transport picows writes through; see the module docstring for why.

    While ``hold`` is set, picows' fast path is disabled (a non-zero buffer size
    makes it call ``write``), and its one close frame is kept in ``held``.
    After the connection has sent its close, nothing more goes out: not even the
    pong picows would send for a ping that follows (RFC 6455 §5.5.1: a close frame
    is the last frame an endpoint sends).
    Before the upgrade, ``unanswered`` is what to write if picows closes
    without having written anything (see the module docstring).
    """

    __slots__ = ("connection", "held", "hold", "real", "unanswered", "wrote")

    def __init__(self, real: asyncio.Transport, unanswered: bytes) -> None:
        self.real = real
        self.hold = False
        self.held: bytes | None = None
        self.connection: Connection | None = None
        self.unanswered = unanswered
        self.wrote = False

    def get_write_buffer_size(self) -> int:
        # Non-zero sends picows through ``write`` below instead of its direct send().
        if self.hold or (self.connection is not None and self.connection.close_sent):
            return 1
        return self.real.get_write_buffer_size()

    def write(self, data: bytes) -> None:
        self.wrote = True
        if self.hold:
            if self.held is None:
                self.held = bytes(data)
            return
        if self.connection is None or not self.connection.close_sent:
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


class Connection(WSListener):
    """One client connection: the session's :class:`~wsplex.app.session.Link`.

    States: open -> closing (a close frame was sent, waiting for the peer's) ->
    closed (TCP gone). A close from the peer is answered at once and the server
    then drops TCP, as RFC 6455 §7.1.1 asks of servers.
    """

    __slots__ = (
        "_close_timer",
        "admitted",
        "assembler",
        "close_code",
        "close_reason",
        "close_received",
        "close_sent",
        "guard",
        "offered",
        "out",
        "paused",
        "pending",
        "ping_sent_at",
        "protocol",
        "rate",
        "server",
        "session",
        "transport",
    )

    def __init__(
        self, server: Server, protocol: Protocol, session_id: str, remote: str,
        query: dict[str, str], offered: list[str], address: str,
    ) -> None:
        self.server = server
        self.admitted = True  # counted by ``server.counter`` until :meth:`release`
        self.protocol = protocol
        self.session = Session(session_id, protocol.name, remote, self, query, address)
        self.offered = offered
        self.assembler = MessageAssembler(server.settings.max_message_size)
        self.transport: WSTransport | None = None
        self.guard: _GuardedTransport | None = None
        self.out: asyncio.Transport | None = None  # the socket's transport, not picows' view of it
        self.pending: list[bytes] | None = None
        self.close_sent = False
        self.close_received = False
        self.close_code: int = CloseCode.ABNORMAL
        self.close_reason = ""
        self.ping_sent_at: float | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self.paused = False
        self.rate = MessageRate(server.settings.max_messages_per_second, 0.0)

    # -- picows callbacks ----------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        assert self.guard is not None
        self.out = self.guard.real
        # The handshake is done: free its headers (kilobytes per idle connection).
        transport.request.headers = _EMPTY_HEADERS  # type: ignore[assignment]
        transport.response.headers = _EMPTY_HEADERS  # type: ignore[assignment]
        server = self.server
        session = self.session
        self.rate.window_start = asyncio.get_running_loop().time()
        cap = server.send_buffer_cap
        if cap < _DEFAULT_HIGH_WATER:  # pause_writing must come no later than the cap
            self.out.set_write_buffer_limits(high=cap)
        server.connections.add(self)
        server.hub.attach(session)
        server.hub.subscribe(protocol_topic(session.protocol), session)
        server.stats.connections_total += 1
        server.stats.connections[session.protocol] += 1
        log.debug(
            "connect %s from %s offered=%s chose=%s",
            session.id, session.remote, ",".join(self.offered) or "-", session.protocol,
        )
        session.run(self.protocol.on_connect)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        try:
            self._receive(frame)
        except ProtocolViolation as violation:
            self.fail(violation.code, violation.reason)
        except Exception:  # a bug of ours must not reach picows, which would send 1011 itself
            log.exception("frame handling failed for %s", self.session)
            self.fail(CloseCode.INTERNAL_ERROR, "internal error")
        if self.guard is not None and self.guard.hold and frame.last_in_buffer:
            self.release_held_close()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        server = self.server
        session = self.session
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.pending = None
        session.closed = True
        self.release()
        server.connections.discard(self)
        server.stats.connections[session.protocol] -= 1
        server.stats.closes[self.close_code] += 1
        log.debug("close %s code=%d reason=%r", session.id, self.close_code, self.close_reason)
        session.run(self.protocol.on_disconnect, self.close_code)
        session.run(server.hub.detach)

    def release(self) -> None:
        """Give back the connection slot taken at the handshake, exactly once."""
        if self.admitted:
            self.admitted = False
            self.server.counter.release(self.session.address)

    def pause_writing(self) -> None:
        """The transport buffers past its high-water mark: ``flush`` now checks the cap."""
        self.paused = True

    def resume_writing(self) -> None:
        """The buffer drained below the low-water mark: the peer reads again."""
        self.paused = False

    # -- incoming ------------------------------------------------------------

    def _receive(self, frame: WSFrame) -> None:
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")
        msg_type = frame.msg_type
        if msg_type is _TEXT or msg_type is _BINARY or msg_type is _CONTINUATION:
            if self.close_sent or self.close_received:
                return  # RFC 6455 §5.5.1: data after a close frame is discarded
            payload = frame.get_payload_as_bytes()
            stats = self.server.stats
            stats.bytes_in += len(payload)
            # Identity tests, not ``msg_type.value``: Enum.value is a Python-level property.
            opcode = Opcode.TEXT if msg_type is _TEXT else Opcode.BINARY if msg_type is _BINARY else 0
            message = self.assembler.feed(opcode, frame.fin, payload)
            if message is not None:
                self._count_message()
                stats.messages_in += 1
                self.session.run(self.protocol.on_message, message)
        elif msg_type is _CLOSE:
            self._receive_close(frame.get_payload_as_bytes())
        elif msg_type is _PONG:
            self.ping_sent_at = None
        elif msg_type is _PING:
            self._count_message()
            if not (self.close_sent or self.close_received):
                self.write_frame(encode_frame(Opcode.PONG, frame.get_payload_as_bytes()))  # RFC 6455 §5.5.3

    def _count_message(self) -> None:
        """SPEC §8: at most ``max_messages_per_second`` messages and pings per second."""
        rate = self.rate
        rate.count += 1
        if rate.count > rate.limit and rate.exceeded(asyncio.get_running_loop().time()):
            raise ProtocolViolation(
                CloseCode.POLICY_VIOLATION, f"more than {rate.limit} messages per second"
            )

    def _receive_close(self, payload: bytes) -> None:
        if self.close_received:
            return  # a second close frame (Autobahn 7.1.2) is ignored
        self.close_received = True
        request = parse_close(payload)
        if self.close_sent:
            self._disconnect()  # the peer answered our close
            return
        reply = CloseCode.NORMAL if request.code == CloseCode.NO_STATUS else request.code
        self.close_code, self.close_reason = request.code, request.reason
        self._send_close(reply, "")
        self._disconnect()

    # -- outgoing (the session's Link) -----------------------------------------

    def write_frame(self, frame: bytes) -> None:
        """Queue one frame for this turn's write; the fan-out calls this once per receiver."""
        if self.close_sent:
            return
        pending = self.pending
        if pending is None:
            self.pending = [frame]
            self.server.flusher.mark(self)
        else:
            pending.append(frame)

    def flush(self) -> None:
        frames = self.pending
        real = self.out
        if not frames or real is None:
            return
        self.pending = None
        # One buffer, one write(): cheaper in uvloop than writelines() for small frames.
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        real.write(data)
        stats = self.server.stats  # counted per write, not per frame: the fan-out is the hot path
        stats.messages_out += len(frames)
        stats.bytes_out += len(data)
        if self.paused and real.get_write_buffer_size() > self.server.send_buffer_cap:
            self._drop_slow_consumer()

    def _drop_slow_consumer(self) -> None:
        """SPEC §8: past the cap, stop queueing and close with 1008.

        The close frame goes after what is already buffered, so a peer that is
        slow rather than gone still learns why; one that never reads is aborted
        after ``close_timeout``. From here on nothing more is queued, so the
        buffer stays at most the cap plus one loop turn of frames and the close.
        """
        self.server.stats.slow_consumer_drops += 1
        log.warning("closing %s: more than %d bytes waiting to be sent (slow consumer)",
                    self.session, self.server.send_buffer_cap)
        self.close(CloseCode.POLICY_VIOLATION, "slow consumer")

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (RFC 6455 §7.1.2); drop TCP if the peer never answers."""
        if self.close_sent or self.out is None:
            return
        self.close_code, self.close_reason = code, reason
        self.session.closed = True
        self._send_close(code, reason)
        loop = asyncio.get_running_loop()
        self._close_timer = loop.call_later(self.server.settings.close_timeout, self._close_timed_out)

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection for a wire error (RFC 6455 §7.1.7).

        The close frame is followed by a FIN at once: nothing more is coming
        from us, and the peer need not answer. Reading goes on (and is discarded)
        until the peer hangs up, so unread input never turns our FIN into a
        reset that could destroy the close frame. TLS cannot half-close: there
        the peer's close frame or ``close_timeout`` ends it.
        """
        log.debug("failing %s: %d %s", self.session, code, reason)
        self.close(code, reason)
        out = self.out
        if out is not None and out.can_write_eof() and not out.is_closing():
            out.write_eof()

    def _send_close(self, code: int, reason: str) -> None:
        self.flush()
        self.close_sent = True
        assert self.out is not None
        self.out.write(close_frame(code, reason))

    def _disconnect(self) -> None:
        if self.transport is not None:
            self.transport.disconnect()

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

    # -- picows parse-ahead workaround ---------------------------------------

    def hold_parser_close(self, code: int, reason: str) -> None:
        """picows found a bad frame and is about to send its own close: hold it."""
        log.debug("parser error on %s: %s %s", self.session, code, reason)
        self.flush()
        if self.guard is not None and not self.close_sent:
            self.guard.hold = True
            self.close_code, self.close_reason = code, reason
            asyncio.get_running_loop().call_soon(self.release_held_close)

    def release_held_close(self) -> None:
        """The frame before the bad one has been handled: now send picows' close."""
        guard = self.guard
        if guard is None or not guard.hold:
            return
        guard.hold = False
        held, guard.held = guard.held, None
        if held is not None and not self.close_sent:
            self.flush()
            self.close_sent = True
            self.session.closed = True
            guard.real.write(held)

    # -- keepalive -------------------------------------------------------------

    def ping(self, now: float) -> None:
        if self.ping_sent_at is None and not self.close_sent and self.out is not None:
            self.ping_sent_at = now
            self.flush()
            self.out.write(_PING_FRAME)

    def check_pong(self, deadline: float) -> None:
        """Close the connection if a ping sent at or before ``deadline`` is unanswered."""
        if self.ping_sent_at is not None and self.ping_sent_at <= deadline:
            log.info("closing %s: no pong within %ss", self.session, self.server.settings.ping_timeout)
            self.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            if self.out is not None:
                # The peer is not reading: don't wait for its close frame.
                asyncio.get_running_loop().call_later(0.1, self.out.abort)


class PicowsProtocol(WSProtocol):  # type: ignore[misc]
    """picows' protocol, told the peer address, and acting as its own logger.

    picows logs through the object it is given; this one routes its messages to
    ``wsplex.picows`` at debug level (a client's bad frame is not a server error)
    and uses the "parser error" message to hold picows' early close frame.
    """

    __slots__ = ("_server", "accounted", "connection", "guard", "peer")

    def __init__(self, server: Server) -> None:
        self._server = server
        self.peer: Any = None
        self.connection: Connection | None = None
        self.guard: _GuardedTransport | None = None
        #: The handshake's outcome has been counted (an answer of ours, a timeout, oversize headers).
        self.accounted = False
        settings = server.settings
        super().__init__(
            None, None, False,  # host+port and path: client-side only
            self._listener_for,
            self,  # logger, see the class docstring
            True,  # disconnect on exception
            settings.handshake_timeout,
            False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE,  # keepalive is ours
            False,  # pings are answered by Connection, see the module docstring
            settings.max_message_size,  # a frame can never be bigger than a message
            None,
            _READ_BUFFER,
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = transport.get_extra_info("peername")
        self.guard = _GuardedTransport(cast(asyncio.Transport, transport), self._server.too_large)
        super().connection_made(self.guard)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        connection = self.connection
        if connection is not None:
            # Accepted by Server.answer but never upgraded (picows refused the
            # request after us): on_ws_disconnected will not run, so release here.
            connection.release()
        never_upgraded = connection is None or connection.transport is None
        if never_upgraded and not self.accounted and self.guard is not None and self.guard.wrote:
            # picows answered 400 itself: a malformed request, before or after Server.answer.
            self._server.stats.refusals[Refusal.BAD_REQUEST] += 1

    def _handshake_timeout_callback(self) -> None:
        """picows' handshake timeout fired: answer 408 before it drops the client."""
        if self.guard is not None and not self.guard.wrote:
            self.accounted = True
            self._server.stats.refusals[Refusal.HANDSHAKE_TIMEOUT] += 1
            self.guard.unanswered = self._server.timed_out
            log.debug("handshake timeout for %s", format_peer(self.peer))
        super()._handshake_timeout_callback()

    def _listener_for(self, request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        answer = self._server.answer(request, self.peer)
        self.accounted = not isinstance(answer, Connection)
        if isinstance(answer, Connection):
            self.connection = answer
            answer.guard = self.guard
            if self.guard is not None:
                self.guard.connection = answer
            # RFC 6455 §4.2.2: echo one of the client's offers, and nothing when it
            # offered none (it fell back to --default-protocol).
            headers = {"Sec-WebSocket-Protocol": answer.session.protocol} if answer.offered else {}
            response = WSUpgradeResponse.create_101_response(headers)
            return WSUpgradeResponseWithListener(response, answer)
        return WSUpgradeResponseWithListener(_picows_response(answer), None)

    # -- the logger interface picows uses --------------------------------------

    def isEnabledFor(self, level: int) -> bool:
        return _picows_log.isEnabledFor(level)

    def log(self, level: int, msg: str, *args: Any) -> None:
        _picows_log.log(level, msg, *args)

    def debug(self, msg: str, *args: Any) -> None:
        _picows_log.debug(msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        if msg.startswith("Disconnect because HTTP request violated max_size"):
            self.accounted = True
            self._server.stats.refusals[Refusal.HEADER_SIZE] += 1
        _picows_log.log(PICOWS_DEBUG_LL, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        _picows_log.log(PICOWS_DEBUG_LL, msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        if msg.startswith("WS parser error") and args and self.connection is not None:
            code, reason = args[0][0], args[0][1]
            self.connection.hold_parser_close(int(code), str(reason))
        _picows_log.log(PICOWS_DEBUG_LL, msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        _picows_log.error(msg, *args, exc_info=True)


_picows_log = logging.getLogger("wsplex.picows")


def _picows_response(answer: Response) -> Any:
    headers = {"Content-Type": answer.content_type, **answer.headers}
    if answer.status >= 400:
        return WSUpgradeResponse.create_error_response(answer.status, answer.body, headers)
    return WSUpgradeResponse.create_ok_response(answer.body, headers)


def _refusal(status: HTTPStatus, text: str, reason: Refusal, stats: Stats) -> Response:
    stats.refusals[reason] += 1
    return Response.text(status, text + "\n")


def _normalise_connection_header(headers: Any) -> None:
    """Let ``Connection: keep-alive, Upgrade`` (Firefox) through picows' exact-match check.

    RFC 6455 §4.2.1 asks for a Connection header that *includes* the token
    "Upgrade"; picows accepts only the exact value. Without the token picows
    still refuses with 400.
    """
    value = headers.get("Connection", "")
    if value.lower() != "upgrade" and "upgrade" in (t.strip().lower() for t in value.split(",")):
        headers["Connection"] = "upgrade"


def _refused(refused: Refused, stats: Stats) -> Response:
    return _refusal(refused.status, refused.text, refused.reason, stats)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """Server-side TLS for ``wss://`` and ``https://`` on the one port (SPEC §8)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class Server:
    """A wsplex server: protocols, hub, HTTP routes and the listening socket."""

    def __init__(self, settings: Settings, hub: Hub | None = None) -> None:
        self.settings = settings
        self.node_id = settings.node_id or os.urandom(3).hex()
        self.stats = Stats()
        self.hub = hub or create_hub(settings, self.node_id, self.stats)
        self.registry = ProtocolRegistry.build(settings.protocols, settings.protocol_modules)
        self.context = Context(settings, self.hub, self.stats, self.registry, self.request_shutdown)
        self.protocols: dict[str, Protocol] = {cls.name: cls(self.context) for cls in self.registry}
        self.http = HttpApp(self.registry, self.hub, MetricsEndpoint(self.stats, tuple(self.registry.names)))
        self.connections: set[Connection] = set()
        # One message of the largest allowed size always fits, whatever the flag says.
        self.send_buffer_cap = max(settings.max_send_buffer, 2 * settings.max_message_size)
        self.counter = ConnectionCounter(settings.max_connections, settings.max_connections_per_ip)
        header_limit = min(settings.max_header_size, PICOWS_MAX_HEADER_SIZE)
        self.too_large = raw_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                      f"request headers larger than {header_limit} bytes")
        self.timed_out = raw_response(HTTPStatus.REQUEST_TIMEOUT,
                                      f"handshake not completed within {settings.handshake_timeout:g} s")
        self._listener: asyncio.Server | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.flusher = _Flusher()

    # -- handshake -------------------------------------------------------------

    def answer(self, request: WSUpgradeRequest, peer: Any) -> Connection | Response:
        """A connection to upgrade to, or the HTTP response to send instead."""
        remote = format_peer(peer)
        settings = self.settings
        if settings.max_header_size < PICOWS_MAX_HEADER_SIZE and self._header_size(request) > (
            settings.max_header_size
        ):
            return _refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                            f"request headers larger than {settings.max_header_size} bytes",
                            Refusal.HEADER_SIZE, self.stats)
        target = request.path.decode("latin-1")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self.http.handle(target)
        url = urlsplit(target)
        if url.path not in WEBSOCKET_PATHS:
            return _refusal(HTTPStatus.NOT_FOUND, f"no WebSocket endpoint at {url.path}",
                            Refusal.PATH, self.stats)
        version = request.headers.get("Sec-WebSocket-Version")
        if version != "13":  # RFC 6455 §4.2.2: 426 naming the version we speak
            self.stats.refusals[Refusal.VERSION] += 1
            return Response(HTTPStatus.UPGRADE_REQUIRED,
                            f"unsupported Sec-WebSocket-Version {version}; this server speaks 13\n".encode(),
                            headers={"Sec-WebSocket-Version": "13"})
        _normalise_connection_header(request.headers)
        origin = request.headers.get("Origin")
        if settings.origins and not origin_allowed(origin, settings.origins):
            log.debug("refused %s: origin %s", remote, origin)
            return _refusal(HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed",
                            Refusal.ORIGIN, self.stats)
        offered = parse_offer(request.headers.getall("Sec-WebSocket-Protocol", []))
        chosen = self.registry.select(offered, self.settings.prefer, self.settings.default_protocol)
        if chosen is None:
            what = "no protocol" if not offered else "no supported protocol"
            log.debug("refused %s: offered %s", remote, offered)
            return _refusal(
                HTTPStatus.BAD_REQUEST,
                f"{what} offered in Sec-WebSocket-Protocol; "
                f"this server speaks: {', '.join(self.registry.names)}",
                Refusal.PROTOCOL,
                self.stats,
            )
        address = client_address(peer)
        refused = self.counter.admit(address)
        if refused is not None:
            log.warning("refused %s: %s", remote, refused.text)
            return _refused(refused, self.stats)
        query = dict(parse_qsl(url.query))
        return Connection(
            self, self.protocols[chosen], self.hub.new_session_id(), remote, query, offered, address
        )

    @staticmethod
    def _header_size(request: WSUpgradeRequest) -> int:
        return header_size(request.method, request.path, request.version, request.headers.items())

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open the listening socket; returns once it accepts connections."""
        loop = asyncio.get_running_loop()
        await self.hub.start()
        for protocol in self.protocols.values():
            await protocol.start()
        settings = self.settings
        tls = None
        if settings.tls_cert is not None and settings.tls_key is not None:
            tls = tls_context(settings.tls_cert, settings.tls_key)
        self._listener = await loop.create_server(
            lambda: PicowsProtocol(self),
            host=settings.host,
            port=settings.port,
            reuse_address=True,
            reuse_port=settings.workers > 1,
            backlog=4096,
            ssl=tls,
            ssl_handshake_timeout=settings.handshake_timeout if tls is not None else None,
        )
        if self.settings.ping_interval > 0:
            self._keepalive = asyncio.create_task(self._keepalive_loop())
        log.info("wsplex listening on %s%s, protocols %s", ", ".join(self.addresses),
                 " (TLS)" if tls is not None else "", ", ".join(self.registry.names))

    @property
    def addresses(self) -> list[str]:
        if self._listener is None:
            return []
        return [format_peer(sock.getsockname()) for sock in self._listener.sockets]

    @property
    def port(self) -> int:
        assert self._listener is not None
        sock: socket.socket = self._listener.sockets[0]
        return int(sock.getsockname()[1])

    def request_shutdown(self) -> None:
        """Ask for a graceful shutdown (signal handlers, ``killserver``)."""
        self._stopping.set()

    async def serve_forever(self) -> None:
        """Serve until :meth:`request_shutdown`, then shut down gracefully."""
        await self._stopping.wait()
        await self.stop()

    async def stop(self) -> None:
        """Close every connection with 1001 and wait for them, at most ``shutdown_timeout``."""
        if self._listener is not None:
            self._listener.close()
        if self._keepalive is not None:
            self._keepalive.cancel()
        for connection in list(self.connections):
            connection.session.close(CloseCode.GOING_AWAY, "server shutting down")
        await self._drain(self.settings.shutdown_timeout)
        for protocol in self.protocols.values():
            await protocol.stop()
        await self.hub.stop()
        log.info("wsplex stopped")

    async def _drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.out is not None:
                connection.out.abort()
        await asyncio.sleep(0)

    async def _keepalive_loop(self) -> None:
        """One sweep for all connections: ping, then check for pongs after the timeout."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        while True:
            await asyncio.sleep(settings.ping_interval)
            now = loop.time()
            for connection in list(self.connections):
                connection.ping(now)
            loop.call_later(settings.ping_timeout, self._check_pongs, now)

    def _check_pongs(self, deadline: float) -> None:
        for connection in list(self.connections):
            connection.check_pong(deadline)


def install_event_loop() -> Callable[..., Any]:
    """uvloop where the platform has it (SPEC decision), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
