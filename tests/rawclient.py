"""A byte-level WebSocket client over asyncio streams, for wire edge cases.

The ``websockets`` library refuses to send broken frames, so tests that must
send exactly the bytes they mean use this. asyncio streams, not blocking
sockets: the server under test runs on the same event loop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import struct
from dataclasses import dataclass

from wsplex.wire import Opcode

TIMEOUT = 10.0


def handshake_request(
    port: int, protocol: str | None = "echo", *, path: str = "/", extra: str = ""
) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if protocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True, rsv: int = 0,
          length: int | None = None) -> bytes:
    """One client frame, exactly as asked (RFC 6455 §5.2), even when that is wrong."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload) if length is None else length
    mask_bit = 0x80 if mask else 0
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass
class Frame:
    opcode: int
    payload: bytes
    fin: bool

    @property
    def close_code(self) -> int:
        assert self.opcode == Opcode.CLOSE and len(self.payload) >= 2, self
        return int(struct.unpack("!H", self.payload[:2])[0])

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode()


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class RawClient:
    """A TCP (or TLS) connection that speaks whatever bytes the test writes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        return cls(reader, writer)

    @classmethod
    async def upgraded(cls, port: int, protocol: str = "echo") -> RawClient:
        """Connected and past the handshake."""
        client = await cls.connect(port)
        await client.send(handshake_request(port, protocol))
        response = await client.read_response()
        assert response.status == 101, response
        return client

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_response(self) -> HttpResponse:
        """An HTTP response head, and its body when it has a Content-Length."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), TIMEOUT) if length else b""
        return HttpResponse(int(status_line.split()[1]), headers, body)

    async def read_frame(self) -> Frame:
        """One server frame; servers never mask (RFC 6455 §5.1)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
        assert not second & 0x80, "server frames are never masked"
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await asyncio.wait_for(self.reader.readexactly(size), TIMEOUT)
        return Frame(first & 0x0F, payload, bool(first & 0x80))

    async def read_until_close(self) -> Frame:
        """Skip data frames up to the server's close frame."""
        while True:
            received = await self.read_frame()
            if received.opcode == Opcode.CLOSE:
                return received

    async def expect_eof(self) -> bytes:
        """Everything left until the server drops TCP."""
        return await asyncio.wait_for(self.reader.read(), TIMEOUT)

    def close(self) -> None:
        self.writer.close()
