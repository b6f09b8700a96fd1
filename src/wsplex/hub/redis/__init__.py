"""The Redis hub: several wsplex processes acting as one service (SPEC §9).

Fan-out
    One Redis channel per topic, and one SUBSCRIBE per node per topic: the node
    subscribes when its first local session subscribes to a topic and
    unsubscribes when its last one leaves (protocol topics, ``protocol:echo``
    and the like, stay subscribed for the node's lifetime so a client is
    reachable from the moment its handshake completes). Each node also listens
    on its own channel for ``send_to`` and ``close_session`` aimed at one of its
    sessions. Messages from other nodes end in :meth:`Hub.deliver`, the step the
    memory hub uses.

    The publishing node delivers to its own subscribers directly, without a
    round trip, and tags what it sends to Redis with its node id so it skips
    its own messages when they come back. Ordering: messages published by one
    node reach every subscriber in publish order (one queue, one connection,
    and Redis keeps a connection's order); messages from different nodes have
    no common order. Delivery is at most once: whatever is published while
    Redis is unreachable reaches only the publishing node's own clients.

Directory
    Names (``SET NX`` semantics, in a script, holding the session id),
    presence (a hash per node), topic members and topics per node, chat
    history (lists) and latest values (one hash). Everything a node owns has a
    TTL (``Settings.redis_ttl``) renewed by a heartbeat every third of it, so
    a node killed without a goodbye loses its names and presence within the TTL.
    A node answers for itself from memory and asks Redis only about the others,
    so its own view is exact even while Redis is away.

Order of operations
    Every command, fire-and-forget or awaited, goes through one queue drained
    by one writer task as a pipeline: a node's writes and reads happen in the
    order it issued them, and a burst of publishes costs one round trip.

Faults
    When Redis goes away, :attr:`healthy` turns False (``/healthz`` says 503),
    writes are dropped and counted, reads answer from this node alone, and the
    node reconnects with backoff; on reconnecting it re-subscribes and writes
    its sessions, topics and names again (Redis may have restarted empty).
    While Redis is away names are unique per node only.

What goes where in Redis: :mod:`wsplex.hub.redis.schema`. It needs a single
Redis (or a Sentinel-managed primary), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from wsplex.app.hub import ClientInfo, Hub
from wsplex.app.outgoing import Outgoing
from wsplex.app.session import Session
from wsplex.hub.redis.schema import (
    CLAIM_SCRIPT,
    CLIENTS_SCRIPT,
    CODE,
    DIRECT_BINARY,
    DIRECT_TEXT,
    KICK,
    MEMBERS_SCRIPT,
    NAMES_SCRIPT,
    RELEASE_SCRIPT,
    TOPIC_BINARY,
    TOPIC_TEXT,
    TOPICS_SCRIPT,
    Keys,
    node_of,
    pack,
    unpack,
)
from wsplex.stats import Stats

log = logging.getLogger("wsplex.hub.redis")

Command = tuple[Any, ...]

#: Reconnect delays: first retry soon, then double up to the cap.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0
#: Seconds a command or a subscription confirmation may take before Redis counts as down.
#: (Applied with ``asyncio.timeout``: on Python 3.11 ``wait_for`` can swallow the
#: cancellation that stops the hub, gh-86296, and leave a task that never ends.)
COMMAND_TIMEOUT = 5.0
#: Fire-and-forget commands queued past this are dropped (Redis slower than the node).
QUEUE_LIMIT = 100_000


class RedisUnavailable(Exception):
    """Redis cannot be reached right now; callers fall back to this node's view."""


def without_password(url: str) -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://host:6379/0``: safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host).geturl()


def _info(session: Session) -> bytes:
    return orjson.dumps({"protocol": session.protocol, "remote": session.remote,
                         "name": session.name, "since": session.since})


def _client(session_id: str, node: str, raw: bytes) -> ClientInfo:
    data = orjson.loads(raw)
    return ClientInfo(session_id, data["protocol"], data["remote"], data["name"], data["since"], node)


