"""The composition root: settings in, a running server out.

:class:`Server` builds the hub, the protocols and the HTTP routes, binds the
handshake decision (:mod:`wsplex.http.handshake`) to them, and asks the
transport to listen. It runs what spans every connection: the keepalive sweep
and the graceful shutdown. The WebSocket library stays inside
:mod:`wsplex.transport`: nothing here imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

from wsplex.app.protocol import Context, Protocol
from wsplex.app.registry import ProtocolRegistry
from wsplex.app.users import Users, UsersFileError
from wsplex.config import Settings
from wsplex.http.admission import ConnectionCounter
from wsplex.http.handshake import decide
from wsplex.http.metrics import MetricsEndpoint
from wsplex.http.routes import HttpApp
from wsplex.hub import NodeHub, create_hub
from wsplex.stats import Stats
from wsplex.transport.connection import Connection, Shared
from wsplex.transport.flusher import Flusher
from wsplex.transport.listener import Listener
from wsplex.ws.close import CloseCode

log = logging.getLogger("wsplex.server")

#: How often the shutdown checks whether every connection has gone.
_DRAIN_POLL = 0.05


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """Server-side TLS for ``wss://`` and ``https://`` on the one port (SPEC §8)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


#: Descriptors kept free of connections: the listener, Redis, logs, files, accept bursts.
FD_HEADROOM = 64


def connection_cap(wanted: int) -> int:
    """``--max-connections``, lowered to what the process may open (issue 17 item 9).

    Each connection is one file descriptor. Past the soft ``RLIMIT_NOFILE``
    ``accept()`` fails and the client is dropped with no answer, no log and no
    metric; below the cap it gets 503 "server full" like any other refusal.
    The soft limit is first raised as far as the hard limit allows, as a
    server that expects thousands of connections should.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - FD_HEADROOM >= wanted:
        return wanted
    needed = wanted + FD_HEADROOM
    raised = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if raised > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
        if soft - FD_HEADROOM >= wanted:
            return wanted
    allowed = max(1, soft - FD_HEADROOM)
    log.warning("--max-connections %d is more than this process may open (open files limit %d): "
                "serving at most %d connections; raise the limit (ulimit -n, LimitNOFILE) for more",
                wanted, soft, allowed)
    return allowed


class Server:
    """A wsplex server: protocols, hub, HTTP routes and the listening socket."""

    def __init__(self, settings: Settings, hub: NodeHub | None = None) -> None:
        self.settings = settings
        self.node_id = settings.node_id or os.urandom(3).hex()
        self.stats = Stats()
        self.hub = hub or create_hub(settings, self.node_id, self.stats)
        self.registry = ProtocolRegistry.build(settings.protocols, settings.protocol_modules)
        self.context = Context(settings, self.hub, self.stats, self.registry, self.request_shutdown)
        self.protocols: dict[str, Protocol] = {cls.name: cls(self.context) for cls in self.registry}
        self.hub.bind(self.protocols)  # they render publications for their own sessions
        self.http = HttpApp(self.registry, self.hub, MetricsEndpoint(self.stats, tuple(self.registry.names)))
        self.counter = ConnectionCounter(connection_cap(settings.max_connections),
                                         settings.max_connections_per_ip)
        shared = Shared(
            settings, self.stats, self.hub, self.counter, Flusher(),
            send_buffer_cap=max(settings.max_send_buffer, 2 * settings.max_message_size),
            connections=set(),
        )
        self.listener = Listener(shared, self.protocols,
                                 partial(decide, settings=settings, registry=self.registry),
                                 self.http.handle)
        self._keepalive: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal cuts --drain-seconds short
        self.tls: ssl.SSLContext | None = None

    @property
    def connections(self) -> set[Connection]:
        return self.listener.connections

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open the listening socket; returns once it accepts connections."""
        await self.hub.start()
        for protocol in self.protocols.values():
            await protocol.start()
        settings = self.settings
        tls = None
        if settings.tls_cert is not None and settings.tls_key is not None:
            tls = self.tls = tls_context(settings.tls_cert, settings.tls_key)
        await self.listener.start(tls)
        if settings.ping_interval > 0:
            self._keepalive = asyncio.create_task(self._keepalive_loop())
        log.info("wsplex listening on %s%s, protocols %s", ", ".join(self.addresses),
                 " (TLS)" if tls is not None else "", ", ".join(self.registry.names))

    @property
    def addresses(self) -> list[str]:
        return self.listener.addresses

    @property
    def port(self) -> int:
        return self.listener.port

    def request_shutdown(self) -> None:
        """Ask for a graceful shutdown (signal handlers, ``killserver``); asked again, skip
        what is left of ``--drain-seconds``."""
        if self._stopping.is_set():
            self._hurry.set()
        self._stopping.set()

    def reload(self) -> None:
        """SIGHUP: read the TLS certificate and key and the ``--users`` file again.

        Open connections are untouched; new TLS handshakes use the new
        certificate (the listener's context is loaded in place). A file that
        cannot be used is logged and the one in use kept.
        """
        settings = self.settings
        if self.tls is not None and settings.tls_cert is not None and settings.tls_key is not None:
            try:
                # Into a throwaway context first: a load that fails half way (the new
                # certificate read, the key refused) would leave the live one mismatched.
                tls_context(settings.tls_cert, settings.tls_key)
                self.tls.load_cert_chain(settings.tls_cert, settings.tls_key)
            except (OSError, ssl.SSLError) as exc:
                log.error("SIGHUP: cannot reload the TLS certificate %s: %s; keeping the old one",
                          settings.tls_cert, exc)
            else:
                log.info("SIGHUP: reloaded the TLS certificate %s", settings.tls_cert)
        if settings.users_file is not None:
            try:
                fresh = Users.load(settings.users_file)
            except UsersFileError as exc:
                log.error("SIGHUP: cannot reload --users: %s; keeping the old users", exc)
            else:
                self.context.users.take(fresh)
                log.info("SIGHUP: reloaded --users %s (%d users)", settings.users_file, len(fresh))

    async def serve_forever(self) -> None:
        """Serve until :meth:`request_shutdown`, then shut down gracefully."""
        await self._stopping.wait()
        await self.stop()

    async def stop(self) -> None:
        """Close every connection with 1001 and wait for them, at most ``shutdown_timeout`` (SPEC §8).

        With ``--drain-seconds`` the node first drains: see :meth:`_stand_down`.
        """
        if self.settings.drain_seconds > 0 and not self._hurry.is_set():
            await self._stand_down(self.settings.drain_seconds)
        self.listener.close()
        if self._keepalive is not None:
            self._keepalive.cancel()
        for protocol in self.protocols.values():
            try:
                protocol.shutting_down()
            except Exception:  # one protocol's goodbye must not stop the shutdown
                log.exception("protocol %s failed to say goodbye", protocol.name)
        for connection in list(self.connections):
            connection.session.close(CloseCode.GOING_AWAY, "server shutting down")
        await self._drain(self.settings.shutdown_timeout)
        for protocol in self.protocols.values():
            await protocol.stop()
        await self.hub.stop()
        log.info("wsplex stopped")

    async def _stand_down(self, seconds: float) -> None:
        """Keep serving open connections, but answer ``/healthz`` 503 "draining" and new
        upgrades 503, so a load balancer stops sending clients here before they are closed."""
        self.http.draining = self.listener.draining = True
        log.info("draining for %g s: /healthz answers 503, new upgrades are refused, "
                 "%d open connections stay until then", seconds, len(self.connections))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), seconds)

    async def _drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(_DRAIN_POLL)
        for connection in list(self.connections):
            connection.abort()
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
