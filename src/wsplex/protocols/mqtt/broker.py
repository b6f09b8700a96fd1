"""``mqtt``: an MQTT 3.1.1 and 5.0 broker over WebSocket, on the one topic space (SPEC §10, §11).

MQTT topic ``T`` is topic ``T`` of the topic space: a PUBLISH is a publication
(retained as flagged) that every protocol's subscribers receive, and an MQTT
SUBSCRIBE is a hub subscription, so an MQTT client hears chat rooms
(``chat/lobby``), JSONsvc services and echo, and is heard by them as
``mqtt:CLIENT_ID`` (SPEC §10). Sections cited: 3.1.1 = OASIS MQTT Version
3.1.1, 5.0 = OASIS MQTT Version 5.0.

* **Transport** (3.1.1 §6, 5.0 §6): binary WebSocket messages only (a text
  message closes with 1003); a packet may span messages and a message may hold
  several packets (:class:`~wsplex.protocols.mqtt.codec.Splitter`).
* **Connect** (§3.1, §3.2): the first packet must be CONNECT [MQTT-3.1.0-1], a
  second one is a protocol violation [MQTT-3.1.0-2]; protocol level 4 is 3.1.1,
  5 is 5.0, any other gets CONNACK 0x01 (3.1.1 [MQTT-3.1.2-2]) or 0x84 (5.0)
  and the connection is closed. An empty client id is assigned
  ``wsplex-SESSION`` (3.1.1 only with a clean session, else CONNACK 0x02
  [MQTT-3.1.3-8]; 5.0 returns it as Assigned Client Identifier, §3.2.2.3.7).
* **Takeover** (3.1.1 [MQTT-3.1.4-2], 5.0 §3.1.4): client ids are hub names in
  scope ``mqtt``, so they are unique across a cluster; a CONNECT with a client
  id in use closes the holder (5.0: DISCONNECT 0x8E first, on whichever node it
  is: :meth:`MQTTProtocol.kicked`) and takes the name. A ``kick`` is DISCONNECT 0x98.
* **Keep-alive** (3.1.1 §3.1.2.10 [MQTT-3.1.2-24], 5.0 §3.1.2.10): a client
  silent for 1.5 times its Keep Alive is closed (5.0: DISCONNECT 0x8D). One
  timer sweeps every watched connection each second: no task per connection.
  A connection that sends no CONNECT within ``--handshake-timeout`` is closed.
* **Wills** (3.1.1 §3.1.2.5, 5.0 §3.1.3.2): published when the connection ends
  without a normal DISCONNECT (5.0: also after DISCONNECT 0x04), after the
  5.0 Will Delay Interval unless the client is back by then.
* **QoS** (§4.3): inbound QoS 1 is acknowledged after it is published, QoS 2
  is published on PUBLISH and its packet id held until PUBREL (method A of
  §4.3.3: a repeated PUBLISH is acknowledged, not published again). Outbound,
  each receiver gets the minimum of the publication's and its subscription's
  QoS (§3.8.4) with its own packet ids, at most ``window`` in flight (5.0
  Receive Maximum, §4.9), the rest queued.
* **Sessions** (§4.1): a 3.1.1 client without Clean Session or a 5.0 client
  with a Session Expiry Interval keeps its subscriptions and QoS 1 and 2
  messages while it is away (queued, bounded by ``--mqtt-max-queued``: the
  oldest are dropped and counted), on this node; on reconnect unacknowledged
  messages are sent again with DUP and PUBRELs repeated (3.1.1 [MQTT-4.4.0-1],
  5.0 [MQTT-4.4.0-1]). A client back on another node gets its session from
  this one through hub values (:meth:`MQTTProtocol._fetch`, :mod:`.handoff`).
* **Publications of other protocols** reach MQTT subscribers at QoS 0 (they
  carry no QoS); a 5.0 receiver sees the sender in the user property ``from``
  (SPEC §10), the client id for an MQTT sender, ``PROTOCOL:NAME`` for others.
  A client's ``from`` user property is dropped: only the server says who spoke.
* **Shared subscriptions** (5.0 §4.8.2): one live member of a group in the cluster owns
  it (hub name ``GROUP/FILTER`` in scope ``mqtt.share``), and only the owner's node
  delivers to the group, so the group gets one copy cluster-wide. Ownership is taken
  before the SUBACK, handed to another member of the node when the owner leaves, and
  claimed again at each sweep by nodes with members and no owner (the owner's node
  left: within a second, or within ``--redis-ttl`` if it was killed; meanwhile the
  group misses what is published).
* ``$SYS/...`` belongs to the server (SPEC §10): a client's PUBLISH there is
  dropped, acknowledged with 0x90 in 5.0.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Final

from wsplex.app import (
    CloseCode,
    Context,
    Figure,
    HookResult,
    Outgoing,
    Protocol,
    Publication,
    Sender,
    Session,
    filter_error,
    is_server_topic,
    topic_error,
)
from wsplex.protocols.mqtt.codec import (
    LEVEL_5,
    LEVEL_311,
    NO_PROPERTIES,
    PINGRESP,
    RC311_BAD_CREDENTIALS,
    RC311_BAD_VERSION,
    RC311_IDENTIFIER_REJECTED,
    RC311_SERVER_UNAVAILABLE,
    RC311_SUBACK_FAILURE,
    Ack,
    Auth,
    Connect,
    Disconnect,
    MalformedPacket,
    PingReq,
    Prop,
    Properties,
    Publish,
    Reason,
    Splitter,
    Subscribe,
    Type,
    Unsubscribe,
    Will,
    decode,
    decode_properties,
    encode_ack,
    encode_connack,
    encode_disconnect,
    encode_properties,
    encode_publish,
    encode_suback,
    encode_unsuback,
    protocol_error,
)
from wsplex.protocols.mqtt.handoff import dump_session, load_session
from wsplex.protocols.mqtt.state import ClientSession, Connection, Message, Subscription, parse_shared

log = logging.getLogger("wsplex.mqtt")

#: Hub name scope of client ids: unique across the cluster.
NAME_SCOPE: Final = "mqtt"
#: Hub name scope of shared subscription groups (5.0 §4.8.2): the session holding the name
#: ``GROUP/FILTER`` owns the group, and only its node delivers to the group.
SHARE_SCOPE: Final = "mqtt.share"
#: The user property that names the sender (SPEC §10).
FROM: Final = "from"
#: Seconds between keep-alive sweeps.
SWEEP_INTERVAL: Final = 1.0
#: 3.1.1 §3.1.2.10: a client is given one and a half times its Keep Alive.
KEEP_ALIVE_GRACE: Final = 1.5
#: QoS 2 messages a client may have unreleased (our Receive Maximum, 5.0 §3.2.2.3.3).
RECEIVE_MAXIMUM: Final = 1024
#: Topic aliases a 5.0 client may set (Topic Alias Maximum, 5.0 §3.2.2.3.8).
TOPIC_ALIAS_MAXIMUM: Final = 64
#: 5.0 §3.1.2.11.2: this Session Expiry Interval means "never".
NEVER: Final = 0xFFFFFFFF
#: The reason of the ``close_session`` a takeover sends the holder's node: its
#: :meth:`MQTTProtocol.kicked` says DISCONNECT 0x8E for it, 0x98 for any other kick.
TAKEN_OVER: Final = "MQTT session taken over"
#: How long a takeover waits for a holder on another node to let go of the client id.
TAKEOVER_WAIT: Final = 5.0
_TAKEOVER_POLL: Final = 0.05
#: Hub values that move a kept session between nodes (:mod:`.handoff`): the node keeping
#: a client's session, a node's requests for sessions it keeps, a session on its way.
_KEPT_AT: Final = "mqtt.session:"
_WANTED: Final = "mqtt.wanted:"
_HANDOFF: Final = "mqtt.handoff:"
#: How long a CONNECT waits for another node to hand over the client's session.
HANDOFF_WAIT: Final = 3.0
_HANDOFF_POLL: Final = 0.05
#: Properties a publication carries from publisher to subscribers (5.0 §3.3.2.3).
_PASSED_ON: Final = (Prop.PAYLOAD_FORMAT, Prop.MESSAGE_EXPIRY, Prop.CONTENT_TYPE,
                     Prop.RESPONSE_TOPIC, Prop.CORRELATION_DATA)

HELP: Final = """\
An MQTT 3.1.1 and 5.0 broker: connect an MQTT client over WebSocket (binary frames,
subprotocol mqtt, path / or /mqtt), e.g. paho-mqtt with transport="websockets".
Topic T is the topic T every protocol of this server shares: subscribe to chat/lobby
to read the lobby, publish there to talk in it (seen as [mqtt:CLIENT_ID] text);
a JSONsvc service S is topic S (its latest value is the retained message).
QoS 0, 1 and 2, retained messages, wills, persistent sessions, 5.0 properties.
The MQTT 5.0 user property "from" names the sender; $SYS/ is the server's."""


