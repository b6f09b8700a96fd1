"""The hub: the only way a protocol reaches other connections (SPEC §7, §9).

One interface, two implementations: :mod:`wsplex.hub.memory` for one process
(the default) and :mod:`wsplex.hub.redis` for several processes sharing Redis.
Protocols never learn which one they run on.

Two kinds of operation:

* **Fan-out** is synchronous and fire-and-forget (``publish``, ``send_to``):
  it is the hot path, and a message to a room must not wait for a network
  round trip before the next one is read. Both hubs end in the same local
  delivery step (:meth:`Hub.deliver`), the one the Redis listener also calls.
* **Directory** operations are coroutines (names, presence, history, values):
  on Redis they are round trips, and callers need their answer.

Topics are plain strings chosen by protocols, e.g. ``"echo"`` or
``"chat:room:lobby"``. Session ids are unique across the cluster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

from wsplex.app.outgoing import Outgoing
from wsplex.app.session import Session


def protocol_topic(protocol: str) -> str:
    """The topic every session of ``protocol`` is subscribed to by the server.

    ``echo`` fans out on it and ``broadcast PROTOCOL TEXT`` publishes to it.
    """
    return f"protocol:{protocol}"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What the cluster knows about one connected client (``clients`` command)."""

    id: str
    protocol: str
    remote: str
    name: str | None
    since: float
    node: str

    @classmethod
    def of(cls, session: Session, node: str) -> ClientInfo:
        return cls(session.id, session.protocol, session.remote, session.name, session.since, node)


class Hub(ABC):
    """Fan-out and a small shared directory, for one node or for a cluster."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.sessions: dict[str, Session] = {}  # the sessions connected to this node
        self._topics: dict[str, dict[str, Session]] = {}  # local subscribers per topic
        self._session_counter = 0

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Connect to the backing store, if any."""

    async def stop(self) -> None:
        """Release the backing store, if any."""

    async def sync(self) -> None:
        """Wait until everything this node has queued so far reached the backing store."""

    @property
    def healthy(self) -> bool:
        """False while the backing store is unreachable (``/healthz`` answers 503)."""
        return True

    def new_session_id(self) -> str:
        """An id no other session of the cluster has: ``"1"``, ``"2"``... on one node."""
        self._session_counter += 1
        return str(self._session_counter)

    # -- local sessions ------------------------------------------------------

    def attach(self, session: Session) -> None:
        """A session connected to this node."""
        self.sessions[session.id] = session

    def detach(self, session: Session) -> None:
        """A session left this node: drop it from every topic."""
        self.sessions.pop(session.id, None)
        for topic in [t for t, subs in self._topics.items() if session.id in subs]:
            self.unsubscribe(topic, session)

    def touch(self, session: Session) -> None:
        """The session's visible details (its name) changed; refresh presence."""

    # -- fan-out -------------------------------------------------------------

    def subscribe(self, topic: str, session: Session) -> None:
        """Deliver messages published on ``topic`` to ``session``."""
        self._topics.setdefault(topic, {})[session.id] = session

    def unsubscribe(self, topic: str, session: Session) -> None:
        subscribers = self._topics.get(topic)
        if subscribers is not None:
            subscribers.pop(session.id, None)
            if not subscribers:
                del self._topics[topic]

    def local_subscribers(self, topic: str) -> Iterable[Session]:
        return self._topics.get(topic, {}).values()

    @abstractmethod
    def publish(self, topic: str, message: Outgoing, *, exclude: str | None = None) -> None:
        """Send ``message`` to every subscriber of ``topic`` on every node,
        except the session whose id is ``exclude``."""

    @abstractmethod
    def send_to(self, session_id: str, message: Outgoing) -> None:
        """Send ``message`` to one session, on whichever node it is."""

    def deliver(self, topic: str, message: Outgoing, exclude: str | None = None) -> None:
        """Hand ``message`` to this node's subscribers of ``topic``: the one delivery step."""
        subscribers = self._topics.get(topic)
        if not subscribers:
            return
        skipped = subscribers.get(exclude) if exclude is not None else None
        for session in list(subscribers.values()):  # a copy: a send may close a receiver
            if session is not skipped:
                session.send(message)

    def deliver_to(self, session_id: str, message: Outgoing) -> bool:
        """Hand ``message`` to a session of this node; False when it is not here."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        session.send(message)
        return True

    # -- control -------------------------------------------------------------

    @abstractmethod
    async def close_session(self, session_id: str, code: int, reason: str) -> bool:
        """Close a session on any node (``kick``); False when no such session exists."""

    @abstractmethod
    async def clients(self) -> list[ClientInfo]:
        """Every client connected to the cluster."""

    @abstractmethod
    async def members(self, topic: str) -> list[ClientInfo]:
        """Every subscriber of ``topic`` across the cluster (``/who``, requesters)."""

    @abstractmethod
    async def topics(self, prefix: str) -> list[str]:
        """Topics with at least one subscriber anywhere whose name starts with ``prefix``."""

    # -- names ---------------------------------------------------------------

    @abstractmethod
    async def claim_name(self, scope: str, name: str, session: Session) -> bool:
        """Make ``name`` in ``scope`` point at ``session``; False when another holds it.

        Claiming a name the session already holds succeeds. Names are
        case-sensitive and unique per scope across the cluster.
        """

    @abstractmethod
    async def release_name(self, scope: str, name: str, session: Session) -> None:
        """Free ``name`` if ``session`` holds it."""

    @abstractmethod
    async def lookup_name(self, scope: str, name: str) -> str | None:
        """The id of the session holding ``name`` in ``scope``, or None."""

    @abstractmethod
    async def names(self, scope: str) -> dict[str, str]:
        """Every name in ``scope`` with the id of the session holding it."""

    # -- shared state --------------------------------------------------------

    @abstractmethod
    async def append_history(self, key: str, item: str, limit: int) -> None:
        """Append ``item`` to the list ``key``, keeping only the last ``limit`` items."""

    @abstractmethod
    async def history(self, key: str) -> list[str]:
        """The list ``key``, oldest first."""

    @abstractmethod
    async def set_value(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (latest service values and the like)."""

    @abstractmethod
    async def get_value(self, key: str) -> str | None:
        """The value under ``key``, or None."""

    @abstractmethod
    async def delete_value(self, key: str) -> None:
        """Forget ``key``."""

    @abstractmethod
    async def values(self, prefix: str) -> dict[str, str]:
        """Every stored value whose key starts with ``prefix``."""