class RedisHub(Hub):
    """A hub for one node of a cluster sharing a Redis server."""

    def __init__(
        self, node_id: str, url: str, *, ttl: float = 15.0, pinned: Iterable[str] = (),
        stats: Stats | None = None,
    ) -> None:
        super().__init__(node_id)
        self.url = without_password(url)  # for logs
        self.stats = stats if stats is not None else Stats()
        self._ttl_ms = max(1000, int(ttl * 1000))
        self._pinned = frozenset(pinned)
        self._redis = Redis.from_url(
            # RESP2: the listener reads pub/sub replies itself, RESP3 would route them to a handler.
            url, protocol=2, retry=Retry(NoBackoff(), 0), socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT, health_check_interval=0,
        )
        db = self._redis.connection_pool.connection_kwargs.get("db", 0)
        self.keys = Keys(f"wsplex:{db}:", node_id)
        self._names: dict[str, dict[str, Session]] = {}  # names held by local sessions
        self._queue: list[tuple[Command, asyncio.Future[Any] | None]] = []
        self._wake = asyncio.Event()
        self._lost = asyncio.Event()
        self._attempted = asyncio.Event()
        self._healthy = False
        self._listener: AbstractConnection | None = None
        self._subscribed: set[str] = set()  # topics subscribed on the current connection
        self._channels: dict[bytes, str] = {}  # channel -> topic, for incoming messages
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._barrier: asyncio.Future[None] | None = None  # see subscribe()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: asyncio.Task[None] | None = None
        self._lost_reason = ""

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Connect, or start degraded and keep trying: a node serves its own clients either way."""
        self._tasks = [
            asyncio.create_task(self._supervise(), name="redis-supervisor"),
            asyncio.create_task(self._write_loop(), name="redis-writer"),
            asyncio.create_task(self._heartbeat_loop(), name="redis-heartbeat"),
        ]
        await self._attempted.wait()

    async def stop(self) -> None:
        """Say goodbye (free names, presence, topics), then close the connections."""
        for task in self._tasks[2:]:
            task.cancel()  # no heartbeat after the goodbye
        if self._healthy:
            with contextlib.suppress(RedisUnavailable, RedisError, OSError, TimeoutError):
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await self._goodbye()
        # The flag as well as cancel(): redis-py may absorb a cancellation in
        # the middle of a command, and the loops must end anyway.
        self._stopping = True
        self._wake.set()
        tasks = [*self._tasks, *([self._reader] if self._reader is not None else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=COMMAND_TIMEOUT)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # already logged where it mattered
        self._tasks = []
        self._healthy = False
        self._fail_queue()  # nobody waits forever on a stopped hub
        self._open_barrier()
        await self._close_listener()
        await self._redis.aclose()

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def sync(self) -> None:
        with contextlib.suppress(RedisUnavailable):
            await self._call(("PING",))

    def new_session_id(self) -> str:
        """``NODE-N``: unique across the cluster, and names the node that holds it."""
        return f"{self.node_id}-{super().new_session_id()}"

    # -- local sessions ------------------------------------------------------

    def attach(self, session: Session) -> None:
        super().attach(session)
        self._send(("HSET", self.keys.presence, session.id, _info(session)))
        self._send(("PEXPIRE", self.keys.presence, self._ttl_ms))

    def detach(self, session: Session) -> None:
        super().detach(session)
        self._send(("HDEL", self.keys.presence, session.id))
        for scope, holders in self._names.items():
            for name in [n for n, s in holders.items() if s is session]:
                del holders[name]
                self._send(self._release_command(scope, name, session.id))

    def touch(self, session: Session) -> None:
        if session.id in self.sessions:
            self._send(("HSET", self.keys.presence, session.id, _info(session)))

    # -- fan-out -------------------------------------------------------------

    def subscribe(self, topic: str, session: Session) -> None:
        first = topic not in self._topics
        super().subscribe(topic, session)
        members = self.keys.members(topic)
        self._send(("SADD", members, session.id))
        if first:
            self._send(("PEXPIRE", members, self._ttl_ms))
            self._send(("SADD", self.keys.topics, topic))
            self._send(("PEXPIRE", self.keys.topics, self._ttl_ms))
            self._wake.set()  # the writer subscribes before its next batch
            if self._healthy and topic not in self._subscribed:
                # The session's next events wait until Redis has confirmed the
                # subscription: a client that got an answer after joining a room
                # hears what other nodes publish there from then on.
                if self._barrier is None:
                    self._barrier = asyncio.get_running_loop().create_future()
                barrier = self._barrier
                session.run(lambda _: barrier)

    def unsubscribe(self, topic: str, session: Session) -> None:
        subscribers = self._topics.get(topic)
        if subscribers is None or session.id not in subscribers:
            return
        super().unsubscribe(topic, session)
        self._send(("SREM", self.keys.members(topic), session.id))
        if topic not in self._topics:
            self._send(("SREM", self.keys.topics, topic))
            self._wake.set()

    def publish(self, topic: str, message: Outgoing, *, exclude: str | None = None) -> None:
        self.deliver(topic, message, exclude)
        kind = TOPIC_TEXT if message.is_text else TOPIC_BINARY
        envelope = pack(kind, self.node_id, exclude or "", message.payload)
        self._send(("PUBLISH", self.keys.topic_channel(topic), envelope), fanout=True)

    def send_to(self, session_id: str, message: Outgoing) -> None:
        if self.deliver_to(session_id, message):
            return
        node = node_of(session_id)
        if node and node != self.node_id:
            kind = DIRECT_TEXT if message.is_text else DIRECT_BINARY
            envelope = pack(kind, self.node_id, session_id, message.payload)
            self._send(("PUBLISH", self.keys.node_channel_of(node), envelope), fanout=True)

    # -- control -------------------------------------------------------------

    async def close_session(self, session_id: str, code: int, reason: str) -> bool:
        session = self.sessions.get(session_id)
        if session is not None:
            session.close(code, reason)
            return True
        node = node_of(session_id)
        if not node or node == self.node_id:
            return False
        try:
            if not await self._call(("HEXISTS", self.keys.presence_of(node), session_id)):
                return False
            envelope = pack(KICK, self.node_id, session_id, CODE.pack(code) + reason.encode())
            return bool(await self._call(("PUBLISH", self.keys.node_channel_of(node), envelope)))
        except RedisUnavailable:
            return False

    async def clients(self) -> list[ClientInfo]:
        # A closed session stays attached until its protocol's on_disconnect has
        # finished (which waits for Redis here): it is gone for the listing.
        found = [ClientInfo.of(s, self.node_id) for s in self.sessions.values() if not s.closed]
        try:
            reply = await self._call(("EVAL", CLIENTS_SCRIPT, 0, self.keys.prefix, self.node_id))
        except RedisUnavailable:
            return found
        for node, flat in _pairs(reply):
            found += [_client(sid.decode(), node.decode(), raw) for sid, raw in _pairs(flat)]
        return found

    async def members(self, topic: str) -> list[ClientInfo]:
        found = [ClientInfo.of(s, self.node_id) for s in self.local_subscribers(topic) if not s.closed]
        try:
            reply = await self._call(("EVAL", MEMBERS_SCRIPT, 0, self.keys.prefix, self.node_id, topic))
        except RedisUnavailable:
            return found
        for i in range(0, len(reply), 3):
            node, ids, infos = reply[i].decode(), reply[i + 1], reply[i + 2]
            found += [_client(sid.decode(), node, raw) for sid, raw in zip(ids, infos, strict=True) if raw]
        return found

    async def topics(self, prefix: str) -> list[str]:
        found = set(self._topics)
        with contextlib.suppress(RedisUnavailable):
            reply = await self._call(("EVAL", TOPICS_SCRIPT, 0, self.keys.prefix, self.node_id))
            found.update(topic.decode() for topic in reply)
        return [topic for topic in found if topic.startswith(prefix)]

    # -- names ---------------------------------------------------------------

    async def claim_name(self, scope: str, name: str, session: Session) -> bool:
        holders = self._names.setdefault(scope, {})
        holder = holders.get(name)
        if holder is not None and holder is not session:
            return False
        attached = session.id in self.sessions
        try:
            claimed = bool(await self._call(self._claim_command(scope, name, session.id)))
        except RedisUnavailable:
            claimed = True  # degraded: unique on this node only (module docstring)
        if claimed and attached and session.id not in self.sessions:
            # The session left while the claim was on its way: give the name back.
            self._send(self._release_command(scope, name, session.id))
            return False
        if claimed:
            holders[name] = session
        return claimed

    async def release_name(self, scope: str, name: str, session: Session) -> None:
        holders = self._names.get(scope, {})
        if holders.get(name) is session:
            del holders[name]
        with contextlib.suppress(RedisUnavailable):
            await self._call(self._release_command(scope, name, session.id))

    async def lookup_name(self, scope: str, name: str) -> str | None:
        holder = self._names.get(scope, {}).get(name)
        if holder is not None:
            return holder.id
        try:
            found = await self._call(("GET", self.keys.name_prefix(scope) + name))
        except RedisUnavailable:
            return None
        return found.decode() if found is not None else None

    async def names(self, scope: str) -> dict[str, str]:
        local = {name: s.id for name, s in self._names.get(scope, {}).items()}
        try:
            reply = await self._call(("EVAL", NAMES_SCRIPT, 1, self.keys.names(scope),
                                      self.keys.name_prefix(scope)))
        except RedisUnavailable:
            return local
        found = {name.decode(): sid.decode() for name, sid in _pairs(reply)}
        mine = {name for name, sid in found.items() if node_of(sid) == self.node_id}
        return {**{n: s for n, s in found.items() if n not in mine}, **local}

    def _claim_command(self, scope: str, name: str, session_id: str) -> Command:
        return ("EVAL", CLAIM_SCRIPT, 2, self.keys.name_prefix(scope) + name, self.keys.names(scope),
                session_id, self._ttl_ms, name)

    def _release_command(self, scope: str, name: str, session_id: str) -> Command:
        return ("EVAL", RELEASE_SCRIPT, 2, self.keys.name_prefix(scope) + name, self.keys.names(scope),
                session_id, name)

    # -- shared state --------------------------------------------------------
    # Writes are queued, not awaited: the queue keeps this node's order, so a
    # later read from this node sees them. While Redis is away they are lost.

    async def append_history(self, key: str, item: str, limit: int) -> None:
        if limit > 0:
            self._send(("RPUSH", self.keys.history(key), item))
            self._send(("LTRIM", self.keys.history(key), -limit, -1))

    async def history(self, key: str) -> list[str]:
        try:
            items = await self._call(("LRANGE", self.keys.history(key), 0, -1))
        except RedisUnavailable:
            return []
        return [item.decode() for item in items]

    async def set_value(self, key: str, value: str) -> None:
        self._send(("HSET", self.keys.values, key, value))

    async def get_value(self, key: str) -> str | None:
        try:
            value = await self._call(("HGET", self.keys.values, key))
        except RedisUnavailable:
            return None
        return value.decode() if value is not None else None

    async def delete_value(self, key: str) -> None:
        self._send(("HDEL", self.keys.values, key))

    async def values(self, prefix: str) -> dict[str, str]:
        try:
            reply = await self._call(("HGETALL", self.keys.values))
        except RedisUnavailable:
            return {}
        found = {k.decode(): v.decode() for k, v in reply.items()}
        return {k: v for k, v in found.items() if k.startswith(prefix)}

    # -- the command queue ---------------------------------------------------

    def _send(self, command: Command, *, fanout: bool = False) -> None:
        """Queue a command nobody waits for; dropped (and counted) while Redis is away."""
        if not self._healthy or len(self._queue) >= QUEUE_LIMIT:
            if fanout:
                self.stats.redis_dropped += 1
            return
        if not self._queue:
            self._wake.set()
        self._queue.append((command, None))

    async def _call(self, command: Command) -> Any:
        """Queue a command and wait for its reply, in order with everything queued before."""
        return await self._enqueue(command)

    def _enqueue(self, command: Command) -> asyncio.Future[Any]:
        if not self._healthy:
            raise RedisUnavailable
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._queue:
            self._wake.set()
        self._queue.append((command, future))
        return future

    async def _write_loop(self) -> None:
        """Drain the queue as pipelines; subscription changes go out before each batch."""
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if not self._healthy:
                self._fail_queue()
                continue
            try:
                await self._sync_subscriptions()
                batch, self._queue = self._queue, []
                if batch:
                    await self._execute(batch)
            except (RedisUnavailable, RedisError, OSError, TimeoutError) as exc:
                self._connection_lost(f"writing: {exc!r}")
            except Exception:  # a bug of ours: start over on a fresh connection, keep the writer
                log.exception("writing to redis failed")
                self._connection_lost("internal error")

    async def _execute(self, batch: list[tuple[Command, asyncio.Future[Any] | None]]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for command, _ in batch:
                    pipe.execute_command(*command)
                results = await pipe.execute(raise_on_error=False)
        except BaseException:
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(RedisUnavailable())
            raise
        for (command, future), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                if future is not None and not future.done():
                    future.set_exception(result)
                else:
                    log.error("redis command %s failed: %s", command[0], result)
            elif future is not None and not future.done():
                future.set_result(result)

    def _fail_queue(self) -> None:
        batch, self._queue = self._queue, []
        for _, future in batch:
            if future is not None and not future.done():
                future.set_exception(RedisUnavailable())

    # -- subscriptions -------------------------------------------------------

    def _open_barrier(self, barrier: asyncio.Future[None] | None = None) -> None:
        """Let the sessions waiting for subscriptions go on (never with an error: that would close them)."""
        if barrier is None:
            barrier, self._barrier = self._barrier, None
        if barrier is not None and not barrier.done():
            barrier.set_result(None)

    async def _sync_subscriptions(self) -> None:
        """Make the Redis subscriptions match the local topics, and wait for Redis to confirm.

        Waiting means that once this node has published anything after a local
        subscribe, its subscription is live on Redis.
        """
        barrier, self._barrier = self._barrier, None  # subscribes from now on wait for the next round
        try:
            await self._resubscribe()
        finally:
            self._open_barrier(barrier)

    async def _resubscribe(self) -> None:
        listener = self._listener
        if listener is None:
            return
        wanted = self._topics.keys() | self._pinned
        gone = self._subscribed - wanted
        if gone:
            self._subscribed -= gone
            for topic in gone:
                self._channels.pop(self.keys.topic_channel(topic), None)
            await listener.send_command("UNSUBSCRIBE", *(self.keys.topic_channel(t) for t in gone))
        new = wanted - self._subscribed
        if new:
            self._subscribed |= new
            await self._subscribe(listener, new)

    async def _subscribe(
        self, listener: AbstractConnection, topics: Iterable[str], *extra: bytes
    ) -> None:
        loop = asyncio.get_running_loop()
        channels = list(extra)
        for topic in topics:
            channel = self.keys.topic_channel(topic)
            self._channels[channel] = topic
            channels.append(channel)
        waits = [self._confirmations.setdefault(c, loop.create_future()) for c in channels]
        await listener.send_command("SUBSCRIBE", *channels)
        async with asyncio.timeout(COMMAND_TIMEOUT):
            await asyncio.gather(*waits)

    # -- the connection: supervisor, listener, heartbeat ----------------------

    async def _supervise(self) -> None:
        """Connect, listen until the connection is lost, back off, connect again."""
        delay = BACKOFF_MIN
        while not self._stopping:
            try:
                await self._connect()
            except Exception as exc:  # Redis errors, and a bug of ours must not end reconnecting
                if not isinstance(exc, (RedisUnavailable, RedisError, OSError, TimeoutError)):
                    log.exception("connecting to redis failed")
                if not self._attempted.is_set():
                    log.warning("redis unavailable at %s (%s); serving local clients only, retrying",
                                self.url, exc)
                    self.stats.redis_disconnects += 1
                self._attempted.set()
                await self._close_listener()
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_MIN
            self._attempted.set()
            reason = await self._listen_until_lost()
            self._connection_lost(reason)
            await self._close_listener()

    async def _connect(self) -> None:
        """Subscribe first, then write this node's directory again, then open for business."""
        self._lost.clear()
        listener: AbstractConnection = self._redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        self._listener = listener
        await listener.connect()  # type: ignore[no-untyped-call]
        reader = self._reader = asyncio.create_task(self._read(listener))
        claims: list[tuple[str, str, asyncio.Future[Any]]] = []  # resolved before the PING
        try:
            topics = self._topics.keys() | self._pinned
            self._subscribed = set(topics)
            await self._subscribe(listener, topics, self.keys.node_channel)
            # The directory goes first in the queue, so whatever happens from
            # now on is written after it, in order.
            self._queue = [(command, None) for command in self._directory()]
            self._healthy = True
            self._wake.set()
            claims = [(scope, name, self._enqueue(self._claim_command(scope, name, s.id)))
                      for scope, holders in self._names.items() for name, s in holders.items()]
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self._call(("PING",))
            for scope, name, claim in claims:
                if not claim.result():
                    log.warning("name %r (%s) was taken on another node while Redis was unreachable; "
                                "both clients keep it until one leaves", name, scope)
        except BaseException:
            for task in [reader, *(claim for _, _, claim in claims)]:
                task.cancel()
                if task.done() and not task.cancelled():
                    task.exception()  # reported through what _connect raises
            self._connection_lost("connecting")
            raise
        log.info("redis connected at %s as node %s", self.url, self.node_id)

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

    async def _read(self, listener: AbstractConnection) -> None:
        while True:
            reply = await listener.read_response(timeout=math.inf)
            if isinstance(reply, list) and reply:
                self._on_reply(reply)

    def _on_reply(self, reply: list[Any]) -> None:
        kind = reply[0]
        if kind == b"message":
            try:
                self._on_message(reply[1], reply[2])
            except Exception:  # one bad envelope must not stop the listener
                log.exception("bad message on redis channel %r", reply[1])
        elif kind == b"subscribe":
            future = self._confirmations.pop(reply[1], None)
            if future is not None and not future.done():
                future.set_result(None)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        kind, origin, session_id, payload = unpack(data)
        if channel == self.keys.node_channel:
            self._on_direct(kind, session_id, payload)
            return
        topic = self._channels.get(channel)
        if topic is not None and origin != self.node_id:
            self.deliver(topic, Outgoing(payload, is_text=kind == TOPIC_TEXT), session_id or None)

    def _on_direct(self, kind: bytes, session_id: str, payload: bytes) -> None:
        if kind == KICK:
            session = self.sessions.get(session_id)
            if session is not None:
                (code,) = CODE.unpack_from(payload)
                session.close(code, payload[CODE.size:].decode())
        else:
            self.deliver_to(session_id, Outgoing(payload, is_text=kind == DIRECT_TEXT))

    def _connection_lost(self, reason: str) -> None:
        if self._healthy:
            log.warning("redis unavailable (%s); serving local clients only, reconnecting", reason)
            self.stats.redis_disconnects += 1
        self._healthy = False
        self._lost_reason = reason
        self._lost.set()
        self._fail_queue()
        for future in self._confirmations.values():
            if not future.done():
                future.set_exception(RedisUnavailable())
        self._confirmations.clear()
        self._open_barrier()

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        self._subscribed = set()
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.disconnect()

    async def _heartbeat_loop(self) -> None:
        """Renew this node's keys every third of the TTL."""
        while not self._stopping:
            await asyncio.sleep(self._ttl_ms / 3000)
            if self._healthy:
                for command in self._directory(refresh=True):
                    self._send(command)

    def _directory(self, *, refresh: bool = False) -> Iterator[Command]:
        """The commands that (re)write everything this node owns in Redis.

        On connect the node's keys are written from scratch (Redis may have
        restarted empty, or the TTL may have run out during an outage); the
        heartbeat only renews them.
        """
        ttl = self._ttl_ms
        keys = self.keys
        yield ("SET", keys.alive, "1", "PX", ttl)
        yield ("SADD", keys.nodes, self.node_id)
        if not refresh:
            yield ("DEL", keys.presence, keys.topics)
            if self.sessions:
                yield ("HSET", keys.presence, *self._presence_fields())
            if self._topics:
                yield ("SADD", keys.topics, *self._topics)
        yield ("PEXPIRE", keys.presence, ttl)
        yield ("PEXPIRE", keys.topics, ttl)
        for topic, subscribers in self._topics.items():
            if not refresh:
                yield ("DEL", keys.members(topic))
                yield ("SADD", keys.members(topic), *subscribers)
            yield ("PEXPIRE", keys.members(topic), ttl)
        if refresh:  # on connect, _connect claims them and reports clashes
            for scope, holders in self._names.items():
                for name, session in holders.items():
                    yield self._claim_command(scope, name, session.id)

    def _presence_fields(self) -> Iterator[Any]:
        for session in self.sessions.values():
            yield session.id
            yield _info(session)

    async def _goodbye(self) -> None:
        """Free everything this node holds at once rather than after the TTL."""
        await self.sync()
        async with self._redis.pipeline(transaction=False) as pipe:
            for scope, holders in self._names.items():
                for name, session in holders.items():
                    pipe.execute_command(*self._release_command(scope, name, session.id))
            pipe.delete(self.keys.presence, self.keys.topics, self.keys.alive,
                        *(self.keys.members(t) for t in self._topics))
            pipe.srem(self.keys.nodes, self.node_id)
            await pipe.execute()


def _pairs(flat: list[Any]) -> Iterator[tuple[Any, Any]]:
    """``[a, 1, b, 2]`` -> ``(a, 1), (b, 2)``: how Redis returns hashes from scripts."""
    it = iter(flat)
    return zip(it, it, strict=True)
