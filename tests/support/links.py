"""Stand-ins for a session's connection: real Session objects, no socket under them."""

from __future__ import annotations

import asyncio


class RecordingLink:
    """A session's connection, minus the socket: frames and the close it was asked for."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    def write_frame(self, frame: bytes) -> None:
        self.frames.put_nowait(frame)

    def close(self, code: int, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result((code, reason))

    async def next(self) -> bytes:
        return await asyncio.wait_for(self.frames.get(), 5)
