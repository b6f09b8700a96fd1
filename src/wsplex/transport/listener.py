"""The listening socket and the picows protocol factory.

:class:`Listener` opens the port and gives each accepted socket a
:class:`PicowsProtocol`. At the upgrade request it asks the handshake decision
(:func:`wsplex.http.handshake.decide`, given to it by the server), admits the
connection slot, and translates the outcome into picows' response objects.
It knows the server only through the values it is built with (:class:`Shared`,
the protocols, the decision and the routes), so nothing here imports
:mod:`wsplex.server`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Final, cast

from picows import (
    PICOWS_DEBUG_LL,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSAutoPingStrategy, WSProtocol  # type: ignore[attr-defined]

from wsplex.app.protocol import Protocol as AppProtocol
from wsplex.app.session import Hook
from wsplex.http.admission import DRAINING, HandshakeCounter, Refusal, Refused
from wsplex.http.forwarded import networks, parse_ip, trusted
from wsplex.http.handshake import Accept, Decision, Request, Route, format_peer, refusal_response
from wsplex.http.plain import parse_request, without_body
from wsplex.http.routes import Response
from wsplex.transport.connection import Connection, Shared
from wsplex.transport.deflate import DeflateConnection
from wsplex.transport.picows_workarounds import (
    PICOWS_MAX_HEADER_SIZE,
    GuardedTransport,
    check_picows_version,
    is_header_overflow,
    is_parser_failure,
    normalise_connection_header,
    parser_error,
    raw_response,
)
from wsplex.transport.plain_http import RequestLineReader
from wsplex.ws.close import CloseCode

log = logging.getLogger("wsplex.server")
_picows_log = logging.getLogger("wsplex.picows")

#: picows' read buffer starts here and doubles on demand. Its floor is 2 KiB,
#: which keeps idle connections cheap (its default is 16 KiB).
READ_BUFFER: Final = 2048
#: The most one read takes from a socket (what uvloop reads at a time for a plain
#: protocol). picows doubles its buffer whenever a read nearly fills it and never
#: shrinks it, so without a cap a client that floods small frames makes its reads,
#: and the frames handled for it in one go, grow without bound (issue 17 item 3).
#: A frame bigger than this still fits: a read that leaves one unfinished grows the buffer.
MAX_READ: Final = 64 * 1024
#: The most one read takes from a connection that spent its ``--read-per-turn``
#: (``Connection.squeezed``), one read a turn, until a read finds its socket drained.
#: A turn holds one read of every busy connection: with 500 flooders, 64 KiB reads
#: (11,000 empty frames each) made turns of seconds for everyone else.
SQUEEZED_READ: Final = 2048
_BACKLOG: Final = 4096
#: Seconds between two log lines about half-open connections closed at once: a flood
#: of them is one line a second with a count, not one line each.
HANDSHAKE_LOG_INTERVAL: Final = 1.0


class Listener:
    """One listening socket and its connections."""

    def __init__(
        self,
        shared: Shared,
        protocols: Mapping[str, AppProtocol],
        decide: Callable[[Request], Decision],
        routes: Callable[[str], Response],
    ) -> None:
        check_picows_version()
        self.shared = shared
        self.protocols = protocols
        #: Each protocol's ``on_message``, bound once: shared by its connections.
        self.handlers: dict[str, Hook] = {name: p.on_message for name, p in protocols.items()}
        self.decide = decide
        self.routes = routes
        settings = shared.settings
        header_limit = min(settings.max_header_size, PICOWS_MAX_HEADER_SIZE)
        self.too_large = raw_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                      f"request headers larger than {header_limit} bytes")
        self.timed_out = raw_response(HTTPStatus.REQUEST_TIMEOUT,
                                      f"handshake not completed within {settings.handshake_timeout:g} s")
        #: Shutting down (``--drain-seconds``): upgrades get 503, open connections stay.
        self.draining = False
        #: TCP connections still in their handshake (issue 17 item 9).
        self.handshakes = HandshakeCounter(settings.max_handshakes_per_ip, shared.counter)
        self._proxies = networks(settings.trusted_proxies)
        self._closed_unlogged = 0  # half-open connections closed since the last log line
        self._logged_at = -HANDSHAKE_LOG_INTERVAL
        self._server: asyncio.Server | None = None
        self._switching: dict[tuple[str | None, str | None], Any] = {}

    @property
    def connections(self) -> set[Connection]:
        return self.shared.connections

    async def start(self, tls: ssl.SSLContext | None) -> None:
        """Open the listening socket; returns once it accepts connections."""
        settings = self.shared.settings
        self._server = await asyncio.get_running_loop().create_server(
            lambda: PicowsProtocol(self),
            host=settings.host,
            port=settings.port,
            reuse_address=True,
            reuse_port=settings.workers > 1,
            backlog=_BACKLOG,
            ssl=tls,
            ssl_handshake_timeout=settings.handshake_timeout if tls is not None else None,
        )

    def close(self) -> None:
        """Stop accepting; open connections stay."""
        if self._server is not None:
            self._server.close()

    @property
    def addresses(self) -> list[str]:
        if self._server is None:
            return []
        return [format_peer(sock.getsockname()) for sock in self._server.sockets]

    @property
    def port(self) -> int:
        assert self._server is not None
        sock: socket.socket = self._server.sockets[0]
        return int(sock.getsockname()[1])

    def admit_tcp(self, host: str) -> tuple[bool, bool]:
        """A new TCP connection from ``host``: (admitted, counted per address).

        Refused ones are counted in ``/metrics`` and logged at WARNING, at
        most once a :data:`HANDSHAKE_LOG_INTERVAL` with how many went since.
        """
        address = parse_ip(host)
        per_address = address is None or not trusted(address, self._proxies)
        refused = self.handshakes.admit(host, per_address=per_address)
        if refused is None:
            return True, per_address
        self.shared.stats.refusals[refused.reason] += 1
        self._closed_unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= HANDSHAKE_LOG_INTERVAL:
            log.warning("%s: TCP connection closed at once: %s (%d closed since the last such line)",
                        host, refused.text, self._closed_unlogged, extra={"remote": host})
            self._logged_at, self._closed_unlogged = now, 0
        return False, per_address

    def answer(self, request: WSUpgradeRequest, peer: Any, guard: GuardedTransport) -> Connection | Response:
        """A connection to upgrade to, or the HTTP response to send instead."""
        decision = self.decide(Request(request.method, request.path, request.version,
                                       list(request.headers.items()), peer))
        if type(decision) is Route:
            response = self.routes(decision.target)
            _log_http(logging.INFO, peer, request.method, request.path, response.status, "")
            return response
        if type(decision) is Accept:
            # the slot, released by Connection
            refused = DRAINING if self.draining else self.shared.counter.admit(decision.address)
            if refused is None:
                normalise_connection_header(request.headers)
                name = decision.protocol
                kind = Connection if decision.deflate is None else DeflateConnection
                return kind(self.shared, self.protocols[name], self.handlers[name], decision, guard)
            decision = refused
        return self._refuse(cast(Refused, decision), peer, request.method, request.path)

    def answer_plain(self, head: bytes, peer: Any) -> bytes:
        """The whole response to a HEAD or HTTP/1.0 request (:mod:`wsplex.http.plain`)."""
        request = parse_request(head, peer)
        method, path = head.split(b" ", 2)[:2]
        if isinstance(request, str):
            response = self._refuse(Refused(HTTPStatus.BAD_REQUEST, Refusal.BAD_REQUEST, request),
                                    peer, method, path)
        else:
            decision = self.decide(request)
            if type(decision) is Route:
                response = self.routes(decision.target)
                _log_http(logging.INFO, peer, method, path, response.status, "")
            else:  # an upgrade (whatever else is wrong with it), or 431
                refused = decision
                if type(refused) is not Refused or refused.reason is not Refusal.HEADER_SIZE:
                    refused = Refused(HTTPStatus.BAD_REQUEST, Refusal.BAD_REQUEST,
                                      "a WebSocket upgrade needs GET over HTTP/1.1 (RFC 6455 §4.1)")
                response = self._refuse(refused, peer, method, path)
        encoded = _picows_response(response)
        encoded.headers["Connection"] = "close"
        wire = bytes(encoded.to_bytes())
        return without_body(wire) if method == b"HEAD" else wire

    def switching(self, subprotocol: str | None, extensions: str | None = None) -> Any:
        """The 101 response for ``subprotocol`` and the permessage-deflate answer
        ``extensions`` (RFC 7692 §5): one per pair, shared by their connections.

        picows keeps the response it sent on the transport for the connection's
        life (64 bytes and a header dict per idle connection). It sets the
        request's Sec-WebSocket-Accept on it and writes it in one call, so one
        object can serve every handshake.
        """
        key = (subprotocol, extensions)
        response = self._switching.get(key)
        if response is None:
            headers = {"Sec-WebSocket-Protocol": subprotocol} if subprotocol is not None else {}
            if extensions is not None:
                headers["Sec-WebSocket-Extensions"] = extensions
            response = self._switching[key] = WSUpgradeResponse.create_101_response(headers)
        return response

    def _refuse(self, refused: Refused, peer: Any, method: bytes, path: bytes) -> Response:
        self.shared.stats.refusals[refused.reason] += 1
        level = logging.WARNING if refused.status == HTTPStatus.SERVICE_UNAVAILABLE else logging.INFO
        _log_http(level, peer, method, path, refused.status, f"refused: {refused.text}")
        return refusal_response(refused)


def _log_http(level: int, peer: Any, method: bytes, target: bytes, status: int, why: str) -> None:
    """One line per plain HTTP request and per refused handshake: who, what, the status."""
    if log.isEnabledFor(level):
        path = target.decode("latin-1")
        remote = format_peer(peer)
        log.log(level, "%s %s %s %d%s", remote, method.decode("latin-1"), path, status,
                f" {why}" if why else "", extra={"remote": remote, "status": int(status), "path": path})


class PicowsProtocol(WSProtocol):  # type: ignore[misc]
    """picows' protocol, told the peer address, and acting as its own logger.

    picows logs through the object it is given; this one routes its messages to
    ``wsplex.picows`` at debug level (a client's bad frame is not a server error)
    and reads the few messages the workarounds depend on (``picows_workarounds``).
    """

    __slots__ = ("_listener", "accounted", "connection", "guard", "handshaking", "offered", "peer",
                 "per_address", "refused")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self.peer: Any = None
        self.connection: Connection | None = None
        self.offered = 0  # the length of the buffer get_buffer gave for the current read
        self.guard: GuardedTransport | None = None
        #: The handshake's outcome has been counted (an answer of ours, a timeout, oversize headers).
        self.accounted = False
        #: The client address while counted in ``Listener.handshakes``, else None.
        self.handshaking: str | None = None
        self.per_address = True
        self.refused = False  # closed at once by connection_made: picows never saw it
        settings = listener.shared.settings
        super().__init__(
            None, None, False,  # host+port and path: client-side only
            self._listener_for,
            self,  # logger, see the class docstring
            True,  # disconnect on exception
            settings.handshake_timeout,
            False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE,  # keepalive is ours
            False,  # pings are answered by Connection, see its module docstring
            settings.max_message_size,  # a frame can never be bigger than a message
            None,
            READ_BUFFER,
        )

    def get_buffer(self, size_hint: int) -> memoryview:
        """picows' buffer for the next read, at most :data:`MAX_READ` of it, or
        :data:`SQUEEZED_READ` for a connection that keeps spending its turn budget."""
        buffer: memoryview = super().get_buffer(size_hint)
        connection = self.connection
        cap = SQUEEZED_READ if connection is not None and connection.squeezed else MAX_READ
        if len(buffer) > cap:
            buffer = buffer[:cap]
        self.offered = len(buffer)
        return buffer

    def buffer_updated(self, nbytes: int) -> None:
        connection = self.connection
        if connection is not None and connection.squeezed and nbytes < self.offered:
            connection.squeezed = False  # its socket is drained: whole reads again
        super().buffer_updated(nbytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = transport.get_extra_info("peername")
        host = self.peer[0] if isinstance(self.peer, tuple) else str(self.peer)
        admitted, self.per_address = self._listener.admit_tcp(host)
        if not admitted:
            self.refused = True
            cast(asyncio.Transport, transport).abort()  # no request yet: nothing to answer, no TIME_WAIT
            return
        self.handshaking = host
        self.guard = GuardedTransport(cast(asyncio.Transport, transport), self._listener.too_large)
        super().connection_made(self.guard)
        # Until the request line is read: HEAD and HTTP/1.0 are ours (transport.plain_http).
        transport.set_protocol(RequestLineReader(self, transport, self._answer_plain,
                                                 self._plain_too_large))

    def _handshake_done(self) -> None:
        """The request is answered (or the connection gone): no longer half-open."""
        host, self.handshaking = self.handshaking, None
        if host is not None:
            self._listener.handshakes.release(host, per_address=self.per_address)

    def _answer_plain(self, head: bytes) -> None:
        assert self.guard is not None
        self._handshake_done()
        self.accounted = True
        self.guard.write(self._listener.answer_plain(head, self.peer))
        self.guard.close()

    def _plain_too_large(self) -> None:
        assert self.guard is not None
        self.accounted = True
        self._listener.shared.stats.refusals[Refusal.HEADER_SIZE] += 1
        self.guard.close()  # writes the 431 (guard.unanswered)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self._handshake_done()
        super().connection_lost(exc)
        connection = self.connection
        if connection is not None:
            # Accepted by Listener.answer but never upgraded (picows refused the
            # request after us): on_ws_disconnected will not run, so release here.
            connection.release()
        never_upgraded = connection is None or connection.transport is None
        if never_upgraded and not self.accounted and self.guard is not None and self.guard.wrote:
            # picows answered 400 itself: a malformed request, before or after Listener.answer.
            self._listener.shared.stats.refusals[Refusal.BAD_REQUEST] += 1
        self.connection = None  # the connection holds the session; let both go with this protocol
        self.guard = None

    def _handshake_timeout_callback(self) -> None:
        """picows' handshake timeout fired: answer 408 before it drops the client."""
        if self.guard is not None and not self.guard.wrote:
            self.accounted = True
            self._listener.shared.stats.refusals[Refusal.HANDSHAKE_TIMEOUT] += 1
            self.guard.unanswered = self._listener.timed_out
            remote = format_peer(self.peer)
            log.info("%s handshake not completed in time: 408", remote,
                     extra={"remote": remote, "status": 408})
        super()._handshake_timeout_callback()

    def _listener_for(self, request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        assert self.guard is not None
        self._handshake_done()
        answer = self._listener.answer(request, self.peer, self.guard)
        self.peer = None  # the session has it as text now; a tuple less per idle connection
        if isinstance(answer, Connection):
            self.connection = answer
            extensions = answer.ws.deflate.response if isinstance(answer, DeflateConnection) else None
            response = self._listener.switching(answer.subprotocol, extensions)
            return WSUpgradeResponseWithListener(response, answer)
        self.accounted = True
        return WSUpgradeResponseWithListener(_picows_response(answer), None)

    # -- the logger interface picows uses --------------------------------------

    def isEnabledFor(self, level: int) -> bool:
        return _picows_log.isEnabledFor(level)

    def log(self, level: int, msg: str, *args: Any) -> None:
        _picows_log.log(level, msg, *args)

    def debug(self, msg: str, *args: Any) -> None:
        _picows_log.debug(msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        if is_header_overflow(msg):
            self.accounted = True
            self._listener.shared.stats.refusals[Refusal.HEADER_SIZE] += 1
        _picows_log.log(PICOWS_DEBUG_LL, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        _picows_log.log(PICOWS_DEBUG_LL, msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        failure = parser_error(msg, args)
        if failure is not None and self.connection is not None:
            self.connection.parser_failed(*failure)
        _picows_log.log(PICOWS_DEBUG_LL, msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        if is_parser_failure(msg) and self.connection is not None:
            self.connection.parser_failed(CloseCode.PROTOCOL_ERROR, "frame parser failure")
        _picows_log.error(msg, *args, exc_info=True)


def _picows_response(answer: Response) -> Any:
    headers = {"Content-Type": answer.content_type, **answer.headers}
    if answer.status >= 400:
        return WSUpgradeResponse.create_error_response(answer.status, answer.body, headers)
    return WSUpgradeResponse.create_ok_response(answer.body, headers)
