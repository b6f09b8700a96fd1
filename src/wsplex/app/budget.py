"""A token bucket for commands that cost the server more than a message does.

Listings (``/rooms``, JSONsvc ``services``, ``clients``) read the whole
directory, on Redis across every node: any client could repeat one in a loop
and keep the server busy for everyone (SPEC §8: limits stop abuse without
shaping normal traffic). A protocol keeps one :class:`Budget` per connection,
made on first use, and refuses the call with how long to wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

#: Listings one connection may make at once, and how many a second it earns back.
LISTING_BURST: Final = 10
LISTING_RATE: Final = 1.0
#: The most entries one listing reply holds; the rest is counted in it.
LISTING_LIMIT: Final = 1000


class Budget:
    """``burst`` calls at once, then ``rate`` more per second."""

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, burst: int = LISTING_BURST, rate: float = LISTING_RATE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> float:
        """Spend one call: 0.0 when allowed, else the seconds until the next one is."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


def too_soon(wait: float) -> str:
    """The refusal's words: ``too many listings; try again in 2 s``."""
    return f"too many listings; try again in {int(wait) + 1} s"
