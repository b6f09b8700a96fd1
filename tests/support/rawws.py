"""A byte-level WebSocket client for wire tests: it sends exactly the frames a
test builds, valid or not, and reads the server's frames one by one.

The ``websockets`` library refuses to send malformed frames, which is exactly
what these tests need to do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import struct
from dataclasses import dataclass

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    rsv: int = 0  # RSV1-3 as three bits (RSV1 = 4: permessage-deflate's, RFC 7692 §6)

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode()


def frame_bytes(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True,
    length_override: int | None = None,
) -> bytes:
    """One client frame (RFC 6455 §5.2), masked unless told otherwise."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload) if length_override is None else length_override
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


def upgrade_request(
    port: int, protocols: list[str] | None = None, path: str = "/", extra_headers: str = ""
) -> bytes:
    """A valid upgrade request (RFC 6455 §4.1) that tests can then break on purpose."""
    key = base64.b64encode(os.urandom(16)).decode()
    offer = f"Sec-WebSocket-Protocol: {', '.join(protocols)}\r\n" if protocols else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{offer}{extra_headers}\r\n".encode()
    )


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class RawClient:
    """One TCP connection speaking hand-built WebSocket frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.response_head = b""

    @classmethod
    async def connect(
        cls, port: int, protocols: list[str] | None = None, path: str = "/",
        extra_headers: str = "",
    ) -> RawClient:
        client = await cls.open(port)
        client.send(upgrade_request(port, protocols, path, extra_headers))
        client.response_head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
        return client

    @classmethod
    async def open(cls, port: int, tls: ssl.SSLContext | None = None) -> RawClient:
        """A bare TCP (or TLS) connection: the test writes the request itself."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        return cls(reader, writer)

    async def read_response(self, timeout: float = 10) -> HttpResponse:
        """An HTTP response: its head, and its body when it has a Content-Length."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in filter(None, lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout) if length else b""
        return HttpResponse(int(status_line.split()[1]), headers, body)

    @property
    def status(self) -> int:
        return int(self.response_head.split(b" ", 2)[1])

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: object) -> None:
        self.writer.write(frame_bytes(opcode, payload, **kwargs))  # type: ignore[arg-type]

    async def recv_frame(self, timeout: float = 10) -> Frame:
        head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
        size = head[1] & 0x7F
        assert not head[1] & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        payload = await asyncio.wait_for(self.reader.readexactly(size), timeout)
        return Frame(fin, opcode, payload, (head[0] >> 4) & 0x7)

    async def recv_until_close(self, timeout: float = 10) -> tuple[list[Frame], Frame]:
        """Frames received before the close frame, and the close frame."""
        before: list[Frame] = []
        while True:
            frame = await self.recv_frame(timeout)
            if frame.opcode == OP_CLOSE:
                return before, frame
            before.append(frame)

    async def at_eof(self, timeout: float = 10) -> bool:
        """True once the server has closed TCP (after whatever it still sends)."""
        try:
            await asyncio.wait_for(self.reader.read(), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return True
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await self.writer.wait_closed()
