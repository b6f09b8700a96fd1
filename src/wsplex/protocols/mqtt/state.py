"""What the broker keeps per MQTT client: its session (which may outlive a connection) and
its live connection.

* :class:`ClientSession` is the MQTT *Session State* of 3.1.1 §4.1 and 5.0 §4.1:
  the subscriptions, the QoS 1 and 2 messages sent and not yet acknowledged
  (in flight), the ones waiting for a slot in the in-flight window or for the
  client to come back (queued, bounded: the oldest is dropped and counted), and
  the QoS 2 packet ids received and not yet released. It lives as long as the
  connection for a clean session, and up to its expiry for a persistent one.
* :class:`Connection` is one network connection (``session.state``): the
  stream splitter, the protocol level, keep-alive, topic aliases, the will,
  and the client's limits (Receive Maximum, Maximum Packet Size).

Outbound flow control (5.0 §4.9): at most ``window`` QoS 1 and 2 messages are
in flight; the rest wait in ``queue``. 3.1.1 has no Receive Maximum: the
window is the server's ``--mqtt-max-inflight``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wsplex.app import Sender, Session, matches
from wsplex.protocols.mqtt.codec import NO_PROPERTIES, Properties, Splitter, Will

if TYPE_CHECKING:
    import asyncio

#: Packet identifiers are 1-65535 (3.1.1 §2.3.1, 5.0 §2.2.1).
MAX_PACKET_ID = 65_535


#: 5.0 §4.8.2: ``$share/GROUP/FILTER``.
SHARE_PREFIX = "$share/"


@dataclass(slots=True)
class Subscription:
    """One filter of a client with its options (5.0 §3.8.3.1).

    ``topic_filter`` is the filter matched against topics: for a shared
    subscription ``$share/GROUP/FILTER`` (5.0 §4.8.2) it is FILTER and ``group``
    is GROUP.
    """

    topic_filter: str
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int | None = None
    group: str | None = None


def parse_shared(requested: str) -> tuple[str, str] | None:
    """(GROUP, FILTER) of ``$share/GROUP/FILTER``, or None when ``requested`` is not shared.

    A group name is at least one character, without ``/``, ``+`` or ``#``
    [MQTT-4.8.2-1, -2]; an invalid one makes the whole filter invalid: ("", "").
    """
    if not requested.startswith(SHARE_PREFIX):
        return None
    group, sep, topic_filter = requested[len(SHARE_PREFIX):].partition("/")
    if not sep or not group or "+" in group or "#" in group or not topic_filter:
        return "", ""
    return group, topic_filter


@dataclass(slots=True)
class Message:
    """An application message on its way to one client (QoS 1 or 2), or in flight.

    ``released``: a QoS 2 message whose PUBREC came, so PUBREL is what is resent
    (5.0 §4.3.3). ``expires`` is the time (epoch seconds) past which it is not
    sent (5.0 §3.3.2.3.3), or None.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = NO_PROPERTIES
    expires: float | None = None
    packet_id: int = 0
    released: bool = False


@dataclass(slots=True)
class ClientSession:
    """The Session State of one client id (3.1.1 §4.1, 5.0 §4.1)."""

    client_id: str
    max_queued: int
    subscriptions: dict[str, Subscription] = field(default_factory=dict)  # by the filter as written
    inflight: dict[int, Message] = field(default_factory=dict)
    queue: deque[Message] = field(default_factory=deque)
    awaiting_release: set[int] = field(default_factory=set)
    dropped: int = 0
    #: Seconds the session outlives its connection (5.0 §3.1.2.11.2); 0: it ends with it.
    expiry: float = 0.0
    connection: Connection | None = None
    #: While no connection is live: the stand-in that holds the hub subscriptions.
    standin: Session | None = None
    expiry_timer: asyncio.TimerHandle | None = None
    _next_id: int = 0

    def next_packet_id(self) -> int:
        """A packet id not in flight (3.1.1 [MQTT-2.3.1-2]); the window keeps one free."""
        while True:
            self._next_id = self._next_id % MAX_PACKET_ID + 1
            if self._next_id not in self.inflight:
                return self._next_id

    def enqueue(self, message: Message) -> bool:
        """Queue ``message``; past the bound the oldest is dropped and counted. True if one was."""
        self.queue.append(message)
        if len(self.queue) > self.max_queued:
            self.queue.popleft()
            self.dropped += 1
            return True
        return False

    def matching(self, topic: str) -> Iterator[Subscription]:
        for subscription in self.subscriptions.values():
            if matches(subscription.topic_filter, topic):
                yield subscription

    def hub_filters(self) -> set[str]:
        """The filters the hub delivers for: one hub subscription serves a plain and a
        shared subscription to the same filter."""
        return {subscription.topic_filter for subscription in self.subscriptions.values()}


@dataclass(slots=True)
class Connection:
    """One live MQTT connection (``session.state``)."""

    session: Session
    splitter: Splitter
    level: int = 0  # 0 until CONNECT
    client: ClientSession | None = None
    sender: Sender | None = None
    keep_alive: float = 0.0
    deadline: float = 0.0  # loop time past which keep-alive closes the connection
    #: The client's Receive Maximum (5.0 §3.1.2.11.3), or the server's window for 3.1.1.
    window: int = 65_535
    #: The client's Maximum Packet Size (5.0 §3.1.2.11.4); 0: none.
    max_packet: int = 0
    aliases: dict[int, str] = field(default_factory=dict)  # topic aliases the client set (§3.3.2.3.4)
    will: Will | None = None
    #: Set by a normal DISCONNECT: no will (3.1.1 [MQTT-3.1.2-10], 5.0 §3.1.2.5).
    graceful: bool = False
    closing: bool = False

    @property
    def connected(self) -> bool:
        return self.client is not None and not self.closing
