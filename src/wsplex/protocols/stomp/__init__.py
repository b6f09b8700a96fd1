"""STOMP 1.0, 1.1 and 1.2 over WebSocket: ``v12.stomp``, ``v11.stomp``, ``v10.stomp`` (SPEC §12).

The three subprotocol names are one protocol: the version is negotiated by
CONNECT's ``accept-version`` (STOMP 1.2 "Protocol Negotiation"), not by the
name, because @stomp/stompjs offers all three names at once and the server
picks the client's first. So a ``v10.stomp`` connection may speak 1.2.

* Frames come in text or binary WebSocket messages, several per message or
  one across several (``frames.py``). A frame is answered in a text message
  when it is UTF-8 (headers always are; the body decides), else in binary.
* ``/topic/T`` is topic ``T`` of the topic space (SPEC §10): SEND publishes
  (not retained), SUBSCRIBE may use ``+`` and ``#``, and every protocol's
  publications arrive as MESSAGE with ``destination:/topic/T`` and the
  payload as the body. ``from`` names the sender as SPEC §10 says
  (``chat:alice``; a STOMP sender by its bare session id); a client's own
  ``from`` is dropped. A SEND's other headers (``content-type``, custom ones)
  reach STOMP receivers; other protocols get the body only.
* ``/queue/Q`` is a queue of the hub (``queues.py``): of this process, or with
  ``--redis`` of the cluster.
* A bad frame, an unknown command, a missing required header, a destination
  that is neither: an ERROR frame with a ``message`` header (and
  ``receipt-id`` when the frame asked for a receipt), then the close
  (STOMP 1.2 "ERROR"). Only that connection is touched.
* Every frame with a ``receipt`` header but CONNECT is answered by RECEIPT
  once it has taken effect (STOMP 1.2 "Header receipt"); a SUBSCRIBE's
  receipt comes after the hub has the subscription in place (on Redis, after
  its barrier), so a client may rely on it.
* A transaction (BEGIN, COMMIT, ABORT) holds its SEND, ACK and NACK frames
  until COMMIT; ABORT, DISCONNECT or a lost connection drops them (STOMP 1.2
  "BEGIN").

The state shared by the three protocol objects of a server (queues, the
heart-beat sweep) is one :class:`Broker` per hub.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from weakref import WeakKeyDictionary

from wsplex.app import (
    VERSION,
    CloseCode,
    Context,
    Figure,
    HookResult,
    Hub,
    Outgoing,
    Protocol,
    Publication,
    QueueConsumer,
    QueueMessage,
    Sender,
    Session,
    filter_error,
    is_server_topic,
    matches,
    topic_error,
)
from wsplex.protocols.stomp.frames import (
    HEART_BEAT,
    V10,
    V11,
    V12,
    VERSIONS,
    Frame,
    FrameError,
    FrameParser,
    encode,
    encode_headers,
    escape,
)
from wsplex.protocols.stomp.heartbeat import TOLERANCE, Beat, HeartBeats, negotiate, parse_header
from wsplex.protocols.stomp.queues import QueuedMessage, queued

TOPIC_PREFIX: Final = "/topic/"
QUEUE_PREFIX: Final = "/queue/"
#: How other protocols see a STOMP sender: ``stomp:SESSION`` (SPEC §10).
SENDER_PROTOCOL: Final = "stomp"
SERVER: Final = f"wsplex/{VERSION}"

AUTO, CLIENT, CLIENT_INDIVIDUAL = "auto", "client", "client-individual"
#: STOMP 1.0 knows auto and client; 1.1 added client-individual (STOMP 1.2 "SUBSCRIBE ack Header").
ACK_MODES: Final = {V10: (AUTO, CLIENT), V11: (AUTO, CLIENT, CLIENT_INDIVIDUAL),
                    V12: (AUTO, CLIENT, CLIENT_INDIVIDUAL)}
#: Headers a SEND does not pass on to its MESSAGE: the server's own, or the SEND's business.
NOT_PASSED_ON: Final = frozenset({
    "destination", "transaction", "receipt", "content-length", "message-id", "subscription",
    "ack", "from", "redelivered",
})
#: Bounds on what a transaction holds until COMMIT (STOMP 1.2 "Size Limits": the server's choice).
MAX_TRANSACTIONS: Final = 100
MAX_TRANSACTION_FRAMES: Final = 10_000

_TEXT_TYPE = ("content-type", "text/plain;charset=utf-8")
_BINARY_TYPE = ("content-type", "application/octet-stream")
_HEART_BEAT = Outgoing.text(HEART_BEAT.decode())


class StompError(Exception):
    """What an ERROR frame says: ``message`` (its header) and ``detail`` (its body)."""

    def __init__(self, message: str, detail: str = "", **headers: str) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers


@dataclass(slots=True, eq=False)
class Subscription(QueueConsumer):
    """One SUBSCRIBE of one connection: to a topic filter, or to a queue (then a consumer of the
    hub's queue: :meth:`take` is how a queue message reaches it)."""

    id: str
    name: str  # the topic filter or the queue name, without the prefix
    is_queue: bool
    ack: str
    session: Session
    connection: Connection
    order: int  # when it was made, in the connection's own count: the oldest wins
    hub: Hub | None = None  # a queue subscription's, which settles what it takes

    def take(self, queue: str, message: QueueMessage) -> None:
        deliver_queued(self, message)


class Connection:
    """A STOMP client's state (``session.state``)."""

    __slots__ = ("beat", "done", "next_id", "parser", "pending", "sender", "subscriptions",
                 "topics", "transactions", "version")

    def __init__(self, session: Session, max_frame_size: int) -> None:
        self.version: str | None = None  # None until CONNECTED
        self.parser = FrameParser(max_frame_size)
        self.sender = Sender(SENDER_PROTOCOL, session.id)
        self.subscriptions: dict[str, Subscription] = {}
        self.topics: dict[str, list[Subscription]] = {}  # filter -> its subscriptions, oldest first
        #: Queue messages delivered in a client ack mode and not acknowledged, by ack id,
        #: in delivery order (``client`` mode acknowledges cumulatively).
        self.pending: dict[str, tuple[Subscription, QueueMessage]] = {}
        self.transactions: dict[str, list[Frame]] = {}
        self.beat: Beat[Session] | None = None
        self.done = False  # DISCONNECT or ERROR: nothing more is read
        self.next_id = 0

    def new_message_id(self) -> str:
        """A ``message-id`` (and 1.2 ``ack``) unique on this connection."""
        self.next_id += 1
        return str(self.next_id)

    def subscription_for(self, topic: str) -> Subscription | None:
        """The oldest subscription whose filter matches ``topic``: a publication is delivered
        once per connection however many match (SPEC §10)."""
        topics = self.topics
        exact = topics.get(topic)
        best = exact[0] if exact else None
        if best is not None and len(topics) == 1:
            return best
        for topic_filter, subscriptions in topics.items():
            if subscriptions and topic_filter != topic and matches(topic_filter, topic):
                candidate = subscriptions[0]
                if best is None or candidate.order < best.order:
                    best = candidate
        return best


class Broker:
    """What the three STOMP protocol objects of one server share: the hub's queues as STOMP uses
    them, heart-beats, counters."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.heart_beats: HeartBeats[Session] = HeartBeats(_beat, _silent)
        self.connections: dict[str, Connection] = {}  # past CONNECTED, by session id
        self.redeliveries = 0

    def figures(self) -> dict[str, Figure]:
        """What ``/metrics`` (``wsplex_stomp_*``) and ``status`` show of STOMP on this node.
        The queue figures are the hub's: exact in one process; with ``--redis`` this node's
        view (the queues it sends to or consumes, their waiting messages as of the last
        look, every third of ``--redis-ttl``, and the drops its own sends caused)."""
        connections = self.connections.values
        queues = self.hub.queue_figures
        return {
            "stomp_sessions": Figure("STOMP connections past CONNECTED on this node",
                                     lambda: len(self.connections)),
            "stomp_subscriptions": Figure("STOMP subscriptions (topics and queues) on this node",
                                          lambda: sum(len(c.subscriptions) for c in connections())),
            "stomp_queues": Figure("STOMP queues this node keeps or uses (with a consumer or a "
                                   "waiting message)", lambda: queues().queues),
            "stomp_queued": Figure("Messages waiting in STOMP queues for a consumer (this node's view)",
                                   lambda: queues().waiting),
            "stomp_unacked": Figure("STOMP queue messages delivered in a client ack mode, not yet acked",
                                    lambda: sum(len(c.pending) for c in connections())),
            "stomp_redeliveries": Figure("STOMP queue messages delivered again (NACK, or consumer gone)",
                                         lambda: self.redeliveries, counter=True),
            "stomp_queue_dropped": Figure("STOMP queue messages dropped, oldest first, past "
                                          "--stomp-queue-limit or --stomp-queue-bytes",
                                          lambda: queues().dropped, counter=True),
        }

    # -- queues (the hub's, queues.py) ---------------------------------------------------

    def dispatch(self, name: str, message: QueuedMessage, sender: Session | None = None) -> None:
        """Give ``message`` to the next consumer of queue ``name``, or let it wait; ``sender``'s
        next frame (its receipt) waits until the hub stored it."""
        if not self.hub.queue_send(name, message.queue_message(), sender=sender):
            raise self._too_many()

    def consume(self, subscription: Subscription) -> None:
        """A new consumer: it takes its turns, starting with the messages that waited."""
        subscription.hub = self.hub
        if not self.hub.queue_consume(subscription.name, subscription, session=subscription.session):
            raise self._too_many()

    def _too_many(self) -> StompError:
        return StompError("too many queues: this server keeps no more")

    def leave(self, subscription: Subscription) -> None:
        """A consumer leaves: what it did not acknowledge goes to the others, redelivered,
        or back to the queue in its order when nobody else is there."""
        self.hub.queue_cancel(subscription.name, subscription)
        pending = subscription.connection.pending
        unacked = [key for key, (owner, _) in pending.items() if owner is subscription]
        messages = [pending.pop(key)[1] for key in unacked]
        if messages:
            self.redeliveries += len(messages)
            self.hub.queue_settle(subscription.name, messages, consumed=False)

    def acknowledge(self, connection: Connection, ack_id: str, *, consumed: bool) -> None:
        """ACK or NACK of one message (client-individual) or of it and every earlier one of
        its subscription (client). Topic messages and unknown ids need nothing. A NACKed
        message goes to another consumer if there is one, else to the same."""
        entry = connection.pending.get(ack_id)
        if entry is None:
            return
        subscription = entry[0]
        if subscription.ack == CLIENT:
            keys = []
            for key, (owner, _) in connection.pending.items():
                if owner is subscription:
                    keys.append(key)
                if key == ack_id:
                    break
        else:
            keys = [ack_id]
        messages = [connection.pending.pop(key)[1] for key in keys]
        if not consumed:
            self.redeliveries += len(messages)
        self.hub.queue_settle(subscription.name, messages, consumed=consumed, avoid=subscription)


_BROKERS: WeakKeyDictionary[Hub, Broker] = WeakKeyDictionary()


def broker_of(context: Context) -> Broker:
    """The one broker of the server whose hub is ``context.hub``."""
    broker = _BROKERS.get(context.hub)
    if broker is None:
        broker = _BROKERS[context.hub] = Broker(context.hub)
        context.stats.figures.update(broker.figures())
    return broker


# -- sending -----------------------------------------------------------------


def send_frame(session: Session, data: bytes, is_text: bool) -> None:
    session.send(Outgoing(data, is_text=is_text))


def deliver_queued(subscription: Subscription, message: QueueMessage) -> None:
    """One MESSAGE for one queue consumer; kept as pending in the client ack modes, settled
    with the hub at once in auto mode."""
    connection = subscription.connection
    hub = subscription.hub
    sent = queued(message)
    if sent is None or connection.done or subscription.session.closed:
        # Not ours to render (dropped), or the client is going: it takes no more, and
        # this one goes to another consumer.
        if hub is not None:
            if sent is not None:
                hub.queue_cancel(subscription.name, subscription)
            hub.queue_settle(subscription.name, (message,), consumed=sent is None)
        return
    version = connection.version or V12
    message_id = connection.new_message_id()
    headers = _message_headers(sent.destination, message_id, subscription, version)
    if message.redelivered:
        headers.append(("redelivered", "true"))
    headers.append(("from", sent.sender.seen_by(SENDER_PROTOCOL)))
    headers.extend(sent.headers)
    if subscription.ack != AUTO:
        connection.pending[message_id] = (subscription, message)
    elif hub is not None:
        hub.queue_settle(subscription.name, (message,), consumed=True)
    send_frame(subscription.session, encode("MESSAGE", headers, sent.body, version), sent.is_text)


def _message_headers(destination: str, message_id: str, subscription: Subscription,
                     version: str) -> list[tuple[str, str]]:
    """STOMP 1.2 "MESSAGE": destination, message-id, subscription, and (1.2) ack."""
    headers = [("destination", destination), ("message-id", message_id),
               ("subscription", subscription.id)]
    if version == V12 and subscription.ack != AUTO:
        headers.append(("ack", message_id))
    return headers


def _beat(session: Session) -> None:
    session.send(_HEART_BEAT)


def _silent(session: Session) -> None:
    connection = session.state
    if isinstance(connection, Connection) and not connection.done:
        interval = connection.beat.expect_every if connection.beat is not None else 0
        fail(session, connection, StompError(
            "heart-beat timeout",
            f"nothing received for {interval * TOLERANCE:g} s (heart-beat {interval:g} s)"))


def fail(session: Session, connection: Connection, error: StompError, frame: Frame | None = None) -> None:
    """ERROR, then the close (STOMP 1.2 "ERROR"): the connection reads nothing more."""
    if connection.done:
        return
    connection.done = True
    headers = [("message", error.message), *error.headers.items()]
    receipt = frame.get("receipt") if frame is not None else None
    if receipt is not None:
        headers.append(("receipt-id", receipt))
    if error.detail:
        headers.append(("content-type", "text/plain"))
    send_frame(session, encode("ERROR", headers, error.detail.encode(), connection.version or V10), True)
    reason = error.message.encode()[:120].decode(errors="ignore")
    session.close(CloseCode.PROTOCOL_ERROR, reason)


class _Rendering:
    """One publication as MESSAGE frames: what all receivers share, encoded once per version.

    A receiver's frame is the shared head (command, ``destination``, up to
    ``message-id:``), its message id, its ``subscription`` (and 1.2 ``ack``) lines,
    and the shared tail (the sender's headers, ``content-length``, the body):
    the same bytes :func:`encode` makes of the whole, in one join per receiver.
    """

    __slots__ = ("_parts", "body", "destination", "headers", "is_text")

    def __init__(self, publication: Publication) -> None:
        self.destination = TOPIC_PREFIX + publication.topic
        self.body = publication.data
        self.is_text = publication.text is not None
        sender = publication.sender
        headers = [("from", sender.seen_by(SENDER_PROTOCOL))]
        native = publication.native
        if sender.protocol == SENDER_PROTOCOL and native is not None:
            headers.extend(decode_passed_on(native.payload))
        elif sender.protocol != SENDER_PROTOCOL:
            headers.append(_TEXT_TYPE if self.is_text else _BINARY_TYPE)
        self.headers = headers
        self._parts: dict[str, tuple[bytes, bytes]] = {}  # version -> (head, tail)

    def _render(self, version: str) -> tuple[bytes, bytes]:
        head = b"MESSAGE\n" + encode_headers((("destination", self.destination),), version) + b"message-id:"
        body = self.body
        length = b"content-length:%d\n" % len(body) if body else b""
        tail = b"".join((encode_headers(self.headers, version), length, b"\n", body, b"\0"))
        parts = self._parts[version] = (head, tail)
        return parts

    def message(self, subscription: Subscription) -> Outgoing:
        connection = subscription.connection
        version = connection.version or V12
        parts = self._parts.get(version) or self._render(version)
        message_id = connection.new_message_id()  # digits: the same escaped in every version
        lines = f"{message_id}\nsubscription:{escape(subscription.id, version)}\n"
        if version == V12 and subscription.ack != AUTO:
            lines += f"ack:{message_id}\n"
        return Outgoing(b"".join((parts[0], lines.encode(), parts[1])), is_text=self.is_text)


def encode_passed_on(headers: Iterable[tuple[str, str]]) -> Outgoing | None:
    """A SEND's own headers, carried in the publication's ``native`` (across nodes too)."""
    lines = encode_headers(headers, V12)
    return Outgoing.binary(lines) if lines else None


def decode_passed_on(lines: bytes) -> list[tuple[str, str]]:
    parser = FrameParser(len(lines) + 64, V12)
    try:
        [frame] = parser.feed(b"MESSAGE\n" + lines + b"\n\0")
    except (FrameError, ValueError):
        return []
    return list(frame.headers)


# -- the protocol --------------------------------------------------------------

Handler = Callable[[Session, Connection, Frame], None]


class StompProtocol(Protocol):
    """STOMP on the topic space; Stomp12, Stomp11 and Stomp10 below only name it."""

    raw_text = False  # STOMP frames only: a line of text is a bad frame

    description = "STOMP 1.0-1.2 (stomp.js, stomp.py): /topic/T is topic T, /queue/Q a queue."
    help = (
        "Send STOMP frames: CONNECT (accept-version, heart-beat), then SEND, SUBSCRIBE (id, ack: auto,\n"
        "client, client-individual), UNSUBSCRIBE, ACK, NACK, BEGIN, COMMIT, ABORT, DISCONNECT.\n"
        "/topic/T is topic T of every protocol (chat room R is /topic/chat/R; + and # in SUBSCRIBE).\n"
        "/queue/Q is a queue: each message to one subscriber in turn; it waits while nobody listens.\n"
        "Add receipt:ID to any frame to get a RECEIPT. A bad frame gets ERROR and the close."
    )

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.broker = broker_of(context)
        settings = context.settings
        self._max_frame_size = settings.stomp_max_frame_size
        self._max_subscriptions = settings.max_subscriptions  # the hub's bound, queues included
        self._server_beat = (settings.stomp_heart_beat, settings.stomp_heart_beat)
        self._handlers: dict[str, dict[str, Handler]] = {}
        common: dict[str, Handler] = {
            "SEND": self._send, "SUBSCRIBE": self._subscribe, "UNSUBSCRIBE": self._unsubscribe,
            "ACK": self._ack, "BEGIN": self._begin, "COMMIT": self._commit, "ABORT": self._abort,
            "DISCONNECT": self._disconnect,
        }
        self._handlers[V10] = common  # 1.0 has no NACK (STOMP 1.1 "NACK")
        self._handlers[V11] = self._handlers[V12] = {**common, "NACK": self._nack}

    async def stop(self) -> None:
        self.broker.heart_beats.stop()

    # -- hooks -------------------------------------------------------------------

    def on_connect(self, session: Session) -> HookResult:
        session.state = Connection(session, self._max_frame_size)
        return None

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        connection = session.state
        if not isinstance(connection, Connection) or connection.done:
            return None
        if connection.beat is not None:
            connection.beat.heard = asyncio.get_running_loop().time()
        data = message.encode() if isinstance(message, str) else message
        try:
            frames = connection.parser.feed(data)
        except FrameError as exc:
            for frame in exc.frames:
                session.run(self._on_frame, frame)
            session.run(self._on_bad_frame, StompError(str(exc)))
            return None
        for frame in frames:
            session.run(self._on_frame, frame)  # in order, behind any subscription barrier
        return None

    def on_disconnect(self, session: Session, code: int) -> HookResult:
        connection = session.state
        if not isinstance(connection, Connection):
            return None
        connection.done = True
        self.broker.connections.pop(session.id, None)
        self.broker.heart_beats.forget(connection.beat)
        connection.transactions.clear()  # STOMP 1.2 "BEGIN": implicitly aborted
        for subscription in list(connection.subscriptions.values()):
            if subscription.is_queue:
                self.broker.leave(subscription)
        connection.subscriptions.clear()
        connection.topics.clear()
        return None

    # -- frames ----------------------------------------------------------------------

    def _on_bad_frame(self, session: Session, error: StompError) -> None:
        connection = session.state
        if isinstance(connection, Connection):
            fail(session, connection, error)

    def _on_frame(self, session: Session, frame: Frame) -> HookResult:
        connection = session.state
        if not isinstance(connection, Connection) or connection.done:
            return None
        try:
            if connection.version is None:
                if self.context.users.enabled:
                    return self._log_in(session, connection, frame)
                self._connect(session, connection, frame)
                return None
            handler = self._handlers[connection.version].get(frame.command)
            if handler is None:
                raise StompError(f"unknown command {frame.command}",
                                 f"STOMP {connection.version} clients send "
                                 f"{', '.join(sorted(self._handlers[connection.version]))}")
            if frame.body and frame.command != "SEND":
                raise StompError(f"{frame.command} frames must not have a body")
            handler(session, connection, frame)
        except StompError as exc:
            fail(session, connection, exc, frame)
            return None
        receipt = frame.get("receipt")
        if receipt is not None and not connection.done:
            session.run(self._receipt, receipt)  # after a subscription barrier, if one was raised
        return None

    @staticmethod
    def _receipt(session: Session, receipt: str) -> None:
        connection = session.state
        if isinstance(connection, Connection) and not session.closed:
            send_frame(session, encode("RECEIPT", [("receipt-id", receipt)], b"",
                                       connection.version or V12), True)

    # -- CONNECT (STOMP 1.2 "Connecting") -------------------------------------------------

    async def _log_in(self, session: Session, connection: Connection, frame: Frame) -> None:
        """With ``--users`` (SPEC §15), CONNECT's ``login`` and ``passcode`` must match a user.
        The check (scrypt) runs in a thread; the connection's later frames wait for it."""
        login, passcode = frame.get("login"), frame.get("passcode")
        accepted = login is not None and passcode is not None and await asyncio.to_thread(
            self.context.users.check, login, passcode)
        if session.closed or connection.done:
            return
        try:
            if not accepted:
                raise StompError("authentication failed",
                                 "login and passcode must be those of a user of the server")
            self._connect(session, connection, frame)
        except StompError as exc:
            fail(session, connection, exc, frame)
            return
        session.name = login
        self.hub.touch(session)

    def _connect(self, session: Session, connection: Connection, frame: Frame) -> None:
        if frame.command not in ("CONNECT", "STOMP"):
            raise StompError(f"expected CONNECT or STOMP, not {frame.command}")
        accepted = frame.get("accept-version")
        offered = [v.strip() for v in accepted.split(",")] if accepted is not None else [V10]
        common = [version for version in VERSIONS if version in offered]
        if not common:
            raise StompError("no common STOMP version",
                             f"Supported protocol versions are {' '.join(VERSIONS)}",
                             version=",".join(VERSIONS))
        version = common[-1]
        client_beat = parse_header(frame.get("heart-beat")) if version != V10 else (0, 0)
        if client_beat is None:
            raise StompError("invalid heart-beat header", "expected heart-beat:cx,cy in milliseconds")
        connection.version = connection.parser.version = version
        self.broker.connections[session.id] = connection
        send_every, expect_every = negotiate(client_beat, self._server_beat)
        connection.beat = self.broker.heart_beats.watch(session, send_every, expect_every)
        headers = [("version", version), ("server", SERVER), ("session", session.id)]
        if version != V10:
            headers.append(("heart-beat", f"{self._server_beat[0]},{self._server_beat[1]}"))
        send_frame(session, encode("CONNECTED", headers), True)

    # -- SEND ----------------------------------------------------------------------------

    def _send(self, session: Session, connection: Connection, frame: Frame) -> None:
        destination = _required(frame, "destination")
        is_queue, name = _destination(destination)
        problem = topic_error(name)
        if problem is not None:
            raise StompError(f"invalid destination {destination[:60]!r}", problem)
        if self._held(connection, frame):
            return
        self._publish(session, connection, frame, destination, is_queue, name)

    def _publish(self, session: Session, connection: Connection, frame: Frame, destination: str,
                 is_queue: bool, name: str) -> None:
        passed_on = tuple((k, v) for k, v in _first_headers(frame) if k not in NOT_PASSED_ON)
        body = frame.body
        try:
            payload: str | bytes = body.decode()
        except UnicodeDecodeError:
            payload = body
        if is_queue:
            message = QueuedMessage(destination, passed_on, body, isinstance(payload, str), connection.sender)
            self.broker.dispatch(name, message, session if "receipt" in frame else None)
        elif not is_server_topic(name):  # $SYS/... is the server's: dropped (SPEC §10)
            native = encode_passed_on(passed_on)
            self.hub.publish(Publication(name, payload, connection.sender, native=native))

    # -- SUBSCRIBE, UNSUBSCRIBE ------------------------------------------------------------

    def _subscribe(self, session: Session, connection: Connection, frame: Frame) -> None:
        destination = _required(frame, "destination")
        version = connection.version or V12
        subscription_id = frame.get("id")
        if subscription_id is None:
            if version != V10:
                raise StompError("SUBSCRIBE needs an id header")
            subscription_id = destination  # 1.0: the id is optional
        if subscription_id in connection.subscriptions:
            raise StompError(f"subscription id {subscription_id[:60]!r} is already in use")
        ack = frame.get("ack") or AUTO
        if ack not in ACK_MODES[version]:
            raise StompError(f"invalid ack mode {ack[:40]!r}",
                             f"STOMP {version} has ack: {', '.join(ACK_MODES[version])}")
        is_queue, name = _destination(destination)
        problem = topic_error(name) if is_queue else filter_error(name)
        if problem is not None:
            raise StompError(f"invalid destination {destination[:60]!r}", problem)
        connection.next_id += 1
        if len(connection.subscriptions) >= self._max_subscriptions:
            raise StompError(f"more than {self._max_subscriptions} subscriptions")
        subscription = Subscription(subscription_id, name, is_queue, ack, session, connection,
                                    connection.next_id)
        if is_queue:
            self.broker.consume(subscription)  # may refuse: too many queues
            connection.subscriptions[subscription_id] = subscription
            return
        if name not in connection.topics and not self.hub.subscribe(name, session):
            raise StompError(f"more than {self._max_subscriptions} subscriptions")
        connection.subscriptions[subscription_id] = subscription
        connection.topics.setdefault(name, []).append(subscription)

    def _unsubscribe(self, session: Session, connection: Connection, frame: Frame) -> None:
        subscription_id = frame.get("id")
        if subscription_id is None:
            destination = frame.get("destination")
            if connection.version != V10 or destination is None:
                raise StompError("UNSUBSCRIBE needs an id header")
            subscription_id = destination
        subscription = connection.subscriptions.pop(subscription_id, None)
        if subscription is None:
            return  # nothing to undo
        if subscription.is_queue:
            self.broker.leave(subscription)
            return
        subscriptions = connection.topics.get(subscription.name, [])
        if subscription in subscriptions:
            subscriptions.remove(subscription)
        if not subscriptions:
            connection.topics.pop(subscription.name, None)
            self.hub.unsubscribe(subscription.name, session)

    # -- ACK, NACK (STOMP 1.2 "ACK", "NACK") --------------------------------------------------

    def _ack(self, session: Session, connection: Connection, frame: Frame) -> None:
        ack_id = _ack_id(frame, connection.version or V12)
        if not self._held(connection, frame):
            self._acknowledge(connection, ack_id, consumed=True)

    def _nack(self, session: Session, connection: Connection, frame: Frame) -> None:
        ack_id = _ack_id(frame, connection.version or V12)
        if not self._held(connection, frame):
            self._acknowledge(connection, ack_id, consumed=False)

    def _acknowledge(self, connection: Connection, ack_id: str, *, consumed: bool) -> None:
        self.broker.acknowledge(connection, ack_id, consumed=consumed)

    # -- transactions (STOMP 1.2 "BEGIN", "COMMIT", "ABORT") -------------------------------------

    def _held(self, connection: Connection, frame: Frame) -> bool:
        """Keep a SEND, ACK or NACK of a transaction for its COMMIT; False when it has none."""
        transaction = frame.get("transaction")
        if transaction is None:
            return False
        frames = connection.transactions.get(transaction)
        if frames is None:
            raise StompError(f"unknown transaction {transaction[:60]!r}")
        if len(frames) >= MAX_TRANSACTION_FRAMES:
            raise StompError(f"transaction {transaction[:60]!r} is full ({MAX_TRANSACTION_FRAMES} frames)")
        frames.append(frame)
        return True

    def _begin(self, session: Session, connection: Connection, frame: Frame) -> None:
        transaction = _required(frame, "transaction")
        if transaction in connection.transactions:
            raise StompError(f"transaction {transaction[:60]!r} is already open")
        if len(connection.transactions) >= MAX_TRANSACTIONS:
            raise StompError(f"more than {MAX_TRANSACTIONS} open transactions")
        connection.transactions[transaction] = []

    def _commit(self, session: Session, connection: Connection, frame: Frame) -> None:
        frames = self._close_transaction(connection, frame)
        for held in frames:
            if held.command == "SEND":
                destination = held.get("destination") or ""
                is_queue, name = _destination(destination)
                self._publish(session, connection, held, destination, is_queue, name)
            else:
                ack_id = _ack_id(held, connection.version or V12)
                self._acknowledge(connection, ack_id, consumed=held.command == "ACK")

    def _abort(self, session: Session, connection: Connection, frame: Frame) -> None:
        self._close_transaction(connection, frame)

    @staticmethod
    def _close_transaction(connection: Connection, frame: Frame) -> list[Frame]:
        transaction = _required(frame, "transaction")
        frames = connection.transactions.pop(transaction, None)
        if frames is None:
            raise StompError(f"unknown transaction {transaction[:60]!r}")
        return frames

    # -- DISCONNECT (STOMP 1.2 "DISCONNECT") -------------------------------------------------

    def _disconnect(self, session: Session, connection: Connection, frame: Frame) -> None:
        receipt = frame.get("receipt")
        connection.done = True
        if receipt is not None:
            self._receipt(session, receipt)
        session.close(CloseCode.NORMAL, "")

    # -- the topic space (SPEC §10) -------------------------------------------------------------

    def deliver(self, publication: Publication, sessions: Mapping[str, Session], exclude: str | None) -> None:
        """Each receiver gets its own MESSAGE (its subscription id, its message-id); what they
        share (destination, from, the body and the sender's headers) is encoded once per version."""
        rendering: _Rendering | None = None
        topic = publication.topic
        for session in list(sessions.values()):
            if session.id == exclude:
                continue
            connection = session.state
            if not isinstance(connection, Connection) or connection.done:
                continue
            subscription = connection.subscription_for(topic)
            if subscription is None:
                continue
            if rendering is None:
                rendering = _Rendering(publication)
            session.send(rendering.message(subscription))


def _required(frame: Frame, name: str) -> str:
    value = frame.get(name)
    if value is None:
        raise StompError(f"{frame.command} needs a {name} header")
    return value


def _destination(destination: str) -> tuple[bool, str]:
    """``(is_queue, name)`` of ``/queue/NAME`` or ``/topic/NAME``; anything else is an error."""
    if destination.startswith(QUEUE_PREFIX):
        return True, destination[len(QUEUE_PREFIX):]
    if destination.startswith(TOPIC_PREFIX):
        return False, destination[len(TOPIC_PREFIX):]
    raise StompError(f"unknown destination {destination[:60]!r}",
                     f"destinations are {TOPIC_PREFIX}NAME (the topic space shared with every "
                     f"protocol; + and # in SUBSCRIBE) and {QUEUE_PREFIX}NAME (a queue)")


def _ack_id(frame: Frame, version: str) -> str:
    """What identifies the message: 1.2 ``id`` (the MESSAGE's ``ack``), 1.1 and 1.0
    ``message-id`` (1.1 also names the ``subscription``)."""
    if version == V12:
        return _required(frame, "id")
    if version == V11:
        _required(frame, "subscription")
    return _required(frame, "message-id")


def _first_headers(frame: Frame) -> list[tuple[str, str]]:
    """Each header once, its first value (STOMP 1.2 "Repeated Header Entries")."""
    seen: set[str] = set()
    out = []
    for name, value in frame.headers:
        if name not in seen:
            seen.add(name)
            out.append((name, value))
    return out


class Stomp12(StompProtocol):
    name = "v12.stomp"


class Stomp11(StompProtocol):
    name = "v11.stomp"


class Stomp10(StompProtocol):
    name = "v10.stomp"
