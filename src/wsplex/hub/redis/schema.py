"""What the Redis hub keeps in Redis, and how its messages look on a channel.

Keys (``P`` is ``wsplex:DB:``; the database number is in it because pub/sub
channels are shared by every database of a server):

* ``P:nodes`` (set) the nodes that have run; ``P:alive:NODE`` (string, TTL)
  which of them are alive;
* ``P:presence:NODE`` (hash, TTL) session id -> JSON of the client;
* ``P:topics:NODE`` (set, TTL) topics with local subscribers;
  ``P:members:NODE:TOPIC`` (set, TTL) their session ids;
* ``P:name:SCOPE:NAME`` (string, TTL) the session id holding a name, and
  ``P:names:SCOPE`` (hash) the same, to list a scope;
* ``P:history:KEY`` (list) and ``P:values`` (hash): shared state, no TTL.

Channels: ``P:topic:TOPIC`` for fan-out, ``P:node:NODE`` for one node's
sessions (``send_to``, ``kick``). A message on either is an envelope: one kind
byte, the origin node and a session id (each length-prefixed), then the payload.

The scripts make each directory read one round trip; they reach keys they
do not declare, which a single Redis allows and Redis Cluster does not.
"""

from __future__ import annotations

import struct

# Envelope kinds (first byte of a message on a channel).
TOPIC_TEXT, TOPIC_BINARY = b"t", b"b"
DIRECT_TEXT, DIRECT_BINARY = b"T", b"B"
KICK = b"k"
CODE = struct.Struct("!H")

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
CLIENTS_SCRIPT = _LIVE_NODES + """
local out = {}
for _, node in ipairs(live) do
  out[#out + 1] = node
  out[#out + 1] = redis.call('HGETALL', prefix .. 'presence:' .. node)
end
return out
"""

#: Other live nodes, each followed by its subscribers of ARGV[3] and their presence.
MEMBERS_SCRIPT = _LIVE_NODES + """
local out = {}
for _, node in ipairs(live) do
  local ids = redis.call('SMEMBERS', prefix .. 'members:' .. node .. ':' .. ARGV[3])
  if #ids > 0 then
    out[#out + 1] = node
    out[#out + 1] = ids
    out[#out + 1] = redis.call('HMGET', prefix .. 'presence:' .. node, unpack(ids))
  end
end
return out
"""

#: The topics other live nodes have subscribers for.
TOPICS_SCRIPT = _LIVE_NODES + """
local out = {}
for _, node in ipairs(live) do
  for _, topic in ipairs(redis.call('SMEMBERS', prefix .. 'topics:' .. node)) do
    out[#out + 1] = topic
  end
end
return out
"""

#: SET NX, except that the holder may claim again (and so renew its TTL).
CLAIM_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

#: Delete the name only if this session holds it.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
"""

#: Every name in a scope whose key is still alive; forgets the expired ones.
NAMES_SCRIPT = """
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


class Keys:
    """Every key and channel name (module docstring) for one node."""

    def __init__(self, prefix: str, node: str) -> None:
        self.prefix = prefix
        self.node = node
        self.nodes = f"{prefix}nodes"
        self.alive = self.alive_of(node)
        self.presence = self.presence_of(node)
        self.topics = f"{prefix}topics:{node}"
        self.node_channel = self.node_channel_of(node).encode()
        self.values = f"{prefix}values"
        self._channels: dict[str, bytes] = {}  # publish is the hot path

    def alive_of(self, node: str) -> str:
        return f"{self.prefix}alive:{node}"

    def presence_of(self, node: str) -> str:
        return f"{self.prefix}presence:{node}"

    def node_channel_of(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    def members(self, topic: str) -> str:
        return f"{self.prefix}members:{self.node}:{topic}"

    def topic_channel(self, topic: str) -> bytes:
        channel = self._channels.get(topic)
        if channel is None:
            if len(self._channels) > 10_000:  # bounded: rooms come and go
                self._channels.clear()
            channel = self._channels[topic] = f"{self.prefix}topic:{topic}".encode()
        return channel

    def name_prefix(self, scope: str) -> str:
        return f"{self.prefix}name:{scope}:"

    def names(self, scope: str) -> str:
        return f"{self.prefix}names:{scope}"

    def history(self, key: str) -> str:
        return f"{self.prefix}history:{key}"


# -- envelopes ---------------------------------------------------------------


def pack(kind: bytes, origin: str, session_id: str, payload: bytes) -> bytes:
    """``kind`` + length-prefixed origin node + length-prefixed session id + payload."""
    first, second = origin.encode(), session_id.encode()
    return b"".join((kind, bytes((len(first),)), first, bytes((len(second),)), second, payload))


def unpack(data: bytes) -> tuple[bytes, str, str, bytes]:
    kind = data[:1]
    end = 2 + data[1]
    origin = data[2:end].decode()
    start = end + 1
    end = start + data[end]
    return kind, origin, data[start:end].decode(), data[end:]


def node_of(session_id: str) -> str:
    """The node a cluster session id belongs to (``NODE-N``, see :meth:`RedisHub.new_session_id`)."""
    return session_id.rpartition("-")[0]
