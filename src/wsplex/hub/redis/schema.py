"""What the Redis hub keeps in Redis, and how its messages look on a channel (SPEC §9, §10).

Keys (``P`` is ``wsplex:DB:``; the database number is in it because pub/sub
channels are shared by every database of a server):

* ``P:nodes`` (set) the nodes that have run; ``P:alive:NODE`` (string, TTL)
  which of them are alive;
* ``P:presence:NODE`` (hash, TTL) session id -> JSON of the client;
* ``P:filters:NODE`` (set, TTL) topic filters with subscribers on the node,
  ``P:fmembers:NODE:FILTER`` (set, TTL) their session ids;
* ``P:channels:NODE`` (set, TTL) channels with members on the node,
  ``P:cmembers:NODE:CHANNEL`` (set, TTL) their session ids;
* ``P:name:SCOPE:NAME`` (string, TTL) the session id holding a name, and
  ``P:names:SCOPE`` (hash) the same, to list a scope;
* ``P:retained`` (hash) topic -> envelope of its retained publication, with
  its bookkeeping for the bounds (:data:`RETAIN_SCRIPT`): ``P:rsize`` and
  ``P:rowner`` (hashes) topic -> payload bytes and sender, ``P:rsenders``
  (hash) sender -> topics held, ``P:rbytes`` (string) payload bytes in all;
* ``P:history:TOPIC`` (list) envelopes of its last publications,
  ``P:hsizes:TOPIC`` (list) their payload sizes, ``P:hbytes`` (hash) topic ->
  payload bytes kept, ``P:htopics`` (sorted set) the topics with a history,
  oldest first (scores from ``P:hseq``) (:data:`HISTORY_SCRIPT`);
* ``P:values`` (hash): shared state. None of these has a TTL.

Pub/sub channels, one namespace each so a pattern over topics never catches
anything else: ``P:t:TOPIC`` for publications, ``P:c:CHANNEL`` for a hub
channel's ``broadcast``, ``P:node:NODE`` for one node's sessions (``send_to``,
``kick``). A wildcard filter is a PSUBSCRIBE to :func:`topic_pattern`, a glob
that matches every topic the filter matches and some more; the receiving node
matches exactly (``Local.deliver``).

A message on a channel is an envelope (:func:`pack`): a kind byte, flags, the
origin node's sequence number and a time, then length-prefixed strings and
blobs. The scripts make each directory read one round trip; they reach keys
they do not declare, which a single Redis allows and Redis Cluster does not.
"""

from __future__ import annotations

import struct
from typing import Final

from wsplex.app.outgoing import Outgoing
from wsplex.app.publication import Publication, Sender
from wsplex.app.topics import MULTI, SEPARATOR, SINGLE

# Envelope kinds (first byte of a message on a channel).
PUBLICATION: Final = b"p"
BROADCAST: Final = b"c"
DIRECT: Final = b"d"
KICK: Final = b"k"

# Flags (second byte).
RETAIN: Final = 1
TEXT: Final = 2
NATIVE: Final = 4
NATIVE_TEXT: Final = 8

_HEAD = struct.Struct("!cBQdBB")  # kind, flags, sequence, time, strings, blobs
_STRING = struct.Struct("!H")
_BLOB = struct.Struct("!I")
CODE = struct.Struct("!H")

#: Infixes of the per-node membership keys: topic filters and channels are kept apart.
FILTERS: Final = "f"
CHANNELS: Final = "c"

# -- Lua scripts: one round trip each, atomic --------------------------------

_LIVE_NODES = """
local prefix = ARGV[1]
local live = {}
for _, node in ipairs(redis.call('SMEMBERS', prefix .. 'nodes')) do
  if redis.call('EXISTS', prefix .. 'alive:' .. node) == 1 then
    if node ~= ARGV[2] then live[#live + 1] = node end
  else
    redis.call('SREM', prefix .. 'nodes', node)
  end
end
"""

#: Other live nodes, each followed by its presence hash (flat field/value list).
CLIENTS_SCRIPT: Final = _LIVE_NODES + """
local out = {}
for _, node in ipairs(live) do
  out[#out + 1] = node
  out[#out + 1] = redis.call('HGETALL', prefix .. 'presence:' .. node)
end
return out
"""

