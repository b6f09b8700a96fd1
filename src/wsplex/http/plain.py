"""HEAD and HTTP/1.0 requests on the HTTP routes, which the WebSocket library refuses.

picows answers every request that is not ``GET ... HTTP/1.1`` with 400, yet
health checks send exactly those: HAProxy's ``option httpchk`` defaults to
``OPTIONS / HTTP/1.0``, nginx talks HTTP/1.0 to an upstream unless told
``proxy_http_version 1.1``, monitoring tools send ``HEAD``. The transport reads
the request line before picows does (:mod:`wsplex.transport.plain_http`);
for the lines :func:`answered_here` picks it reads the head with
:func:`parse_request` and answers from the routes itself.

Rules (RFC 9110 §9.3.2, RFC 9112 §2.3, §9.3): a HEAD response is the GET
response without its body (``Content-Length`` still the body's); the answer to
HTTP/1.0 is HTTP/1.1, the highest version we speak; every response closes the
connection, as the routes' responses always do. A WebSocket upgrade needs
``GET`` over HTTP/1.1 (RFC 6455 §4.1): HEAD or HTTP/1.0 with ``Upgrade`` gets 400.
"""

from __future__ import annotations

from typing import Any, Final

from wsplex.http.handshake import Request

#: Methods answered from the routes; what else comes over HTTP/1.0 is picows' 400.
METHODS: Final = (b"GET", b"HEAD")
VERSIONS: Final = (b"HTTP/1.1", b"HTTP/1.0")
END_OF_HEAD: Final = b"\r\n\r\n"


def answered_here(request_line: bytes) -> bool:
    """True for ``HEAD`` (HTTP/1.1 or 1.0) and ``GET`` over HTTP/1.0."""
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] not in METHODS or parts[2] not in VERSIONS:
        return False
    return parts[0] == b"HEAD" or parts[2] == b"HTTP/1.0"


def parse_request(head: bytes, peer: Any) -> Request | str:
    """The request in ``head`` (request line and headers, without the blank line), or
    why it cannot be answered (a malformed header, a body)."""
    lines = head.split(b"\r\n")
    method, target, version = lines[0].split(b" ")
    if not target:
        return "HTTP request target cannot be empty"
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            return f"malformed header in HTTP request: {line!r}"
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    request = Request(method, target, version, headers, peer)
    length = request.header("Content-Length")
    if request.header("Transfer-Encoding") is not None or (length and length.strip("0")):
        return "HTTP request bodies are not supported"
    return request


def without_body(response: bytes) -> bytes:
    """A HEAD response: the GET response's status line and headers only."""
    end = response.index(END_OF_HEAD) + len(END_OF_HEAD)
    return response[:end]
