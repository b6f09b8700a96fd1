"""Plain HTTP on the WebSocket port (SPEC §1): the web client, protocols, health.

Routing is a pure function of the request path, so it is tested without a
socket; ``server.py`` turns a :class:`Response` into the WebSocket library's
response object. The library only lets a GET over HTTP/1.1 without a body
through; HEAD and HTTP/1.0 are read by wsplex itself (:mod:`wsplex.http.plain`).
Every response closes the connection.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from urllib.parse import urlsplit

from wsplex import __version__
from wsplex.app.registry import ProtocolRegistry
from wsplex.hub.base import NodeHub

#: Paths that accept a WebSocket upgrade.
WEBSOCKET_PATHS = frozenset({"/", "/ws"})

_WEB = resources.files("wsplex") / "web"
_NO_STORE = {"Cache-Control": "no-store"}
#: The console loads only its own files; it may open WebSockets to any host the user types.
_PAGE_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss: http: https:; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Response:
    """An HTTP response to a plain request."""

    status: HTTPStatus
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: HTTPStatus, text: str, **headers: str) -> Response:
        return cls(status, text.encode(), headers=headers)

    @classmethod
    def json(cls, payload: object, status: HTTPStatus = HTTPStatus.OK, **headers: str) -> Response:
        body = json.dumps(payload, indent=2).encode() + b"\n"
        return cls(status, body, "application/json", {**_NO_STORE, **headers})


NOT_FOUND = Response.text(HTTPStatus.NOT_FOUND, "404 Not Found\n")

Route = Callable[[], Response]


class HttpApp:
    """The plain-HTTP routes of one server."""

    def __init__(
        self, registry: ProtocolRegistry, hub: NodeHub, metrics: Callable[[], Response] | None = None
    ) -> None:
        self.registry = registry
        self.hub = hub
        #: Set by the server's shutdown while it drains (``--drain-seconds``).
        self.draining = False
        self._routes: dict[str, Route] = {
            "/": lambda: static_file("index.html"),
            "/protocols": self.protocols,
            "/healthz": self.healthz,
        }
        if metrics is not None:
            self._routes["/metrics"] = metrics

    def handle(self, target: str) -> Response:
        """Answer ``GET target``."""
        path = urlsplit(target).path or "/"
        route = self._routes.get(path)
        if route is not None:
            return route()
        if path.startswith("/static/"):
            return static_file(path.removeprefix("/static/"))
        return NOT_FOUND

    def protocols(self) -> Response:
        """Public by nature; readable cross-origin so a console on one host can ask another."""
        payload = {"protocols": self.registry.describe()}
        return Response.json(payload, HTTPStatus.OK, **{"Access-Control-Allow-Origin": "*"})

    def healthz(self) -> Response:
        """200 while the node takes clients; 503 while it drains or Redis has not answered
        a bounded PING (``--redis-ping-timeout``), so a load balancer takes it out of rotation."""
        if self.draining:
            return Response.json({"status": "draining", "node": self.hub.node_id},
                                 HTTPStatus.SERVICE_UNAVAILABLE)
        problem = self.hub.health_problem
        if problem is None:
            return Response.json({"status": "ok", "version": __version__, "node": self.hub.node_id})
        return Response.json(
            {"status": "degraded: redis unavailable", "reason": problem, "node": self.hub.node_id},
            HTTPStatus.SERVICE_UNAVAILABLE,
        )


def static_file(name: str) -> Response:
    """A file shipped in ``wsplex/web``; no directories, no dot-files."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return NOT_FOUND
    resource = _WEB / name
    if not resource.is_file():
        return NOT_FOUND
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    # The page must never run stale against a newer server, and the files are
    # small: revalidate every time rather than cache.
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = _PAGE_POLICY
    return Response(HTTPStatus.OK, resource.read_bytes(), content_type, headers)
