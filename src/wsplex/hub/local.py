"""This node's sessions and what they are subscribed to: written once, used by both hubs.

The memory hub is this bookkeeping and little more; the Redis hub adds the
network around it and calls the very same :meth:`Local.deliver` for
publications that come from other nodes (one delivery path for one node and
for many, as centrifuge does it).

Subscribers are grouped by protocol under each filter, so a publication is
rendered once per receiving protocol (SPEC §10) and the fan-out loop over one
protocol's receivers writes the same framed bytes to each. Exact filters are
a dict lookup; wildcard filters live in a :class:`~wsplex.app.topics.FilterIndex`.
Each session keeps its own filters and channels, so a disconnect costs its own
subscriptions, not a scan of every topic. A session's one filter is kept as the
string itself, a set only from the second: most sessions hold one (echo's topic),
and an empty set is 216 bytes per idle connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from wsplex.app.hub import protocol_channel
from wsplex.app.outgoing import Outgoing
from wsplex.app.protocol import Protocol
from wsplex.app.publication import Publication
from wsplex.app.session import Session
from wsplex.app.topics import FilterIndex, is_wildcard
from wsplex.stats import Stats

log = logging.getLogger("wsplex.hub")

DEFAULT_MAX_SUBSCRIPTIONS = 1000
#: Seconds between two log lines about refused subscriptions (each is counted).
REFUSAL_LOG_INTERVAL = 10.0

#: protocol name -> session id -> session: the subscribers of one filter.
Groups = dict[str, dict[str, Session]]


class _Passthrough:
    """The receiver for sessions of a protocol the hub was not told about (tests):
    the payload as it is, text or binary."""

    text_only = False

    @staticmethod
    def deliver(publication: Publication, sessions: Mapping[str, Session], exclude: str | None) -> None:
        message = publication.as_sent()
        for session in list(sessions.values()):
            if session.id != exclude:
                session.send(message)

    @staticmethod
    def kicked(session: Session, code: int, reason: str) -> None:
        """Nothing to say before the close."""


_PASSTHROUGH = _Passthrough()


@dataclass(slots=True)
class Departure:
    """What a leaving session held, for a hub that mirrors it elsewhere (Redis).

    Each filter and channel comes with True when the session was its last local
    subscriber or member.
    """

    filters: list[tuple[str, bool]] = field(default_factory=list)
    channels: list[tuple[str, bool]] = field(default_factory=list)
    names: list[tuple[str, str]] = field(default_factory=list)


class Local:
    """Sessions, subscriptions, channels and names of this node."""

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats if stats is not None else Stats()
        self.sessions: dict[str, Session] = {}
        #: The protocols by name, to render publications (``Hub.bind``).
        self.receivers: Mapping[str, Protocol] = {}
        self._exact: dict[str, Groups] = {}
        self._wild: FilterIndex[Groups] = FilterIndex()
        self._channels: dict[str, dict[str, Session]] = {}
        self._names: dict[str, dict[str, Session]] = {}  # scope -> name -> holder
        self._names_of: dict[str, set[tuple[str, str]]] = {}  # session id -> (scope, name)
        #: Filters plus channels one session may hold (``--max-subscriptions``): a
        #: client cannot make the node keep an unbounded number of them.
        self.max_subscriptions = DEFAULT_MAX_SUBSCRIPTIONS
        self._refusal_logged = 0.0

    # -- sessions --------------------------------------------------------------

    def attach(self, session: Session) -> None:
        """A session connected; it is in its protocol's channel until it leaves."""
        self.sessions[session.id] = session
        self._channels.setdefault(protocol_channel(session.protocol), {})[session.id] = session

    def detach(self, session: Session) -> Departure:
        """A session left: drop its subscriptions, channels and names, and say which."""
        departure = Departure()
        if self.sessions.pop(session.id, None) is None:
            return departure
        filters = session.filters
        for topic_filter in (filters,) if type(filters) is str else list(filters or ()):
            departure.filters.append((topic_filter, self.unsubscribe(topic_filter, session)))
        for channel in list(session.channels or ()):
            departure.channels.append((channel, self.leave(channel, session)))
        own = protocol_channel(session.protocol)
        departure.channels.append((own, self._remove_member(own, session)))
        for scope, name in self._names_of.pop(session.id, ()):
            holders = self._names.get(scope)
            if holders is not None and holders.get(name) is session:
                del holders[name]
                departure.names.append((scope, name))
        return departure

    # -- the cap on what one session holds -------------------------------------------

    def admits(
        self, session: Session, *, topic_filter: str | None = None, channel: str | None = None
    ) -> bool:
        """May ``session`` add ``topic_filter`` or ``channel``? Always, when it holds it
        already; else only below :attr:`max_subscriptions`. A refusal is counted."""
        filters, channels = session.filters, session.channels
        if topic_filter is not None and self.is_subscribed(topic_filter, session):
            return True
        if channel is not None and channel in (channels or ()):
            return True
        held = (1 if type(filters) is str else len(filters or ())) + len(channels or ())
        if held < self.max_subscriptions:
            return True
        self.stats.subscriptions_refused += 1
        now = time.monotonic()
        if now - self._refusal_logged > REFUSAL_LOG_INTERVAL:  # a flood must not flood the log
            self._refusal_logged = now
            log.warning("refused a subscription of %s: it holds %d filters and channels already "
                        "(--max-subscriptions); %d refused in all", session, held,
                        self.stats.subscriptions_refused)
        return False

    # -- topic filters -----------------------------------------------------------

    def subscribe(self, topic_filter: str, session: Session) -> bool:
        """Add a subscription; True when it is the first on this node for the filter."""
        filters = session.filters
        if filters is None:
            session.filters = topic_filter  # the common case, one filter: no set
        elif isinstance(filters, str):
            if filters == topic_filter:
                return False
            session.filters = {filters, topic_filter}
        elif topic_filter in filters:
            return False
        else:
            filters.add(topic_filter)
        if is_wildcard(topic_filter):
            groups = self._wild.get(topic_filter)
            first = groups is None
            if groups is None:
                groups = {}
                self._wild.set(topic_filter, groups)
        else:
            groups = self._exact.get(topic_filter)
            first = groups is None
            if groups is None:
                groups = self._exact[topic_filter] = {}
        members = groups.get(session.protocol)
        if members is None:
            members = groups[session.protocol] = {}
        members[session.id] = session
        return first

    def unsubscribe(self, topic_filter: str, session: Session) -> bool:
        """Remove a subscription; True when it was the last on this node for the filter."""
        if not self.is_subscribed(topic_filter, session):
            return False
        filters = session.filters
        if type(filters) is set:
            filters.discard(topic_filter)
        else:
            session.filters = None
        wild = is_wildcard(topic_filter)
        groups = self._wild.get(topic_filter) if wild else self._exact.get(topic_filter)
        if groups is None:
            return False
        members = groups.get(session.protocol)
        if members is not None:
            members.pop(session.id, None)
            if not members:
                del groups[session.protocol]
        if groups:
            return False
        if wild:
            self._wild.remove(topic_filter)
        else:
            del self._exact[topic_filter]
        return True

    @staticmethod
    def is_subscribed(topic_filter: str, session: Session) -> bool:
        """``session`` holds ``topic_filter`` (a lone filter is a string: no ``in`` on it)."""
        filters = session.filters
        return filters == topic_filter if type(filters) is str else topic_filter in (filters or ())

    def has_filter(self, topic_filter: str) -> bool:
        return topic_filter in self._exact or self._wild.get(topic_filter) is not None

    def filters(self) -> Iterator[str]:
        """Every filter with a subscriber on this node."""
        yield from self._exact
        for topic_filter, _ in self._wild.items():
            yield topic_filter

    def subscribers(self, topic_filter: str) -> list[Session]:
        groups = self._wild.get(topic_filter) if is_wildcard(topic_filter) else self._exact.get(topic_filter)
        return [s for members in (groups or {}).values() for s in members.values()]

    def subscriptions(self) -> Iterator[tuple[str, list[str]]]:
        """Each filter with the ids of its subscribers on this node."""
        for topic_filter in list(self.filters()):
            yield topic_filter, [s.id for s in self.subscribers(topic_filter)]

    # -- delivery ----------------------------------------------------------------

    def deliver(self, publication: Publication, exclude: str | None = None) -> None:
        """Hand ``publication`` to this node's subscribers: each once, rendered once per protocol."""
        groups = self._exact.get(publication.topic)
        if self._wild:
            matched = list(self._wild.match(publication.topic))
            if matched:
                groups = _merge(groups, matched)
        if not groups:
            return
        receivers = self.receivers
        for protocol, sessions in list(groups.items()):
            receiver = receivers.get(protocol, _PASSTHROUGH)
            if receiver.text_only and publication.text is None:
                self.stats.not_text_dropped[protocol] += 1
                continue
            try:
                receiver.deliver(publication, sessions, exclude)
            except Exception:  # one protocol's bug must not stop the others' delivery
                log.exception("protocol %s failed to deliver %r", protocol, publication)

    # -- channels ------------------------------------------------------------------

    def join(self, channel: str, session: Session) -> bool:
        """Put ``session`` in ``channel``; True when it is the first member on this node."""
        channels = session.channels
        if channels is None:
            channels = session.channels = set()
        elif channel in channels:
            return False
        channels.add(channel)
        members = self._channels.get(channel)
        first = members is None
        if members is None:
            members = self._channels[channel] = {}
        members[session.id] = session
        return first

    def leave(self, channel: str, session: Session) -> bool:
        """Take ``session`` out of ``channel``; True when it was the last member on this node."""
        channels = session.channels
        if channels is None or channel not in channels:
            return False
        channels.discard(channel)
        return self._remove_member(channel, session)

    def _remove_member(self, channel: str, session: Session) -> bool:
        members = self._channels.get(channel)
        if members is None or members.pop(session.id, None) is None:
            return False
        if members:
            return False
        del self._channels[channel]
        return True

    def members(self, channel: str) -> Iterable[Session]:
        return self._channels.get(channel, {}).values()

    def channels(self) -> Iterator[tuple[str, list[str]]]:
        """Each channel with the ids of its members on this node."""
        for channel, members in list(self._channels.items()):
            yield channel, list(members)

    def channel_names(self) -> Iterable[str]:
        return self._channels.keys()

    def broadcast(self, channel: str, message: Outgoing, exclude: str | None = None) -> None:
        members = self._channels.get(channel)
        if not members:
            return
        skipped = members.get(exclude) if exclude is not None else None
        for session in list(members.values()):  # a copy: a send may close a receiver
            if session is not skipped:
                session.send(message)

    def close(self, session_id: str, code: int, reason: str) -> bool:
        """Close a session of this node for ``Hub.close_session``, its protocol's
        :meth:`~wsplex.app.protocol.Protocol.kicked` first; False when it is not here."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        if not session.closed:
            try:
                self.receivers.get(session.protocol, _PASSTHROUGH).kicked(session, code, reason)
            except Exception:  # its last word failed: the close happens all the same
                log.exception("protocol %s failed to say goodbye to %s", session.protocol, session)
            session.close(code, reason)
        return True

    def send_to(self, session_id: str, message: Outgoing) -> bool:
        """Hand ``message`` to a session of this node; False when it is not here."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        session.send(message)
        return True

    # -- names ---------------------------------------------------------------------

    def holder(self, scope: str, name: str) -> Session | None:
        return self._names.get(scope, {}).get(name)

    def hold(self, scope: str, name: str, session: Session) -> None:
        self._names.setdefault(scope, {})[name] = session
        self._names_of.setdefault(session.id, set()).add((scope, name))

    def drop(self, scope: str, name: str, session: Session) -> bool:
        """Forget ``name`` if ``session`` holds it here; True when it did."""
        holders = self._names.get(scope)
        if holders is None or holders.get(name) is not session:
            return False
        del holders[name]
        held = self._names_of.get(session.id)
        if held is not None:
            held.discard((scope, name))
            if not held:
                del self._names_of[session.id]
        return True

    def names(self, scope: str) -> dict[str, Session]:
        return dict(self._names.get(scope, {}))

    def held_names(self) -> Iterator[tuple[str, str, Session]]:
        for scope, holders in self._names.items():
            for name, session in holders.items():
                yield scope, name, session


def _merge(exact: Groups | None, matched: list[Groups]) -> Groups:
    """One group per protocol over several filters: a session matched twice is there once."""
    merged: Groups = {}
    for groups in [exact, *matched] if exact else matched:
        for protocol, sessions in groups.items():
            into = merged.get(protocol)
            if into is None:
                merged[protocol] = dict(sessions)
            else:
                into.update(sessions)
    return merged