class _Offline:
    """The link of a stand-in session: a persistent session whose client is away
    holds its hub subscriptions with it, so publications keep arriving to be queued."""

    def write_frame(self, frame: bytes) -> None:
        """Nothing to write to: :meth:`MQTTProtocol.deliver` queues instead."""

    def close(self, code: int, reason: str) -> None:
        """Nothing to close."""


_OFFLINE: Final = _Offline()


def _meta(qos: int, props: Properties) -> Outgoing:
    """What an MQTT publication carries for MQTT receivers (``native``): its QoS and the
    5.0 properties passed on, as a property block (it crosses nodes with the publication)."""
    passed = Properties({p: v for p, v in props.values.items() if p in _PASSED_ON},
                        tuple(pair for pair in props.user if pair[0] != FROM))
    return Outgoing.binary(bytes([qos]) + encode_properties(passed))


def _read_meta(publication: Publication, protocol: str) -> tuple[int, Properties]:
    native = publication.native
    if native is None or publication.sender.protocol != protocol or not native.size:
        return 0, NO_PROPERTIES
    meta = native.payload  # a copy out of the frame: taken once
    try:
        return meta[0], decode_properties(meta[1:])
    except MalformedPacket:  # not ours (a plugin publishing as "mqtt"): no properties
        return 0, NO_PROPERTIES


