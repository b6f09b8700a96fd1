"""The minimal aiohttp server (``web.WebSocketResponse``), on uvloop."""

from __future__ import annotations

import asyncio

import orjson
import uvloop
from _common import parse_port, raise_fd_limit, route_header
from aiohttp import WSMsgType, web

ECHO: set[web.WebSocketResponse] = set()
ROOM: set[web.WebSocketResponse] = set()
NAMES: dict[str, web.WebSocketResponse] = {}


async def opened(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    return ws


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = await opened(request)
    ECHO.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                for peer in list(ECHO):
                    await peer.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                for peer in list(ECHO):
                    await peer.send_bytes(msg.data)
    finally:
        ECHO.discard(ws)
    return ws


async def chat(request: web.Request) -> web.WebSocketResponse:
    ws = await opened(request)
    name = request.query.get("name", "guest")
    ROOM.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                line = f"[{name}] {msg.data}"
                for peer in list(ROOM):
                    if peer is not ws:
                        await peer.send_str(line)
    finally:
        ROOM.discard(ws)
    return ws


async def route(request: web.Request) -> web.WebSocketResponse:
    ws = await opened(request)
    name = None
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            sender, to = route_header(msg.data.encode(), orjson.loads)
            if name is None and isinstance(sender, str):
                name = sender
                NAMES[name] = ws
            if isinstance(to, str) and (peer := NAMES.get(to)) is not None:
                await peer.send_str(msg.data)
    finally:
        if name is not None:
            NAMES.pop(name, None)
    return ws


async def main() -> None:
    app = web.Application()
    app.add_routes([web.get("/echo", echo), web.get("/chat", chat), web.get("/route", route)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", parse_port(), backlog=4096).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    raise_fd_limit()
    uvloop.run(main())
