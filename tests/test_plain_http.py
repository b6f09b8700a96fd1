"""HEAD and HTTP/1.0 on the HTTP routes, answered by wsplex before picows sees them
(``wsplex.http.plain``, ``wsplex.transport.plain_http``), byte for byte over raw sockets."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from support import ServerFactory, Spawn, ws_url
from support.tls import make_certificate
from wsplex.http.plain import answered_here, parse_request, without_body
from wsplex.server import Server

TIMEOUT = 10.0


async def exchange(server: Server, request: bytes, *, chunks: int = 1) -> bytes:
    """Send ``request`` (in ``chunks`` writes) and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    step = max(1, len(request) // chunks)
    for start in range(0, len(request), step):
        writer.write(request[start:start + step])
        await writer.drain()
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    return answer


def split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


async def test_head_is_get_without_the_body(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    get = await exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await exchange(server, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split(head)
    assert status == "HTTP/1.1 200 OK" and body == b""
    assert head == get[:len(head)] and get[len(head):] == split(get)[2]
    assert int(headers["Content-Length"]) == len(split(get)[2])
    assert headers["Connection"] == "close" and headers["Content-Type"] == "application/json"


async def test_http_1_0_gets_the_full_response_and_a_close(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    status, headers, body = split(await exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK" and headers["Connection"] == "close"
    assert json.loads(body)["status"] == "ok" and int(headers["Content-Length"]) == len(body)
    status, headers, body = split(await exchange(server, b"HEAD /protocols HTTP/1.0\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK" and body == b"" and int(headers["Content-Length"]) > 0
    status, _, body = split(await exchange(server, b"GET /nope HTTP/1.0\r\nHost: x\r\n\r\n"))
    assert status == "HTTP/1.1 404 Not Found" and body == b"404 Not Found\n"


async def test_a_request_line_in_pieces(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    request = b"HEAD /healthz HTTP/1.0\r\nUser-Agent: probe\r\n\r\n"
    status, _, body = split(await exchange(server, request, chunks=len(request)))
    assert status == "HTTP/1.1 200 OK" and body == b""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # picows' after all: handed over
    status, _, body = split(await exchange(server, request, chunks=len(request)))
    assert status == "HTTP/1.1 200 OK" and json.loads(body)["status"] == "ok"


async def test_what_is_still_refused(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    upgrade = (b"HEAD / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Protocol: echo\r\n\r\n")
    status, headers, body = split(await exchange(server, upgrade))
    assert status == "HTTP/1.1 400 Bad Request" and body == b""  # HEAD: no body, even for an error
    assert headers["Connection"] == "close"
    old = b"GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n"  # no key, no version: 400 all the same
    status, _, body = split(await exchange(server, old))
    assert status == "HTTP/1.1 400 Bad Request" and b"needs GET over HTTP/1.1" in body
    status, _, body = split(await exchange(server, b"GET / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"))
    assert status == "HTTP/1.1 400 Bad Request" and b"bodies are not supported" in body
    status, _, _ = split(await exchange(server, b"POST / HTTP/1.0\r\n\r\n"))
    assert status.startswith("HTTP/1.1 400")  # picows' refusal, as before
    assert server.stats.refusals["bad_request"] == 4
    async with connect(ws_url(server), subprotocols=["echo"]) as ws:  # type: ignore[list-item]
        await ws.send("upgrades still work")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "upgrades still work"


async def test_oversize_head_gets_431(start_server: ServerFactory) -> None:
    server = await start_server(protocols=("echo",))
    request = b"HEAD / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    status, _, _ = split(await exchange(server, request))
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert server.stats.refusals["header_size"] == 1


@pytest.mark.parametrize(("line", "ours"), [
    (b"HEAD / HTTP/1.1", True), (b"HEAD / HTTP/1.0", True), (b"GET / HTTP/1.0", True),
    (b"GET / HTTP/1.1", False), (b"POST / HTTP/1.0", False), (b"HEAD / HTTP/2", False),
    (b"HEAD  / HTTP/1.1", False), (b"head / HTTP/1.1", False),
])
def test_which_request_lines_are_answered_here(line: bytes, ours: bool) -> None:
    assert answered_here(line) is ours


def test_parse_request() -> None:
    request = parse_request(b"HEAD /healthz?x=1 HTTP/1.0\r\nHost:  a \r\nX-Y: z", None)
    assert not isinstance(request, str)
    assert (request.method, request.target, request.version) == (b"HEAD", b"/healthz?x=1", b"HTTP/1.0")
    assert request.headers == [("Host", "a"), ("X-Y", "z")]
    assert "malformed header" in str(parse_request(b"HEAD / HTTP/1.0\r\nno colon", None))
    assert "malformed header" in str(parse_request(b"HEAD / HTTP/1.0\r\n folded: x", None))
    assert "bodies" in str(parse_request(b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked", None))
    assert not isinstance(parse_request(b"GET / HTTP/1.0\r\nContent-Length: 0", None), str)
    assert without_body(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody") == b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"


async def raw_exchange(port: int, request: bytes, tls: ssl.SSLContext | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    return answer


@pytest.mark.parametrize("secure", [False, True])
async def test_a_real_wsplex_answers_head_and_http_1_0(spawn: Spawn, tmp_path: Path,
                                                      secure: bool) -> None:
    """The wsplex command, on uvloop, with and without TLS."""
    tls, args = None, ["--protocols", "echo"]
    if secure:
        cert, key = make_certificate(tmp_path, "probe")
        tls = ssl.create_default_context(cafile=str(cert))
        args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    child = spawn(*args)
    status, headers, body = split(await raw_exchange(child.port, b"HEAD /healthz HTTP/1.0\r\n\r\n", tls))
    assert status == "HTTP/1.1 200 OK" and body == b"" and headers["Connection"] == "close"
    status, _, body = split(await raw_exchange(child.port, b"GET /healthz HTTP/1.0\r\n\r\n", tls))
    assert status == "HTTP/1.1 200 OK" and json.loads(body)["status"] == "ok"
    url = f"{'wss' if secure else 'ws'}://127.0.0.1:{child.port}/"
    async with connect(url, subprotocols=["echo"], ssl=tls) as ws:  # type: ignore[list-item]
        await ws.send("x" * 100_000)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "x" * 100_000
    await asyncio.to_thread(child.read_until, r"HEAD /healthz 200")
