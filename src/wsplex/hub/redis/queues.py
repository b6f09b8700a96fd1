"""Queues shared by the cluster (SPEC §12): a Redis stream per queue, one consumer group.

Keys (``P`` as in :mod:`.schema`): ``P:q:QUEUE`` the queue's stream, read by
the group ``wsplex`` in which each node is the consumer named by its node
id; ``P:qbytes`` (hash) queue -> bytes of its waiting messages;
``P:qwake:NODE`` a stream of one entry that wakes the node's reader.

Sending
    :data:`SEND_SCRIPT` XADDs the message (fields ``d`` data, ``r``
    redelivered), adds its size to the queue's byte count and, past
    ``--stomp-queue-limit`` waiting messages or ``--stomp-queue-bytes``, deletes
    the oldest *waiting* ones (after the group's last delivered id; what was
    delivered and not acknowledged is never dropped), in one atomic step. The
    newest message is always kept. The drops are counted by the sending node.

Reading
    One reader task per node, on a connection of its own, runs a blocking
    XREADGROUP (no timeout) over the streams of the queues that have consumers
    on this node, plus its wake stream: a consumer that comes or goes XADDs to
    the wake stream, so the reader starts over with the new set. Redis serves
    blocked readers of a stream first come first served, so consecutive
    messages alternate between the nodes waiting on a queue; within a node
    the consumers take turns (:class:`~wsplex.hub.queues.Consumers`). One read
    takes up to ``READ_COUNT`` messages, so a backlog goes to the nodes in
    runs of up to that many. An
    entry read is pending for this node (the group's PEL) until settled:
    consumed, it is XACKed and XDELed (auto mode: right after delivery);
    given back (NACK, or its consumer left) it goes to another consumer of
    this node if there is one, else :data:`SEND_SCRIPT` re-adds it marked
    redelivered and acks the old entry in the same atomic step, so it is
    never in two places. A given-back message goes to the tail of the
    stream, not to its old place.

A node that dies
    Its entries stay pending under its name. Every third of ``--redis-ttl``
    each node with consumers of a queue runs :data:`TAKEOVER_SCRIPT`: the
    pending entries of consumers whose ``P:alive:NODE`` key is gone (the node
    said goodbye, or missed its TTL) are XCLAIMed and delivered again here,
    marked redelivered, and the dead consumer is removed from the group. A
    message sent to a node lives in Redis, so it survives that node whether
    or not it was delivered. Entries pending for a live node that none of its
    consumers holds (a give-back that failed while Redis was away) are taken
    again by that node once idle for a TTL. Guarantee: each message is consumed once while
    nodes live; a node that dies holding unacknowledged (or auto-mode,
    in-flight) messages has them delivered again (at least once).

While Redis is away, a send is dropped (counted as dropped) and nothing is
read; the reader starts over when Redis is back. Streams are not deleted when
a queue empties (an empty stream costs a few hundred bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import NoScriptError, ResponseError

from wsplex.app.hub import QueueConsumer, QueueFigures, QueueMessage
from wsplex.hub.queues import Consumers
from wsplex.hub.redis.commands import UNREACHABLE, CommandQueue, RedisUnavailable
from wsplex.stats import Stats

log = logging.getLogger("wsplex.hub.redis")

GROUP = "wsplex"
#: Entries one read takes at most.
READ_COUNT = 100
#: Seconds the reader waits before starting over after Redis went away.
RETRY = 0.5

#: KEYS: stream, bytes hash. ARGV: group, data, redelivered (0/1), limit, max bytes, queue name,
#: and the id of the entry being given back ('' for a new message). Returns how many were
#: dropped and how many wait now, or -1 when the given-back entry was no longer pending
#: (taken over, or dropped): nothing was added.
SEND_SCRIPT = """
local stream, group, data = KEYS[1], ARGV[1], ARGV[2]
if ARGV[7] ~= '' then
  if redis.call('XACK', stream, group, ARGV[7]) == 0 then return {-1, -1} end
  redis.call('XDEL', stream, ARGV[7])
else
  redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
