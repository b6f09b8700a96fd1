"""STOMP clients for the tests: stomp.py over WebSocket, and raw frames over ``websockets``.

stomp.py is a threaded client: its blocking calls run in a worker thread
(``asyncio.to_thread``) so the in-process server keeps running, and what its
listener hears goes to a queue the test awaits. No sleeps: a test waits for
a frame, a receipt, or the close.
"""

from __future__ import annotations

import asyncio
import queue
import socket
from typing import Any

import stomp  # type: ignore[import-untyped]
from stomp.utils import Frame as ClientFrame  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from wsplex.protocols.stomp.frames import Frame, FrameParser, encode
from wsplex.server import Server

__all__ = ["ClientFrame", "RawStomp", "StompPy"]

TIMEOUT = 5.0


class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self, events: queue.Queue[tuple[str, ClientFrame | None]]) -> None:
        self.events = events
        self.session: str | None = None  # CONNECTED's session header

    def on_connected(self, frame: ClientFrame) -> None:
        self.session = frame.headers.get("session")

    def on_message(self, frame: ClientFrame) -> None:
        self.events.put(("MESSAGE", frame))

    def on_receipt(self, frame: ClientFrame) -> None:
        self.events.put(("RECEIPT", frame))

    def on_error(self, frame: ClientFrame) -> None:
        self.events.put(("ERROR", frame))

    def on_disconnected(self) -> None:
        self.events.put(("DISCONNECTED", None))

    def on_heartbeat(self) -> None:
        if self.heart_beats:
            self.events.put(("HEARTBEAT", None))

    heart_beats = False  # report the server's heart-beats as events (only tests of them want it)


class StompPy:
    """One stomp.py ``WSStompConnection`` (STOMP 1.2) to ``server``."""

    def __init__(self, server: Server, protocol: str = "v12.stomp", *, binary: bool = False,
                 heart_beats: tuple[int, int] = (0, 0)) -> None:
        self.events: queue.Queue[tuple[str, ClientFrame | None]] = queue.Queue()
        self.conn = stomp.WSStompConnection(
            [("127.0.0.1", server.port)], header={"Sec-WebSocket-Protocol": protocol},
            binary_mode=binary, reconnect_attempts_max=1, auto_decode=False, heartbeats=heart_beats,
        )
        self.listener = _Listener(self.events)
        self.listener.heart_beats = heart_beats != (0, 0)
        self.conn.set_listener("test", self.listener)
        self._receipts = 0

    async def connect(self) -> None:
        await asyncio.to_thread(self.conn.connect, wait=True)

    @property
    def session(self) -> str | None:
        return self.listener.session

    async def event(self, kind: str) -> ClientFrame | None:
        """The next event, which must be a ``kind``: anything else first fails the test."""
        got, frame = await asyncio.to_thread(self.events.get, timeout=TIMEOUT)
        assert got == kind, (got, frame.headers if frame is not None else None,
                             frame.body if frame is not None else None)
        return frame

    async def next(self, kind: str) -> ClientFrame:
        frame = await self.event(kind)
        assert frame is not None, kind
        return frame

    async def message(self) -> ClientFrame:
        return await self.next("MESSAGE")

    async def receipt(self, **frame: Any) -> None:
        """Wait for the RECEIPT of a frame sent with ``receipt=`` (see :meth:`receipt_id`)."""
        got = await self.next("RECEIPT")
        assert got.headers["receipt-id"] == frame.get("id", got.headers["receipt-id"])

    def receipt_id(self) -> str:
        self._receipts += 1
        return f"r{self._receipts}"

    async def subscribe(self, destination: str, id: str, ack: str = "auto", **headers: str) -> None:
        """SUBSCRIBE and wait for its receipt: from then on the subscription is in place."""
        receipt = self.receipt_id()
        self.conn.subscribe(destination, id=id, ack=ack, headers={"receipt": receipt, **headers})
        await self.receipt(id=receipt)

    async def send(self, destination: str, body: str | bytes, **headers: str) -> None:
        """SEND and wait for its receipt: by then the server has dispatched it."""
        receipt = self.receipt_id()
        self.conn.send(destination, body, headers={"receipt": receipt, **headers})
        await self.receipt(id=receipt)

    async def disconnect(self) -> None:
        if self.conn.is_connected():
            await asyncio.to_thread(self.conn.disconnect)

    async def drop(self) -> None:
        """Go away without DISCONNECT or a close frame: the TCP connection ends under the client
        (a shutdown, which a close() would not do while its reader thread is in recv())."""
        self.conn.transport.socket.sock.shutdown(socket.SHUT_RDWR)
        assert await self.event("DISCONNECTED") is None


class RawStomp:
    """STOMP frames written by hand over a ``websockets`` client, for byte-exact cases."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.parser = FrameParser(1 << 24, "1.2")
        self.frames: list[Frame] = []

    @classmethod
    async def open(cls, server: Server, protocol: str = "v12.stomp") -> RawStomp:
        ws = await connect(f"ws://127.0.0.1:{server.port}/", subprotocols=[Subprotocol(protocol)])
        return cls(ws)

    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def frame(self, command: str, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        await self.ws.send(encode(command, list((headers or {}).items()), body))

    async def connect(self, **headers: str) -> Frame:
        await self.frame("CONNECT", {"accept-version": "1.2", "host": "test", **headers})
        connected = await self.next()
        assert connected.command == "CONNECTED", connected
        return connected

    async def raw(self) -> str | bytes:
        return await asyncio.wait_for(self.ws.recv(), TIMEOUT)

    async def next(self) -> Frame:
        """The next frame from the server, whatever WebSocket messages carried it."""
        while not self.frames:
            message = await self.raw()
            self.frames += self.parser.feed(message.encode() if isinstance(message, str) else message)
        return self.frames.pop(0)

    async def closed(self) -> int | None:
        """Read until the server closes; its close code."""
        await asyncio.wait_for(self.ws.wait_closed(), TIMEOUT)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
