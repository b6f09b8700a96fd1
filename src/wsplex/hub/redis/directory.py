"""The keys this node owns in Redis, and the cluster-wide listings read from them (SPEC §9).

This node writes its presence (one hash of its sessions), its topic filters
and channels with their members (kept apart: ``subscribers`` and ``members``
never mix), the names its sessions hold and an alive key. Every one of them
has a TTL renewed by :meth:`Directory.heartbeat` every third of it, so a node
killed without a goodbye vanishes within the TTL; :meth:`Directory.rewrite`
writes them all again on reconnect (Redis may have restarted empty, or the
TTL run out during the outage), and :meth:`Directory.goodbye` frees them at
once on a clean stop.

Listings answer for this node from :class:`~wsplex.hub.local.Local` (exact,
even while Redis is away) and ask Redis, in one script, only about the other
live nodes. Writes go through the node's one command queue, so a read this
node issues later sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from wsplex.app.hub import ClientInfo, protocol_channel
from wsplex.app.session import Session
from wsplex.hub.local import Departure, Local
from wsplex.hub.redis.commands import Command, CommandQueue, RedisUnavailable
from wsplex.hub.redis.schema import (
    CHANNELS,
    CLAIM_SCRIPT,
    CLIENTS_SCRIPT,
    FILTERS,
    LISTING_SCRIPT,
    MEMBERS_SCRIPT,
    NAMES_SCRIPT,
    RELEASE_SCRIPT,
    Keys,
    node_of,
)

log = logging.getLogger("wsplex.hub.redis")


def _info(session: Session) -> bytes:
    return orjson.dumps({"protocol": session.protocol, "remote": session.remote,
                         "name": session.name, "since": session.since})


def _client(session_id: str, node: str, raw: bytes) -> ClientInfo:
    data = orjson.loads(raw)
    return ClientInfo(session_id, data["protocol"], data["remote"], data["name"], data["since"], node)


def _pairs(flat: list[Any]) -> Iterator[tuple[Any, Any]]:
    """``[a, 1, b, 2]`` -> ``(a, 1), (b, 2)``: how Redis returns hashes from scripts."""
    it = iter(flat)
    return zip(it, it, strict=True)


class Directory:
    """This node's keys in Redis: written as the local state changes, renewed, listed."""

    def __init__(self, keys: Keys, local: Local, queue: CommandQueue, ttl_ms: int) -> None:
        self.keys = keys
        self.local = local
        self.queue = queue
        self.ttl_ms = ttl_ms
        #: Called at each heartbeat while Redis is up: what the hub refreshes at that pace.
        self.on_beat: Callable[[], None] = lambda: None

    # -- writes, as the local state changes --------------------------------------

    def attached(self, session: Session, first_of_protocol: bool) -> None:
        send, keys = self.queue.send, self.keys
        send(("HSET", keys.presence, session.id, _info(session)))
        send(("PEXPIRE", keys.presence, self.ttl_ms))
        self.joined(protocol_channel(session.protocol), session.id, first_of_protocol)

    def touched(self, session: Session) -> None:
        self.queue.send(("HSET", self.keys.presence, session.id, _info(session)))

    def departed(self, session: Session, departure: Departure) -> None:
        self.queue.send(("HDEL", self.keys.presence, session.id))
        for topic_filter, last in departure.filters:
            self.unsubscribed(topic_filter, session.id, last)
        for channel, last in departure.channels:
            self.left(channel, session.id, last)
        for scope, name in departure.names:
            self.queue.send(self.release_command(scope, name, session.id))

    def subscribed(self, topic_filter: str, session_id: str, first: bool) -> None:
        self._add(self.keys.filters, self.keys.filter_members(topic_filter), topic_filter, session_id, first)

    def unsubscribed(self, topic_filter: str, session_id: str, last: bool) -> None:
        members = self.keys.filter_members(topic_filter)
        self._remove(self.keys.filters, members, topic_filter, session_id, last)

    def joined(self, channel: str, session_id: str, first: bool) -> None:
        self._add(self.keys.channels, self.keys.channel_members(channel), channel, session_id, first)

    def left(self, channel: str, session_id: str, last: bool) -> None:
        self._remove(self.keys.channels, self.keys.channel_members(channel), channel, session_id, last)

    def _add(self, index: str, members: str, item: str, session_id: str, first: bool) -> None:
        send = self.queue.send
        send(("SADD", members, session_id))
        if first:
            send(("PEXPIRE", members, self.ttl_ms))
            send(("SADD", index, item))
            send(("PEXPIRE", index, self.ttl_ms))

    def _remove(self, index: str, members: str, item: str, session_id: str, last: bool) -> None:
        self.queue.send(("SREM", members, session_id))
        if last:
            self.queue.send(("SREM", index, item))

    # -- names -------------------------------------------------------------------

    def claim_command(self, scope: str, name: str, session_id: str) -> Command:
        return ("EVAL", CLAIM_SCRIPT, 2, self.keys.name_prefix(scope) + name, self.keys.names(scope),
                session_id, self.ttl_ms, name)

    def release_command(self, scope: str, name: str, session_id: str) -> Command:
        return ("EVAL", RELEASE_SCRIPT, 2, self.keys.name_prefix(scope) + name, self.keys.names(scope),
                session_id, name)

    async def claim_name(self, scope: str, name: str, session: Session) -> bool:
        local = self.local
        holder = local.holder(scope, name)
        if holder is not None and holder is not session:
            return False
        attached = session.id in local.sessions
        try:
            claimed = bool(await self.queue.call(self.claim_command(scope, name, session.id)))
        except RedisUnavailable:
            claimed = True  # degraded: unique on this node only (SPEC §9)
        if claimed and session.id not in local.sessions:
            # It left (or never came) while the claim was on its way: give the name back.
            self.queue.send(self.release_command(scope, name, session.id))
            return not attached
        if claimed:
            local.hold(scope, name, session)
        return claimed

    async def release_name(self, scope: str, name: str, session: Session) -> None:
        self.local.drop(scope, name, session)
        with contextlib.suppress(RedisUnavailable):
            await self.queue.call(self.release_command(scope, name, session.id))

    async def lookup_name(self, scope: str, name: str) -> str | None:
        holder = self.local.holder(scope, name)
        if holder is not None:
            return holder.id
        try:
            found = await self.queue.call(("GET", self.keys.name_prefix(scope) + name))
        except RedisUnavailable:
            return None
        return found.decode() if found is not None else None

    async def names(self, scope: str) -> dict[str, str]:
        local = {name: s.id for name, s in self.local.names(scope).items()}
        try:
            reply = await self.queue.call(("EVAL", NAMES_SCRIPT, 1, self.keys.names(scope),
                                           self.keys.name_prefix(scope)))
        except RedisUnavailable:
            return local
        node = self.keys.node
        found = {name.decode(): sid.decode() for name, sid in _pairs(reply)}
        others = {n: s for n, s in found.items() if node_of(s) != node}
        return {**others, **local}

    # -- listings across live nodes ------------------------------------------------

    def _here(self, sessions: Iterable[Session]) -> list[ClientInfo]:
        # A closed session stays attached until its protocol's on_disconnect has
        # finished (which may wait for Redis): it is gone for the listing.
        return [ClientInfo.of(s, self.keys.node) for s in sessions if not s.closed]

    async def clients(self) -> list[ClientInfo]:
        found = self._here(self.local.sessions.values())
        try:
            reply = await self.queue.call(("EVAL", CLIENTS_SCRIPT, 0, self.keys.prefix, self.keys.node))
        except RedisUnavailable:
            return found
        for node, flat in _pairs(reply):
            found += [_client(sid.decode(), node.decode(), raw) for sid, raw in _pairs(flat)]
        return found

    async def subscribers(self, topic_filter: str) -> list[ClientInfo]:
        return await self._members(FILTERS, topic_filter, self.local.subscribers(topic_filter))

    async def members(self, channel: str) -> list[ClientInfo]:
        return await self._members(CHANNELS, channel, self.local.members(channel))

    async def _members(self, kind: str, item: str, here: Iterable[Session]) -> list[ClientInfo]:
        found = self._here(here)
        try:
            reply = await self.queue.call(("EVAL", MEMBERS_SCRIPT, 0, self.keys.prefix, self.keys.node,
                                           kind, item))
        except RedisUnavailable:
            return found
        for i in range(0, len(reply), 3):
            node, ids, infos = reply[i].decode(), reply[i + 1], reply[i + 2]
            found += [_client(sid.decode(), node, raw) for sid, raw in zip(ids, infos, strict=True) if raw]
        return found

    async def filters(self, prefix: str) -> list[str]:
        return await self._listing("filters", prefix, self.local.filters())

    async def channels(self, prefix: str) -> list[str]:
        return await self._listing("channels", prefix, self.local.channel_names())

    async def _listing(self, what: str, prefix: str, here: Iterable[str]) -> list[str]:
        found = set(here)
        try:
            reply = await self.queue.call(("EVAL", LISTING_SCRIPT, 0, self.keys.prefix, self.keys.node, what))
            found.update(item.decode() for item in reply)
        except RedisUnavailable:
            pass
        return sorted(item for item in found if item.startswith(prefix))

    # -- the whole directory: rewrite, heartbeat, goodbye -----------------------------

    def rewrite(self) -> list[Command]:
        """Every key this node owns, from scratch (on connect: Redis may be empty)."""
        keys, ttl, local = self.keys, self.ttl_ms, self.local
        commands: list[Command] = [("SET", keys.alive, "1", "PX", ttl), ("SADD", keys.nodes, keys.node),
                                   ("DEL", keys.presence, keys.filters, keys.channels)]
        if local.sessions:
            fields = [part for s in local.sessions.values() for part in (s.id, _info(s))]
            commands.append(("HSET", keys.presence, *fields))
        for index, members_key, items in self._memberships():
            if items:
                commands.append(("SADD", index, *(item for item, _ in items)))
            for item, ids in items:
                commands += [("DEL", members_key(item)), ("SADD", members_key(item), *ids),
                             ("PEXPIRE", members_key(item), ttl)]
        commands += [("PEXPIRE", key, ttl) for key in (keys.presence, keys.filters, keys.channels)]
        return commands

    def reclaim(self) -> list[tuple[str, str, asyncio.Future[Any]]]:
        """Claim every held name again (on connect); the futures say which ones clashed."""
        return [(scope, name, self.queue.call(self.claim_command(scope, name, s.id)))
                for scope, name, s in self.local.held_names()]

    def _memberships(self) -> Iterator[tuple[str, Callable[[str], str], list[tuple[str, list[str]]]]]:
        """Filters, then channels: the index key, the members key of each, and their local members."""
        keys = self.keys
        yield keys.filters, keys.filter_members, [(f, ids) for f, ids in self.local.subscriptions() if ids]
        yield keys.channels, keys.channel_members, [(c, ids) for c, ids in self.local.channels() if ids]

    def refresh(self) -> Iterator[Command]:
        """What the heartbeat sends: every TTL renewed, names claimed again."""
        keys, ttl = self.keys, self.ttl_ms
        yield ("SET", keys.alive, "1", "PX", ttl)
        yield ("SADD", keys.nodes, keys.node)
        for key in (keys.presence, keys.filters, keys.channels):
            yield ("PEXPIRE", key, ttl)
        for _, members_key, items in self._memberships():
            for item, _ in items:
                yield ("PEXPIRE", members_key(item), ttl)
        for scope, name, session in self.local.held_names():
            yield self.claim_command(scope, name, session.id)

    async def heartbeat(self) -> None:
        """Renew this node's keys every third of the TTL, for as long as the node runs."""
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            if self.queue.up:
                for command in self.refresh():
                    self.queue.send(command)
                self.on_beat()

    def goodbye(self) -> Iterator[Command]:
        """Free everything this node holds at once rather than after the TTL."""
        keys = self.keys
        for scope, name, session in self.local.held_names():
            yield self.release_command(scope, name, session.id)
        members = [members_key(item) for _, members_key, items in self._memberships() for item, _ in items]
        yield ("DEL", keys.presence, keys.filters, keys.channels, keys.alive, *members)
        yield ("SREM", keys.nodes, keys.node)
