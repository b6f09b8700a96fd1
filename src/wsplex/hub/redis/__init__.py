"""The Redis hub: several wsplex processes acting as one service (SPEC §9, §10).

Composition, as centrifuge splits it: :class:`~.link.PubSubLink` is the
subscribed connection (connect, backoff, SUBSCRIBE/PSUBSCRIBE, listen),
:class:`~.commands.CommandQueue` the one ordered path for every other command,
:class:`~.directory.Directory` the keys this node owns, :mod:`.schema` what
lives where. :class:`RedisHub` wires them to the node's
:class:`~wsplex.hub.local.Local` bookkeeping, which it shares with the memory
hub: a publication from another node ends in the very same
:meth:`Local.deliver` a local one does.

Fan-out
    One Redis channel per topic and one subscription per node per filter
    (not per session): SUBSCRIBE for an exact filter, PSUBSCRIBE to a glob
    that matches a superset of a wildcard filter's topics (``+`` and ``#``
    become ``*``); ``Local.deliver`` then matches exactly and delivers each
    session once. A node subscribed both ways (or by two patterns) gets one
    PUBLISH several times; Redis writes all of them to the connection in one
    go (``pubsubPublishMessage`` loops over the channel's and the patterns'
    subscribers within the one PUBLISH, and a single-threaded server runs
    nothing in between), so a repeat is recognised by comparing the envelope's
    origin and sequence number with the previous one. Hub channels
    (``broadcast``) have Redis channels of their own, never mixed with topics;
    each node also listens on its own channel for ``send_to`` and
    ``close_session``. The channels of the enabled protocols (``pinned``)
    and the filters protocols pin (:meth:`RedisHub.pin`, echo's topic) stay
    subscribed for the node's lifetime, so a client is reachable from the
    moment its handshake completes.

    The publishing node delivers to its own subscribers first, without a round
    trip, and skips its own envelopes when they come back. Ordering: what one
    node publishes reaches every subscriber in publish order (one queue, one
    connection, and Redis keeps a connection's order); publications from
    different nodes have no common order. Delivery is at most once: whatever
    is published while Redis is away reaches only the publishing node's clients.

Retained publications and history
    One hash, topic -> envelope (an empty retained payload deletes the
    field); a list per topic with a history rule. Each is written by one
    script (``RETAIN_SCRIPT``, ``HISTORY_SCRIPT``) that holds the memory
    hub's bounds for the whole cluster: ``--retained-max``,
    ``--retained-per-sender`` and ``--retained-bytes`` (a refused one is
    delivered, not kept, and counted when Redis says so: ``publish`` cannot
    wait for that and returns True), ``--history-bytes`` and
    ``--history-topics``. Both are written before the PUBLISH, so whoever
    received a publication finds it there. ``retained_count`` (``/metrics``)
    is the hash's HLEN, read at connect and at each heartbeat.

Barriers
    After a subscribe (to a filter that is not pinned) or a join, the session's next event waits
    until the batch holding its directory writes (and, before it, the
    SUBSCRIBE) has executed: a client that got an answer after joining a room
    is listed as a member everywhere and hears what other nodes publish there.

Faults
    A PING on the link every second (:meth:`RedisHub.watch`) is the health
    probe: Redis that has not answered one for ``--redis-ping-timeout``
    (frozen, or overloaded past use) counts as away, just as a broken
    connection does, so callers waiting on it fall back at once instead of
    when the socket times out (``COMMAND_TIMEOUT``).
    While Redis is away :attr:`healthy` is False (``/healthz`` answers 503),
    writes are dropped (fan-out counted in ``stats.redis_dropped``), reads
    answer from this node alone, and the link reconnects with capped backoff;
    on reconnecting it subscribes again, rewrites the directory and claims its
    names again (a clash with a name taken meanwhile is logged; both keep it
    until one leaves). It needs a single Redis (or a Sentinel-managed
    primary), not Redis Cluster.

Queues
    STOMP's ``/queue/Q`` is a stream per queue with one consumer group
    (:mod:`.queues`): a message is consumed once by a consumer on any node,
    and outlives the node it was sent to.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from wsplex.app.hub import ClientInfo, QueueConsumer, QueueFigures, QueueMessage, protocol_channel
from wsplex.app.outgoing import Outgoing
from wsplex.app.publication import Publication
from wsplex.app.session import Session
from wsplex.app.topics import is_wildcard, matches
from wsplex.hub.base import NodeHub
from wsplex.hub.history import DEFAULT_BYTES as HISTORY_BYTES
from wsplex.hub.history import DEFAULT_TOPICS as HISTORY_TOPICS
from wsplex.hub.history import EVICTION_SCAN, HistoryRules
from wsplex.hub.redis.commands import UNREACHABLE, CommandQueue, RedisUnavailable
from wsplex.hub.redis.directory import Directory
from wsplex.hub.redis.link import PubSubLink
from wsplex.hub.redis.queues import StreamQueues
from wsplex.hub.redis.schema import (
    BROADCAST,
    CODE,
    DIRECT,
    HISTORY_SCRIPT,
    KICK,
    PUBLICATION,
    RETAIN_SCRIPT,
    TEXT,
    Keys,
    decode_publication,
    glob_of,
    node_of,
    pack_kick,
    pack_message,
    pack_publication,
    publication_of,
    unpack,
)
from wsplex.hub.retained import DEFAULT_BYTES as RETAINED_BYTES
from wsplex.hub.retained import DEFAULT_MAX as RETAINED_MAX
from wsplex.hub.retained import DEFAULT_PER_SENDER as RETAINED_PER_SENDER
from wsplex.hub.retained import DEFAULT_VALUE_SIZE
from wsplex.stats import Figure, Stats

__all__ = ["RedisHub", "RedisUnavailable", "without_password"]

log = logging.getLogger("wsplex.hub.redis")

#: Seconds a command may take before Redis counts as down (also the goodbye's budget).
COMMAND_TIMEOUT = 5.0
#: Seconds without an answer to a PING before Redis counts as away (--redis-ping-timeout).
DEFAULT_PING_TIMEOUT = 2.0
#: The most seconds between two health PINGs.
PING_INTERVAL = 1.0
#: The scripts run on every publication they concern: loaded once per connection
#: (``_up``) and called by their SHA1, not sent each time.
_HOT_SCRIPTS = {script: hashlib.sha1(script.encode()).hexdigest()
                for script in (RETAIN_SCRIPT, HISTORY_SCRIPT)}
#: Retained publications read per HSCAN round for a wildcard filter.
SCAN_COUNT = 500


def without_password(url: str) -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://host:6379/0``: safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host).geturl()


def _wait(session: Session, barrier: asyncio.Future[None]) -> asyncio.Future[None]:
    """A hook that holds the session's later events until ``barrier`` opens."""
    return barrier


