"""Write coalescing: each connection's frames of one event-loop turn go out in one write().

A fan-out to N receivers queues a frame on each of them; the ``write()``
syscall is the cost, so a receiver that gets several messages in one loop turn
gets one write. The flusher runs once at the end of the turn (``call_soon``
from the first connection marked in it) and drains every marked connection.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Flushable(Protocol):
    """A connection with frames queued for this turn."""

    def flush(self) -> None:
        """Write what is queued, in one ``write()``."""


class Flusher:
    """Drains the marked connections once per loop turn."""

    __slots__ = ("_loop", "dirty")

    def __init__(self) -> None:
        #: The connections marked this turn: a fan-out is under way when it is not empty.
        self.dirty: list[Flushable] = []
        # Kept, not looked up per turn: get_running_loop() costs a getpid() syscall.
        self._loop: asyncio.AbstractEventLoop | None = None

    def mark(self, connection: Flushable) -> None:
        """``connection`` queued its first frame of this turn."""
        if not self.dirty:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.flush)
        self.dirty.append(connection)

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        for connection in dirty:
            connection.flush()