#: Other live nodes, each followed by its members of ARGV[4] (kind ARGV[3]) and their presence.
#: HMGET goes by chunks: Lua's unpack() fails past a few thousand values, and a
#: protocol's channel holds every session of the protocol.
MEMBERS_SCRIPT: Final = _LIVE_NODES + """
local out = {}
for _, node in ipairs(live) do
  local ids = redis.call('SMEMBERS', prefix .. ARGV[3] .. 'members:' .. node .. ':' .. ARGV[4])
  if #ids > 0 then
    local infos = {}
    for first = 1, #ids, 1000 do
      local chunk = redis.call('HMGET', prefix .. 'presence:' .. node,
                               unpack(ids, first, math.min(first + 999, #ids)))
      for i = 1, #chunk do infos[#infos + 1] = chunk[i] end
    end
    out[#out + 1] = node
    out[#out + 1] = ids
    out[#out + 1] = infos
  end
end
return out
"""

#: The filters (ARGV[3] = 'filters') or channels (ARGV[3] = 'channels') of other live nodes.
LISTING_SCRIPT: Final = _LIVE_NODES + """
local out = {}
for _, node in ipairs(live) do
  for _, item in ipairs(redis.call('SMEMBERS', prefix .. ARGV[3] .. ':' .. node)) do
    out[#out + 1] = item
  end
end
return out
"""

#: SET NX, except that the holder may claim again (and so renew its TTL).
CLAIM_SCRIPT: Final = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

#: Delete the name only if this session holds it.
RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
"""

#: Every name in a scope whose key is still alive; forgets the expired ones.
NAMES_SCRIPT: Final = """
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local holder = redis.call('GET', ARGV[1] .. all[i])
  if holder then
    out[#out + 1] = all[i]
    out[#out + 1] = holder
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
"""


#: Retain a publication within the bounds of ``wsplex.hub.retained`` (the memory hub's
#: rules, kept here for the whole cluster), or clear the topic (an empty ARGV[2]).
#: KEYS: retained, rsize, rowner, rsenders, rbytes. ARGV: topic, envelope, payload bytes,
#: sender, most topics, most per sender, most bytes. 1 kept (or cleared), 0 refused.
RETAIN_SCRIPT: Final = """
local topic, owner, size = ARGV[1], ARGV[4], tonumber(ARGV[3])
local exists = redis.call('HEXISTS', KEYS[1], topic) == 1
local old_size = tonumber(redis.call('HGET', KEYS[2], topic) or '0')
local old_owner = redis.call('HGET', KEYS[3], topic)
local function forget()
  redis.call('HDEL', KEYS[1], topic)
  redis.call('HDEL', KEYS[2], topic)
  redis.call('HDEL', KEYS[3], topic)
  redis.call('DECRBY', KEYS[5], old_size)
  if old_owner and redis.call('HINCRBY', KEYS[4], old_owner, -1) <= 0 then
    redis.call('HDEL', KEYS[4], old_owner)
  end
end
if ARGV[2] == '' then
  if exists then forget() end
  return 1
end
local claims = (not exists) or old_owner ~= owner
local total = tonumber(redis.call('GET', KEYS[5]) or '0')
if (not exists and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]))
    or (claims and tonumber(redis.call('HGET', KEYS[4], owner) or '0') >= tonumber(ARGV[6]))
    or total + size - old_size > tonumber(ARGV[7]) then
  return 0
end
if exists then forget() end
redis.call('HSET', KEYS[1], topic, ARGV[2])
redis.call('HSET', KEYS[2], topic, size)
redis.call('HSET', KEYS[3], topic, owner)
redis.call('HINCRBY', KEYS[4], owner, 1)
redis.call('INCRBY', KEYS[5], size)
return 1
"""

#: Append to a topic's history within the bounds of ``wsplex.hub.history``: the rule's
#: count, the bytes per topic (oldest out first, counted), the topics in all (a new one
#: pushes out the oldest of the first ARGV[8] no live node subscribes to, else the oldest).
#: KEYS: history, hsizes, hbytes, htopics, hseq. ARGV: topic, envelope, payload bytes,
#: count, most bytes, most topics, key prefix, topics looked at. {trimmed, evicted}.
HISTORY_SCRIPT: Final = """
local topic, prefix = ARGV[1], ARGV[7]
local evicted = 0
if not redis.call('ZSCORE', KEYS[4], topic) then
  if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[6]) then
    local live = {}
    for _, node in ipairs(redis.call('SMEMBERS', prefix .. 'nodes')) do
      if redis.call('EXISTS', prefix .. 'alive:' .. node) == 1 then live[#live + 1] = node end
    end
    local oldest = redis.call('ZRANGE', KEYS[4], 0, tonumber(ARGV[8]) - 1)
    local victim = oldest[1]
    for _, candidate in ipairs(oldest) do
      local listened = false
      for _, node in ipairs(live) do
        if redis.call('EXISTS', prefix .. 'fmembers:' .. node .. ':' .. candidate) == 1 then
          listened = true
          break
        end
      end
      if not listened then
        victim = candidate
        break
      end
    end
    if victim then
      redis.call('DEL', prefix .. 'history:' .. victim, prefix .. 'hsizes:' .. victim)
      redis.call('HDEL', KEYS[3], victim)
      redis.call('ZREM', KEYS[4], victim)
      evicted = 1
    end
  end
  redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[5]), topic)
