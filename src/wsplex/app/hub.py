"""The hub as protocols see it: the only way to reach other connections (SPEC §7, §9, §10).

One interface, two implementations (``wsplex.hub.memory`` for one process,
``wsplex.hub.redis`` for several sharing Redis); protocols never learn which
one they run on. Three kinds of operation:

* **The topic space** (SPEC §10), shared by every protocol: ``subscribe`` to a
  filter (``+`` and ``#`` allowed), ``publish`` a :class:`Publication`. The hub
  delivers a publication to each subscriber once, however many of its filters
  match, and asks each receiving protocol to render it once
  (:meth:`~wsplex.app.protocol.Protocol.deliver`). Retained publications are
  kept per topic; topics with a history rule (:meth:`keep_history`) keep their
  last publications.
* **Channels**, private to one protocol: exact names, pre-rendered
  :class:`Outgoing` messages (chat's ``* alice joined``, ``broadcast``), and a
  membership the protocol can list. Every session is in the channel of its
  protocol (:func:`protocol_channel`) from connect to disconnect.
* **The directory**, coroutines because on Redis they are round trips: names,
  presence, listings, small values.
* **Queues** (STOMP's ``/queue/Q``, SPEC §12): each message to exactly one
  consumer of the cluster, in turn; it waits, within bounds, while nobody
  consumes; one given back goes to another consumer, marked redelivered.
  The hub moves opaque :class:`QueueMessage` bytes; the protocol renders.

Fan-out (``publish``, ``broadcast``, ``send_to``) is synchronous and
fire-and-forget: it is the hot path, and a message must not wait for a
network round trip before the next one is read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wsplex.app.outgoing import Outgoing
from wsplex.app.publication import Publication

if TYPE_CHECKING:
    from wsplex.app.session import Session


def protocol_channel(protocol: str) -> str:
    """The channel every session of ``protocol`` is in (``broadcast PROTOCOL TEXT``)."""
    return f"protocol:{protocol}"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What the cluster knows about one connected client (``clients``, ``/who``)."""

    id: str
    protocol: str
    remote: str
    name: str | None
    since: float
    node: str

    @classmethod
    def of(cls, session: Session, node: str) -> ClientInfo:
        return cls(session.id, session.protocol, session.remote, session.name, session.since, node)


class QueueMessage:
    """One message of a queue, opaque to the hub: the protocol's own encoding in ``data``.

    ``local`` may hold the protocol's decoded form; only a hub that keeps the
    message in this process hands it back (the memory hub), so a receiver that
    finds it None decodes ``data``. ``ref`` is the hub's handle (on Redis, the
    stream entry id); protocols leave it alone.

    A protocol may give ``encode`` instead of ``data``: the bytes are then made
    the first time a hub reads :attr:`data` (Redis does, the memory hub never
    does), and ``size`` is what the message counts toward a queue's byte bound
    until then. Encoding every message only for a hub that hands the object back
    cost a tenth of the queue path's CPU.
    """

    __slots__ = ("_data", "_encode", "local", "redelivered", "ref", "size")

    def __init__(self, data: bytes | None = None, redelivered: bool = False, *,
                 encode: Callable[[], bytes] | None = None, size: int | None = None,
                 local: object = None, ref: object = None) -> None:
        if data is None and encode is None:
            raise ValueError("a queue message needs its data or a way to encode it")
        self._data = data
        self._encode = encode
        self.size = len(data) if size is None and data is not None else (size or 0)
        self.redelivered = redelivered
        self.local = local
        self.ref = ref

    @property
    def data(self) -> bytes:
        """The message as bytes (encoded now if it was given as ``encode``)."""
        if self._data is None:
            assert self._encode is not None
            self._data = self._encode()
            self._encode = None
        return self._data


