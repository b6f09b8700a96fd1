"""Admission rules for the handshake (SPEC §8).

Plain values in, a decision out: no sockets, so each rule is tested on its own
and ``server.py`` only asks.

* :class:`ConnectionCounter` counts open connections in all and per client
  address. A connection is counted when the handshake is accepted and released
  exactly once when it goes away; past either cap the handshake is refused
  with HTTP 503.
* The message rate of an open connection is the transport's
  (:class:`wsplex.transport.pacing.FrameRate`): it counts by arrival, which
  only the transport can judge.
* :func:`origin_allowed` matches the ``Origin`` header against ``--origin``
  glob patterns.
* :func:`header_size` measures a request's header block the way it came on the
  wire, for ``--max-header-size``.
* :class:`HandshakeCounter` counts the TCP connections still in their
  handshake, per address and with the open ones; past either bound a new one
  is closed at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from http import HTTPStatus


class Refusal(StrEnum):
    """Why a handshake was refused: the ``reason`` label of ``/metrics`` refusals."""

    BAD_REQUEST = "bad_request"  # malformed HTTP, refused by picows with 400
    PATH = "path"
    PROTOCOL = "protocol"
    VERSION = "version"
    ORIGIN = "origin"
    MAX_CONNECTIONS = "max_connections"
    MAX_CONNECTIONS_PER_IP = "max_connections_per_ip"
    HEADER_SIZE = "header_size"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    #: TCP connections closed at once: too many from one address still in their handshake.
    MAX_HANDSHAKES_PER_IP = "max_handshakes_per_ip"
    #: ... or too many file descriptors taken by open and half-open connections together.
    MAX_HANDSHAKES = "max_handshakes"
    DRAINING = "draining"  # the server is shutting down (--drain-seconds)


@dataclass(frozen=True, slots=True)
class Refused:
    """A refusal with the status it produces (the h11 habit), a plain-text reason,
    and any header the status calls for (426 names the version, RFC 6455 §4.2.2)."""

    status: HTTPStatus
    reason: Refusal
    text: str
    headers: tuple[tuple[str, str], ...] = ()


#: The refusal of new upgrades while the server drains (``--drain-seconds``): a load
#: balancer sends the client to another node.
DRAINING = Refused(HTTPStatus.SERVICE_UNAVAILABLE, Refusal.DRAINING,
                   "server draining: shutting down, connect to another node")


#: Half-open connections allowed past the connection cap: a full server still answers
#: some with 503 "server full", out of the descriptors kept free (``server.FD_HEADROOM``).
HANDSHAKE_SPARE = 32


class HandshakeCounter:
    """TCP connections still in their handshake, per client address and with the open ones.

    A connection is counted from accept until its request is answered (upgraded,
    refused or served) or it ends; picows' handshake timeout bounds how long.
    Each one holds a file descriptor, so one address that connects and sends
    nothing could otherwise hold every descriptor the process has, and
    ``accept()`` would fail silently for everyone (issue 17 item 9: 20,000
    idle connects locked new clients out for 5.6 s). Past either bound the
    connection is closed at once: the request has not arrived, there is
    nothing to answer yet.

    * per address, ``max_per_address`` (``--max-handshakes-per-ip``); an
      address behind which clients handshake normally has a few at a time
      (a handshake takes a round trip or two), and a trusted proxy, which
      connects once it has the whole request, is not counted;
    * in all, open connections plus half-open ones stay under the connection
      cap plus :data:`HANDSHAKE_SPARE`, so descriptors run out here, with a
      log line and a metric, before they run out in ``accept()``.
    """

    __slots__ = ("_by_address", "connections", "max_per_address", "total")

    def __init__(self, max_per_address: int, connections: ConnectionCounter) -> None:
        self.max_per_address = max_per_address
        self.connections = connections
        self.total = 0
        self._by_address: Counter[str] = Counter()

    def admit(self, address: str, *, per_address: bool = True) -> Refused | None:
        """Count one more half-open connection from ``address``, or say why not."""
        connections = self.connections
        if connections.total + self.total >= connections.max_total + HANDSHAKE_SPARE:
            return Refused(HTTPStatus.SERVICE_UNAVAILABLE, Refusal.MAX_HANDSHAKES,
                           f"{connections.total} connections open and {self.total} in their "
                           f"handshake: at most {connections.max_total + HANDSHAKE_SPARE} in all")
        if per_address:
            if self._by_address[address] >= self.max_per_address:
                return Refused(HTTPStatus.SERVICE_UNAVAILABLE, Refusal.MAX_HANDSHAKES_PER_IP,
                               f"{address} has {self.max_per_address} connections in their "
                               "handshake (--max-handshakes-per-ip)")
            self._by_address[address] += 1
        self.total += 1
        return None

    def release(self, address: str, *, per_address: bool = True) -> None:
        """A connection counted by :meth:`admit` finished its handshake or went away."""
        self.total -= 1
        if per_address:
            left = self._by_address[address] - 1
            if left > 0:
                self._by_address[address] = left
            else:
                del self._by_address[address]

    def from_address(self, address: str) -> int:
        return self._by_address.get(address, 0)


class ConnectionCounter:
    """Open connections in all and per client address.

    A client address is the host part of the peer address: NAT and proxies put
    many users behind one, hence the generous default of 10,000 (SPEC §8).
    """

    __slots__ = ("_by_address", "max_per_address", "max_total", "total")

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self._by_address: Counter[str] = Counter()

    def admit(self, address: str) -> Refused | None:
        """Count one more connection from ``address``, or say why not."""
        if self.total >= self.max_total:
            return Refused(HTTPStatus.SERVICE_UNAVAILABLE, Refusal.MAX_CONNECTIONS,
                           f"server full: {self.max_total} connections open, try again later")
        if self._by_address[address] >= self.max_per_address:
            return Refused(HTTPStatus.SERVICE_UNAVAILABLE, Refusal.MAX_CONNECTIONS_PER_IP,
                           f"too many connections from {address}: at most {self.max_per_address}")
        self.total += 1
        self._by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        """A connection counted by :meth:`admit` went away."""
        self.total -= 1
        left = self._by_address[address] - 1
        if left > 0:
            self._by_address[address] = left
        else:
            del self._by_address[address]  # keep the table as small as the clients

    def from_address(self, address: str) -> int:
        return self._by_address.get(address, 0)


def origin_allowed(origin: str | None, patterns: Iterable[str]) -> bool:
    """True when ``origin`` matches one of the glob ``patterns`` (case-insensitive).

    A request without an ``Origin`` header is allowed: browsers always send one
    on a WebSocket handshake (RFC 6455 §4.1, §10.2), so its absence means a
    non-browser client, which could forge any origin anyway. The allow-list
    protects browser users from cross-site pages, which is all an origin check can do.
    """
    if origin is None:
        return True
    origin = origin.lower()
    return any(fnmatchcase(origin, pattern.lower()) for pattern in patterns)


def header_size(method: bytes, target: bytes, version: bytes, headers: Iterable[tuple[str, str]]) -> int:
    """Bytes of the request line and header fields, with their CRLFs, as sent."""
    size = len(method) + len(target) + len(version) + 4  # two spaces, CRLF
    for name, value in headers:
        size += len(name) + len(value) + 4  # ": " and CRLF
    return size