end
redis.call('XADD', stream, '*', 'd', data, 'r', ARGV[3])
local bytes = redis.call('HINCRBY', KEYS[2], ARGV[6], #data)
local waiting = redis.call('XLEN', stream) - redis.call('XPENDING', stream, group)[1]
local limit, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local dropped = 0
if waiting > limit or bytes > max_bytes then
  local last = '0-0'
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local fields = {}
    for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
    if fields['name'] == group then last = fields['last-delivered-id'] end
  end
  while waiting > 1 and (waiting > limit or bytes > max_bytes) do
    local oldest = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)
    if #oldest == 0 then break end
    local id, fields = oldest[1][1], oldest[1][2]
    redis.call('XDEL', stream, id)
    bytes = redis.call('HINCRBY', KEYS[2], ARGV[6], -#fields[2])
    waiting, dropped, last = waiting - 1, dropped + 1, id
  end
end
return {dropped, waiting}
"""

_SEND_SHA = hashlib.sha1(SEND_SCRIPT.encode()).hexdigest()

#: KEYS: stream. ARGV: group, this node, the alive-key prefix. The entries of dead consumers,
#: claimed by this node (flat: id, fields, id, fields...).
TAKEOVER_SCRIPT = """
local stream, group, me = KEYS[1], ARGV[1], ARGV[2]
local out = {}
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local name = info[2]
  if name ~= me and redis.call('EXISTS', ARGV[3] .. name) == 0 then
    local ids = {}
    for _, entry in ipairs(redis.call('XPENDING', stream, group, '-', '+', 1000, name)) do
      ids[#ids + 1] = entry[1]
    end
    if #ids > 0 then
      for _, claimed in ipairs(redis.call('XCLAIM', stream, group, me, 0, unpack(ids))) do
        if claimed[2] then out[#out + 1] = claimed[1]; out[#out + 1] = claimed[2] end
      end
    end
    if #ids < 1000 then redis.call('XGROUP', 'DELCONSUMER', stream, group, name) end
  end
end
return out
"""

#: KEYS: stream. ARGV: group, this node, milliseconds. The ids pending for this node that long.
IDLE_SCRIPT = """
local out = {}
for _, entry in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 1000, ARGV[2])) do
  out[#out + 1] = entry[1]
end
return out
"""

#: KEYS: stream. ARGV: group, this node, milliseconds, ids. Those still pending that long,
#: claimed again by this node (flat: id, fields, id, fields...).
RECLAIM_SCRIPT = """
local out = {}
for _, claimed in ipairs(redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(ARGV, 4))) do
  if claimed[2] then out[#out + 1] = claimed[1]; out[#out + 1] = claimed[2] end
end
return out
"""

#: KEYS: streams. ARGV: group. Waiting messages of each: its length less what is pending.
WAITING_SCRIPT = """
local out = {}
for i, stream in ipairs(KEYS) do
  local ok, pending = pcall(redis.call, 'XPENDING', stream, ARGV[1])
  if ok then out[i] = redis.call('XLEN', stream) - pending[1] else out[i] = 0 end
end
return out
"""


class StreamQueues:
    """The Redis hub's queue operations (``Hub.queue_*``) and its reader task (module doc)."""

    def __init__(self, redis: Redis, queue: CommandQueue, prefix: str, node: str, ttl: float,
                 stats: Stats) -> None:
        self._redis = redis
        self._queue = queue
        self._prefix = f"{prefix}q:"
        self._bytes = f"{prefix}qbytes"
        self._alive_prefix = f"{prefix}alive:"
        self.wake_key = f"{prefix}qwake:{node}"
        self._node = node
        self._stats = stats
        self._check_every = max(0.3, ttl / 3)
        self.limit, self.max_bytes, self.max_queues = 10_000, 64 << 20, 10_000  # create_hub sets them
        self.local: dict[str, Consumers] = {}  # queues with consumers on this node
        self.known: set[str] = set()  # queues this node sent to or consumes
        self.dropped = 0
        self._waiting: dict[str, int] = {}  # per queue: at the last send or look, less what was read
        self.stopping = False
        self._loaded = False  # SEND_SCRIPT is in Redis's script cache (as far as we know)
        #: Resolved once the reader waits on the streams of every local queue so far.
        self._in_place: asyncio.Future[None] | None = None
        self._stale = False  # the local queues changed since the reader last looked
        self._ttl_ms = max(1000, int(ttl * 1000))
        self._held: set[str] = set()  # entry ids a consumer of this node holds (not settled)

    def _stream(self, name: str) -> str:
        return self._prefix + name

    def _admit(self, name: str) -> bool:
        if name in self.known:
            return True
        if len(self.known) >= self.max_queues:
            return False
        self.known.add(name)
        return True

    # -- the hub's queue operations ----------------------------------------------------

    def send(self, name: str, message: QueueMessage, *, given_back: str = "") -> bool:
        if not self._admit(name):
            return False
        self._run_send(name, (2, self._stream(name), self._bytes, GROUP, message.data,
                              int(message.redelivered), self.limit, self.max_bytes, name, given_back))
        return True

    def _run_send(self, name: str, args: tuple[Any, ...]) -> None:
        """:data:`SEND_SCRIPT` by its SHA1 once Redis has it (the first call sends it whole)."""
        command = ("EVALSHA", _SEND_SHA, *args) if self._loaded else ("EVAL", SEND_SCRIPT, *args)
        try:
            reply = self._queue.call(command)
        except RedisUnavailable:
            self._lost(args)
            return
        self._loaded = True
        reply.add_done_callback(lambda done: self._sent(name, args, done))

    def _sent(self, name: str, args: tuple[Any, ...], reply: asyncio.Future[Any]) -> None:
        if reply.cancelled():
            return
        problem = reply.exception()
        if isinstance(problem, NoScriptError):  # Redis restarted, or SCRIPT FLUSH
            self._loaded = False
            self._run_send(name, args)
            return
        if problem is not None:
            if not isinstance(problem, RedisUnavailable):
                log.error("redis queue send failed: %s", problem)
            self._lost(args)
            return
        dropped, waiting = (int(n) for n in reply.result())
        if dropped > 0:
            self.dropped += dropped
        if waiting >= 0:
            self._waiting[name] = waiting

    def _lost(self, args: tuple[Any, ...]) -> None:
        """A send that did not reach Redis: a new message is dropped (counted); a given-back
        one is still pending for this node, and :meth:`_reclaim` delivers it again."""
        if not args[-1]:
            self.dropped += 1

    def consume(self, name: str, consumer: QueueConsumer) -> bool:
        if not self._admit(name):
            return False
        consumers = self.local.get(name)
        if consumers is None:
            consumers = self.local[name] = Consumers()
            self._wake()
        consumers.add(consumer)
        return True

    def in_place(self) -> asyncio.Future[None] | None:
        """Resolved once the reader's next XREADGROUP covers every queue consumed here so far
        (a new consumer's SUBSCRIBE receipt waits for it, then a round trip); None when the
        current one does."""
        if not self._stale:
            return None
        if self._in_place is None:
            self._in_place = asyncio.get_running_loop().create_future()
        return self._in_place

    def cancel(self, name: str, consumer: QueueConsumer) -> None:
        consumers = self.local.get(name)
        if consumers is None:
            return
        consumers.remove(consumer)
        if not consumers.consumers:
            del self.local[name]
            self._wake()

    def settle(self, name: str, messages: Sequence[QueueMessage], *, consumed: bool,
               avoid: QueueConsumer | None = None) -> None:
        ids = [message.ref for message in messages if isinstance(message.ref, str)]
        self._held.difference_update(ids)
        if consumed:
            if ids:
                stream = self._stream(name)
                self._queue.send(("XACK", stream, GROUP, *ids))
                self._queue.send(("XDEL", stream, *ids))
            return
        consumers = self.local.get(name)
        for message in messages:
            message.redelivered = True
            chosen = consumers.next(avoid) if consumers is not None else None
            if chosen is not None and chosen is not avoid:
                self._held.add(str(message.ref))
                chosen.take(name, message)  # still pending for this node: no round trip
            elif isinstance(message.ref, str):
                self.send(name, message, given_back=message.ref)

    def figures(self) -> QueueFigures:
        return QueueFigures(len(self.known), sum(self._waiting.values()), self.dropped)

    def _wake(self) -> None:
        self._stale = True
        self._queue.send(("XADD", self.wake_key, "MAXLEN", "1", "*", "w", "1"))

    # -- the reader ------------------------------------------------------------------------

    async def run(self) -> None:
        """Read for as long as the node runs; start over whenever Redis went away."""
        looking = asyncio.create_task(self._look_now_and_then(), name="redis-queues-look")
        reader = _reader_of(self._redis)
        try:
            while not self.stopping:
                try:
                    await self._read(reader)
                except UNREACHABLE:
                    await asyncio.sleep(RETRY)  # the link reconnects meanwhile
                except ResponseError as exc:  # e.g. NOGROUP after a FLUSHALL: start over
                    log.warning("redis queue reader: %s", exc)
                    await asyncio.sleep(RETRY)
                except Exception:
                    log.exception("redis queue reader failed")
                    await asyncio.sleep(RETRY)
        finally:
            looking.cancel()
            await reader.aclose()

    async def _read(self, reader: Redis) -> None:
        """XREADGROUP without a timeout (``BLOCK 0``): a reader waits in Redis's line for its
        streams until a message or its wake stream ends the wait, so the readers of a
        queue's nodes keep their order, and consecutive messages alternate between them."""
        await _create_group(reader, self.wake_key, "$")
        ready: set[str] = set()
        while not self.stopping:
            names, in_place, self._in_place = list(self.local), self._in_place, None
            self._stale = False
            for name in names:
                if name not in ready:
                    await _create_group(reader, self._stream(name), "0")
                    ready.add(name)
            streams = {self.wake_key: ">", **{self._stream(name): ">" for name in names}}
            if in_place is not None and not in_place.done():
                in_place.set_result(None)  # its callbacks run once the read below is on its way
            reply: Any = await reader.xreadgroup(
                GROUP, self._node, streams, count=READ_COUNT, block=0)  # type: ignore[arg-type]
            for stream, entries in reply or ():
                self._arrived(stream.decode(), entries)

    def _arrived(self, stream: str, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> None:
        if stream == self.wake_key:
            ids = [entry_id for entry_id, _ in entries]
            self._queue.send(("XACK", stream, GROUP, *ids))
            return
        name = stream[len(self._prefix):]
        size = 0
        for entry_id, fields in entries:
            if fields is None:
                continue
            data = fields.get(b"d", b"")
            size += len(data)
            self._deliver(name, QueueMessage(data, fields.get(b"r") == b"1", ref=entry_id.decode()))
        if size:
            self._queue.send(("HINCRBY", self._bytes, name, -size))
        self._waiting[name] = max(0, self._waiting.get(name, 0) - len(entries))

    def _deliver(self, name: str, message: QueueMessage) -> None:
        consumers = self.local.get(name)
        chosen = consumers.next() if consumers is not None else None
        if chosen is not None:
            self._held.add(str(message.ref))
            chosen.take(name, message)
        else:  # its consumers left while it was on its way: to the cluster again
            self.send(name, message, given_back=str(message.ref))

    async def _look_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(self._check_every)
            try:
                await self._look()
            except UNREACHABLE:
                pass  # Redis away: the next look
            except Exception:
                log.exception("redis queue look failed")

    async def _look(self) -> None:
        """Take over what dead nodes held; count the waiting messages; forget idle queues."""
        for name in list(self.local):
            claimed = await self._queue.call(("EVAL", TAKEOVER_SCRIPT, 1, self._stream(name), GROUP,
                                              self._node, self._alive_prefix))
            it = iter(claimed)
            for entry_id, flat in zip(it, it, strict=True):
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                self._deliver(name, QueueMessage(fields.get(b"d", b""), True, ref=entry_id.decode()))
            await self._reclaim(name)
        known = sorted(self.known)
        counts = await self._queue.call(("EVAL", WAITING_SCRIPT, len(known),
                                         *[self._stream(name) for name in known], GROUP)) if known else []
        self._waiting = {name: int(count) for name, count in zip(known, counts, strict=True)}
        for name, count in self._waiting.items():
            if not count and name not in self.local:
                self.known.discard(name)


    async def _reclaim(self, name: str) -> None:
        """Entries pending for this node that no consumer here holds, idle for a TTL (a give-back
        that failed while Redis was away): delivered again, as a dead node's would be."""
        stream, ttl = self._stream(name), self._ttl_ms
        idle = await self._queue.call(("EVAL", IDLE_SCRIPT, 1, stream, GROUP, self._node, ttl))
        orphans = [entry_id for entry_id in idle if entry_id.decode() not in self._held]
        if not orphans:
            return
        claimed = await self._queue.call(("EVAL", RECLAIM_SCRIPT, 1, stream, GROUP, self._node, ttl,
                                          *orphans))
        it = iter(claimed)
        for entry_id, flat in zip(it, it, strict=True):
            if entry_id.decode() not in self._held:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                self._deliver(name, QueueMessage(fields.get(b"d", b""), True, ref=entry_id.decode()))


def _reader_of(redis: Redis) -> Redis:
    """A client of one connection for the blocking reads: no socket timeout (a read waits as
    long as no message comes), TCP keepalive to notice a peer that vanished."""
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": None, "socket_keepalive": True}
    return Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class,
                                                max_connections=1, **kwargs))


async def _create_group(connection: Redis, stream: str, start: str) -> None:
    with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
        await connection.xgroup_create(stream, GROUP, id=start, mkstream=True)