class QueueConsumer(ABC):
    """Who takes messages from a queue (a STOMP subscription to ``/queue/Q``)."""

    __slots__ = ()

    @abstractmethod
    def take(self, queue: str, message: QueueMessage) -> None:
        """Deliver ``message``: it is this consumer's until it settles it (:meth:`Hub.queue_settle`)."""


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """What ``/metrics`` shows of the queues, as this node sees them."""

    queues: int  # queues this node keeps (memory) or uses (Redis: sends to or consumes)
    waiting: int  # messages waiting for a consumer
    dropped: int  # messages dropped past a queue's bounds, oldest first (by this node)


class Hub(ABC):
    """Topic space, channels and directory, for one node or for a cluster."""

    node_id: str

    # -- the topic space (SPEC §10) --------------------------------------------

    @abstractmethod
    def subscribe(self, topic_filter: str, session: Session) -> bool:
        """Deliver publications on topics matching ``topic_filter`` to ``session``.

        False when the session already holds ``--max-subscriptions`` filters
        and channels: the subscription is refused (counted in ``/metrics``) and
        the protocol tells its client.

        The filter must be valid (:func:`wsplex.app.topics.filter_error`).
        Subscribing twice to the same filter is one subscription.
        """

    @abstractmethod
    def unsubscribe(self, topic_filter: str, session: Session) -> None:
        """Undo :meth:`subscribe`; unknown filters are ignored."""

    @abstractmethod
    def publish(self, publication: Publication, *, exclude: str | None = None) -> bool:
        """Deliver ``publication`` to every subscriber on every node, except the
        session whose id is ``exclude``; keep it if it is retained (an empty
        retained payload clears the topic's retained publication) and in the
        topic's history if it has one.

        False when it asked to be retained and a bound refused that (its size,
        or the retained topics of its sender or of all): it was still
        delivered. The protocol tells its client (MQTT 5.0: reason 0x97).
        """

    @abstractmethod
    async def retained(self, topic_filter: str) -> list[Publication]:
        """The retained publications of every topic matching ``topic_filter``."""

    @abstractmethod
    def retained_count(self) -> int:
        """Topics with a retained publication, as this node knows it without a round trip
        (``/metrics``, ``status``): exact on one node; on Redis, the cluster's count at
        connect and at each heartbeat (every third of ``--redis-ttl``)."""

    @abstractmethod
    def keep_history(self, prefix: str, limit: int) -> None:
        """Keep the last ``limit`` publications of every topic starting with ``prefix``."""

    def pin(self, topic_filter: str) -> None:
        """Keep this node receiving publications that match ``topic_filter`` for its
        whole life, subscribed or not, so a session that subscribes to it when it
        connects (echo) hears other nodes from its handshake on (SPEC §9). Call it
        before the server starts (a protocol's ``__init__``); one process needs nothing."""

    @abstractmethod
    async def history(self, topic: str) -> list[Publication]:
        """The kept publications of ``topic``, oldest first (see :meth:`keep_history`)."""

    @abstractmethod
    async def subscribers(self, topic_filter: str) -> list[ClientInfo]:
        """Every session subscribed to exactly ``topic_filter``, across the cluster."""

    @abstractmethod
    async def filters(self, prefix: str) -> list[str]:
        """Filters with at least one subscriber anywhere, starting with ``prefix``."""

    # -- channels ----------------------------------------------------------------

    @abstractmethod
    def join(self, channel: str, session: Session) -> bool:
        """Put ``session`` in ``channel``; False when refused, as :meth:`subscribe`."""

    @abstractmethod
    def leave(self, channel: str, session: Session) -> None:
        """Take ``session`` out of ``channel``."""

    @abstractmethod
    def broadcast(self, channel: str, message: Outgoing, *, exclude: str | None = None) -> None:
        """Send ``message`` to every member of ``channel`` on every node, but ``exclude``."""

    @abstractmethod
    async def members(self, channel: str) -> list[ClientInfo]:
        """Every member of ``channel`` across the cluster."""

    @abstractmethod
    async def channels(self, prefix: str) -> list[str]:
        """Channels with at least one member anywhere, starting with ``prefix``."""

    # -- one session ---------------------------------------------------------------

    @abstractmethod
    def send_to(self, session_id: str, message: Outgoing) -> None:
        """Send ``message`` to one session, on whichever node it is."""

    @abstractmethod
    async def close_session(self, session_id: str, code: int, reason: str) -> bool:
        """Close a session on any node (``kick``); False when no such session exists."""

    @abstractmethod
    def touch(self, session: Session) -> None:
        """The session's visible details (its name) changed; refresh presence."""

    @abstractmethod
    async def clients(self) -> list[ClientInfo]:
        """Every client connected to the cluster."""

    # -- names -----------------------------------------------------------------------

    @abstractmethod
    async def claim_name(self, scope: str, name: str, session: Session) -> bool:
        """Make ``name`` in ``scope`` point at ``session``; False when another holds it.

        Claiming a name the session already holds succeeds. Names are
        case-sensitive and unique per scope across the cluster, and are
        released when their session leaves.
        """

    @abstractmethod
    async def release_name(self, scope: str, name: str, session: Session) -> None:
        """Free ``name`` if ``session`` holds it."""

    @abstractmethod
    async def lookup_name(self, scope: str, name: str) -> str | None:
        """The id of the session holding ``name`` in ``scope``, or None."""

    @abstractmethod
    def holder_here(self, scope: str, name: str) -> str | None:
        """The id of the session of *this node* holding ``name``, or None: an answer
        without a round trip, for hot paths that try it before :meth:`lookup_name`."""

    @abstractmethod
    async def names(self, scope: str) -> dict[str, str]:
        """Every name in ``scope`` with the id of the session holding it."""

    # -- small shared values -----------------------------------------------------------

    @abstractmethod
    async def set_value(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (protocol state shared by the cluster)."""

    @abstractmethod
    async def get_value(self, key: str) -> str | None:
        """The value under ``key``, or None."""

    @abstractmethod
    async def delete_value(self, key: str) -> None:
        """Forget ``key``."""

    @abstractmethod
    async def values(self, prefix: str) -> dict[str, str]:
        """Every stored value whose key starts with ``prefix``."""

    # -- queues (SPEC §12) ------------------------------------------------------------

    @abstractmethod
    def queue_send(self, queue: str, message: QueueMessage, *, sender: Session | None = None) -> bool:
        """Give ``message`` to the next consumer of ``queue`` anywhere in the cluster, or let
        it wait. With ``sender``, that session's next event waits until the message is
        stored (on Redis: in Redis, so a receipt means it outlives this node). Past the
        queue's bounds (``--stomp-queue-limit`` messages, ``--stomp-queue-bytes`` of
        ``data``) the oldest waiting ones are dropped and counted. False when it would
        make one queue more than this node may keep (``--stomp-max-queues``): nothing
        was sent."""

    @abstractmethod
    def queue_consume(self, queue: str, consumer: QueueConsumer, *, session: Session | None = None) -> bool:
        """``consumer`` takes its turns of ``queue`` from now on (round robin), starting with
        the messages that waited; False when refused, as :meth:`queue_send`. With
        ``session``, its next event waits until the consumer is in place (on Redis: this
        node reads the queue), so a receipt means it takes its turns from then on."""

    @abstractmethod
    def queue_cancel(self, queue: str, consumer: QueueConsumer) -> None:
        """``consumer`` takes no more; what it holds it settles itself (give it back)."""

    @abstractmethod
    def queue_settle(self, queue: str, messages: Sequence[QueueMessage], *, consumed: bool,
                     avoid: QueueConsumer | None = None) -> None:
        """Messages a consumer took are done with: consumed (ACK, or delivered in auto mode)
        they are gone; given back (NACK, or their consumer left) each is marked
        redelivered and goes to the next consumer but ``avoid`` (``avoid`` itself when
        it is the only one), or waits for the next consumer."""

    @abstractmethod
    def queue_figures(self) -> QueueFigures:
        """Queues, waiting and dropped messages, without a round trip."""
