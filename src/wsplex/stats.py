"""Plain counters the hot path bumps; ``/metrics`` and ``status`` read them.

They are ints on one object, not Prometheus metric objects, because a labelled
Prometheus counter takes a lock on every ``inc()`` and the message path runs
once per frame. The exporter turns these into Prometheus samples at scrape time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Figure:
    """A number a protocol reports about itself (MQTT sessions, queued messages), read
    when ``/metrics`` or ``status`` asks, so keeping it costs the hot path nothing."""

    help: str
    read: Callable[[], float]  # an int for a count
    counter: bool = False  # only ever grows (a Prometheus counter), else a gauge


@dataclass
class Stats:
    """Counters for one node since it started."""

    started_at: float = field(default_factory=time.time)
    messages_in: int = 0
    messages_out: int = 0  # frames written: messages, and the pongs that answer pings
    bytes_in: int = 0
    bytes_out: int = 0  # bytes handed to the socket
    connections_total: int = 0
    slow_consumer_drops: int = 0
    #: permessage-deflate (SPEC §14): messages received and sent compressed, the bytes the
    #: compressed frames saved on the wire, and deflate runs (a fan-out is one run).
    compressed_messages_in: int = 0
    compressed_messages_out: int = 0
    compression_saved_bytes: int = 0
    compressions: int = 0
    redis_disconnects: int = 0  # times this node lost Redis (or could not reach it at start)
    redis_dropped: int = 0  # messages for other nodes dropped while Redis was unreachable
    connections: Counter[str] = field(default_factory=Counter)  # open, by protocol
    refusals: Counter[str] = field(default_factory=Counter)  # handshake refusals, by reason
    closes: Counter[int] = field(default_factory=Counter)  # closes, by code
    #: Connections closed for going past a frame-level limit, by ``wsplex.ws.frames.Limit`` value.
    limit_closes: Counter[str] = field(default_factory=Counter)
    subscriptions_refused: int = 0  # past --max-subscriptions
    reads_paused: int = 0  # times a connection stopped being read: its hooks were behind
    #: Times a connection stopped being read because what was sent to it waited unread.
    send_pauses: int = 0
    turn_yields: int = 0  # times a connection's reads rested a loop turn past --read-per-turn
    loop_lag: float = 0.0  # seconds the event loop ran late (the frame rate's stall clock)
    retained_refused: int = 0  # retained publications not kept: past a --retained-* bound
    history_trimmed: int = 0  # publications dropped from a topic's history past --history-bytes
    history_topics_evicted: int = 0  # topics whose history was forgotten (--history-topics)
    #: Publications a text protocol did not receive: their payload is not UTF-8 (SPEC §10).
    not_text_dropped: Counter[str] = field(default_factory=Counter)
    #: Protocols' own figures by metric name (``wsplex_`` + name): see :class:`Figure`.
    figures: dict[str, Figure] = field(default_factory=dict)

    @property
    def uptime(self) -> float:
        return time.time() - self.started_at
