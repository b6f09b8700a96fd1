"""The WAMP router: sessions in realms, a broker and a dealer per realm (SPEC §13).

References are to the WAMP specification (wamp-proto.org): the Basic Profile
(§"Session Lifecycle", §"Publish and Subscribe", §"Remote Procedure Calls")
and the Advanced Profile features WELCOME announces (:data:`ROLES`).

One router per hub, shared by ``wamp.2.json`` and ``wamp.2.msgpack``: a JSON
caller reaches a MessagePack callee, each peer gets messages in its own
serialisation. Realms are created by the first session that joins them and
dropped with the last one.

Pub/sub in realm ``realm1`` is the topic space (SPEC §10): topic URI ``a.b.c``
is topic ``a/b/c``; a subscription subscribes its session to the hub filter that
covers it (``a/b/c``, ``a/+/c`` for the wildcard ``a..c``, ``a/#`` for the
prefix ``a.b``) and the broker matches each publication exactly; a PUBLISH is
a hub publication whose payload is what other protocols see
(:func:`payload_of`) and whose ``native`` form carries the WAMP arguments and
options, so a WAMP subscriber on any node gets the event exactly as published.
Other realms are WAMP-only: on one node they stay in this router; on a cluster
their events travel on the server's topic of the realm (:data:`REALM_TOPIC`),
which each of their sessions subscribes to, and each router matches its own
subscriptions.

RPC in realm1, and in every realm on a cluster, spans the nodes: an exact,
single registration's procedure is a hub name (:func:`registration_scope`), so
it is unique across nodes and a caller's router finds the callee's session
wherever it is; every callee of a pattern or shared registration holds a name of
its own (:func:`callee_scope`), which a caller's router lists when its node has
no match or only a pattern, to rank and pick as a dealer does. The two routers talk with
publications on ``$SYS/wamp/peer/<session id>`` (:data:`PEER_TOPIC`), which
every session of such a realm subscribes to. The callee's router keeps the call
as it keeps a local one, with a :class:`RemoteCaller` whose answers travel
back; the caller's router keeps a :class:`RemoteCall` for timeouts, canceling
and its caller leaving. A node that holds the registration that ranks highest
serves its callers with its own callees.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import orjson

from wsplex.app import (
    CloseCode,
    HookResult,
    Hub,
    Outgoing,
    Publication,
    Sender,
    Session,
    is_server_topic,
    topic_error,
)
from wsplex.protocols.wamp import wire
from wsplex.protocols.wamp.wire import MAX_ID, Message, ProtocolViolation, Serializer, is_id, is_valid_uri

#: The realm bridged to the topic space (SPEC §10, §13).
BRIDGED_REALM: Final = "realm1"
#: The protocol name of WAMP senders on the topic space: others see ``wamp:SESSION``.
SENDER_PROTOCOL: Final = "wamp"
#: Routers of several nodes talk through the topic space: what a router has to say to
#: the router of a session (a call for its callee, the answer for its caller)
#: is a publication on ``$SYS/wamp/peer/<session id>`` (the server's topics, SPEC §10)
#: with an empty payload and the message in ``native``.
PEER_TOPIC: Final = "$SYS/wamp/peer/"
#: Pub/sub of a realm other than realm1 across nodes: its publications are on the server's
#: topic ``$SYS/wamp/realm/<hex of the realm's name>``, which its sessions subscribe to,
#: with an empty payload and the event in ``native``; each router matches its own subscriptions.
REALM_TOPIC: Final = "$SYS/wamp/realm/"


def registration_scope(realm: str) -> str:
    """Hub names of a realm's single registrations: unique across the cluster. An exact
    one's name is its procedure (``com.example.add``), a pattern's is ``MATCH URI``
    (``prefix com.example.``)."""
    return f"wamp.registration:{realm}"


def callee_scope(realm: str) -> str:
    """Hub names of the callees of a realm's other registrations (patterns and shared ones),
    one per callee: ``MATCH INVOKE STAMP URI`` (URIs hold no space), ``STAMP`` the time of
    registering in nanoseconds, the order ``first`` and ``last`` go by across nodes."""
    return f"wamp.callee:{realm}"


def realm_topic(realm: str) -> str:
    return REALM_TOPIC + realm.encode().hex()

EXACT, PREFIX, WILDCARD = "exact", "prefix", "wildcard"
MATCHES: Final = (EXACT, PREFIX, WILDCARD)
INVOKE_POLICIES: Final = ("single", "roundrobin", "random", "first", "last")
CANCEL_MODES: Final = ("skip", "kill", "killnowait")

#: What WELCOME announces (§"WELCOME", Advanced Profile feature announcement):
#: exactly what this router implements.
ROLES: Final = {
    "broker": {"features": {
        "publisher_identification": True,
        "publisher_exclusion": True,
        "subscriber_blackwhite_listing": True,
        "pattern_based_subscription": True,
    }},
    "dealer": {"features": {
        "caller_identification": True,
        "pattern_based_registration": True,
        "shared_registration": True,
        "progressive_call_results": True,
        "call_timeout": True,
        "call_canceling": True,
    }},
}
#: Advanced Profile, "Session Meta API": announced (and served) in a realm whose
#: sessions are all on this node: any realm on one node, none on a cluster.
META_ROLES: Final = {
    role: {"features": {**details["features"], "session_meta_api": True}} for role, details in ROLES.items()
}
ON_JOIN: Final = "wamp.session.on_join"
ON_LEAVE: Final = "wamp.session.on_leave"
CLIENT_ROLES: Final = ("publisher", "subscriber", "caller", "callee")

# Error URIs (§"Predefined URIs").
PROTOCOL_VIOLATION: Final = "wamp.error.protocol_violation"
INVALID_URI: Final = "wamp.error.invalid_uri"
INVALID_ARGUMENT: Final = "wamp.error.invalid_argument"
NOT_AUTHORIZED: Final = "wamp.error.not_authorized"
NO_SUCH_SUBSCRIPTION: Final = "wamp.error.no_such_subscription"
NO_SUCH_REGISTRATION: Final = "wamp.error.no_such_registration"
NO_SUCH_PROCEDURE: Final = "wamp.error.no_such_procedure"
PROCEDURE_ALREADY_EXISTS: Final = "wamp.error.procedure_already_exists"
CANCELED: Final = "wamp.error.canceled"
TIMEOUT: Final = "wamp.error.timeout"
NO_AUTH_METHOD: Final = "wamp.error.no_auth_method"
NO_SUCH_SESSION: Final = "wamp.error.no_such_session"
AUTHENTICATION_FAILED: Final = "wamp.error.authentication_failed"
GOODBYE_AND_OUT: Final = "wamp.close.goodbye_and_out"
SYSTEM_SHUTDOWN: Final = "wamp.close.system_shutdown"



def global_id() -> int:
    """§"IDs": global scope IDs are drawn at random from [1, 2^53]."""
    return random.randint(1, MAX_ID)


class RequestFailed(Exception):
    """A request the router refuses with ERROR ``uri`` (the session goes on)."""

    def __init__(self, uri: str, message: str) -> None:
        super().__init__(message)
        self.uri = uri


# -- the topic space mapping (SPEC §10) ---------------------------------------------


def uri_topic(uri: str) -> str:
    """Topic URI ``a.b.c`` of realm1 is topic ``a/b/c``; components holding a topic
    separator or wildcard (``/``, ``+``) have no topic and are refused."""
    if any(c in uri for c in "/+"):
        raise RequestFailed(INVALID_URI, f"URI {uri!r}: '/' and '+' cannot be in a realm1 topic URI")
    topic = uri.replace(".", "/")
    problem = topic_error(topic)
    if problem is not None:
        raise RequestFailed(INVALID_URI, problem)
    return topic


def topic_uri(topic: str) -> str | None:
    """The topic URI of a topic, or None when a level cannot be a URI component."""
    if "." in topic:
        return None
    uri = topic.replace("/", ".")
    return uri if is_valid_uri(uri) else None


def hub_filter(uri: str, match: str) -> str:
    """The hub filter that covers every topic a subscription matches; the broker
    then matches each publication exactly."""
    if match == EXACT:
        return uri_topic(uri)
    if match == WILDCARD:
        return "/".join(part or "+" for part in uri_topic(uri).split("/"))
    # A prefix may end inside a component ("com.my" matches "com.myapp"): its parent and all below.
    parent = uri_topic(uri).split("/")[:-1]
    return "/".join([*parent, "#"])


def payload_of(args: list[Any] | None, kwargs: dict[str, Any] | None) -> str | bytes:
    """What other protocols see of a WAMP publication: its one argument when there is
    exactly one and no keyword arguments (text or bytes as it is, any other value as
    its JSON), else the JSON object ``{"args": [...], "kwargs": {...}}`` (binary
    values in it as WAMP's JSON writes them, ``"\\0"`` + base64)."""
    if args is not None and len(args) == 1 and not kwargs:
        value = args[0]
        if isinstance(value, str | bytes):
            return value
        return orjson.dumps(value, default=wire._to_json_binary).decode()
    if not args and not kwargs:
        return ""
    return orjson.dumps({"args": args or [], "kwargs": kwargs or {}}, default=wire._to_json_binary).decode()


def uri_matches(pattern: str, match: str, uri: str) -> bool:
    """Advanced Profile, pattern-based subscription and registration."""
    if match == EXACT:
        return pattern == uri
    if match == PREFIX:
        return uri.startswith(pattern)
    wanted, parts = pattern.split("."), uri.split(".")
    return len(wanted) == len(parts) and all(not w or w == p for w, p in zip(wanted, parts, strict=True))


# -- sessions -------------------------------------------------------------------------


class Caller:
    """Whoever a dealer answers: a session here, or one on another node."""

    id: int | str

    def send(self, message: list[Any]) -> None:
        raise NotImplementedError

    def error(self, request_type: int, request: int, uri: str, message: str | None = None) -> None:
        details: dict[str, Any] = {}
        self.send([wire.ERROR, request_type, request, details, uri, *([[message]] if message else [])])


@dataclass(eq=False)
class Peer(Caller):
    """One connection's WAMP state; a WAMP session exists between HELLO and GOODBYE."""

    session: Session
    serializer: Serializer
    id: int = 0  # the WAMP session ID, 0 while no session is established
    realm: Realm | None = None
    authid: str = ""
    authrole: str = "anonymous"
    authmethod: str = "anonymous"
    roles: dict[str, Any] = field(default_factory=dict)
    subscriptions: set[int] = field(default_factory=set)
    registrations: set[int] = field(default_factory=set)
    hub_filters: Counter[str] = field(default_factory=Counter)
    invocation_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    challenged: wire.Hello | None = None  # the HELLO of a CHALLENGE awaiting AUTHENTICATE
    cluster_names: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # registration -> names

    def send(self, message: list[Any]) -> None:
        self.session.send(self.outgoing(message))

    def outgoing(self, message: list[Any]) -> Outgoing:
        data = self.serializer.encode(message)
        return Outgoing(data, is_text=self.serializer.is_text)

    def supports(self, role: str, feature: str) -> bool:
        details = self.roles.get(role)
        features = details.get("features") if isinstance(details, dict) else None
        return isinstance(features, dict) and features.get(feature) is True



class RemoteCaller(Caller):
    """A caller on another node: its answers travel to its router (:data:`PEER_TOPIC`)."""

    def __init__(self, session_id: str, router: Router) -> None:
        self.id = self.session_id = session_id
        self._router = router

    def send(self, message: list[Any]) -> None:
        request = message[1] if message[0] == wire.RESULT else message[2]
        self._router.tell(self.session_id, {"t": "answer", "request": request, "message": message})


@dataclass(eq=False)
class RemoteCall:
    """A call of a session here to a callee on another node, until it is answered."""

    caller: Peer
    request: int
    callee: str  # the callee's session id
    name: tuple[str, str]  # (scope, name): the hub name the callee holds while it serves the call
    progress: bool
    timer: asyncio.TimerHandle | None = None
    killing: bool = False


@dataclass(frozen=True, slots=True)
class CalleeEntry:
    """One name of a :func:`callee_scope`: a callee somewhere in the cluster."""

    match: str
    invoke: str
    stamp: int
    uri: str
    holder: str  # the callee's session id
    name: str


@dataclass(frozen=True, slots=True)
class RemoteCallee:
    """The callee on another node a call goes to, and the registration it serves."""

    holder: str
    match: str
    uri: str
    name: tuple[str, str]  # (scope, name) the callee holds while it serves the registration


# -- the broker (§"Publish and Subscribe") -------------------------------------------------


@dataclass(eq=False)
class Subscription:
    """Router scope: one ID per (topic, match) in a realm, shared by its subscribers
    (§"SUBSCRIBED": a second subscriber gets the same ID)."""

    id: int
    uri: str
    match: str
    subscribers: dict[int, Peer] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """A publication as the broker delivers it."""

    uri: str
    publication: int
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    publisher: dict[str, Any]  # the details disclosing the publisher (may be empty)
    rules: dict[str, Any]  # exclude, eligible and their authid/authrole forms

    def admits(self, peer: Peer) -> bool:
        """Advanced Profile, "Subscriber Black- and Whitelisting"."""
        rules = self.rules
        if not rules:
            return True
        if peer.id in rules.get("exclude", ()) or peer.authid in rules.get("exclude_authid", ()):
            return False
        if peer.authrole in rules.get("exclude_authrole", ()):
            return False
        for key, value in (("eligible", peer.id), ("eligible_authid", peer.authid),
                           ("eligible_authrole", peer.authrole)):
            if key in rules and value not in rules[key]:
                return False
        return True


class Broker:
    def __init__(self, ids: Callable[[], int]) -> None:
        self._ids = ids
        self._by_key: dict[tuple[str, str], Subscription] = {}
        self._by_id: dict[int, Subscription] = {}
        self._patterns: list[Subscription] = []

    def subscribe(self, peer: Peer, uri: str, match: str) -> tuple[Subscription, bool]:
        """The subscription, and True when ``peer`` was not in it yet."""
        key = (match, uri)
        sub = self._by_key.get(key)
        if sub is None:
            sub = Subscription(self._ids(), uri, match)
            self._by_key[key] = self._by_id[sub.id] = sub
            if match != EXACT:
                self._patterns.append(sub)
        added = peer.id not in sub.subscribers
        sub.subscribers[peer.id] = peer
        peer.subscriptions.add(sub.id)
        return sub, added

    def holds(self, peer: Peer, uri: str, match: str) -> bool:
        sub = self._by_key.get((match, uri))
        return sub is not None and peer.id in sub.subscribers

    def unsubscribe(self, peer: Peer, subscription: int) -> Subscription | None:
        sub = self._by_id.get(subscription)
        if sub is None or sub.subscribers.pop(peer.id, None) is None:
            return None
        peer.subscriptions.discard(subscription)
        if not sub.subscribers:
            del self._by_id[sub.id], self._by_key[(sub.match, sub.uri)]
            if sub.match != EXACT:
                self._patterns.remove(sub)
        return sub

    def matching(self, uri: str) -> list[Subscription]:
        found = [s for s in self._patterns if uri_matches(s.uri, s.match, uri)]
        exact = self._by_key.get((EXACT, uri))
        return [exact, *found] if exact is not None else found


# -- the dealer (§"Remote Procedure Calls") ------------------------------------------------


@dataclass(eq=False)
class Registration:
    """Router scope; with a shared registration (Advanced Profile) several callees."""

    id: int
    uri: str
    match: str
    invoke: str
    callees: list[Peer] = field(default_factory=list)
    turn: int = 0  # roundrobin

    def callee(self) -> Peer:
        """Advanced Profile, "Shared Registration": the invocation policy picks one."""
        if self.invoke == "roundrobin":
            self.turn %= len(self.callees)
            chosen = self.callees[self.turn]
            self.turn += 1
            return chosen
        if self.invoke == "random":
            return random.choice(self.callees)
        if self.invoke == "last":
            return self.callees[-1]
        return self.callees[0]  # single, first


@dataclass(eq=False)
class PendingCall:
    caller: Caller
    request: int  # CALL.Request, in the caller's session scope
    callee: Peer
    invocation: int  # INVOCATION.Request, in the callee's session scope
    progress: bool  # the caller asked for progressive results
    timer: asyncio.TimerHandle | None = None
    killing: bool = False  # CANCEL mode kill: wait for the callee's ERROR


class Dealer:
    def __init__(self, ids: Callable[[], int]) -> None:
        self._ids = ids
        self._by_key: dict[tuple[str, str], Registration] = {}
        self._by_id: dict[int, Registration] = {}
        self.calls: dict[tuple[int | str, int], PendingCall] = {}  # (caller id, CALL.Request)
        self.invocations: dict[tuple[int, int], PendingCall] = {}  # (callee id, INVOCATION.Request)

    def register(self, peer: Peer, uri: str, match: str, invoke: str) -> Registration:
        reg = self._by_key.get((match, uri))
        if reg is not None and (invoke == "single" or reg.invoke != invoke or peer in reg.callees):
            raise RequestFailed(PROCEDURE_ALREADY_EXISTS, f"{uri} is already registered ({reg.invoke})")
        if reg is None:
            reg = Registration(self._ids(), uri, match, invoke)
            self._by_key[(match, uri)] = self._by_id[reg.id] = reg
        reg.callees.append(peer)
        peer.registrations.add(reg.id)
        return reg

    def unregister(self, peer: Peer, registration: int) -> Registration | None:
        reg = self._by_id.get(registration)
        if reg is None or peer not in reg.callees:
            return None
        reg.callees.remove(peer)
        peer.registrations.discard(registration)
        if not reg.callees:
            del self._by_id[reg.id], self._by_key[(reg.match, reg.uri)]
        return reg

    def registration(self, match: str, uri: str) -> Registration | None:
        return self._by_key.get((match, uri))

    def lookup(self, uri: str) -> Registration | None:
        """Exact first, then the longest matching prefix, then the wildcard whose first
        wildcard component comes last (Advanced Profile, "Pattern-based Registration")."""
        exact = self._by_key.get((EXACT, uri))
        if exact is not None:
            return exact
        prefixes = [r for r in self._by_id.values() if r.match == PREFIX and uri.startswith(r.uri)]
        if prefixes:
            return max(prefixes, key=lambda r: len(r.uri))
        wild = [r for r in self._by_id.values() if r.match == WILDCARD and uri_matches(r.uri, WILDCARD, uri)]
        if not wild:
            return None
        return max(wild, key=lambda r: [bool(part) for part in r.uri.split(".")])


@dataclass(eq=False)
class Realm:
    name: str
    bridged: bool  # realm1: pub/sub is the topic space
    clustered: bool  # its sessions may be on several nodes: RPC by hub names, events through the hub
    meta: bool  # the session meta API is served (all its sessions are on this node)
    peers: dict[int, Peer] = field(default_factory=dict)
    broker: Broker = field(init=False)
    dealer: Dealer = field(init=False)

    def __post_init__(self) -> None:
        ids = itertools.count(1).__next__  # router scope (§"IDs")
        self.broker = Broker(ids)
        self.dealer = Dealer(ids)


# -- the router ----------------------------------------------------------------------------------


class Router:
    """Every realm of one hub; fed validated messages by the protocol classes."""

    def __init__(self, hub: Hub, check_ticket: Callable[[str, str], bool] | None = None,
                 names_ttl: float = 15.0, max_subscriptions: int = 1000, clustered: bool = False) -> None:
        self.hub = hub
        #: On a cluster realm1's sessions are on every node: this router cannot list them.
        self._clustered = clustered
        #: ``--max-subscriptions``: what a session may hold in a realm the hub does not see.
        self.max_subscriptions = max_subscriptions
        #: How often calls to callees of other nodes check that their callee is still there:
        #: a third of the time a dead node's names outlive it (``--redis-ttl``).
        self._watch_interval = names_ttl / 3
        self._watchdog: asyncio.Future[None] | None = None
        #: ``--users`` (SPEC §15): (authid, ticket) -> accepted; None lets anyone in.
        self.check_ticket = check_ticket
        self.realms: dict[str, Realm] = {}
        self._sessions: set[int] = set()
        self._handlers: dict[type[Any], Callable[[Peer, Any], HookResult]] = {
            wire.Hello: self._hello, wire.Abort: self._abort, wire.Goodbye: self._goodbye,
            wire.Authenticate: self._authenticate,
            wire.Subscribe: self._subscribe, wire.Unsubscribe: self._unsubscribe,
            wire.Publish: self._publish, wire.Register: self._register,
            wire.Unregister: self._unregister, wire.Call: self._call, wire.Cancel: self._cancel,
            wire.Yield: self._yield, wire.Error: self._invocation_error,
        }
        #: The last publication delivered to realm1 and its event: the hub calls each
        #: protocol class in turn, and both serialisations must see the same event.
        self._last_bridged: tuple[Publication | None, Event | None] = (None, None)
        #: Calls of sessions here to callees of other nodes, by (caller's session ID, request).
        self._remote_calls: dict[tuple[int, int], RemoteCall] = {}
        #: Roundrobin across nodes: the next turn of each (match, URI), kept by this caller node.
        self._turns: Counter[tuple[str, str, str]] = Counter()
        self._background: set[asyncio.Future[Any]] = set()

    def shutting_down(self, serializer: Serializer) -> None:
        """§"Session Closing": the router ends each session of ``serializer`` with GOODBYE
        ``wamp.close.system_shutdown`` before the server closes its connection (1001). The
        session stays until the connection goes, so the client's GOODBYE in reply is
        not a message outside a session."""
        goodbye = [wire.GOODBYE, {"message": "the server is shutting down"}, SYSTEM_SHUTDOWN]
        for realm in list(self.realms.values()):
            for peer in list(realm.peers.values()):
                if peer.serializer is serializer:
                    peer.send(goodbye)

    def close(self) -> None:
        """The server stops: end the router's own background work."""
        for task in list(self._background):
            task.cancel()

    # -- receiving ------------------------------------------------------------------

    def receive(self, peer: Peer, frame: str | bytes) -> HookResult:
        """One WebSocket message: a protocol violation aborts this session only. What
        it returns is the rest of the work, for the session to await (see :class:`Then`)."""
        try:
            message: Message = peer.serializer.decode(frame)
            if peer.challenged is not None:
                if not isinstance(message, wire.Authenticate | wire.Abort):
                    raise ProtocolViolation("a CHALLENGE is waiting for AUTHENTICATE")
            elif isinstance(message, wire.Authenticate):
                raise ProtocolViolation("AUTHENTICATE without a CHALLENGE")
            if peer.id == 0 and not isinstance(message, wire.Hello | wire.Abort | wire.Authenticate):
                raise ProtocolViolation(f"{type(message).__name__.upper()} before HELLO")
            if peer.id != 0 and isinstance(message, wire.Hello):
                raise ProtocolViolation("HELLO in an established session")
            return self._handlers[type(message)](peer, message)
        except ProtocolViolation as exc:
            self.violation(peer, str(exc))
            return None

    def violation(self, peer: Peer, reason: str) -> None:
        """§"Protocol Violations": ABORT ``wamp.error.protocol_violation``, then close."""
        peer.send([wire.ABORT, {"message": reason}, PROTOCOL_VIOLATION])
        self.leave(peer)
        peer.session.close(CloseCode.PROTOCOL_ERROR, "WAMP protocol violation")

    # -- session lifecycle (§"Session Lifecycle") -------------------------------------

    def _hello(self, peer: Peer, hello: wire.Hello) -> None:
        roles = hello.details.get("roles")
        if not isinstance(roles, dict) or not roles or any(
            role not in CLIENT_ROLES or not isinstance(value, dict) for role, value in roles.items()
        ):
            raise ProtocolViolation("HELLO.Details.roles must announce client roles")
        if not is_valid_uri(hello.realm):
            peer.send([wire.ABORT, {"message": f"realm {hello.realm!r} is not a URI"}, INVALID_URI])
            return
        if self.check_ticket is None:
            self._welcome(peer, hello, None, "anonymous", "anonymous")
            return
        methods, authid = hello.details.get("authmethods"), hello.details.get("authid")
        if not isinstance(methods, list) or "ticket" not in methods or not isinstance(authid, str):
            peer.send([wire.ABORT, {"message": "this router takes ticket authentication (an authid and "
                                    "its password)"}, NO_AUTH_METHOD])
            return
        peer.challenged = hello
        peer.send([wire.CHALLENGE, "ticket", {}])

    async def _authenticate(self, peer: Peer, message: wire.Authenticate) -> None:
        """Advanced Profile, "Ticket-based Authentication": the ticket is the password of
        the ``--users`` user named by HELLO's authid (SPEC §15); scrypt runs in a thread,
        the connection's later messages wait for it."""
        hello, peer.challenged = peer.challenged, None
        assert hello is not None and self.check_ticket is not None
        authid = hello.details["authid"]
        accepted = await asyncio.to_thread(self.check_ticket, authid, message.signature)
        if peer.session.closed:
            return
        if not accepted:
            peer.send([wire.ABORT, {"message": "wrong authid or ticket"}, AUTHENTICATION_FAILED])
            return
        self._welcome(peer, hello, authid, "user", "ticket")

    def _welcome(self, peer: Peer, hello: wire.Hello, authid: str | None, authrole: str, method: str) -> None:
        """WELCOME (§"Session Establishment"); without authentication the authid is the
        session ID."""
        realm = self.realms.get(hello.realm)
        if realm is None:
            bridged = hello.realm == BRIDGED_REALM
            realm = self.realms[hello.realm] = Realm(hello.realm, bridged, bridged or self._clustered,
                                                     not self._clustered)
        session_id = global_id()
        while session_id in self._sessions:
            session_id = global_id()
        self._sessions.add(session_id)
        peer.id, peer.realm, peer.roles = session_id, realm, hello.details["roles"]
        peer.authid = str(session_id) if authid is None else authid
        peer.authrole = authrole
        realm.peers[session_id] = peer
        peer.session.name = peer.authid
        self.hub.touch(peer.session)
        if realm.clustered:  # other nodes' routers may have calls for it, or answers
            self.hub.subscribe(PEER_TOPIC + peer.session.id, peer.session)
        if realm.clustered and not realm.bridged:  # and events of its realm
            self.hub.subscribe(realm_topic(realm.name), peer.session)
        peer.authmethod = method
        peer.send([wire.WELCOME, session_id, {
            "realm": realm.name, "authid": peer.authid, "authrole": peer.authrole,
            "authmethod": method, "authprovider": "static", "roles": META_ROLES if realm.meta else ROLES,
        }])
        if realm.meta:
            self._meta_event(realm, ON_JOIN, [_session_details(peer)])

    def _abort(self, peer: Peer, abort: wire.Abort) -> None:
        peer.challenged = None
        self.leave(peer)

    def _goodbye(self, peer: Peer, goodbye: wire.Goodbye) -> None:
        """The client leaves: GOODBYE ``wamp.close.goodbye_and_out``; the connection may
        carry a new session (a new HELLO) afterwards."""
        if goodbye.reason == GOODBYE_AND_OUT:
            return  # the answer to a GOODBYE of ours
        peer.send([wire.GOODBYE, {}, GOODBYE_AND_OUT])
        self.leave(peer)

    def leave(self, peer: Peer) -> None:
        """End ``peer``'s session (GOODBYE, ABORT, violation or disconnect)."""
        realm = peer.realm
        if realm is None:
            return
        for subscription in list(peer.subscriptions):
            self._drop_subscription(peer, subscription)
        releases = [self._release(peer, realm.dealer.unregister(peer, registration))
                    for registration in list(peer.registrations)]
        self._fail_calls(peer, realm.dealer, [r for r in releases if r is not None])
        if realm.clustered:
            for key, call in list(self._remote_calls.items()):
                if call.caller is peer:
                    self._end_remote(key, call, "killnowait")
            self.hub.unsubscribe(PEER_TOPIC + peer.session.id, peer.session)
        if realm.clustered and not realm.bridged:
            self.hub.unsubscribe(realm_topic(realm.name), peer.session)
        realm.peers.pop(peer.id, None)
        self._sessions.discard(peer.id)
        if realm.meta and realm.peers:
            self._meta_event(realm, ON_LEAVE, [peer.id, peer.authid, peer.authrole])
        if not realm.peers:
            del self.realms[realm.name]
        peer.id, peer.realm = 0, None
        peer.roles = {}

    def _fail_calls(self, peer: Peer, dealer: Dealer, releases: list[Awaitable[None]]) -> None:
        """A callee that leaves fails its callers' calls with ``wamp.error.canceled``;
        a caller that leaves interrupts its calls at the callee (Call Canceling). Callers
        of other nodes hear it once the callee's names are gone, so a call they make
        next finds no callee rather than one that is not there any more."""
        remote: list[PendingCall] = []
        for pending in [p for p in dealer.invocations.values() if p.callee is peer]:
            self._finish(dealer, pending)
            if isinstance(pending.caller, RemoteCaller) and releases:
                remote.append(pending)
            else:
                pending.caller.error(wire.CALL, pending.request, CANCELED, "the callee left")
        if remote:
            self._in_background(_fail_after(releases, remote))
        for pending in [p for p in dealer.calls.values() if p.caller is peer]:
            self._finish(dealer, pending)
            self._interrupt(pending, "killnowait")

    # -- publish and subscribe ------------------------------------------------------------

    def _subscribe(self, peer: Peer, message: wire.Subscribe) -> HookResult:
        realm = _realm(peer)
        try:
            match = _option(message.options, "match", MATCHES, EXACT)
            if not _valid_pattern(message.topic, match):
                raise RequestFailed(INVALID_URI, f"{message.topic!r} is not a valid topic URI")
            topic_filter = hub_filter(message.topic, match) if realm.bridged else None
        except RequestFailed as exc:
            peer.error(wire.SUBSCRIBE, message.request, exc.uri, str(exc))
            return None
        new_filter = topic_filter is not None and not peer.hub_filters[topic_filter]
        if topic_filter is not None:  # realm1: the hub keeps the count (a refusal is False)
            refused = new_filter and not self.hub.subscribe(topic_filter, peer.session)
        else:
            refused = len(peer.subscriptions) >= self.max_subscriptions and not realm.broker.holds(
                peer, message.topic, match)
        if refused:
            peer.error(wire.SUBSCRIBE, message.request, NOT_AUTHORIZED,
                       "this session holds as many subscriptions as it may (--max-subscriptions)")
            return None
        sub, added = realm.broker.subscribe(peer, message.topic, match)
        subscribed = [wire.SUBSCRIBED, message.request, sub.id]
        if added and topic_filter is not None:
            peer.hub_filters[topic_filter] += 1
        if new_filter:
            # SUBSCRIBED once the hub is subscribed: on Redis the session's next
            # event waits for that, so the answer comes after it too.
            return Then(lambda: peer.send(subscribed))
        peer.send(subscribed)
        return None

    def _unsubscribe(self, peer: Peer, message: wire.Unsubscribe) -> None:
        if not self._drop_subscription(peer, message.subscription):
            peer.error(wire.UNSUBSCRIBE, message.request, NO_SUCH_SUBSCRIPTION)
            return
        peer.send([wire.UNSUBSCRIBED, message.request])

    def _drop_subscription(self, peer: Peer, subscription: int) -> bool:
        realm = _realm(peer)
        sub = realm.broker.unsubscribe(peer, subscription)
        if sub is None:
            return False
        if realm.bridged:
            topic_filter = hub_filter(sub.uri, sub.match)
            peer.hub_filters[topic_filter] -= 1
            if peer.hub_filters[topic_filter] <= 0:
                del peer.hub_filters[topic_filter]
                self.hub.unsubscribe(topic_filter, peer.session)
        return True

    def _publish(self, peer: Peer, message: wire.Publish) -> None:
        realm = _realm(peer)
        options = message.options
        acknowledge = options.get("acknowledge") is True
        try:
            if not is_valid_uri(message.topic) or message.topic.startswith("wamp."):
                raise RequestFailed(INVALID_URI, f"{message.topic!r} is not a topic URI one may publish on")
            event = Event(message.topic, global_id(), message.args, message.kwargs,
                          _disclosed(peer, options, "publisher"), _rules(options))
            exclude_me = options.get("exclude_me", True) is not False
            if realm.bridged:
                self._publish_bridged(peer, event, exclude_me=exclude_me)
            elif realm.clustered:
                self._publish_realm(peer, realm, event, exclude_me=exclude_me)
            else:
                skip = peer if exclude_me else None
                self._dispatch(realm, event, lambda p: p is not skip)
        except RequestFailed as exc:
            if acknowledge:
                peer.error(wire.PUBLISH, message.request, exc.uri, str(exc))
            return
        if acknowledge:
            peer.send([wire.PUBLISHED, message.request, event.publication])

    def _publish_bridged(self, peer: Peer, event: Event, *, exclude_me: bool) -> None:
        topic = uri_topic(event.uri)
        if is_server_topic(topic):
            raise RequestFailed(NOT_AUTHORIZED, f"{topic} belongs to the server")
        publication = Publication(topic, payload_of(event.args, event.kwargs),
                                  Sender(SENDER_PROTOCOL, str(peer.id)), native=_native(event))
        self.hub.publish(publication, exclude=peer.session.id if exclude_me else None)

    def _publish_realm(self, peer: Peer, realm: Realm, event: Event, *, exclude_me: bool) -> None:
        """An event of a realm other than realm1, for its sessions on every node."""
        publication = Publication(realm_topic(realm.name), "", Sender(SENDER_PROTOCOL, str(peer.id)),
                                  native=_native(event))
        self.hub.publish(publication, exclude=peer.session.id if exclude_me else None)

    def deliver_bridged(self, publication: Publication, serializer: Serializer, exclude: str | None,
                        sessions: Mapping[str, Session]) -> None:
        """A topic space publication for this node's realm1 subscribers that speak
        ``serializer`` (the hub calls each protocol class once), or a message from
        another node's router for one of ``sessions``."""
        if publication.topic.startswith(PEER_TOPIC):
            self._peer_message(publication, sessions)
            return
        if publication.topic.startswith(REALM_TOPIC):
            self._realm_event(publication, serializer, exclude)
            return
        realm = self.realms.get(BRIDGED_REALM)
        uri = topic_uri(publication.topic)
        if realm is None or uri is None or uri.startswith("wamp."):
            return  # wamp.* events are the router's own (meta events), never another protocol's
        event = self._event_of(publication, uri)
        if event is None:
            return
        self._dispatch(realm, event, lambda p: p.serializer is serializer and p.session.id != exclude)

    def _peer_message(self, publication: Publication, sessions: Mapping[str, Session]) -> None:
        session = sessions.get(publication.topic.removeprefix(PEER_TOPIC))
        native = publication.native
        if session is None or not isinstance(session.state, Peer) or native is None or (
            publication.sender.protocol != SENDER_PROTOCOL
        ):
            return
        try:
            body = msgpack.unpackb(native.payload, raw=False)
            self._from_other_node(session.state, body)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, msgpack.UnpackException):
            return  # not a message a router of ours wrote

    def _realm_event(self, publication: Publication, serializer: Serializer, exclude: str | None) -> None:
        try:
            name = bytes.fromhex(publication.topic.removeprefix(REALM_TOPIC)).decode()
        except ValueError:
            return
        realm = self.realms.get(name)
        event = _event(publication, None) if realm is not None and not realm.bridged else None
        if realm is not None and event is not None:
            self._dispatch(realm, event, lambda p: p.serializer is serializer and p.session.id != exclude)

    def _event_of(self, publication: Publication, uri: str) -> Event | None:
        """The WAMP event of a publication, made once for both serialisations."""
        last, event = self._last_bridged
        if last is not publication:
            event = _event(publication, uri)
            self._last_bridged = (publication, event)
        return event

    def _meta_event(self, realm: Realm, topic: str, args: list[Any]) -> None:
        """Advanced Profile, "Session Meta API": ``wamp.session.on_join``/``on_leave``."""
        self._dispatch(realm, Event(topic, global_id(), args, None, {}, {}), lambda peer: True)

    def _dispatch(self, realm: Realm, event: Event, wanted: Callable[[Peer], bool]) -> None:
        """EVENT to every subscriber of every matching subscription (§"EVENT"), encoded
        once per subscription and serialisation."""
        for sub in realm.broker.matching(event.uri):
            details = dict(event.publisher)
            if sub.match != EXACT:
                details["topic"] = event.uri
            message = [wire.EVENT, sub.id, event.publication, details, *_payload(event.args, event.kwargs)]
            encoded: dict[int, Outgoing] = {}
            for peer in list(sub.subscribers.values()):
                if wanted(peer) and event.admits(peer):
                    outgoing = encoded.get(id(peer.serializer))
                    if outgoing is None:
                        outgoing = encoded[id(peer.serializer)] = peer.outgoing(message)
                    peer.session.send(outgoing)

    # -- remote procedure calls ----------------------------------------------------------------

    def _register(self, peer: Peer, message: wire.Register) -> HookResult:
        realm = _realm(peer)
        try:
            match = _option(message.options, "match", MATCHES, EXACT)
            invoke = _option(message.options, "invoke", INVOKE_POLICIES, "single")
            uri = message.procedure
            if not _valid_pattern(uri, match) or uri.startswith("wamp."):
                raise RequestFailed(INVALID_URI, f"{uri!r} is not a procedure URI one may register")
            reg = realm.dealer.register(peer, uri, match, invoke)
        except RequestFailed as exc:
            peer.error(wire.REGISTER, message.request, exc.uri, str(exc))
            return None
        if _clustered(realm, reg):
            return self._claim(peer, message.request, reg)
        peer.send([wire.REGISTERED, message.request, reg.id])
        return None

    async def _claim(self, peer: Peer, request: int, reg: Registration) -> None:
        """Realm1's registrations are hub names (:func:`_cluster_names`), so a caller on
        any node finds their callees, and no two nodes hold a single registration of the
        same procedure or pattern, or shared ones of it with different policies."""
        names = peer.cluster_names[reg.id] = _cluster_names(_realm(peer).name, reg)
        claimed = [await self.hub.claim_name(scope, name, peer.session) for scope, name in names]
        taken = not all(claimed) or await self._rivalled(peer, reg)
        if peer.realm is None or reg.id not in peer.registrations:
            await self._release_names(peer, names)
            return  # the session ended meanwhile
        if taken:
            peer.realm.dealer.unregister(peer, reg.id)
            del peer.cluster_names[reg.id]
            await self._release_names(peer, names)
            peer.error(wire.REGISTER, request, PROCEDURE_ALREADY_EXISTS,
                       f"{reg.uri} is registered on another node")
            return
        peer.send([wire.REGISTERED, request, reg.id])

    async def _rivalled(self, peer: Peer, reg: Registration) -> bool:
        """Another node's registration of the same procedure or pattern that this one cannot
        join: a single one, or a shared one with another policy (Shared Registration)."""
        realm = _realm(peer).name
        if reg.match == EXACT and reg.invoke != "single":
            holder = await self.hub.lookup_name(registration_scope(realm), reg.uri)
            if holder is not None and holder != peer.session.id:
                return True
        rivals = [entry for entry in _callee_entries(await self.hub.names(callee_scope(realm)))
                  if (entry.match, entry.uri) == (reg.match, reg.uri) and entry.holder != peer.session.id]
        return any(reg.invoke == "single" or entry.invoke != reg.invoke for entry in rivals)

    async def _release_names(self, peer: Peer, names: list[tuple[str, str]]) -> None:
        for scope, name in names:
            await self.hub.release_name(scope, name, peer.session)

    def _release(self, peer: Peer, reg: Registration | None) -> Awaitable[None] | None:
        """Give up the hub names of a clustered registration ``peer`` no longer serves."""
        names = peer.cluster_names.pop(reg.id, None) if reg is not None else None
        if not names:
            return None
        return self._in_background(self._release_names(peer, names))

    def _in_background(self, work: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _unregister(self, peer: Peer, message: wire.Unregister) -> HookResult:
        realm = _realm(peer)
        reg = realm.dealer.unregister(peer, message.registration)
        if reg is None:
            peer.error(wire.UNREGISTER, message.request, NO_SUCH_REGISTRATION)
            return None
        releasing = self._release(peer, reg)
        unregistered = [wire.UNREGISTERED, message.request]
        if releasing is None:
            peer.send(unregistered)
            return None
        return _then_send(releasing, peer, unregistered)

    def _call(self, peer: Peer, message: wire.Call) -> HookResult:
        dealer = _realm(peer).dealer
        options = message.options
        try:
            if not is_valid_uri(message.procedure):
                raise RequestFailed(INVALID_URI, f"{message.procedure!r} is not a procedure URI")
            timeout = options.get("timeout", 0)  # milliseconds (Advanced Profile, "Call Timeout")
            if type(timeout) not in (int, float) or not 0 <= timeout < 2**31:
                raise RequestFailed(INVALID_ARGUMENT, "CALL.Options.timeout must be milliseconds")
            key = (peer.id, message.request)
            if key in dealer.calls or key in self._remote_calls:
                raise ProtocolViolation(f"CALL request {message.request} is already in progress")
            reg = dealer.lookup(message.procedure)
        except RequestFailed as exc:
            peer.error(wire.CALL, message.request, exc.uri, str(exc))
            return None
        progress = options.get("receive_progress") is True
        realm = _realm(peer)
        if reg is None and realm.meta and message.procedure in _META_PROCEDURES:
            _META_PROCEDURES[message.procedure](realm, peer, message)
            return None
        if realm.clustered and (reg is None or (reg.match != EXACT and self._clustered)):
            return self._call_remote(peer, message, timeout, progress, reg)
        self._call_here(peer, message, timeout, progress)
        return None

    def _call_here(self, peer: Peer, message: wire.Call, timeout: float, progress: bool) -> None:
        """INVOCATION to a callee of this node, or ``no_such_procedure``."""
        dealer = _realm(peer).dealer
        reg = dealer.lookup(message.procedure)
        if reg is None:
            peer.error(wire.CALL, message.request, NO_SUCH_PROCEDURE,
                       f"no callee registered {message.procedure}")
            return
        self._invoke(dealer, peer, message.request, reg, message.procedure, timeout, progress,
                     _disclosed(peer, message.options, "caller"), message.args, message.kwargs)

    def _invoke(self, dealer: Dealer, caller: Caller, request: int, reg: Registration, procedure: str,
                timeout: float, progress: bool, details: dict[str, Any], args: list[Any] | None,
                kwargs: dict[str, Any] | None, callee: Peer | None = None) -> None:
        """INVOCATION to the callee the registration's policy picks (§"INVOCATION")."""
        callee = reg.callee() if callee is None else callee
        invocation = next(callee.invocation_ids)
        pending = PendingCall(caller, request, callee, invocation, progress)
        dealer.calls[(caller.id, request)] = pending
        dealer.invocations[(callee.id, invocation)] = pending
        if timeout:
            loop = asyncio.get_running_loop()
            pending.timer = loop.call_later(timeout / 1000, self._timed_out, dealer, pending)
        details = dict(details)
        if reg.match != EXACT:
            details["procedure"] = procedure
        if progress and callee.supports("callee", "progressive_call_results"):
            details["receive_progress"] = True
        callee.send([wire.INVOCATION, invocation, reg.id, details, *_payload(args, kwargs)])

    # -- calls across nodes (realm1) ------------------------------------------------------------

    def tell(self, session_id: str, body: dict[str, Any]) -> None:
        """A message for the router of ``session_id``, on whichever node it is."""
        native = Outgoing.binary(msgpack.packb(body, use_bin_type=True))
        self.hub.publish(Publication(PEER_TOPIC + session_id, "", Sender(SENDER_PROTOCOL, "router"),
                                     native=native))

    async def _call_remote(self, peer: Peer, message: wire.Call, timeout: float, progress: bool,
                           local: Registration | None = None) -> None:
        """The cluster's holder of the procedure's name gets the call, else a callee of
        the registration that matches best among other nodes' callees; a pattern
        registration ``local`` of this node serves it unless another node's ranks higher
        (Pattern-based Registration: exact, then the longest prefix, then wildcards)."""
        realm = _realm(peer).name
        singles, callees = registration_scope(realm), callee_scope(realm)
        holder = await self.hub.lookup_name(singles, message.procedure)
        target: RemoteCallee | None = None
        if holder is None:
            target = self._remote_callee(callees, await self.hub.names(callees), message.procedure)
            if target is not None and local is not None and _rank(target.match, target.uri) <= _rank(
                    local.match, local.uri):
                target = None
        elif holder != peer.session.id:
            target = RemoteCallee(holder, EXACT, message.procedure, (singles, message.procedure))
        if peer.realm is None or peer.session.closed:
            return
        if target is None:
            self._call_here(peer, message, timeout, progress)
            return
        holder = target.holder
        call = RemoteCall(peer, message.request, holder, target.name, progress)
        key = (peer.id, message.request)
        self._remote_calls[key] = call
        if self._watchdog is None:
            self._watchdog = self._in_background(self._watch_remote_calls())
        if timeout:
            loop = asyncio.get_running_loop()
            call.timer = loop.call_later(timeout / 1000, self._remote_timed_out, key, call)
        self.tell(holder, {
            "t": "call", "from": peer.session.id, "request": message.request, "uri": message.procedure,
            "match": target.match, "registered": target.uri, "realm": realm,
            "details": _disclosed(peer, message.options, "caller"), "progress": progress,
            "args": message.args, "kwargs": message.kwargs,
        })

    def _remote_callee(self, scope: str, names: Mapping[str, str], procedure: str) -> RemoteCallee | None:
        """The callee of another node for ``procedure``: the registration that matches
        best (as :meth:`Dealer.lookup` ranks them), its callee by its invocation policy."""
        entries = [entry for entry in _callee_entries(names)
                   if self.hub.holder_here(scope, entry.name) is None]  # ours: the dealer said no
        callees = _best_registration(entries, procedure)
        if not callees:
            return None
        key = (scope, callees[0].match, callees[0].uri)
        invoke = callees[0].invoke
        if invoke == "roundrobin":
            chosen = callees[self._turns[key] % len(callees)]
            self._turns[key] += 1
        elif invoke == "random":
            chosen = random.choice(callees)
        else:
            chosen = callees[-1] if invoke == "last" else callees[0]  # single, first
        return RemoteCallee(chosen.holder, chosen.match, chosen.uri, (scope, chosen.name))

    async def _watch_remote_calls(self) -> None:
        """A remote call is answered by its callee's router. When that router cannot
        answer (its node died, or the callee left before the call reached it), the
        callee's hub name is gone, at the latest after the dead node's TTL: the call
        then fails with ``wamp.error.canceled`` rather than wait for ever."""
        try:
            while self._remote_calls:
                await asyncio.sleep(self._watch_interval)
                holders: dict[tuple[str, str], str | None] = {}
                for key, call in list(self._remote_calls.items()):
                    if call.name not in holders:
                        holders[call.name] = await self.hub.lookup_name(*call.name)
                    if holders[call.name] != call.callee and self._remote_calls.get(key) is call:
                        del self._remote_calls[key]
                        if call.timer is not None:
                            call.timer.cancel()
                        call.caller.error(wire.CALL, call.request, CANCELED, "the callee is gone")
        finally:
            self._watchdog = None

    def _end_remote(self, key: tuple[int, int], call: RemoteCall, mode: str) -> None:
        """Forget a remote call and tell its callee's router how to end it."""
        self._remote_calls.pop(key, None)
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        self.tell(call.callee, {"t": "cancel", "from": call.caller.session.id, "request": call.request,
                                "mode": mode})

    def _remote_timed_out(self, key: tuple[int, int], call: RemoteCall) -> None:
        call.timer = None
        if self._remote_calls.get(key) is call:
            self._end_remote(key, call, "killnowait")
            call.caller.error(wire.CALL, call.request, TIMEOUT, "the call timed out")

    def _from_other_node(self, peer: Peer, body: dict[str, Any]) -> None:
        kind = body["t"]
        if kind == "call":
            self._remote_invocation(peer, body)
        elif kind == "answer":
            self._remote_answer(peer, body)
        elif kind == "cancel":
            self._remote_cancel(peer, body)

    def _remote_invocation(self, callee: Peer, body: dict[str, Any]) -> None:
        caller = RemoteCaller(body["from"], self)
        request = body["request"]
        realm = callee.realm
        reg = realm.dealer.registration(body["match"], body["registered"]) if (
            realm is not None and realm.name == body["realm"]) else None
        if reg is None or callee not in reg.callees or callee.realm is None:
            caller.error(wire.CALL, request, NO_SUCH_PROCEDURE, f"no callee registered {body['uri']}")
            return
        dealer = callee.realm.dealer
        if (caller.id, request) in dealer.calls:
            return
        self._invoke(dealer, caller, request, reg, body["uri"], 0, body["progress"] is True, body["details"],
                     body["args"], body["kwargs"], callee)

    def _remote_answer(self, peer: Peer, body: dict[str, Any]) -> None:
        key = (peer.id, body["request"])
        call = self._remote_calls.get(key)
        message = body["message"]
        if call is None or not isinstance(message, list) or message[0] not in (wire.RESULT, wire.ERROR):
            return  # canceled, timed out, or the caller left meanwhile
        progressive = message[0] == wire.RESULT and message[2].get("progress") is True
        if progressive and not call.progress:
            return
        if not progressive:
            self._remote_calls.pop(key, None)
            if call.timer is not None:
                call.timer.cancel()
        peer.send(message)

    def _remote_cancel(self, callee: Peer, body: dict[str, Any]) -> None:
        if callee.realm is None:
            return
        dealer = callee.realm.dealer
        pending = dealer.calls.get((body["from"], body["request"]))
        if pending is None:
            return
        mode = body["mode"]
        if mode == "kill" and pending.callee.supports("callee", "call_canceling"):
            pending.killing = True
            self._interrupt(pending, "kill")
            return  # the callee's ERROR answers the caller
        self._finish(dealer, pending)
        if mode == "kill":  # a callee that cannot be interrupted: the call ends now
            pending.caller.error(wire.CALL, pending.request, CANCELED, "canceled by the caller")
        elif mode != "skip":
            self._interrupt(pending, "killnowait")

    def _yield(self, peer: Peer, message: wire.Yield) -> None:
        dealer = _realm(peer).dealer
        pending = dealer.invocations.get((peer.id, message.request))
        if pending is None:
            return  # canceled or timed out meanwhile: the answer has no caller any more
        details: dict[str, Any] = {}
        if message.options.get("progress") is True:
            if not pending.progress:
                return
            details["progress"] = True
        else:
            self._finish(dealer, pending)
        pending.caller.send([wire.RESULT, pending.request, details, *_payload(message.args, message.kwargs)])

    def _invocation_error(self, peer: Peer, message: wire.Error) -> None:
        dealer = _realm(peer).dealer
        pending = dealer.invocations.get((peer.id, message.request))
        if pending is None:
            return
        self._finish(dealer, pending)
        pending.caller.send([wire.ERROR, wire.CALL, pending.request, message.details, message.error,
                             *_payload(message.args, message.kwargs)])

    def _cancel(self, peer: Peer, message: wire.Cancel) -> None:
        """Advanced Profile, "Call Canceling": modes skip, kill, killnowait (the default)."""
        dealer = _realm(peer).dealer
        mode = message.options.get("mode", "killnowait")
        if mode not in CANCEL_MODES:
            peer.error(wire.CANCEL, message.request, INVALID_ARGUMENT, f"unknown cancel mode {mode!r}")
            return
        key = (peer.id, message.request)
        remote = self._remote_calls.get(key)
        if remote is not None:
            if mode == "kill":
                if not remote.killing:
                    remote.killing = True
                    self.tell(remote.callee, {"t": "cancel", "from": peer.session.id,
                                              "request": remote.request, "mode": "kill"})
                return  # the callee's answer ends the call
            self._end_remote(key, remote, mode)
            peer.error(wire.CALL, message.request, CANCELED, "canceled by the caller")
            return
        pending = dealer.calls.get(key)
        if pending is None:
            return  # already answered: nothing to cancel
        if mode == "kill" and pending.callee.supports("callee", "call_canceling"):
            if not pending.killing:
                pending.killing = True
                self._interrupt(pending, "kill")
            return  # the callee's ERROR ends the call
        self._finish(dealer, pending)
        if mode != "skip":
            self._interrupt(pending, "killnowait")
        peer.error(wire.CALL, pending.request, CANCELED, "canceled by the caller")

    def _timed_out(self, dealer: Dealer, pending: PendingCall) -> None:
        """Advanced Profile, "Call Timeout": the dealer cancels the call."""
        pending.timer = None
        if dealer.calls.get((pending.caller.id, pending.request)) is not pending:
            return
        self._finish(dealer, pending)
        self._interrupt(pending, "killnowait", TIMEOUT)
        pending.caller.error(wire.CALL, pending.request, TIMEOUT, "the call timed out")

    @staticmethod
    def _interrupt(pending: PendingCall, mode: str, reason: str = CANCELED) -> None:
        callee = pending.callee
        if callee.id and callee.supports("callee", "call_canceling"):
            callee.send([wire.INTERRUPT, pending.invocation, {"mode": mode, "reason": reason}])

    @staticmethod
    def _finish(dealer: Dealer, pending: PendingCall) -> None:
        dealer.calls.pop((pending.caller.id, pending.request), None)
        dealer.invocations.pop((pending.callee.id, pending.invocation), None)
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None


# -- helpers ----------------------------------------------------------------------------------


class Then:
    """An awaitable that does ``action`` when awaited. Returned from a hook, it runs
    after whatever the hook made the session wait for (a Redis hub holds a session's
    next event until its new subscription is in place), and at once otherwise."""

    __slots__ = ("_action",)

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action

    def __await__(self) -> Generator[Any, None, None]:
        self._action()
        return
        yield  # a generator: __await__ must return an iterator


def _session_details(peer: Peer) -> dict[str, Any]:
    return {"session": peer.id, "authid": peer.authid, "authrole": peer.authrole,
            "authmethod": peer.authmethod, "authprovider": "static"}


def _sessions_of(realm: Realm, message: wire.Call) -> list[Peer]:
    """The realm's sessions, of the authroles given as the first argument if any."""
    roles = message.args[0] if message.args else None
    peers = list(realm.peers.values())
    return [p for p in peers if p.authrole in roles] if isinstance(roles, list) else peers


def _meta_count(realm: Realm, peer: Peer, message: wire.Call) -> None:
    peer.send([wire.RESULT, message.request, {}, [len(_sessions_of(realm, message))]])


def _meta_list(realm: Realm, peer: Peer, message: wire.Call) -> None:
    peer.send([wire.RESULT, message.request, {}, [[p.id for p in _sessions_of(realm, message)]]])


def _meta_get(realm: Realm, peer: Peer, message: wire.Call) -> None:
    wanted = message.args[0] if message.args else None
    found = realm.peers.get(wanted) if is_id(wanted) else None  # type: ignore[arg-type]
    if found is None:
        peer.error(wire.CALL, message.request, NO_SUCH_SESSION, f"no session {wanted!r} in this realm")
        return
    peer.send([wire.RESULT, message.request, {}, [_session_details(found)]])


_META_PROCEDURES: Final[dict[str, Callable[[Realm, Peer, wire.Call], None]]] = {
    "wamp.session.count": _meta_count, "wamp.session.list": _meta_list, "wamp.session.get": _meta_get,
}


def _clustered(realm: Realm, reg: Registration) -> bool:
    """Registrations callers of other nodes reach: those of realms on several nodes."""
    return realm.clustered


def _cluster_names(realm: str, reg: Registration) -> list[tuple[str, str]]:
    """The hub names (scope, name) a callee of ``reg`` in ``realm`` holds: an exact,
    single registration its procedure in :func:`registration_scope`; any other its own
    name in :func:`callee_scope`, and a single pattern also ``MATCH URI`` in the first."""
    if reg.match == EXACT and reg.invoke == "single":
        return [(registration_scope(realm), reg.uri)]
    names = [(callee_scope(realm), f"{reg.match} {reg.invoke} {time.time_ns()} {reg.uri}")]
    if reg.invoke == "single":
        names.append((registration_scope(realm), f"{reg.match} {reg.uri}"))
    return names


def _callee_entries(names: Mapping[str, str]) -> list[CalleeEntry]:
    """The callees named in a :func:`callee_scope`, oldest registration first."""
    entries: list[CalleeEntry] = []
    for name, holder in names.items():
        parts = name.split(" ", 3)
        if len(parts) == 4 and parts[0] in MATCHES and parts[1] in INVOKE_POLICIES and parts[2].isdigit():
            entries.append(CalleeEntry(parts[0], parts[1], int(parts[2]), parts[3], holder, name))
    return sorted(entries, key=lambda entry: entry.stamp)


def _rank(match: str, uri: str) -> tuple[int, int, list[bool]]:
    """How well a registration that matches ranks (:meth:`Dealer.lookup`): exact, then
    the longest prefix, then the wildcard whose first wildcard component comes last."""
    if match == EXACT:
        return (2, 0, [])
    if match == PREFIX:
        return (1, len(uri), [])
    return (0, 0, [bool(part) for part in uri.split(".")])


def _best_registration(entries: list[CalleeEntry], procedure: str) -> list[CalleeEntry]:
    """The callees of the registration that matches ``procedure`` best: exact, then the
    longest prefix, then the wildcard whose first wildcard component comes last."""
    matching = [entry for entry in entries if uri_matches(entry.uri, entry.match, procedure)]
    if not matching:
        return []

    best = max(matching, key=lambda entry: _rank(entry.match, entry.uri))
    return [entry for entry in matching if (entry.match, entry.uri) == (best.match, best.uri)]


async def _fail_after(releases: list[Awaitable[None]], calls: list[PendingCall]) -> None:
    await asyncio.gather(*releases, return_exceptions=True)
    for pending in calls:
        pending.caller.error(wire.CALL, pending.request, CANCELED, "the callee left")


async def _then_send(waiting: Awaitable[None], peer: Peer, message: list[Any]) -> None:
    await waiting
    peer.send(message)


def _realm(peer: Peer) -> Realm:
    assert peer.realm is not None  # receive() lets only HELLO and ABORT through without a session
    return peer.realm


def _valid_pattern(uri: str, match: str) -> bool:
    """A topic or procedure to subscribe or register: wildcard patterns may have empty
    components, a prefix may end with a dot (Advanced Profile, pattern-based)."""
    if match == PREFIX:
        return is_valid_uri(uri.removesuffix("."))
    return is_valid_uri(uri, pattern=match == WILDCARD)


def _option(options: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = options.get(key, default)
    if value not in allowed:
        raise RequestFailed(INVALID_ARGUMENT, f"option {key} must be one of {', '.join(allowed)}")
    assert isinstance(value, str)
    return value


def _payload(args: list[Any] | None, kwargs: dict[str, Any] | None) -> list[Any]:
    """The optional trailing ``Arguments|list, ArgumentsKw|dict`` of a message."""
    if kwargs:
        return [args or [], kwargs]
    return [args] if args else []


def _disclosed(peer: Peer, options: dict[str, Any], who: str) -> dict[str, Any]:
    """Advanced Profile, publisher and caller identification: only with ``disclose_me``."""
    if options.get("disclose_me") is not True:
        return {}
    return {who: peer.id, f"{who}_authid": peer.authid, f"{who}_authrole": peer.authrole}


_RULE_KEYS: Final = ("exclude", "eligible", "exclude_authid", "eligible_authid", "exclude_authrole",
                     "eligible_authrole")


def _rules(options: dict[str, Any]) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    for key in _RULE_KEYS:
        if key in options:
            value = options[key]
            if not isinstance(value, list):
                raise RequestFailed(INVALID_ARGUMENT, f"PUBLISH.Options.{key} must be a list")
            rules[key] = value
    return rules


def _native(event: Event) -> Outgoing:
    """A WAMP event as it travels between routers (:func:`_event` reads it back)."""
    return Outgoing.binary(msgpack.packb({
        "uri": event.uri, "id": event.publication, "args": event.args, "kwargs": event.kwargs,
        "publisher": event.publisher, "rules": event.rules,
    }, use_bin_type=True))


def _event(publication: Publication, uri: str | None) -> Event | None:
    """A topic space publication as a WAMP event of ``uri``. A WAMP publisher's own form
    (its ``native``, :func:`_native`) gives it back exactly; any other protocol's
    publication is one argument, its payload (text or bytes), with the SPEC §10 sender as
    ``publisher_authid`` (``chat:alice``). Without ``uri`` (another realm's event, on
    :data:`REALM_TOPIC`) only the native form counts, with its own URI."""
    if publication.sender.protocol != SENDER_PROTOCOL:
        if uri is None:
            return None
        text = publication.text if publication.is_text else None
        payload: str | bytes = text if text is not None else publication.data
        return Event(uri, global_id(), [payload], None, {"publisher_authid": str(publication.sender)}, {})
    native = publication.native
    if native is None or native.is_text:
        return None  # not a form this router writes: nothing to say
    try:
        form = msgpack.unpackb(native.payload, raw=False)
        event_uri = form["uri"] if uri is None else uri
        if not isinstance(event_uri, str):
            return None
        return Event(event_uri, form["id"], form["args"], form["kwargs"], form["publisher"], form["rules"])
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None
