"""One command queue, one writer: a node's Redis commands in the order it issued them (SPEC §9).

Every command, fire-and-forget (:meth:`CommandQueue.send`) or awaited
(:meth:`CommandQueue.call`), goes into one list drained by one writer task as
a pipeline, so a node's writes and reads happen in issue order (Redis keeps a
connection's order) and a burst of publishes costs one round trip. Before
each batch the writer runs a ``prepare`` step (the hub brings the pub/sub
subscriptions up to date there), so a batch never runs ahead of the
subscriptions its commands imply.

:meth:`CommandQueue.mark` is a future resolved once everything queued before
it has executed: the hub's barrier, which holds a session's next event until
its directory writes are in Redis.

While Redis is away (:attr:`CommandQueue.up` is False) fire-and-forget
commands are dropped, fan-out ones counted in ``stats.redis_dropped``, and
awaited ones raise :class:`RedisUnavailable` so callers fall back to this
node's own view.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from wsplex.stats import Stats

log = logging.getLogger("wsplex.hub.redis")

Command = tuple[Any, ...]
#: A queued command and who waits for it; a None command is a mark.
Entry = tuple[Command | None, "asyncio.Future[Any] | None"]

#: Fire-and-forget commands queued past this are dropped (Redis slower than the node).
QUEUE_LIMIT = 100_000
#: The errors that mean "Redis is not there", as opposed to a bug of ours.
class RedisUnavailable(Exception):
    """Redis cannot be reached right now; callers fall back to this node's view."""


UNREACHABLE = (RedisError, OSError, TimeoutError, RedisUnavailable)


async def _nothing() -> None:
    return None


class CommandQueue:
    """The node's only path for commands; :meth:`run` is its one writer task."""

    def __init__(self, redis: Redis, stats: Stats) -> None:
        self._redis = redis
        self._stats = stats
        self._queue: list[Entry] = []
        self._wake = asyncio.Event()
        self._mark: asyncio.Future[None] | None = None  # the mark of the batch being gathered
        self._sending: list[Entry] = []  # the batch on its way to Redis
        self.up = False
        self.prepare: Callable[[], Awaitable[None]] = _nothing
        self.on_lost: Callable[[str], None] = lambda reason: None
        self._stopping = False

    def send(self, command: Command, *, fanout: bool = False) -> None:
        """Queue a command nobody waits for; dropped (counted if ``fanout``) while Redis is away."""
        if not self.up or len(self._queue) >= QUEUE_LIMIT:
            if fanout:
                self._stats.redis_dropped += 1
            return
        self._push((command, None))

    def call(self, command: Command) -> asyncio.Future[Any]:
        """Queue a command and return its reply's future, in order with everything before it."""
        if not self.up:
            raise RedisUnavailable
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._push((command, future))
        return future

    def mark(self) -> asyncio.Future[None] | None:
        """A future resolved (never failed) once everything queued so far has executed.

        None while Redis is away: there is nothing to wait for. Marks with no
        command between them are one future, so a burst of subscriptions
        costs one.
        """
        if not self.up:
            return None
        if self._mark is None:  # one per batch: it opens after the whole batch, wherever it sits
            self._mark = asyncio.get_running_loop().create_future()
            self._push((None, self._mark))
        return self._mark

    def wake(self) -> None:
        """Run ``prepare`` soon even with nothing queued (a subscription changed)."""
        self._wake.set()

    def _push(self, entry: Entry) -> None:
        if not self._queue:
            self._wake.set()
        self._queue.append(entry)

    def replace(self, commands: list[Command]) -> None:
        """Start over with ``commands`` first (the directory, on reconnect), then go up."""
        self._fail(self._queue)
        self._queue = [(command, None) for command in commands]
        self._mark = None
        self.up = True
        self._wake.set()

    def down(self) -> None:
        """Redis is gone: fail what waits, drop the rest.

        The batch on its way fails too: when Redis stopped answering (the hub's
        PING timed out) its callers fall back to this node's view now rather
        than when the socket times out; a reply that comes after all is ignored.
        """
        self.up = False
        batch, self._queue = self._queue, []
        self._mark = None
        self._fail(batch)
        self._fail(self._sending)

    def stop(self) -> None:
        self._stopping = True
        self.down()
        self._wake.set()

    async def run(self) -> None:
        """The writer: take the queue, bring subscriptions up to date, send it as one pipeline."""
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if not self.up:
                self.down()
                continue
            # Taken before ``prepare``: every command in it was queued after the
            # local change it reflects, so prepare's subscriptions cover them all.
            batch, self._queue = self._queue, []
            self._mark = None
            self._sending = batch
            try:
                await self.prepare()
                if batch:
                    await self._execute(batch)
            except UNREACHABLE as exc:
                self._fail(batch)
                self.on_lost(f"writing: {exc!r}")
            except Exception:  # a bug of ours: start over on a fresh connection, keep the writer
                log.exception("writing to redis failed")
                self._fail(batch)
                self.on_lost("internal error")
            finally:
                self._sending = []

    async def _execute(self, batch: list[Entry]) -> None:
        commands = [command for command, _ in batch if command is not None]
        results: list[Any] = []
        if commands:
            async with self._redis.pipeline(transaction=False) as pipe:
                for queued in commands:
                    pipe.execute_command(*queued)
                results = await pipe.execute(raise_on_error=False)
        replies = iter(results)
        for command, future in batch:
            result = next(replies) if command is not None else None
            if future is None:
                if isinstance(result, Exception) and command is not None:
                    log.error("redis command %s failed: %s", command[0], result)
            elif future.done():
                pass
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    @staticmethod
    def _fail(batch: list[Entry]) -> None:
        """Callers learn Redis is away; marks open (a barrier must not close a session)."""
        for command, future in batch:
            if future is not None and not future.done():
                if command is None:
                    future.set_result(None)
                else:
                    future.set_exception(RedisUnavailable())
