"""How fast one connection's input is taken: its frame rate, its share of a loop turn, its pauses.

Three limits of issue 17, each cheap on the hot path (an increment and a compare
per frame, a few more per read):

* **The frame rate counts by arrival, not by processing** (:class:`FrameRate`).
  A server that is behind reads late, and a late read brings frames that
  arrived over a longer time than the reads suggest: a client pacing itself
  just under ``--max-messages-per-second`` would be closed for the server's
  slowness. The server cannot see when a frame reached its socket; it can see
  how long it was not looking. :class:`LoopLag` is a clock that advances only
  while the event loop runs late (a tick every :data:`TICK` seconds notes how
  late it fired, beyond :data:`SLACK`), and a connection adds the time its
  reading was paused (backlog, unread replies). A window of the rate is one
  second *plus* the stall it saw, and allows ``limit x (1 + stall)`` frames,
  plus the stall of the window before it (frames sent during a stall may be
  read just after the window rolled over). A responsive server has no stall:
  there the limit is exactly ``limit`` frames in a second, and a flood is
  closed as before; a compliant client is never closed because the server was
  slow. The credit is bounded by the time the server was not reading, so a
  flood cannot earn more than the limit per second of real time.
* **The work done for one connection per loop turn is bounded**
  (``--read-per-turn``). uvloop (libuv's ``uv__read``) reads a readable
  socket up to 32 times in one callback round, 64 KiB each here, so a
  flooding connection would get 2 MiB of frames handled before any other
  socket is looked at. Every frame costs its payload plus :data:`FRAME_COST`
  (a frame of nothing is still work: 11,000 empty pongs fit in one read), and
  past the budget the connection stops reading until the next loop turn
  (``pause_reading``, then ``resume_reading`` from ``call_soon``), so the other
  sockets of this round are served first. The budget is spent, not reset, at
  the end of a turn: a client streaming steadily yields one turn per budget,
  which costs it nothing measurable.
* **Why a connection is not read** is one set of :class:`Pause` reasons, so one
  resume never undoes another's pause: a session whose hooks are behind
  (:class:`~wsplex.app.session.Backlog`), a spent turn budget, and replies the
  peer does not read (the transport's buffer above its high-water mark,
  ``pause_writing``): a client that floods pings and never reads stops being
  read once 64 KiB of pongs wait for it, rather than making the server build
  a pong per ping without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sized
from enum import IntFlag
from typing import Final

#: The loop-lag clock's period (seconds): 20 callbacks a second for the whole node.
TICK: Final = 0.05
#: Lateness of a tick up to this is ordinary jitter, not a stall (seconds).
SLACK: Final = 0.01
#: What a frame costs in the turn budget besides its payload, in bytes: handling
#: a frame costs about as much as copying this many bytes of payload.
FRAME_COST: Final = 64


class Pause(IntFlag):
    """Why a connection's socket is not being read; reading resumes when none is left."""

    BACKLOG = 1  # the session's hooks are behind (app.session.Backlog)
    TURN = 2  # it used its turn budget (--read-per-turn): the next loop turn resumes it
    SEND = 4  # its replies wait unread (the transport's buffer passed its high-water mark)


#: Pauses that can last: their time is credited to the rate (frames piled up unread).
LONG_PAUSES: Final = Pause.BACKLOG | Pause.SEND


class LoopLag:
    """Seconds the event loop has run late since the node started: a clock for stalls.

    A callback every :data:`TICK` seconds notes how much later than due it ran,
    less :data:`SLACK`. It runs while connections are open (started by the first,
    stopped at a tick that finds none). :meth:`now` adds the lateness of the
    tick that is due and has not run yet, so a read handled right after a
    stall, in the same loop turn, already sees the stall.
    """

    __slots__ = ("_due", "_handle", "_publish", "_wanted", "loop", "total")

    def __init__(self, wanted: Sized, publish: Callable[[float], None]) -> None:
        self.total = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wanted = wanted  # ticks while this is not empty
        self._publish = publish  # tells /metrics the new total
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due = loop.time() + TICK
        self._handle = loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def now(self, now: float) -> float:
        """The clock at loop time ``now``, counting a tick that is late right now."""
        late = now - self._due - SLACK if self._handle is not None else 0.0
        return self.total + late if late > 0.0 else self.total

    def _tick(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        late = now - self._due - SLACK
        if late > 0.0:
            self.total += late
            self._publish(self.total)
        if not self._wanted:
            self._handle = None
            return
        self._due = now + TICK
        self._handle = self.loop.call_at(self._due, self._tick)


class FrameRate:
    """At most ``limit`` frames a second on one connection, counted by arrival (see the module).

    The caller counts (``count += 1``) and calls :meth:`exceeded` only once the
    count passes ``allowance``, so a frame costs an increment and a compare. A
    window opens at ``window_start`` and lasts one second plus the stall seen
    since (``lag`` is :class:`LoopLag`'s clock, ``paused`` the connection's
    paused seconds). Bursts that straddle two windows can reach twice the
    limit: the cap stops floods, it does not shape traffic.
    """

    __slots__ = ("allowance", "carry", "count", "lag_start", "limit", "paused", "window_start")

    def __init__(self, limit: int, now: float = 0.0, lag: float = 0.0) -> None:
        self.limit = limit
        self.allowance = limit  # what the count may reach in this window before a recheck
        self.count = 0
        self.window_start = now
        self.lag_start = lag  # the lag clock when the window opened
        self.paused = 0.0  # seconds reading was paused in this window (a connection's LONG_PAUSES)
        self.carry = 0.0  # the stall of the window before, credited to this one

    def exceeded(self, now: float, lag: float) -> bool:
        """The count passed the allowance at loop time ``now``: True if over the limit."""
        stall = lag - self.lag_start + self.paused
        if now - self.window_start >= 1.0 + stall:  # a new window, counting this frame
            self.window_start, self.lag_start, self.paused, self.carry = now, lag, 0.0, stall
            self.count = 1
            self.allowance = int(self.limit * (1.0 + stall))
            return False
        allowed = int(self.limit * (1.0 + stall + self.carry))
        if self.count <= allowed:
            self.allowance = allowed
            return False
        return True
