"""The opening handshake as a decision: request in, :class:`Accept` or refusal out.

A pure function of the request and the server's settings, so every status is
tested without a socket (``tests/test_http_handshake.py``); the transport
translates the outcome into the WebSocket library's response. In order:

1. request line plus headers over ``--max-header-size``: 431 (SPEC §8);
2. no ``Upgrade: websocket``: plain HTTP, :class:`Route` (SPEC §1);
3. a path that takes no upgrade: 404. ``/`` and ``/ws`` take every protocol,
   ``/mqtt`` only ``mqtt`` (SPEC §11, the path MQTT clients use by default);
4. ``Sec-WebSocket-Version`` other than 13: 426 naming 13 (RFC 6455 §4.2.2);
5. an ``Origin`` outside ``--origin``: 403 (RFC 6455 §4.2.2, §10.2);
6. no offered protocol the server has: 400 naming the ones it has (SPEC §1).

An accepted upgrade also carries the permessage-deflate parameters in force
(:func:`wsplex.ws.deflate.negotiate`, SPEC §14), None when the client offered
none the server takes or ``--no-compression``: extensions never refuse.

Counting a connection slot is a side effect, so it is not done here: an
:class:`Accept` names the client ``address`` to admit, and the caller asks
:meth:`~wsplex.http.admission.ConnectionCounter.admit`, whose refusal (503) it
answers like any other. Malformed requests (a method other than GET, a
missing key) never get here: the WebSocket library answers them with 400
itself. HEAD and HTTP/1.0 requests, which it refuses too, are read by wsplex
(:mod:`wsplex.http.plain`) and come here like the others.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from wsplex.app.registry import ProtocolRegistry, parse_offer
from wsplex.config import Settings
from wsplex.http.admission import Refusal, Refused, header_size, origin_allowed
from wsplex.http.forwarded import forwarded_client, forwarded_hops, networks
from wsplex.http.routes import Response
from wsplex.ws.deflate import Deflate, DeflateSettings, negotiate

#: Paths that take an upgrade for every protocol.
WEBSOCKET_PATHS = frozenset({"/", "/ws"})
#: Paths that take an upgrade for one protocol only (SPEC §11: ``/mqtt``).
PROTOCOL_PATHS = {"/mqtt": "mqtt"}
#: The one version of RFC 6455 (§4.2.2: answer 426 with it for any other).
WEBSOCKET_VERSION = "13"


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of an upgrade request the decision reads, as they came on the wire."""

    method: bytes
    target: bytes
    version: bytes
    headers: Sequence[tuple[str, str]]
    peer: Any = None  # the socket's peer address, ``(host, port, ...)``

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive, RFC 9110 §5.1)."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]


@dataclass(frozen=True, slots=True)
class Accept:
    """Upgrade: ``protocol`` was chosen; echo ``subprotocol`` (RFC 6455 §4.2.2).

    ``subprotocol`` is None when the client offered none and fell back to
    ``--default-protocol``: a server must not echo a name that was not offered.
    """

    protocol: str
    subprotocol: str | None
    path: str
    query: str  # raw: the session parses it when a protocol asks
    offered: tuple[str, ...]
    address: str  # the client address to admit (see the module docstring)
    remote: str  # the peer as people read it, for logs and ``clients``
    deflate: Deflate | None = None  # permessage-deflate in force (RFC 7692), answered in the 101


@dataclass(frozen=True, slots=True)
class Route:
    """Not an upgrade: a plain HTTP request for the routes (SPEC §1)."""

    target: str


Decision = Accept | Route | Refused


def decide(request: Request, settings: Settings, registry: ProtocolRegistry) -> Decision:
    """The handshake's outcome, by the rules in the module docstring, in that order."""
    limit = settings.max_header_size
    if header_size(request.method, request.target, request.version, request.headers) > limit:
        return Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, Refusal.HEADER_SIZE,
                       f"request headers larger than {limit} bytes")
    target = request.target.decode("latin-1")
    if (request.header("Upgrade") or "").lower() != "websocket":
        return Route(target)
    url = urlsplit(target)
    path = url.path
    if path not in WEBSOCKET_PATHS and path not in PROTOCOL_PATHS:
        return Refused(HTTPStatus.NOT_FOUND, Refusal.PATH, f"no WebSocket endpoint at {path}")
    version = request.header("Sec-WebSocket-Version")
    if version != WEBSOCKET_VERSION:
        return Refused(HTTPStatus.UPGRADE_REQUIRED, Refusal.VERSION,
                       f"unsupported Sec-WebSocket-Version {version}; this server speaks 13",
                       (("Sec-WebSocket-Version", WEBSOCKET_VERSION),))
    origin = request.header("Origin")
    if settings.origins and not origin_allowed(origin, settings.origins):
        return Refused(HTTPStatus.FORBIDDEN, Refusal.ORIGIN, f"origin {origin} is not allowed")
    offered = parse_offer(request.header_values("Sec-WebSocket-Protocol"))
    chosen = registry.select(offered, settings.prefer, settings.default_protocol)
    if chosen is None:
        what = "no protocol" if not offered else "no supported protocol"
        return Refused(HTTPStatus.BAD_REQUEST, Refusal.PROTOCOL,
                       f"{what} offered in Sec-WebSocket-Protocol; "
                       f"this server speaks: {', '.join(registry.names)}")
    only = PROTOCOL_PATHS.get(path)
    if only is not None and chosen != only:
        return Refused(HTTPStatus.NOT_FOUND, Refusal.PATH,
                       f"no WebSocket endpoint at {path} for {chosen}; {path} is for {only}")
    return Accept(chosen, chosen if offered else None, path, url.query,
                  tuple(offered), *client_identity(request, settings),
                  choose_deflate(request, settings))


def choose_deflate(request: Request, settings: Settings) -> Deflate | None:
    """The permessage-deflate offer taken (RFC 7692 §5), unless compression is off."""
    if not settings.compression:
        return None
    offers = request.header_values("Sec-WebSocket-Extensions")
    if not offers:
        return None
    return negotiate(offers, DeflateSettings(
        settings.compression_context_takeover, settings.compression_server_window_bits,
        settings.compression_client_window_bits, settings.compression_memory_level,
        settings.compression_level, settings.compression_threshold))


def client_identity(request: Request, settings: Settings) -> tuple[str, str]:
    """``(address, remote)`` of the client: the peer, or behind a ``--trusted-proxy`` the
    client its ``X-Forwarded-For`` or ``Forwarded`` header names (:mod:`.forwarded`)."""
    address = client_address(request.peer)
    if settings.trusted_proxies:
        hops = forwarded_hops(request.header_values("X-Forwarded-For"),
                              request.header_values("Forwarded"))
        client = forwarded_client(address, hops, networks(settings.trusted_proxies))
        if client is not None:
            return client, client
    return address, format_peer(request.peer)


def client_address(peer: Any) -> str:
    """The host part of a peer address: what per-address limits count.

    Interned: the connections from one address (NAT, a proxy) share one string.
    """
    if isinstance(peer, tuple) and peer:
        return sys.intern(str(peer[0]))
    return str(peer or "unknown")


def format_peer(peer: Any) -> str:
    """``host:port`` for IPv4, ``[host]:port`` for IPv6."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer or "unknown")


def refusal_response(refused: Refused) -> Response:
    """The plain-text HTTP response for a refusal: its status, its reason, its headers."""
    return Response.text(refused.status, refused.text + "\n", **dict(refused.headers))