class RedisHub(NodeHub):
    """A hub for one node of a cluster sharing a Redis server."""

    def __init__(
        self, node_id: str, url: str, *, ttl: float = 15.0, pinned: Iterable[str] = (),
        stats: Stats | None = None,
    ) -> None:
        super().__init__(node_id, stats)
        self.url = without_password(url)  # for logs
        self._redis = Redis.from_url(
            # RESP2: the link reads pub/sub replies itself, RESP3 would route them to a handler.
            url, protocol=2, retry=Retry(NoBackoff(), 0), socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT, health_check_interval=0,
        )
        db = self._redis.connection_pool.connection_kwargs.get("db", 0)
        self.keys = Keys(f"wsplex:{db}:", node_id)
        self.queue = CommandQueue(self._redis, self.stats)
        self.link = PubSubLink(self._redis, self._on_message)
        self.directory = Directory(self.keys, self.local, self.queue, max(1000, int(ttl * 1000)))
        self.history_rules = HistoryRules()
        self.max_history_topics = HISTORY_TOPICS  # --history-topics
        self.max_history_bytes = HISTORY_BYTES  # --history-bytes
        self.max_retained_value_size = DEFAULT_VALUE_SIZE  # --retained-value-size
        self.max_retained = RETAINED_MAX  # --retained-max
        self.max_retained_per_sender = RETAINED_PER_SENDER  # --retained-per-sender
        self.max_retained_bytes = RETAINED_BYTES  # --retained-bytes
        self._pinned = frozenset(pinned)
        self._pinned_filters: set[str] = set()  # Hub.pin
        self._sequence = 0
        self._last_seen: tuple[str, int] | None = None  # (origin, sequence) of the last envelope
        self._dirty = True  # local filters or channels changed since the last link sync
        self._barrier: asyncio.Future[None] | None = None
        self._held: set[str] = set()  # sessions already waiting on _barrier
        self._tasks: list[asyncio.Task[None]] = []
        self._retained_count = 0  # HLEN of the retained hash at the last heartbeat
        self.ping_timeout = DEFAULT_PING_TIMEOUT  # --redis-ping-timeout
        self._answered_at = time.monotonic()  # the last PING answered (or the start)
        self.round_trip = 0.0  # of that PING, seconds
        self.stats.figures["redis_up"] = Figure(
            "1 while Redis answers this node's PINGs within --redis-ping-timeout, else 0",
            lambda: int(self.healthy))
        self.stats.figures["redis_round_trip_seconds"] = Figure(
            "Round trip of the last PING to Redis that was answered, seconds",
            lambda: round(self.round_trip, 6))  # to the microsecond: `status` shows it
        self.directory.on_beat = self._count_retained
        self.queue.prepare = self._sync_subscriptions
        self.queue.on_lost = self._writer_lost
        self.queues = StreamQueues(self._redis, self.queue, self.keys.prefix, node_id, ttl, self.stats)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Connect, or start degraded and keep trying: a node serves its own clients either way."""
        self._tasks = [
            asyncio.create_task(self.link.run(self._up, self._down), name="redis-link"),
            asyncio.create_task(self.queue.run(), name="redis-writer"),
            asyncio.create_task(self.directory.heartbeat(), name="redis-heartbeat"),
            asyncio.create_task(self.watch(), name="redis-watch"),
        ]
        self._tasks.append(asyncio.create_task(self.queues.run(), name="redis-queues"))
        await self.link.attempted.wait()

    async def stop(self) -> None:
        """Say goodbye (free names, presence, memberships), then close the connections."""
        if not self._tasks:
            await self._redis.aclose()
            return
        self._tasks[2].cancel()  # no heartbeat after the goodbye
        self._tasks[3].cancel()  # and no probe taking Redis down meanwhile
        self.queues.stopping = True
        if self.queue.up:
            self.queue.send(("DEL", self.queues.wake_key))
            for command in self.directory.goodbye():
                self.queue.send(command)
            with contextlib.suppress(*UNREACHABLE):
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await self.queue.call(("PING",))
        # The flags as well as cancel(): redis-py may absorb a cancellation in
        # the middle of a command, and the loops must end anyway.
        self.link.stopping = True
        self.queue.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=COMMAND_TIMEOUT)
        for task in self._tasks:
            if task.done() and not task.cancelled():
                task.exception()  # already logged where it mattered
        self._tasks = []
        await self.link.close()
        await self._redis.aclose()

    @property
    def healthy(self) -> bool:
        return self.health_problem is None

    @property
    def health_problem(self) -> str | None:
        silent = time.monotonic() - self._answered_at
        if silent > self.ping_timeout:
            return f"redis not answering for {silent:.0f} s"
        if not self.queue.up:
            return "redis unavailable"
        return None

    async def watch(self) -> None:
        """The health probe (module docstring): a PING every second, bounded by ``ping_timeout``."""
        interval = min(PING_INTERVAL, self.ping_timeout / 2)
        while True:
            await asyncio.sleep(interval)
            if not self.queue.up:
                continue
            try:
                async with asyncio.timeout(self.ping_timeout):
                    self.round_trip = await self.link.ping()
            except TimeoutError:
                self._writer_lost(f"no answer to a PING within {self.ping_timeout:g} s")
                continue
            except UNREACHABLE:
                continue  # the link or the writer found out and said so
            self._answered_at = time.monotonic()

    async def sync(self) -> None:
        with contextlib.suppress(RedisUnavailable):
            await self.queue.call(("PING",))

    def new_session_id(self) -> str:
        """``NODE-N``: unique across the cluster, and names the node that holds it."""
        return f"{self.node_id}-{super().new_session_id()}"

    # -- the connection coming and going ----------------------------------------

    async def _up(self) -> None:
        """Subscribe first, then write the directory again, then open for business."""
        self._dirty = False
        await self.link.sync(self._wanted_channels(), self._wanted_patterns())
        # First in the queue, all else comes after: the scripts, then the directory.
        self.queue.replace([("SCRIPT", "LOAD", script) for script in _HOT_SCRIPTS]
                           + self.directory.rewrite())
        claims = self.directory.reclaim()
        self._count_retained()
        async with asyncio.timeout(COMMAND_TIMEOUT):
            await self.queue.call(("PING",))
        self._answered_at = time.monotonic()
        for scope, name, claim in claims:
            if not claim.result():
                log.warning("name %r (%s) was taken on another node while Redis was unreachable; "
                            "both clients keep it until one leaves", name, scope)
        log.info("redis connected at %s as node %s", self.url, self.node_id)

    def _down(self, reason: str) -> None:
        if self.queue.up or not self.link.attempted.is_set():
            log.warning("redis unavailable at %s (%s); serving local clients only, reconnecting",
                        self.url, reason)
            self.stats.redis_disconnects += 1
        self.queue.down()
        self._dirty = True

    def _writer_lost(self, reason: str) -> None:
        if not self.queue.up:
            return  # the link already knows (a batch of a connection that is gone failed late)
        self._down(reason)
        self.link.lost(reason)

    async def _sync_subscriptions(self) -> None:
        """Before each batch: the link's subscriptions follow the local filters and channels."""
        if self._dirty:
            self._dirty = False
            try:
                await self.link.sync(self._wanted_channels(), self._wanted_patterns())
            except BaseException:
                self._dirty = True
                raise

    def _wanted_channels(self) -> set[bytes]:
        keys = self.keys
        wanted = {keys.node_channel}
        for filters in (self.local.filters(), self._pinned_filters):
            wanted.update(keys.topic_channel(f) for f in filters if not is_wildcard(f))
        wanted.update(keys.hub_channel(c) for c in self.local.channel_names())
        wanted.update(keys.hub_channel(c) for c in self._pinned)
        return wanted

    def _wanted_patterns(self) -> set[bytes]:
        filters = [*self.local.filters(), *self._pinned_filters]
        return {self.keys.topic_pattern(f) for f in filters if is_wildcard(f)}

    def _changed(self) -> None:
        self._dirty = True
        self.queue.wake()

    def _hold(self, session: Session) -> None:
        """The barrier (module docstring): the session's next event waits for this batch.

        One barrier per batch, and a session waits on it once however many
        filters it subscribed to in the meantime.
        """
        if session.id not in self.local.sessions or session.closed:
            return
        barrier = self.queue.mark()
        if barrier is None:
            return
        if barrier is not self._barrier:
            self._barrier, self._held = barrier, set()
        if session.id not in self._held:
            self._held.add(session.id)
            session.run(_wait, barrier)

    # -- sessions of this node ----------------------------------------------------

    def attach(self, session: Session) -> None:
        first = not self.local.members(protocol_channel(session.protocol))
        super().attach(session)
        self.directory.attached(session, first)
        if first and protocol_channel(session.protocol) not in self._pinned:
            self._changed()
        # No barrier here: a connection's first messages are not held back for
        # its presence entry (that would put a reply behind the close that a
        # bad next frame earns, RFC 6455 §7.1.7); listings catch up within a
        # round trip.

    def detach(self, session: Session) -> None:
        if session.id not in self.local.sessions:
            return
        departure = self.local.detach(session)
        self.directory.departed(session, departure)
        if any(last for _, last in departure.filters) or any(last for _, last in departure.channels):
            self._changed()

    def touch(self, session: Session) -> None:
        if session.id in self.local.sessions:
            self.directory.touched(session)

    # -- the topic space -----------------------------------------------------------

    def subscribe(self, topic_filter: str, session: Session) -> bool:
        if self.local.is_subscribed(topic_filter, session):
            return True
        if not self.local.admits(session, topic_filter=topic_filter):
            return False
        first = self.local.subscribe(topic_filter, session)
        if session.id not in self.local.sessions:
            return True  # not attached (or gone): nothing for the cluster to know
        self.directory.subscribed(topic_filter, session.id, first)
        if first:
            self._changed()
        if topic_filter not in self._pinned_filters:  # a pinned filter is live already
            self._hold(session)
        return True

    def unsubscribe(self, topic_filter: str, session: Session) -> None:
        if not self.local.is_subscribed(topic_filter, session):
            return
        last = self.local.unsubscribe(topic_filter, session)
        self.directory.unsubscribed(topic_filter, session.id, last)
        if last and topic_filter not in self._pinned_filters:
            self._changed()

    def publish(self, publication: Publication, *, exclude: str | None = None) -> bool:
        """Deliver here, then through Redis. The retained value's size is checked
        here (False past it); the other bounds in Redis (module docstring)."""
        self.local.deliver(publication, exclude)
        kept = not (publication.retain and len(publication.data) > self.max_retained_value_size)
        if not kept:
            self.stats.retained_refused += 1
        queue = self.queue
        if not queue.up:
            self.stats.redis_dropped += 1
            return kept
        envelope = pack_publication(self.node_id, self._next(), publication, exclude)
        topic = publication.topic
        if publication.retain and kept:
            self._retain(publication, envelope)
        limit = self.history_rules.limit(topic)
        if limit:
            self._keep(publication, envelope, limit)
        queue.send(("PUBLISH", self.keys.topic_channel(topic), envelope), fanout=True)
        return kept

    def _retain(self, publication: Publication, envelope: bytes) -> None:
        command = ("EVALSHA", _HOT_SCRIPTS[RETAIN_SCRIPT], 5, *self.keys.retained_books, publication.topic,
                   b"" if publication.empty else envelope, publication.kept_size(), str(publication.sender),
                   self.max_retained, self.max_retained_per_sender, self.max_retained_bytes)
        self.queue.call(command).add_done_callback(self._retained)

    def _script_failed(self, reply: asyncio.Future[Any], script: str) -> bool:
        """True when the script did not run. Redis away is counted elsewhere; a script
        Redis forgot (SCRIPT FLUSH) is logged and loaded again for the next call."""
        if reply.cancelled():
            return True
        error = reply.exception()
        if error is None:
            return False
        if isinstance(error, NoScriptError):
            log.error("redis had forgotten a script (SCRIPT FLUSH?): loading it again")
            self.queue.send(("SCRIPT", "LOAD", script))
        elif not isinstance(error, RedisUnavailable):
            log.error("redis script failed: %s", error)
        return True

    def _retained(self, reply: asyncio.Future[Any]) -> None:
        if self._script_failed(reply, RETAIN_SCRIPT):
            return
        if not reply.result():
            self.stats.retained_refused += 1

    def _keep(self, publication: Publication, envelope: bytes, limit: int) -> None:
        topic, keys = publication.topic, self.keys
        command = ("EVALSHA", _HOT_SCRIPTS[HISTORY_SCRIPT], 5, keys.history(topic), keys.history_sizes(topic),
                   *keys.history_books, topic, envelope, publication.kept_size(), limit,
                   self.max_history_bytes, self.max_history_topics, keys.prefix, EVICTION_SCAN)
        self.queue.call(command).add_done_callback(self._kept)

    def _kept(self, reply: asyncio.Future[Any]) -> None:
        if self._script_failed(reply, HISTORY_SCRIPT):
            return
        trimmed, evicted = reply.result()
        self.stats.history_trimmed += trimmed
        self.stats.history_topics_evicted += evicted

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    async def retained(self, topic_filter: str) -> list[Publication]:
        try:
            if not is_wildcard(topic_filter):
                found = await self.queue.call(("HGET", self.keys.retained, topic_filter))
                return [decode_publication(found)] if found is not None else []
            return await self._scan_retained(topic_filter)
        except RedisUnavailable:
            return []

    def retained_count(self) -> int:
        return self._retained_count

    def _count_retained(self) -> None:
        """Count the retained topics again (at connect, at each heartbeat): other nodes' too."""
        with contextlib.suppress(RedisUnavailable):
            self.queue.call(("HLEN", self.keys.retained)).add_done_callback(self._set_retained_count)

    def _set_retained_count(self, reply: asyncio.Future[Any]) -> None:
        if not reply.cancelled() and reply.exception() is None:
            self._retained_count = int(reply.result())

    async def _scan_retained(self, topic_filter: str) -> list[Publication]:
        """HSCAN with the filter's glob finds candidates; :func:`matches` decides."""
        found: list[Publication] = []
        cursor: Any = 0
        glob = glob_of(topic_filter)
        while True:
            cursor, batch = await self.queue.call(
                ("HSCAN", self.keys.retained, cursor, "MATCH", glob, "COUNT", SCAN_COUNT))
            for pair in _pairs_of(batch):
                topic, envelope = pair[0].decode(), pair[1]
                if matches(topic_filter, topic):
                    found.append(decode_publication(envelope))
            if int(cursor) == 0:
                return found

    def pin(self, topic_filter: str) -> None:
        """Subscribed from the first connection to Redis on (or from the next batch)."""
        if topic_filter not in self._pinned_filters:
            self._pinned_filters.add(topic_filter)
            self._changed()

    def keep_history(self, prefix: str, limit: int) -> None:
        self.history_rules.add(prefix, limit)

    async def history(self, topic: str) -> list[Publication]:
        try:
            items = await self.queue.call(("LRANGE", self.keys.history(topic), 0, -1))
        except RedisUnavailable:
            return []
        return [decode_publication(item) for item in items]

    async def subscribers(self, topic_filter: str) -> list[ClientInfo]:
        return await self.directory.subscribers(topic_filter)

    async def filters(self, prefix: str) -> list[str]:
        return await self.directory.filters(prefix)

    # -- channels ------------------------------------------------------------------

    def join(self, channel: str, session: Session) -> bool:
        if channel in (session.channels or ()):
            return True
        if not self.local.admits(session, channel=channel):
            return False
        first = self.local.join(channel, session)
        if session.id not in self.local.sessions:
            return True
        self.directory.joined(channel, session.id, first)
        if first and channel not in self._pinned:
            self._changed()
        self._hold(session)
        return True

    def leave(self, channel: str, session: Session) -> None:
        if channel not in (session.channels or ()):
            return
        last = self.local.leave(channel, session)
        self.directory.left(channel, session.id, last)
        if last and channel not in self._pinned:
            self._changed()

    def broadcast(self, channel: str, message: Outgoing, *, exclude: str | None = None) -> None:
        self.local.broadcast(channel, message, exclude)
        envelope = pack_message(BROADCAST, self.node_id, self._next(), channel, exclude or "", message)
        self.queue.send(("PUBLISH", self.keys.hub_channel(channel), envelope), fanout=True)

    async def members(self, channel: str) -> list[ClientInfo]:
        return await self.directory.members(channel)

    async def channels(self, prefix: str) -> list[str]:
        return await self.directory.channels(prefix)

    # -- one session -----------------------------------------------------------------

    def send_to(self, session_id: str, message: Outgoing) -> None:
        if self.local.send_to(session_id, message):
            return
        node = node_of(session_id)
        if node and node != self.node_id:
            envelope = pack_message(DIRECT, self.node_id, self._next(), session_id, "", message)
            self.queue.send(("PUBLISH", self.keys.node_channel_of(node), envelope), fanout=True)

    async def close_session(self, session_id: str, code: int, reason: str) -> bool:
        if self.local.close(session_id, code, reason):
            return True
        node = node_of(session_id)
        if not node or node == self.node_id:
            return False
        try:
            if not await self.queue.call(("HEXISTS", self.keys.presence_of(node), session_id)):
                return False
            envelope = pack_kick(self.node_id, self._next(), session_id, code, reason)
            return bool(await self.queue.call(("PUBLISH", self.keys.node_channel_of(node), envelope)))
        except RedisUnavailable:
            return False

    async def clients(self) -> list[ClientInfo]:
        return await self.directory.clients()

    # -- names -----------------------------------------------------------------------

    async def claim_name(self, scope: str, name: str, session: Session) -> bool:
        return await self.directory.claim_name(scope, name, session)

    async def release_name(self, scope: str, name: str, session: Session) -> None:
        await self.directory.release_name(scope, name, session)

    async def lookup_name(self, scope: str, name: str) -> str | None:
        return await self.directory.lookup_name(scope, name)

    async def names(self, scope: str) -> dict[str, str]:
        return await self.directory.names(scope)

    # -- small shared values -------------------------------------------------------------
    # Writes are queued, not awaited: the queue keeps this node's order, so a
    # later read from this node sees them. While Redis is away they are lost.

    async def set_value(self, key: str, value: str) -> None:
        self.queue.send(("HSET", self.keys.values, key, value))

    async def get_value(self, key: str) -> str | None:
        try:
            value = await self.queue.call(("HGET", self.keys.values, key))
        except RedisUnavailable:
            return None
        return value.decode() if value is not None else None

    async def delete_value(self, key: str) -> None:
        self.queue.send(("HDEL", self.keys.values, key))

    async def values(self, prefix: str) -> dict[str, str]:
        try:
            reply = await self.queue.call(("HGETALL", self.keys.values))
        except RedisUnavailable:
            return {}
        found = {k.decode(): v.decode() for k, v in reply.items()}
        return {k: v for k, v in found.items() if k.startswith(prefix)}

    # -- queues (queues.py) ------------------------------------------------------------

    def queue_send(self, queue: str, message: QueueMessage, *, sender: Session | None = None) -> bool:
        if not self.queues.send(queue, message):
            return False
        if sender is not None:
            self._hold(sender)  # its receipt comes once the message is in Redis
        return True

    def queue_consume(self, queue: str, consumer: QueueConsumer, *, session: Session | None = None) -> bool:
        if not self.queues.consume(queue, consumer):
            return False
        in_place = self.queues.in_place() if session is not None else None
        if session is not None and in_place is not None and session.id in self.local.sessions:
            session.run(_wait, asyncio.ensure_future(self._consuming(in_place)))
        return True

    async def _consuming(self, in_place: asyncio.Future[None]) -> None:
        """The reader waits on the queue's stream (then a round trip, so Redis has its read)."""
        with contextlib.suppress(TimeoutError, *UNREACHABLE):
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await asyncio.shield(in_place)
                await self.queue.call(("PING",))

    def queue_cancel(self, queue: str, consumer: QueueConsumer) -> None:
        self.queues.cancel(queue, consumer)

    def queue_settle(self, queue: str, messages: Sequence[QueueMessage], *, consumed: bool,
                     avoid: QueueConsumer | None = None) -> None:
        self.queues.settle(queue, messages, consumed=consumed, avoid=avoid)

    def queue_figures(self) -> QueueFigures:
        return self.queues.figures()

    # -- what comes in from other nodes ------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes) -> None:
        kind, flags, sequence, when, strings, blobs = unpack(data)
        origin = strings[0]
        seen = (origin, sequence)
        if seen == self._last_seen or origin == self.node_id:
            return  # a repeat (exact and pattern subscriptions both matched), or our own
        self._last_seen = seen
        if kind == PUBLICATION:
            self.local.deliver(publication_of(flags, when, strings, blobs), strings[1] or None)
        elif kind == BROADCAST:
            message = Outgoing(blobs[0], is_text=bool(flags & TEXT))
            self.local.broadcast(strings[1], message, strings[2] or None)
        elif kind == DIRECT:
            self.local.send_to(strings[1], Outgoing(blobs[0], is_text=bool(flags & TEXT)))
        elif kind == KICK:
            (code,) = CODE.unpack(blobs[0])
            self.local.close(strings[1], code, strings[2])


def _pairs_of(flat: Any) -> list[tuple[Any, Any]]:
    """HSCAN's field/value list (redis-py may already have made it a dict)."""
    if isinstance(flat, dict):
        return list(flat.items())
    it = iter(flat)
    return list(zip(it, it, strict=True))