end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
local total = redis.call('HINCRBY', KEYS[3], topic, ARGV[3])
local function drop()
  redis.call('LPOP', KEYS[1])
  total = redis.call('HINCRBY', KEYS[3], topic, -tonumber(redis.call('LPOP', KEYS[2]) or '0'))
end
while redis.call('LLEN', KEYS[1]) > tonumber(ARGV[4]) do drop() end
local trimmed = 0
while total > tonumber(ARGV[5]) and redis.call('LLEN', KEYS[1]) > 0 do
  drop()
  trimmed = trimmed + 1
end
return {trimmed, evicted}
"""


class Keys:
    """Every key and channel name (module docstring) for one node."""

    def __init__(self, prefix: str, node: str) -> None:
        self.prefix = prefix
        self.node = node
        self.nodes = f"{prefix}nodes"
        self.alive = self.alive_of(node)
        self.presence = self.presence_of(node)
        self.filters = f"{prefix}filters:{node}"
        self.channels = f"{prefix}channels:{node}"
        self.node_channel = self.node_channel_of(node).encode()
        self.retained = f"{prefix}retained"
        #: What RETAIN_SCRIPT keeps beside the retained hash, in its KEYS order.
        self.retained_books = (self.retained, f"{prefix}rsize", f"{prefix}rowner", f"{prefix}rsenders",
                               f"{prefix}rbytes")
        #: HISTORY_SCRIPT's keys shared by every topic: hbytes, htopics, hseq.
        self.history_books = (f"{prefix}hbytes", f"{prefix}htopics", f"{prefix}hseq")
        self.values = f"{prefix}values"
        self._topic_prefix = f"{prefix}t:"
        self._topics: dict[str, bytes] = {}  # publish is the hot path

    def alive_of(self, node: str) -> str:
        return f"{self.prefix}alive:{node}"

    def presence_of(self, node: str) -> str:
        return f"{self.prefix}presence:{node}"

    def node_channel_of(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    def filter_members(self, topic_filter: str) -> str:
        return f"{self.prefix}{FILTERS}members:{self.node}:{topic_filter}"

    def channel_members(self, channel: str) -> str:
        return f"{self.prefix}{CHANNELS}members:{self.node}:{channel}"

    def topic_channel(self, topic: str) -> bytes:
        """The Redis channel of a topic: what a publication is PUBLISHed on."""
        channel = self._topics.get(topic)
        if channel is None:
            if len(self._topics) > 10_000:  # bounded: rooms come and go
                self._topics.clear()
            channel = self._topics[topic] = f"{self._topic_prefix}{topic}".encode()
        return channel

    def topic_pattern(self, topic_filter: str) -> bytes:
        """The PSUBSCRIBE pattern of a wildcard filter (:func:`glob_of`)."""
        return f"{self._topic_prefix}{glob_of(topic_filter)}".encode()

    def hub_channel(self, channel: str) -> bytes:
        """The Redis channel of a hub channel (``broadcast``), apart from every topic."""
        return f"{self.prefix}c:{channel}".encode()

    def name_prefix(self, scope: str) -> str:
        return f"{self.prefix}name:{scope}:"

    def names(self, scope: str) -> str:
        return f"{self.prefix}names:{scope}"

    def history(self, topic: str) -> str:
        return f"{self.prefix}history:{topic}"

    def history_sizes(self, topic: str) -> str:
        return f"{self.prefix}hsizes:{topic}"


def escape_glob(text: str) -> str:
    """``text`` as a literal in a Redis glob (``stringmatchlen``: ``* ? [ ] \\`` are special)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def glob_of(topic_filter: str) -> str:
    """A Redis glob matching every topic ``topic_filter`` matches (SPEC §10), and maybe more.

    ``+`` becomes ``*`` (which also crosses ``/``), a trailing ``/#`` becomes
    ``*`` (``a/#`` matches ``a`` itself), literal levels are escaped. The glob
    is a superset on purpose: Redis finds the candidates, ``matches()`` on the
    receiving node decides, so ``$SYS`` and level counts follow MQTT's rules.
    """
    levels = topic_filter.split(SEPARATOR)
    tail = ""
    if levels[-1] == MULTI:
        levels.pop()
        tail = "*"
    glob = SEPARATOR.join("*" if level == SINGLE else escape_glob(level) for level in levels)
    return glob + tail


