"""python-socketio, the full-featured peer: a room broadcast, on aiohttp and uvloop.

Every client joins room ``lobby`` on connect; a ``chat`` event goes to every
other member of the room as ``[name] text`` (``emit(..., room=, skip_sid=)``).
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import socketio
import uvloop
from _common import parse_port, raise_fd_limit
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
NAMES: dict[str, str] = {}


@sio.event
async def connect(sid: str, environ: dict[str, str]) -> None:
    NAMES[sid] = parse_qs(environ.get("QUERY_STRING", "")).get("name", ["guest"])[0]
    await sio.enter_room(sid, "lobby")


@sio.event
async def chat(sid: str, text: str) -> None:
    await sio.emit("chat", f"[{NAMES[sid]}] {text}", room="lobby", skip_sid=sid)


@sio.event
async def disconnect(sid: str, *args: object) -> None:
    NAMES.pop(sid, None)


async def main() -> None:
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", parse_port(), backlog=4096).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    raise_fd_limit()
    uvloop.run(main())