class MQTTProtocol(Protocol):
    name = "mqtt"
    description = "An MQTT 3.1.1 and 5.0 broker over WebSocket, on the topic space every protocol shares."
    help = HELP
    raw_text = False  # MQTT packets only: a line of text would end the connection

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        settings = context.settings
        self._packet_limit = settings.max_message_size
        self._max_queued = settings.mqtt_max_queued
        self._max_inflight = settings.mqtt_max_inflight
        self._max_expiry = settings.mqtt_session_expiry
        self._sessions: dict[str, ClientSession] = {}  # client id -> session state on this node
        self._live: dict[str, Connection] = {}  # client id -> its connection on this node
        self._watched: dict[str, Connection] = {}  # session id -> connection with a deadline
        self._wills: dict[str, asyncio.TimerHandle] = {}  # client id -> a delayed will
        self._sweeper: asyncio.TimerHandle | None = None
        self._standins = itertools.count(1)
        self._turns: dict[tuple[str, str], int] = {}  # shared subscription groups' round robin
        self._kept = 0  # sessions kept here for a client away (a handoff may be asked for)
        self._owning = False  # a claim of shared subscription groups is under way
        self._groups: set[str] = set()  # shared subscription groups with members here, by hub name
        self._handing_off = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._dropped = 0  # queued messages dropped past --mqtt-max-queued, since start
        context.stats.figures.update(self._figures())

    def _figures(self) -> dict[str, Figure]:
        """What ``/metrics`` (``wsplex_mqtt_*``) and ``status`` show of the broker on this node."""
        sessions = self._sessions.values
        return {
            "mqtt_sessions": Figure("MQTT sessions on this node, connected or kept for a client away",
                                    lambda: len(self._sessions)),
            "mqtt_sessions_away": Figure("MQTT sessions kept for a client that is away",
                                         lambda: sum(1 for c in sessions() if c.connection is None)),
            "mqtt_subscriptions": Figure("MQTT subscriptions of this node's sessions",
                                         lambda: sum(len(c.subscriptions) for c in sessions())),
            "mqtt_queued": Figure("QoS 1 and 2 messages queued for MQTT clients (away, or window full)",
                                  lambda: sum(len(c.queue) for c in sessions())),
            "mqtt_inflight": Figure("QoS 1 and 2 messages sent to MQTT clients and not yet acknowledged",
                                    lambda: sum(len(c.inflight) for c in sessions())),
            "mqtt_dropped": Figure("Queued MQTT messages dropped, oldest first, past --mqtt-max-queued",
                                   lambda: self._dropped, counter=True),
            "mqtt_retained": Figure("Retained messages (topics with one, from any protocol); with --redis "
                                    "the cluster's, as of this node's last heartbeat",
                                    self.hub.retained_count),
        }

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._schedule_sweep()

    def shutting_down(self) -> None:
        """5.0 §3.14: DISCONNECT 0x8B (Server shutting down) to every 5.0 client before the
        server closes the connections; sessions are not kept past the process."""
        for conn in list(self._live.values()):
            if conn.level == LEVEL_5 and conn.connected:
                props = Properties({Prop.REASON_STRING: "server shutting down"})
                conn.session.send_bytes(encode_disconnect(Reason.SERVER_SHUTTING_DOWN, props))

    def kicked(self, session: Session, code: int, reason: str) -> None:
        """5.0 §3.14: DISCONNECT before a close the hub was asked for: 0x8E (Session taken
        over) for a takeover from another node (5.0 §3.1.4), 0x98 (Administrative action)
        for an operator's ``kick``."""
        conn = session.state
        if type(conn) is Connection:
            taken_over = reason == TAKEN_OVER
            self._end(conn, Reason.SESSION_TAKEN_OVER if taken_over else Reason.ADMINISTRATIVE_ACTION,
                      "session taken over" if taken_over else reason or "kicked", code)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for timer in self._wills.values():
            timer.cancel()
        self._wills.clear()
        for task in list(self._tasks):
            task.cancel()
        for client in list(self._sessions.values()):
            if client.expiry_timer is not None:
                client.expiry_timer.cancel()
            if client.standin is not None:  # kept sessions end with the process: say so
                await self.hub.delete_value(_KEPT_AT + client.client_id)

    def _schedule_sweep(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        """Close every connection past its deadline: keep-alive, or no CONNECT in time."""
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for session_id, conn in list(self._watched.items()):
            if now > conn.deadline:
                del self._watched[session_id]
                self._end(conn, Reason.KEEP_ALIVE_TIMEOUT, "keep-alive timeout"
                          if conn.client is not None else "no CONNECT in time", CloseCode.POLICY_VIOLATION)
        unowned = self._unowned() if self._groups and not self._owning else None
        if unowned:
            self._owning = True
            self._background(self._own_groups(unowned))
        if self._kept and not self._handing_off:
            self._handing_off = True
            self._background(self._hand_off())
        self._schedule_sweep()

    def _background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- hooks -------------------------------------------------------------------

    def on_connect(self, session: Session) -> HookResult:
        conn = Connection(session, Splitter(self._packet_limit))
        session.state = conn
        loop = asyncio.get_running_loop()
        conn.deadline = loop.time() + self.context.settings.handshake_timeout
        self._watched[session.id] = conn
        self._schedule_sweep()
        return None

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        conn: Connection = session.state
        if type(message) is str:
            session.close(CloseCode.UNSUPPORTED_DATA, "MQTT takes binary messages only")
            return None
        if conn.closing:
            return None
        if conn.keep_alive:
            conn.deadline = asyncio.get_running_loop().time() + conn.keep_alive
        try:
            raw = conn.splitter.feed(message)  # type: ignore[arg-type]
        except MalformedPacket as exc:
            self._fail(conn, exc)
            return None
        return self._run(conn, raw, 0)

    async def on_disconnect(self, session: Session, code: int) -> None:
        conn = session.state
        self._watched.pop(session.id, None)
        if type(conn) is not Connection or conn.client is None:
            return
        conn.closing = True
        client = conn.client
        client_id = client.client_id
        if conn.will is not None and not conn.graceful:
            self._send_will(conn, conn.will, client)
        holder_here = self.hub.holder_here
        owned = [name for name in _group_names(client) if holder_here(SHARE_SCOPE, name) == session.id]
        if owned:
            await self._own_groups(owned, leaving=session)
        if client.connection is conn:
            client.connection = None
            if client.expiry > 0:
                self._park(client)
            elif self._sessions.get(client_id) is client:
                del self._sessions[client_id]
        if self._live.get(client_id) is conn:
            del self._live[client_id]
            await self.hub.release_name(NAME_SCOPE, client_id, session)

    # -- packets -----------------------------------------------------------------

    def _run(self, conn: Connection, raw: Sequence[tuple[int, bytes]], start: int) -> HookResult:
        """Handle packets in order; one that waits (CONNECT, retained messages) holds the rest."""
        for index in range(start, len(raw)):
            if conn.closing:
                return None
            first, body = raw[index]
            try:
                pending = self._dispatch(conn, decode(first, body, conn.level))
            except MalformedPacket as exc:
                self._fail(conn, exc)
                return None
            if pending is not None:
                return self._resume(conn, pending, raw, index + 1)
        return None

    async def _resume(self, conn: Connection, pending: Awaitable[None],
                      raw: Sequence[tuple[int, bytes]], start: int) -> None:
        await pending
        rest = self._run(conn, raw, start)
        if rest is not None:
            await rest

    def _dispatch(self, conn: Connection, packet: object) -> Awaitable[None] | None:
        kind = type(packet)
        if kind is Connect:
            if conn.level:
                raise protocol_error("second CONNECT")  # [MQTT-3.1.0-2]
            assert isinstance(packet, Connect)
            return self._connect(conn, packet)
        if conn.client is None:
            raise protocol_error("the first packet must be CONNECT")  # [MQTT-3.1.0-1]
        if kind is Publish:
            assert isinstance(packet, Publish)
            self._publish(conn, packet)
        elif kind is Ack:
            assert isinstance(packet, Ack)
            self._acknowledged(conn, packet)
        elif kind is Subscribe:
            assert isinstance(packet, Subscribe)
            return self._subscribe(conn, packet)
        elif kind is Unsubscribe:
            assert isinstance(packet, Unsubscribe)
            return self._unsubscribe(conn, packet)
        elif kind is PingReq:
            conn.session.send_bytes(PINGRESP)  # [MQTT-3.12.4-1]
        elif kind is Disconnect:
            assert isinstance(packet, Disconnect)
            self._disconnected(conn, packet)
        elif kind is Auth:
            # 5.0 §4.12: AUTH without an Authentication Method in CONNECT is a protocol error.
            raise protocol_error("enhanced authentication (AUTH) is not supported")
        return None

    # -- errors and ends -----------------------------------------------------------

    def _fail(self, conn: Connection, exc: MalformedPacket) -> None:
        """A malformed packet or a protocol error ends only this connection (3.1.1 §4.8,
        5.0 §4.13: DISCONNECT with the reason code first)."""
        log.debug("mqtt %s: %s", conn.session.id, exc)
        self._end(conn, exc.reason, str(exc), CloseCode.POLICY_VIOLATION)

    def _end(self, conn: Connection, reason: int, text: str, code: int = CloseCode.NORMAL) -> None:
        """Close the connection, with a 5.0 DISCONNECT carrying ``reason`` first when connected."""
        if conn.closing:
            return
        if conn.level == LEVEL_5 and conn.client is not None:
            props = Properties({Prop.REASON_STRING: text[:100]})
            conn.session.send_bytes(encode_disconnect(reason, props))
        conn.closing = True
        conn.session.close(code, text[:100])

    # -- CONNECT (3.1.1 §3.1, 5.0 §3.1) ----------------------------------------------

    def _connect(self, conn: Connection, packet: Connect) -> Awaitable[None] | None:
        level = packet.level
        if level not in (LEVEL_311, LEVEL_5):
            # 3.1.1 [MQTT-3.1.2-2]: return code 0x01; 5.0 §3.1.2.2: 0x84. Then close.
            if level > LEVEL_5:
                self._refuse(conn, LEVEL_5, Reason.UNSUPPORTED_PROTOCOL_VERSION, "unsupported protocol level")
            else:
                self._refuse(conn, LEVEL_311, RC311_BAD_VERSION, "unsupported protocol level")
            return None
        conn.level = level
        v5 = level == LEVEL_5
        if packet.properties.get(Prop.AUTH_METHOD) is not None:
            self._refuse(conn, level, Reason.BAD_AUTHENTICATION_METHOD, "AUTH is not supported")
            return None
        will = packet.will
        if will is not None and (topic_error(will.topic) is not None or is_server_topic(will.topic)):
            if not v5:
                raise MalformedPacket("invalid will topic")  # [MQTT-3.1.3-11]: close
            self._refuse(conn, level, Reason.TOPIC_NAME_INVALID, "invalid will topic")
            return None
        client_id, assigned = packet.client_id, False
        if not client_id:
            if not v5 and not packet.clean:
                self._refuse(conn, level, RC311_IDENTIFIER_REJECTED, "empty client id needs a clean session")
                return None
            client_id, assigned = f"wsplex-{conn.session.id}", True
        return self._accept(conn, packet, client_id, assigned)

    def _refuse(self, conn: Connection, level: int, code: int, text: str) -> None:
        """CONNACK with a failure, then close (3.1.1 [MQTT-3.2.2-5], 5.0 [MQTT-3.2.2-7])."""
        conn.session.send_bytes(encode_connack(level, False, code))
        conn.closing = True
        conn.session.close(CloseCode.POLICY_VIOLATION, text)

    async def _accept(self, conn: Connection, packet: Connect, client_id: str, assigned: bool) -> None:
        session = conn.session
        if not await self._authenticated(packet):
            if not session.closed:
                code = Reason.BAD_USERNAME_OR_PASSWORD if conn.level == LEVEL_5 else RC311_BAD_CREDENTIALS
                self._refuse(conn, conn.level, code, "bad user name or password")
            return
        if not await self._take_client_id(conn, client_id):
            if not session.closed:
                code = Reason.SERVER_UNAVAILABLE if conn.level == LEVEL_5 else RC311_SERVER_UNAVAILABLE
                self._refuse(conn, conn.level, code, "client id still held elsewhere")
            return
        if session.closed:
            return
        pending_will = self._wills.pop(client_id, None)
        if pending_will is not None:
            pending_will.cancel()  # 5.0 §3.1.3.2.2: back before the Will Delay ran out
        v5 = conn.level == LEVEL_5
        expiry = self._expiry(packet)
        existing = self._sessions.get(client_id)
        if existing is None and not packet.clean:
            existing = await self._fetch(client_id)
            if session.closed:
                return
        present = existing is not None and not packet.clean and existing.expiry > 0
        if existing is not None and not present:
            self._discard(existing)
            existing = None
        client = existing if existing is not None else ClientSession(client_id, self._max_queued)
        client.expiry = expiry
        self._sessions[client_id] = client
        self._live[client_id] = conn
        conn.client = client
        client.connection = conn
        conn.sender = Sender(self.name, client_id)
        conn.will = packet.will
        session.name = client_id
        self.hub.touch(session)
        self._keep_alive(conn, packet.keep_alive)
        props = packet.properties
        conn.window = min(props.integer(Prop.RECEIVE_MAXIMUM, 65_535), self._max_inflight)
        conn.max_packet = props.integer(Prop.MAXIMUM_PACKET_SIZE, 0)
        session.send_bytes(encode_connack(conn.level, present, 0, self._connack_properties(
            client_id if assigned else None, expiry, packet) if v5 else NO_PROPERTIES))
        if present:
            self._resume_session(conn, client)

    async def _authenticated(self, packet: Connect) -> bool:
        """SPEC §11, §15: with ``--users`` the user name and password must match a user
        (3.1.1 §3.1.3.4-5, 5.0 §3.1.3.5-6); without it they are accepted and ignored."""
        users = self.context.users
        if not users.enabled:
            return True
        if packet.username is None or packet.password is None:
            return False
        try:
            password = packet.password.decode()
        except UnicodeDecodeError:
            return False
        return await asyncio.to_thread(users.check, packet.username, password)  # scrypt: off the loop

    def _expiry(self, packet: Connect) -> float:
        """Seconds the session outlives the connection (5.0 §3.1.2.11.2; 3.1.1: Clean
        Session 0 keeps it), at most ``--mqtt-session-expiry``."""
        if packet.level == LEVEL_5:
            wanted = packet.properties.integer(Prop.SESSION_EXPIRY, 0)
        else:
            wanted = 0 if packet.clean else NEVER
        return float(min(wanted, self._max_expiry))

    def _connack_properties(self, assigned: str | None, expiry: float, packet: Connect) -> Properties:
        """What the server supports (5.0 §3.2.2.3): said in CONNACK so the client holds to it."""
        values: dict[Prop, int | str | bytes] = {
            Prop.RECEIVE_MAXIMUM: RECEIVE_MAXIMUM,
            Prop.MAXIMUM_PACKET_SIZE: self._packet_limit,
            Prop.TOPIC_ALIAS_MAXIMUM: TOPIC_ALIAS_MAXIMUM,
        }
        if assigned is not None:
            values[Prop.ASSIGNED_CLIENT_ID] = assigned
        if packet.properties.integer(Prop.SESSION_EXPIRY, 0) != int(expiry):
            values[Prop.SESSION_EXPIRY] = int(expiry)  # [MQTT-3.2.2-?]: the server's own choice
        return Properties(values)

    def _keep_alive(self, conn: Connection, seconds: int) -> None:
        """3.1.1 §3.1.2.10: 1.5 times the Keep Alive; 0 turns the mechanism off."""
        conn.keep_alive = seconds * KEEP_ALIVE_GRACE
        if seconds:
            conn.deadline = asyncio.get_running_loop().time() + conn.keep_alive
            self._watched[conn.session.id] = conn
        else:
            self._watched.pop(conn.session.id, None)

    async def _take_client_id(self, conn: Connection, client_id: str) -> bool:
        """Claim the client id; a holder is closed and the claim repeated (session takeover,
        3.1.1 [MQTT-3.1.4-2], 5.0 §3.1.4 with DISCONNECT 0x8E)."""
        session, hub = conn.session, self.hub
        deadline = time.monotonic() + TAKEOVER_WAIT
        while not session.closed:
            if await hub.claim_name(NAME_SCOPE, client_id, session):
                return True
            old = self._live.get(client_id)
            if old is not None and old.session is not session:
                del self._live[client_id]
                self._end(old, Reason.SESSION_TAKEN_OVER, "session taken over")
                await hub.release_name(NAME_SCOPE, client_id, old.session)
                continue
            holder = await hub.lookup_name(NAME_SCOPE, client_id)
            if holder is not None and holder != session.id:
                await hub.close_session(holder, CloseCode.NORMAL, TAKEN_OVER)
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(_TAKEOVER_POLL)  # the holder's node lets go when it has closed
        return False

    # -- persistent sessions (§4.1) -----------------------------------------------------

    def _park(self, client: ClientSession) -> None:
        """The client left and its session lives on: a stand-in holds its subscriptions
        (publications keep arriving, QoS 1 and 2 ones are queued) until it expires."""
        standin = Session(f"mqtt-session-{next(self._standins)}", self.name, "offline", _OFFLINE)
        standin.name = client.client_id
        standin.state = client
        client.standin = standin
        for topic_filter in client.hub_filters():
            self.hub.subscribe(topic_filter, standin)
        if client.expiry < NEVER:
            loop = asyncio.get_running_loop()
            client.expiry_timer = loop.call_later(client.expiry, self._expire, client)
        self._kept += 1
        self._background(self.hub.set_value(_KEPT_AT + client.client_id, self.hub.node_id))

    def _expire(self, client: ClientSession) -> None:
        client.expiry_timer = None
        if client.connection is None and self._sessions.get(client.client_id) is client:
            self._discard(client)

    def _discard(self, client: ClientSession) -> None:
        """The session ends (Clean Session/Clean Start, or expiry): forget everything."""
        if client.expiry_timer is not None:
            client.expiry_timer.cancel()
            client.expiry_timer = None
        self._unpark(client)
        if self._sessions.get(client.client_id) is client:
            del self._sessions[client.client_id]

    def _unpark(self, client: ClientSession) -> None:
        standin = client.standin
        if standin is None:
            return
        client.standin = None
        for topic_filter in client.hub_filters():
            self.hub.unsubscribe(topic_filter, standin)
        self._kept -= 1
        self._background(self.hub.delete_value(_KEPT_AT + client.client_id))

    async def _fetch(self, client_id: str) -> ClientSession | None:
        """The client's session, if another node keeps it: asked for, and waited for
        (SPEC §9; the other node answers at its next sweep)."""
        hub = self.hub
        owner = await hub.get_value(_KEPT_AT + client_id)
        if owner is None or owner == hub.node_id:
            return None
        wanted = f"{_WANTED}{owner}:{client_id}"
        await hub.set_value(wanted, hub.node_id)
        await hub.set_value(_WANTED + owner, "1")  # after the request: see _hand_off
        deadline = time.monotonic() + HANDOFF_WAIT
        while time.monotonic() < deadline:
            text = await hub.get_value(_HANDOFF + client_id)
            if text is not None:
                await hub.delete_value(_HANDOFF + client_id)
                return load_session(text, client_id, self._max_queued)
            await asyncio.sleep(_HANDOFF_POLL)  # a round trip to the other node, by Redis
        # The keeper is gone (a node that died keeps its values): start afresh, and forget it.
        await hub.delete_value(wanted)
        if await hub.get_value(_KEPT_AT + client_id) == owner:
            await hub.delete_value(_KEPT_AT + client_id)
        return None

    async def _hand_off(self) -> None:
        """Give the sessions other nodes asked for, and forget them here.

        A sweep reads one flag (``mqtt.wanted:NODE``); only when it is up are the
        requests listed. The flag is dropped before the listing and raised after
        each request, so a request is seen at this sweep or the next."""
        hub = self.hub
        prefix = f"{_WANTED}{hub.node_id}:"
        try:
            if await hub.get_value(_WANTED + hub.node_id) is None:
                return
            await hub.delete_value(_WANTED + hub.node_id)
            for key in await hub.values(prefix):
                await hub.delete_value(key)
                client = self._sessions.get(key[len(prefix):])
                if client is None or client.connection is not None:
                    continue
                await hub.set_value(_HANDOFF + client.client_id, dump_session(client))
                self._discard(client)
        finally:
            self._handing_off = False

    def _resume_session(self, conn: Connection, client: ClientSession) -> None:
        """The client is back: its subscriptions move to the connection, and what was in
        flight is sent again, PUBLISH with DUP or PUBREL ([MQTT-4.4.0-1]), then the queue."""
        if client.expiry_timer is not None:
            client.expiry_timer.cancel()
            client.expiry_timer = None
        for topic_filter in client.hub_filters():
            self.hub.subscribe(topic_filter, conn.session)
        self._groups.update(_group_names(client))  # owned again from the next sweep if nobody does
        self._unpark(client)
        for message in list(client.inflight.values()):
            if message.released:
                conn.session.send_bytes(encode_ack(conn.level, Type.PUBREL, message.packet_id))
            else:
                self._write(conn, message, dup=True)
        self._pump(conn, client)

    # -- inbound PUBLISH (§3.3, §4.3) -----------------------------------------------------

    def _publish(self, conn: Connection, packet: Publish) -> None:
        client = conn.client
        assert client is not None and conn.sender is not None
        topic = self._topic_of(conn, packet)
        if packet.qos == 2 and packet.packet_id in client.awaiting_release:
            self._ack(conn, Type.PUBREC, packet.packet_id)  # §4.3.3: not published twice
            return
        reason = 0
        props = packet.properties
        v5 = conn.level == LEVEL_5
        if is_server_topic(topic):
            reason = Reason.TOPIC_NAME_INVALID  # SPEC §10: $SYS/ is the server's; dropped
        elif props.get(Prop.PAYLOAD_FORMAT) == 1 and not _is_utf8(packet.payload):
            reason = Reason.PAYLOAD_FORMAT_INVALID  # 5.0 §3.3.2.3.2
        elif not self.hub.publish(Publication(topic, packet.payload, conn.sender, retain=packet.retain,
                                              native=_meta(packet.qos, props))) and v5:
            reason = Reason.QUOTA_EXCEEDED  # delivered, but a --retained-* bound did not keep it
        if packet.qos == 1:
            self._ack(conn, Type.PUBACK, packet.packet_id, reason)
        elif packet.qos == 2:
            if reason < 0x80:
                if len(client.awaiting_release) >= RECEIVE_MAXIMUM:
                    raise MalformedPacket("too many QoS 2 messages unreleased",
                                          Reason.RECEIVE_MAXIMUM_EXCEEDED)  # [MQTT-3.3.4-9]
                client.awaiting_release.add(packet.packet_id)
            self._ack(conn, Type.PUBREC, packet.packet_id, reason)

    @staticmethod
    def _topic_of(conn: Connection, packet: Publish) -> str:
        """The topic name, through 5.0 topic aliases (§3.3.2.3.4), checked as a name."""
        topic = packet.topic
        alias = packet.properties.get(Prop.TOPIC_ALIAS)
        if isinstance(alias, int):
            if alias > TOPIC_ALIAS_MAXIMUM:
                raise MalformedPacket(f"topic alias {alias}", Reason.TOPIC_ALIAS_INVALID)  # [MQTT-3.3.2-10]
            if topic:
                conn.aliases[alias] = topic
            else:
                known = conn.aliases.get(alias)
                if known is None:
                    raise protocol_error(f"topic alias {alias} was never set")
                topic = known
        problem = topic_error(topic)
        if problem is not None:
            # 3.1.1 [MQTT-3.3.2-2] (a wildcard), 5.0 §3.3.2.1: DISCONNECT 0x90.
            raise MalformedPacket(problem, Reason.TOPIC_NAME_INVALID)
        return topic

    def _ack(self, conn: Connection, kind: Type, packet_id: int, reason: int = 0) -> None:
        conn.session.send_bytes(encode_ack(conn.level, kind, packet_id, reason))

    def _acknowledged(self, conn: Connection, packet: Ack) -> None:
        """PUBACK, PUBREC, PUBREL, PUBCOMP from the client (§4.3.2, §4.3.3)."""
        client = conn.client
        assert client is not None
        kind, packet_id = packet.type, packet.packet_id
        v5 = conn.level == LEVEL_5
        if kind is Type.PUBREL:
            found = packet_id in client.awaiting_release
            client.awaiting_release.discard(packet_id)
            self._ack(conn, Type.PUBCOMP, packet_id, 0 if found or not v5 else Reason.PACKET_ID_NOT_FOUND)
            return
        message = client.inflight.get(packet_id)
        if kind is Type.PUBREC:
            if message is None or message.qos != 2:
                self._ack(conn, Type.PUBREL, packet_id, Reason.PACKET_ID_NOT_FOUND if v5 else 0)
                return
            if v5 and packet.reason >= 0x80:  # 5.0 §4.3.3: a failed PUBREC ends the exchange
                del client.inflight[packet_id]
                self._pump(conn, client)
                return
            message.released = True
            self._ack(conn, Type.PUBREL, packet_id)
            return
        done = message is not None and (message.qos == 1 if kind is Type.PUBACK else message.released)
        if done:
            del client.inflight[packet_id]
            self._pump(conn, client)

    # -- SUBSCRIBE and UNSUBSCRIBE (§3.8, §3.10) -----------------------------------------------

    def _subscribe(self, conn: Connection, packet: Subscribe) -> Awaitable[None] | None:
        client = conn.client
        assert client is not None
        v5 = conn.level == LEVEL_5
        identifier = packet.properties.subscription_ids[0] if packet.properties.subscription_ids else None
        reasons: list[int] = []
        retained: list[str] = []
        groups: list[str] = []
        for request in packet.requests:
            written = request.topic_filter
            shared = parse_shared(written)
            group, topic_filter = shared if shared is not None else (None, written)
            if filter_error(topic_filter) is not None:  # an empty group name too, [MQTT-4.8.2-1]
                reasons.append(Reason.TOPIC_FILTER_INVALID if v5 else RC311_SUBACK_FAILURE)
                continue
            if group is not None and request.no_local:
                raise protocol_error("No Local on a shared subscription")  # [MQTT-3.8.3-4]
            existed = written in client.subscriptions
            client.subscriptions[written] = Subscription(
                topic_filter, request.qos, request.no_local, request.retain_as_published,
                request.retain_handling, identifier, group)  # [MQTT-3.8.4-3]: a repeat replaces it
            if not self.hub.subscribe(topic_filter, conn.session):
                del client.subscriptions[written]  # past --max-subscriptions (a new filter, so new)
                reasons.append(Reason.QUOTA_EXCEEDED if v5 else RC311_SUBACK_FAILURE)
                continue
            reasons.append(request.qos)  # every QoS is supported: granted as asked
            if group is not None:
                groups.append(_share_name(group, topic_filter))
                self._groups.add(groups[-1])
            if group is None and (request.retain_handling == 0
                                  or (request.retain_handling == 1 and not existed)):
                retained.append(written)  # none for a shared subscription (5.0 §4.8.2)
        suback = encode_suback(conn.level, packet.packet_id, reasons)
        unowned = [name for name in groups if self.hub.holder_here(SHARE_SCOPE, name) is None]
        if unowned:
            return self._subscribed(conn, unowned, suback, retained)
        conn.session.send_bytes(suback)
        return self._send_retained(conn, retained) if retained else None

    async def _subscribed(self, conn: Connection, groups: list[str], suback: bytes,
                          retained: list[str]) -> None:
        """A new group member: the group has an owner before the SUBACK says it is subscribed."""
        await self._own_groups(groups)
        conn.session.send_bytes(suback)
        if retained:
            await self._send_retained(conn, retained)

    async def _send_retained(self, conn: Connection, filters: list[str]) -> None:
        """Retained messages matching a new subscription, with RETAIN set (3.1.1 [MQTT-3.3.1-6],
        5.0 [MQTT-3.3.1-9]), after the SUBACK."""
        for topic_filter in filters:
            found = await self.hub.retained(topic_filter)
            client = conn.client
            subscription = client.subscriptions.get(topic_filter) if client is not None else None
            if not conn.connected or client is None or subscription is None:
                return
            for publication in found:
                qos, props = _read_meta(publication, self.name)
                expires = _expires(publication, props)
                if expires is not None and expires <= time.time():
                    continue
                ids = (subscription.identifier,) if subscription.identifier else ()
                message = Message(publication.topic, publication.data, min(qos, subscription.qos), True,
                                  self._properties_for(publication, props, ids), expires)
                self._offer(conn, client, message)

    def _unsubscribe(self, conn: Connection, packet: Unsubscribe) -> Awaitable[None] | None:
        client = conn.client
        assert client is not None
        reasons: list[int] = []
        owned: list[str] = []
        for written in packet.filters:
            subscription = client.subscriptions.pop(written, None)
            if subscription is not None:
                if subscription.topic_filter not in client.hub_filters():
                    self.hub.unsubscribe(subscription.topic_filter, conn.session)
                if subscription.group is not None:
                    name = _share_name(subscription.group, subscription.topic_filter)
                    if self.hub.holder_here(SHARE_SCOPE, name) == conn.session.id:
                        owned.append(name)
                reasons.append(Reason.SUCCESS)
            else:
                reasons.append(Reason.NO_SUBSCRIPTION_EXISTED)
        unsuback = encode_unsuback(conn.level, packet.packet_id, reasons)
        if owned:
            return self._unsubscribed(conn, owned, unsuback)
        conn.session.send_bytes(unsuback)
        return None

    async def _unsubscribed(self, conn: Connection, owned: list[str], unsuback: bytes) -> None:
        """The owner left a group: another member here takes it before the UNSUBACK."""
        await self._own_groups(owned, leaving=conn.session)
        conn.session.send_bytes(unsuback)

    # -- shared subscriptions across nodes (5.0 §4.8.2) --------------------------------------

    async def _own_groups(self, names: Sequence[str], leaving: Session | None = None) -> None:
        """Give each group a live member of this node as its owner (hub name ``GROUP/FILTER``
        in :data:`SHARE_SCOPE`) unless a session anywhere holds it; ``leaving`` lets go first.

        One owner per group in the cluster, so one node delivers each publication to the
        group. A claim that another node holds is refused, and repeated at each sweep
        while this node has members and no owner: the owner's node may go away."""
        hub = self.hub
        try:
            for name in names:
                if leaving is not None:
                    await hub.release_name(SHARE_SCOPE, name, leaving)
                if hub.holder_here(SHARE_SCOPE, name) is not None:
                    continue
                member = self._member_here(name, leaving)
                if member is not None:
                    await hub.claim_name(SHARE_SCOPE, name, member)
        finally:
            if leaving is None:
                self._owning = False

    def _member_here(self, name: str, leaving: Session | None) -> Session | None:
        for conn in self._live.values():
            client = conn.client
            if conn.connected and conn.session is not leaving and name in _group_names(client):
                return conn.session
        return None

    def _unowned(self) -> list[str]:
        """Groups with a live member on this node and no owner here (another node's, or none).
        Connections are looked at only when some group of ``_groups`` has no owner here."""
        holder_here = self.hub.holder_here
        if all(holder_here(SHARE_SCOPE, name) is not None for name in self._groups):
            return []
        self._groups = {name for conn in self._live.values() if conn.connected
                        for name in _group_names(conn.client)}
        return sorted(name for name in self._groups if holder_here(SHARE_SCOPE, name) is None)

    # -- DISCONNECT and wills -------------------------------------------------------------

    def _disconnected(self, conn: Connection, packet: Disconnect) -> None:
        """The client leaves (§3.14): no will unless 5.0 reason 0x04; 5.0 may change the expiry."""
        client = conn.client
        assert client is not None
        expiry = packet.properties.get(Prop.SESSION_EXPIRY)
        if isinstance(expiry, int):
            if client.expiry == 0 and expiry:
                raise protocol_error("session expiry set at DISCONNECT after 0 at CONNECT")  # [MQTT-3.14.2-2]
            client.expiry = float(min(expiry, self._max_expiry))
        conn.graceful = packet.reason != Reason.DISCONNECT_WITH_WILL
        conn.closing = True
        conn.session.close(CloseCode.NORMAL, "")

    def _send_will(self, conn: Connection, will: Will, client: ClientSession) -> None:
        """Publish the will now, or after its delay (5.0 §3.1.3.2.2: the earlier of the delay
        and the end of the session)."""
        assert conn.sender is not None
        delay = min(will.properties.integer(Prop.WILL_DELAY, 0), client.expiry)
        publication = Publication(will.topic, will.payload, conn.sender, retain=will.retain,
                                  native=_meta(will.qos, will.properties))
        if delay <= 0:
            self.hub.publish(publication)
            return
        client_id = client.client_id
        back = self._live.get(client_id)
        if back is not None and back is not conn:
            return  # taken over by the client itself: it is back before the delay began
        loop = asyncio.get_running_loop()
        old = self._wills.pop(client_id, None)
        if old is not None:
            old.cancel()
        self._wills[client_id] = loop.call_later(delay, self._delayed_will, client_id, publication)

    def _delayed_will(self, client_id: str, publication: Publication) -> None:
        self._wills.pop(client_id, None)
        self.hub.publish(publication)

    # -- outbound: the topic space to MQTT clients ---------------------------------------------

    def deliver(
        self, publication: Publication, sessions: Mapping[str, Session], exclude: str | None
    ) -> None:
        """Each receiver gets its own QoS, packet id and subscription identifiers; the QoS 0
        PUBLISH that most receivers share is built once per protocol level. A shared
        subscription's group (5.0 §4.8.2) gets each publication once: the node of its
        owner (:meth:`_own_groups`) delivers, its members there taking turns. A node whose
        members of the group are all away queues for them all the same: without a live
        member anywhere the group has no owner (and on another node, a copy too many)."""
        qos, props = _read_meta(publication, self.name)
        expires = _expires(publication, props)
        if expires is not None and expires <= time.time():
            return  # 5.0 §3.3.2.3.3: expired, not delivered
        fanout = _Fanout(self, publication, qos, props, expires)
        sender = publication.sender
        own = sender.name if sender.protocol == self.name else None
        groups: dict[tuple[str, str], list[tuple[ClientSession, Subscription]]] = {}
        for session in list(sessions.values()):
            if session.id == exclude:
                continue
            client = _client_of(session)
            if client is None:
                continue
            best, rap = -1, False
            ids: list[int] = []
            for subscription in client.matching(publication.topic):
                group = subscription.group
                if group is not None:
                    groups.setdefault((group, subscription.topic_filter), []).append((client, subscription))
                    continue
                if subscription.no_local and own == client.client_id:
                    continue  # 5.0 [MQTT-3.8.3-3]
                best = max(best, subscription.qos)
                rap = rap or subscription.retain_as_published
                if subscription.identifier:
                    ids.append(subscription.identifier)
            if best >= 0:
                # 3.1.1 [MQTT-3.3.1-9], 5.0 §3.8.3.1: RETAIN kept only with Retain As Published.
                fanout.send(client, min(qos, best), publication.retain and rap, tuple(ids))
        for key, members in groups.items():
            if (self.hub.holder_here(SHARE_SCOPE, _share_name(*key)) is None
                    and any(client.connection is not None for client, _ in members)):
                continue  # live members here, the owner elsewhere: the owner's node delivers
            client, subscription = self._turn(key, members)
            fanout.send(client, min(qos, subscription.qos),
                        publication.retain and subscription.retain_as_published,
                        (subscription.identifier,) if subscription.identifier else ())

    def _turn(self, key: tuple[str, str],
              members: list[tuple[ClientSession, Subscription]]) -> tuple[ClientSession, Subscription]:
        """The member of a shared subscription whose turn it is, a connected one if any."""
        live = [member for member in members if member[0].connection is not None] or members
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        return live[turn % len(live)]

    def _properties_for(self, publication: Publication, props: Properties,
                        ids: tuple[int, ...]) -> Properties:
        """What a 5.0 receiver is sent: the publisher's properties, ``from`` (SPEC §10) and
        the matching Subscription Identifiers (5.0 §3.3.4)."""
        sender = (FROM, publication.sender.seen_by(self.name))
        return Properties(props.values, (sender, *props.user), ids)

    def _offer(self, conn: Connection, client: ClientSession, message: Message) -> None:
        if message.qos and (len(client.inflight) >= conn.window or client.queue):
            self._enqueue(client, message)  # 5.0 §4.9: the window is full (or others wait first)
            return
        self._send(conn, client, message)

    def _send(self, conn: Connection, client: ClientSession, message: Message) -> None:
        if message.qos:
            message.packet_id = client.next_packet_id()
            client.inflight[message.packet_id] = message
        self._write(conn, message)

    def _enqueue(self, client: ClientSession, message: Message) -> None:
        if client.enqueue(message):
            self._dropped += 1

    def _pump(self, conn: Connection, client: ClientSession) -> None:
        """Move queued messages into the in-flight window as it frees up."""
        queue = client.queue
        while queue and len(client.inflight) < conn.window and conn.connected:
            message = queue.popleft()
            if message.expires is not None and message.expires <= time.time():
                continue
            self._send(conn, client, message)

    def _write(self, conn: Connection, message: Message, *, dup: bool = False) -> None:
        props = _with_expiry(message.properties, message.expires) if conn.level == LEVEL_5 else NO_PROPERTIES
        data = encode_publish(conn.level, Publish(message.topic, message.payload, message.qos,
                                                  message.retain, dup, message.packet_id, props))
        if conn.max_packet and len(data) > conn.max_packet:
            # 5.0 [MQTT-3.1.2-25]: discarded, as if it had been sent and acknowledged.
            if conn.client is not None:
                conn.client.inflight.pop(message.packet_id, None)
            return
        conn.session.send_bytes(data)


def _share_name(group: str, topic_filter: str) -> str:
    """The hub name of a shared subscription group: ``GROUP/FILTER`` (a group has no ``/``)."""
    return f"{group}/{topic_filter}"


def _group_names(client: ClientSession | None) -> list[str]:
    """The shared subscription groups ``client`` is a member of, by hub name."""
    if client is None:
        return []
    subscriptions = client.subscriptions.values()
    return [_share_name(s.group, s.topic_filter) for s in subscriptions if s.group is not None]


def _client_of(session: Session) -> ClientSession | None:
    """The MQTT session a hub subscriber stands for: a live connection's, or an away
    client's (its stand-in); None for a connection that is not (or no longer) connected."""
    state = session.state
    if type(state) is Connection:
        return state.client if state.connected else None
    return state if type(state) is ClientSession else None


class _Fanout:
    """One publication on its way to this node's MQTT receivers (``deliver``)."""

    __slots__ = ("_common", "_shared", "broker", "expires", "props", "publication", "qos")

    def __init__(self, broker: MQTTProtocol, publication: Publication, qos: int, props: Properties,
                 expires: float | None) -> None:
        self.broker = broker
        self.publication = publication
        self.qos = qos
        self.props = props
        self.expires = expires
        self._shared: dict[int, Outgoing] = {}  # the plain QoS 0 PUBLISH, by protocol level
        self._common: Properties | None = None

    def send(self, client: ClientSession, qos: int, retain: bool, ids: tuple[int, ...]) -> None:
        conn = client.connection
        publication = self.publication
        if qos == 0:
            if conn is None:
                return  # QoS 0 is not queued for a client that is away
            if not ids and not retain:
                self._send_plain(conn)
                return
        message = Message(publication.topic, publication.data, qos, retain,
                          self.broker._properties_for(publication, self.props, ids), self.expires)
        if conn is None:
            self.broker._enqueue(client, message)
        else:
            self.broker._offer(conn, client, message)

    def _send_plain(self, conn: Connection) -> None:
        outgoing = self._shared.get(conn.level)
        if outgoing is None:
            if self._common is None:
                self._common = self.broker._properties_for(self.publication, self.props, ())
            publication = self.publication
            packet = Publish(publication.topic, publication.data,
                             properties=_with_expiry(self._common, self.expires))
            outgoing = self._shared[conn.level] = Outgoing.binary(encode_publish(conn.level, packet))
        if not conn.max_packet or outgoing.size <= conn.max_packet:
            conn.session.send(outgoing)


def _expires(publication: Publication, props: Properties) -> float | None:
    interval = props.get(Prop.MESSAGE_EXPIRY)
    return publication.time + interval if isinstance(interval, int) else None


def _with_expiry(props: Properties, expires: float | None) -> Properties:
    """The Message Expiry Interval a receiver is sent: what is left of it (5.0 [MQTT-3.3.2-6])."""
    if expires is None:
        return props
    values = dict(props.values)
    values[Prop.MESSAGE_EXPIRY] = max(0, int(expires - time.time() + 0.999))
    return Properties(values, props.user, props.subscription_ids)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
