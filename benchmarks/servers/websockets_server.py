"""The minimal websockets server (``websockets.asyncio``), on uvloop."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import orjson
import uvloop
from _common import parse_port, raise_fd_limit, route_header
from websockets.asyncio.server import ServerConnection, broadcast, serve

ECHO: set[ServerConnection] = set()
ROOM: set[ServerConnection] = set()
NAMES: dict[str, ServerConnection] = {}


async def echo(ws: ServerConnection) -> None:
    ECHO.add(ws)
    try:
        async for message in ws:
            broadcast(ECHO, message)
    finally:
        ECHO.discard(ws)


async def chat(ws: ServerConnection, name: str) -> None:
    ROOM.add(ws)
    try:
        async for message in ws:
            broadcast((peer for peer in ROOM if peer is not ws), f"[{name}] {message!s}")
    finally:
        ROOM.discard(ws)


async def route(ws: ServerConnection) -> None:
    name = None
    try:
        async for message in ws:
            payload = message.encode() if isinstance(message, str) else message
            sender, to = route_header(payload, orjson.loads)
            if name is None and isinstance(sender, str):
                name = sender
                NAMES[name] = ws
            if isinstance(to, str) and (peer := NAMES.get(to)) is not None:
                await peer.send(message)
    finally:
        if name is not None:
            NAMES.pop(name, None)


async def handler(ws: ServerConnection) -> None:
    assert ws.request is not None
    url = urlsplit(ws.request.path)
    if url.path == "/echo":
        await echo(ws)
    elif url.path == "/chat":
        await chat(ws, parse_qs(url.query).get("name", ["guest"])[0])
    elif url.path == "/route":
        await route(ws)


async def main() -> None:
    async with serve(handler, "127.0.0.1", parse_port(), compression=None, max_size=1 << 20) as server:
        await server.serve_forever()


if __name__ == "__main__":
    logging.getLogger("websockets").setLevel(logging.ERROR)
    raise_fd_limit()
    uvloop.run(main())