# -- envelopes ---------------------------------------------------------------


def pack(kind: bytes, flags: int, sequence: int, when: float, strings: tuple[str, ...],
         blobs: tuple[bytes, ...]) -> bytes:
    """One envelope: the fixed head, then each string and blob length-prefixed."""
    parts = [_HEAD.pack(kind, flags, sequence, when, len(strings), len(blobs))]
    for text in strings:
        raw = text.encode()
        parts += (_STRING.pack(len(raw)), raw)
    for blob in blobs:
        parts += (_BLOB.pack(len(blob)), blob)
    return b"".join(parts)


def unpack(data: bytes) -> tuple[bytes, int, int, float, list[str], list[bytes]]:
    kind, flags, sequence, when, n_strings, n_blobs = _HEAD.unpack_from(data)
    offset = _HEAD.size
    strings: list[str] = []
    for _ in range(n_strings):
        (size,) = _STRING.unpack_from(data, offset)
        offset += _STRING.size
        strings.append(data[offset:offset + size].decode())
        offset += size
    blobs: list[bytes] = []
    for _ in range(n_blobs):
        (size,) = _BLOB.unpack_from(data, offset)
        offset += _BLOB.size
        blobs.append(data[offset:offset + size])
        offset += size
    return kind, flags, sequence, when, strings, blobs


def pack_publication(origin: str, sequence: int, publication: Publication, exclude: str | None) -> bytes:
    """A publication as it crosses nodes: everything a receiver renders it from (SPEC §10)."""
    native = publication.native
    flags = (RETAIN if publication.retain else 0) | (TEXT if publication.is_text else 0)
    blobs: tuple[bytes, ...] = (publication.data,)
    if native is not None:
        flags |= NATIVE | (NATIVE_TEXT if native.is_text else 0)
        blobs = (publication.data, native.payload)
    sender = publication.sender
    strings = (origin, exclude or "", publication.topic, sender.protocol, sender.name)
    return pack(PUBLICATION, flags, sequence, publication.time, strings, blobs)


def publication_of(flags: int, when: float, strings: list[str], blobs: list[bytes]) -> Publication:
    """The :class:`Publication` an unpacked envelope carries."""
    _, _, topic, protocol, name = strings
    payload: str | bytes = blobs[0].decode() if flags & TEXT else blobs[0]
    native = Outgoing(blobs[1], is_text=bool(flags & NATIVE_TEXT)) if flags & NATIVE else None
    return Publication(topic, payload, Sender(protocol, name), retain=bool(flags & RETAIN),
                       native=native, published_at=when)


def decode_publication(data: bytes) -> Publication:
    """A stored envelope (retained, history) back into a publication."""
    _, flags, _, when, strings, blobs = unpack(data)
    return publication_of(flags, when, strings, blobs)


def pack_message(kind: bytes, origin: str, sequence: int, target: str, exclude: str,
                 message: Outgoing) -> bytes:
    """A pre-rendered message: ``broadcast`` to a channel or ``send_to`` one session."""
    flags = TEXT if message.is_text else 0
    return pack(kind, flags, sequence, 0.0, (origin, target, exclude), (message.payload,))


def pack_kick(origin: str, sequence: int, session_id: str, code: int, reason: str) -> bytes:
    return pack(KICK, 0, sequence, 0.0, (origin, session_id, reason), (CODE.pack(code),))


def node_of(session_id: str) -> str:
    """The node a cluster session id belongs to (``NODE-N``, see ``RedisHub.new_session_id``)."""
    return session_id.rpartition("-")[0]
