"""The pub/sub connection: connect with capped backoff, subscribe, listen, report loss (SPEC §9).

A connection in subscribed mode can only (un)subscribe and read, so it is a
connection of its own, apart from the command queue's. :meth:`PubSubLink.sync`
makes its channels (SUBSCRIBE) and patterns (PSUBSCRIBE) what the hub wants
and returns once Redis has confirmed each new one: after that, anything
published on them reaches this node. :meth:`PubSubLink.run` is the
supervisor: connect, let the hub come up (``on_up``), read until the
connection breaks, tell the hub (``on_down``), wait, connect again.
:meth:`PubSubLink.ping` is the hub's health probe: a PING on this connection,
answered in order with everything published to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from wsplex.hub.redis.commands import UNREACHABLE, RedisUnavailable

log = logging.getLogger("wsplex.hub.redis")

#: Reconnect delays: first retry soon, then double up to the cap.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0
#: Seconds a subscription confirmation may take before Redis counts as down.
#: (``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` can
#: swallow the cancellation that stops the hub, gh-86296.)
CONFIRM_TIMEOUT = 5.0

#: ``(channel, data)`` of each message, whether it came by a channel or a pattern.
OnMessage = Callable[[bytes, bytes], None]


class PubSubLink:
    """One subscribed connection to Redis, reconnected for as long as the hub runs."""

    def __init__(self, redis: Redis, on_message: OnMessage) -> None:
        self._redis = redis
        self._on_message = on_message
        self._connection: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._channels: set[bytes] = set()  # live on the current connection
        self._patterns: set[bytes] = set()
        self._confirmations: dict[tuple[bytes, bytes], asyncio.Future[None]] = {}
        self._pongs: deque[asyncio.Future[None]] = deque()  # PINGs waiting, oldest first
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self.attempted = asyncio.Event()  # set after the first attempt, whatever its outcome
        self.stopping = False

    # -- subscriptions ---------------------------------------------------------

    async def sync(self, channels: Collection[bytes], patterns: Collection[bytes]) -> None:
        """Subscribe to what is wanted and not live, unsubscribe from the rest; wait for Redis."""
        connection = self._connection
        if connection is None:
            raise RedisUnavailable
        gone_channels = self._channels.difference(channels)
        gone_patterns = self._patterns.difference(patterns)
        if gone_channels:
            self._channels -= gone_channels
            await connection.send_command("UNSUBSCRIBE", *gone_channels)
        if gone_patterns:
            self._patterns -= gone_patterns
            await connection.send_command("PUNSUBSCRIBE", *gone_patterns)
        new_channels = [c for c in channels if c not in self._channels]
        new_patterns = [p for p in patterns if p not in self._patterns]
        waits = []
        if new_channels:
            self._channels.update(new_channels)
            waits += self._expect(b"subscribe", new_channels)
            await connection.send_command("SUBSCRIBE", *new_channels)
        if new_patterns:
            self._patterns.update(new_patterns)
            waits += self._expect(b"psubscribe", new_patterns)
            await connection.send_command("PSUBSCRIBE", *new_patterns)
        if waits:
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                await asyncio.gather(*waits)

    async def ping(self) -> float:
        """PING Redis on this connection and wait for the answer: the round trip in seconds.

        Raises :class:`RedisUnavailable` when there is no connection or it is
        lost meanwhile; the caller bounds the wait (a frozen Redis never answers).
        """
        connection = self._connection
        if connection is None:
            raise RedisUnavailable
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(pong)
        start = time.monotonic()
        await connection.send_command("PING")
        await pong
        return time.monotonic() - start

    def _expect(self, kind: bytes, names: list[bytes]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        return [self._confirmations.setdefault((kind, name), loop.create_future()) for name in names]

    # -- the supervisor ----------------------------------------------------------

    async def run(self, on_up: Callable[[], Awaitable[None]], on_down: Callable[[str], None]) -> None:
        """Connect, bring the hub up, listen until lost, back off, connect again."""
        delay = BACKOFF_MIN
        while not self.stopping:
            try:
                await self._connect()
                await on_up()
            except Exception as exc:  # Redis errors, and a bug of ours must not end reconnecting
                if not isinstance(exc, UNREACHABLE):
                    log.exception("connecting to redis failed")
                on_down(f"connecting: {exc!r}")
                self.attempted.set()
                await self.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_MIN
            self.attempted.set()
            reason = await self._listen_until_lost()
            on_down(reason)
            await self.close()

    def lost(self, reason: str) -> None:
        """Someone else (the writer) found Redis gone: drop this connection too."""
        self._lost_reason = reason
        self._lost.set()
        self._fail_confirmations()

    async def _connect(self) -> None:
        self._lost.clear()
        self._lost_reason = ""
        connection: AbstractConnection = self._redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        self._connection = connection
        await connection.connect()  # type: ignore[no-untyped-call]
        self._reader = asyncio.create_task(self._read(connection), name="redis-listener")

    async def _listen_until_lost(self) -> str:
        reader = self._reader
        assert reader is not None
        lost = asyncio.create_task(self._lost.wait())
        try:
            await asyncio.wait({reader, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            reader.cancel()
        if reader.done() and not reader.cancelled():
            exc = reader.exception()
            return f"listening: {exc!r}" if exc else "listening: connection closed"
        return self._lost_reason or "connection lost"

    async def _read(self, connection: AbstractConnection) -> None:
        while True:
            reply = await connection.read_response(timeout=math.inf)
            if isinstance(reply, list) and reply:
                self._on_reply(reply)
            elif reply == b"PONG":  # a PING before the first subscription
                self._pong()

    def _on_reply(self, reply: list[Any]) -> None:
        kind = reply[0]
        try:
            if kind == b"message":
                self._on_message(reply[1], reply[2])
            elif kind == b"pmessage":
                self._on_message(reply[2], reply[3])
            elif kind == b"pong":  # a PING while subscribed (RESP2)
                self._pong()
            elif kind in (b"subscribe", b"psubscribe"):
                future = self._confirmations.pop((kind, reply[1]), None)
                if future is not None and not future.done():
                    future.set_result(None)
        except Exception:  # one bad envelope must not stop the listener
            log.exception("bad message on redis channel %r", reply[1:2])

    def _pong(self) -> None:
        if self._pongs:
            pong = self._pongs.popleft()
            if not pong.done():
                pong.set_result(None)

    def _fail_confirmations(self) -> None:
        for future in [*self._confirmations.values(), *self._pongs]:
            if not future.done():
                future.set_exception(RedisUnavailable())
        self._confirmations.clear()
        self._pongs.clear()

    async def close(self) -> None:
        """Drop the connection; the next one starts with no subscription."""
        self._fail_confirmations()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()  # not awaited: a stop must not hang on a half-read reply
        connection, self._connection = self._connection, None
        self._channels = set()
        self._patterns = set()
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect()
