"""The minimal picows server: ``ws_create_server`` with its defaults, on uvloop."""

from __future__ import annotations

import orjson
import uvloop
from _common import parse_port, raise_fd_limit, route_header
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

DATA = (WSMsgType.TEXT, WSMsgType.BINARY)
ECHO: set[WSTransport] = set()
ROOM: dict[WSTransport, bytes] = {}
NAMES: dict[str, WSTransport] = {}


class Base(WSListener):  # type: ignore[misc]
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type in DATA:
            self.on_message(transport, frame.msg_type, frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_message(self, transport: WSTransport, msg_type: WSMsgType, payload: bytes) -> None:
        raise NotImplementedError


class Echo(Base):
    def on_ws_connected(self, transport: WSTransport) -> None:
        ECHO.add(transport)

    def on_message(self, transport: WSTransport, msg_type: WSMsgType, payload: bytes) -> None:
        for peer in ECHO:
            peer.send(msg_type, payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        ECHO.discard(transport)


class Chat(Base):
    def __init__(self, name: str) -> None:
        self.prefix = f"[{name}] ".encode()

    def on_ws_connected(self, transport: WSTransport) -> None:
        ROOM[transport] = self.prefix

    def on_message(self, transport: WSTransport, msg_type: WSMsgType, payload: bytes) -> None:
        line = self.prefix + payload
        for peer in ROOM:
            if peer is not transport:
                peer.send(WSMsgType.TEXT, line)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        ROOM.pop(transport, None)


class Route(Base):
    def __init__(self) -> None:
        self.name: str | None = None

    def on_message(self, transport: WSTransport, msg_type: WSMsgType, payload: bytes) -> None:
        sender, to = route_header(payload, orjson.loads)
        if self.name is None and isinstance(sender, str):
            self.name = sender
            NAMES[sender] = transport
        if isinstance(to, str) and (peer := NAMES.get(to)) is not None:
            peer.send(WSMsgType.TEXT, payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.name is not None:
            NAMES.pop(self.name, None)


def listener(request: WSUpgradeRequest) -> WSListener | None:
    path, _, query = request.path.decode().partition("?")
    if path == "/echo":
        return Echo()
    if path == "/chat":
        return Chat(dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("name", "guest"))
    if path == "/route":
        return Route()
    return None


async def main() -> None:
    server = await ws_create_server(listener, "127.0.0.1", parse_port())
    await server.serve_forever()


if __name__ == "__main__":
    raise_fd_limit()
    uvloop.run(main())
