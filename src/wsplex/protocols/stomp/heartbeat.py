"""Heart-beating both ways, for every STOMP connection on one timer (STOMP 1.2 "Heart-beating").

CONNECT's ``heart-beat:cx,cy`` and CONNECTED's ``heart-beat:sx,sy`` give, in
milliseconds, what each side can send (``x``) and wants to receive (``y``);
0 means "cannot" or "does not want". So the server sends something at least
every ``max(sx, cy)`` ms unless one of them is 0, and expects something from
the client at least every ``max(cx, sy)`` ms unless one of them is 0. A
client silent for :data:`TOLERANCE` times its interval is taken for dead.

One sweep visits every watched connection; it runs every half of the
shortest interval in use, and not at all while nobody heart-beats: no task
and no timer per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, Generic, TypeVar

#: How many intervals of silence from the client before the server gives up on it.
TOLERANCE: Final = 2.0

Owner = TypeVar("Owner")


def negotiate(client: tuple[int, int], server: tuple[int, int]) -> tuple[float, float]:
    """``(send_every, expect_every)`` in seconds, 0 for never, from both ``heart-beat`` headers."""
    cx, cy = client
    sx, sy = server
    send = max(sx, cy) / 1000 if sx and cy else 0.0
    expect = max(cx, sy) / 1000 if cx and sy else 0.0
    return send, expect


def parse_header(value: str | None) -> tuple[int, int] | None:
    """``heart-beat:cx,cy`` as two non-negative ints; (0, 0) when absent; None when malformed."""
    if value is None:
        return 0, 0
    first, comma, second = value.partition(",")
    if not comma or not first.strip().isdigit() or not second.strip().isdigit():
        return None
    return int(first), int(second)


class Beat(Generic[Owner]):
    """One watched connection: when it must next hear from us, when we last heard from it."""

    __slots__ = ("expect_every", "heard", "next_send", "owner", "send_every")

    def __init__(self, owner: Owner, send_every: float, expect_every: float, now: float) -> None:
        self.owner = owner
        self.send_every = send_every
        self.expect_every = expect_every
        self.next_send = now + send_every
        self.heard = now


class HeartBeats(Generic[Owner]):
    """The sweep: ``send(owner)`` when a beat is due, ``silent(owner)`` for a dead client."""

    def __init__(self, send: Callable[[Owner], None], silent: Callable[[Owner], None]) -> None:
        self._send = send
        self._silent = silent
        self._beats: dict[int, Beat[Owner]] = {}
        self._tick = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._beats)

    def watch(self, owner: Owner, send_every: float, expect_every: float) -> Beat[Owner] | None:
        """Start beating for ``owner``; None when neither way is on."""
        if not send_every and not expect_every:
            return None
        loop = asyncio.get_running_loop()
        beat = Beat(owner, send_every, expect_every, loop.time())
        self._beats[id(beat)] = beat
        shortest = min(interval for interval in (send_every, expect_every) if interval)
        if not self._tick or shortest / 2 < self._tick:
            self._tick = shortest / 2
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._sweep)
        return beat

    def forget(self, beat: Beat[Owner] | None) -> None:
        if beat is not None:
            self._beats.pop(id(beat), None)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._beats.clear()

    def _sweep(self) -> None:
        self._timer = None
        if not self._beats:
            self._tick = 0.0
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for key, beat in list(self._beats.items()):
            if beat.expect_every and now - beat.heard > beat.expect_every * TOLERANCE:
                del self._beats[key]
                self._silent(beat.owner)
            elif beat.send_every and now + self._tick >= beat.next_send:  # early, never late
                beat.next_send = now + beat.send_every
                self._send(beat.owner)
        self._timer = loop.call_later(self._tick, self._sweep)
