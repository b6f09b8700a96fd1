"""``JSONsvc``: named peers and services (SPEC §5, §10); the wire format is in :mod:`.wire`.

Every client has a name; any client sends to any other by name, and clients
provide and request named services. A service ``S`` is topic ``S`` of the topic
space (SPEC §10), so JSONsvc clients hear chat rooms, echo and the standard
protocols, and are heard by them:

* client names: hub names in scope ``JSONsvc`` (claimed by the first message);
* ``requests`` S subscribes to filter S (``sensors/+`` and ``#`` allowed);
  ``put`` S publishes a retained publication on topic S, which every protocol's
  subscribers receive and which is the latest value ``get`` answers from; a
  requester receives a publication as ``{"from":SENDER,"put":"T"}>PAYLOAD``, or
  as the provider's message itself when the sender is a JSONsvc client;
* providers of S: members of the channel ``jsonsvc:provider:S`` (presence
  only, nothing is sent there); a service may have several providers;
* clients waiting for the answer to a forwarded ``get``: hub values
  ``JSONsvc.waiting:S\\n<session id>``, answered and deleted by the next ``put``.

Decisions where SPEC §5 and §10 are silent (also in the README):

* ``to`` decides who handles a message. ``to`` a client name: the message is
  private and only routed, unchanged except ``from``; the server does not act
  on ``put``/``get``/``provides``/``requests`` in it. No ``to``, or
  ``"to":"JSONsvc"``: the server acts on those keys, then on ``cmd``.
* A connection keeps the name its first message claimed. A later message with
  another ``from`` is handled as coming from the registered name (``from`` is
  rewritten): a client cannot rename itself or speak as another. Names may
  not contain ``:`` (SPEC §10).
* ``put`` makes its sender a provider of the service, as ``provides`` does.
  ``requests`` subscribes to future values only; ask with ``get`` for the
  current one (both may be in one message). A latest value outlives its
  provider's connection, so ``get`` keeps answering from it. A ``put`` with
  empty data (or none) is still pushed to requesters but clears the latest
  value: an empty retained publication clears its topic (SPEC §10).
* ``put``, ``get`` and ``provides`` name topics: no ``+`` or ``#``, and
  ``$SYS/...`` belongs to the server; ``requests`` takes filters.
* A binary frame gets an error reply, like any other bad message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from wsplex.app import (
    LISTING_LIMIT,
    Budget,
    ClientInfo,
    Context,
    HookResult,
    Outgoing,
    Protocol,
    Publication,
    Sender,
    Session,
    filter_error,
    is_server_topic,
    too_soon,
    topic_error,
)
from wsplex.protocols.jsonsvc.wire import (
    HEADER_LIMIT,
    NAME_LIMIT,
    SERVER_NAME,
    Message,
    WireError,
    dump,
    parse,
    private_receiver,
    valid_name,
    with_sender,
)

#: The hub scope of client names.
NAME_SCOPE: Final = SERVER_NAME
_PROVIDERS: Final = "jsonsvc:provider:"
_WAITING: Final = "JSONsvc.waiting:"

COMMANDS: Final = ("clients", "services", "whoami", "help")

HELP = f"""\
Every message is a JSON object header, optionally followed by '>' and raw data:
  {{"from":"sensor","put":"temp"}}>21.5
Header keys:
  from      your name (required; the first message registers it, 1-{NAME_LIMIT} printable
            characters; the connection keeps it and later messages go out under it)
  to        a client name (the message goes to that client only), or "JSONsvc"
  provides  service name(s) you offer
  requests  service name(s) to be pushed to you whenever a new value is put
  get       service name(s) to send you now: the latest value, or asked of the provider
  put       service data: kept as the latest value and pushed to every requester
  cmd       with "to":"JSONsvc": clients, services, whoami, help
Any other key is passed through to the receiver. Errors come back as
  {{"from":"JSONsvc","to":"you","error":"..."}}
Headers are limited to {HEADER_LIMIT} characters; the data to the message size limit."""


def providers_channel(service: str) -> str:
    return _PROVIDERS + service


def waiting_prefix(service: str) -> str:
    """Service names are printable, so the newline ends the name unambiguously."""
    return f"{_WAITING}{service}\n"


@dataclass(slots=True)
class Peer:
    """One connection's JSONsvc state (``session.state``)."""

    name: str | None = None
    sender: Sender | None = None  # the publications' sender, once named
    waiting: set[str] = field(default_factory=set)  # waiting keys of its forwarded gets
    listings: Budget | None = None  # clients and services, made on first use


class JSONsvcProtocol(Protocol):
    name = SERVER_NAME
    description = "Named peers and services: JSON headers, routing by name, latest values pushed."
    help = HELP
    text_only = True

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        # Services known to have a value: spares each put of a known service a
        # directory read. Only a hint: a cleared value makes the next put look
        # like a later one, which only skips answering gets that cannot wait.
        self._valued: set[str] = set()

    def on_connect(self, session: Session) -> HookResult:
        session.state = Peer()
        return None

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        peer: Peer = session.state
        if type(message) is not str:
            self._error(session, peer.name, "JSONsvc takes text messages: a JSON header, then '>' and data")
            return None
        name = peer.name
        if name is not None:
            # The hot path, a message to a client of this node: no coroutine.
            to = private_receiver(message, name)
            target = self.hub.holder_here(NAME_SCOPE, to) if to is not None else None
            if target is not None:
                self.hub.send_to(target, Outgoing.text(message))
                return None
        parsed = parse(message)
        if type(parsed) is WireError:
            self._error(session, name or parsed.sender, parsed.reason)
            return None
        assert type(parsed) is Message
        return self._handle(session, peer, parsed)

    def on_disconnect(self, session: Session, code: int) -> HookResult:
        peer: Peer = session.state
        if peer is None or peer.name is None:
            return None
        return self._leave(session, peer, peer.name)

    # -- the topic space (SPEC §10) ----------------------------------------------

    def render(self, publication: Publication) -> Outgoing | None:
        """A publication of another protocol, as a JSONsvc requester receives it."""
        text = publication.text
        if text is None:
            return None
        header = dump({"from": publication.sender.seen_by(self.name), "put": publication.topic})
        return Outgoing.text(f"{header}>{text}")

    # -- one message -----------------------------------------------------------

    async def _handle(self, session: Session, peer: Peer, message: Message) -> None:
        name = peer.name
        if name is None:
            name = await self._register(session, peer, message.sender)
            if name is None:
                return
        if message.to is not None and message.to != SERVER_NAME:
            await self._route(session, name, message)
            return
        problem = self._check_topics(message)
        if problem is not None:
            self._error(session, name, problem)
            return
        refused = [s for s in message.provides if not self.hub.join(providers_channel(s), session)]
        refused += [s for s in message.requests if not self.hub.subscribe(s, session)]
        if refused:
            self._error(session, name, f"too many services for one connection: refused "
                        f"{', '.join(map(repr, refused))}")
        if message.put:
            await self._put(session, name, message)
        if message.get:
            await self._get(session, peer, name, message)
        command = message.header.get("cmd")
        if command is not None:
            await self._command(session, name, command)

    @staticmethod
    def _check_topics(message: Message) -> str | None:
        """Service names are topics (SPEC §10): ``requests`` takes filters, the rest names."""
        for service in message.requests:
            problem = filter_error(service)
            if problem is not None:
                return f'"requests": {problem}'
        for key, services in (("put", message.put), ("get", message.get), ("provides", message.provides)):
            for service in services:
                problem = topic_error(service)
                if problem is None and is_server_topic(service) and key != "get":
                    problem = f"topic {service!r} is reserved for the server"
                if problem is not None:
                    return f'"{key}": {problem}'
        return None

    async def _register(self, session: Session, peer: Peer, claimed: str) -> str | None:
        """The first message's ``from`` becomes the connection's name, if it is free."""
        if not valid_name(claimed):
            reason = (
                f"name {claimed!r} is reserved" if claimed == SERVER_NAME
                else f"invalid name {claimed!r}: 1-{NAME_LIMIT} printable characters without ':'"
            )
            self._error(session, claimed, reason)
            return None
        if not await self.hub.claim_name(NAME_SCOPE, claimed, session):
            self._error(session, claimed, f"name {claimed!r} is taken")
            return None
        peer.name = session.name = claimed
        peer.sender = Sender(self.name, claimed)
        self.hub.touch(session)
        return claimed

    async def _route(self, session: Session, name: str, message: Message) -> None:
        assert message.to is not None
        target = await self.hub.lookup_name(NAME_SCOPE, message.to)
        if target is None:
            self._error(session, name, f"unknown destination {message.to!r}: no client has that name")
            return
        self.hub.send_to(target, Outgoing.text(with_sender(message, name)))

    # -- services --------------------------------------------------------------

    async def _put(self, session: Session, name: str, message: Message) -> None:
        """Publish the data, retained, on each service's topic; answer waiting getters."""
        native = Outgoing.text(with_sender(message, name))
        payload = message.data or ""
        sender = session.state.sender
        for service in message.put:
            # Providing is presence only: past --max-subscriptions the put still goes out.
            self.hub.join(providers_channel(service), session)
            first = service not in self._valued and not await self.hub.retained(service)
            self._valued.add(service)
            if not self.hub.publish(Publication(service, payload, sender, retain=True, native=native)):
                self._error(session, name, f"value of {service!r} not kept: it was pushed to the "
                            "requesters, but the server keeps no more values of this size or number")
            if first:
                await self._answer_waiting(service, native)

    async def _answer_waiting(self, service: str, outgoing: Outgoing) -> None:
        """Clients whose ``get`` went to the provider get the first ``put`` once, unless
        they already got it as requesters.

        Only the first ``put`` of a service can have clients waiting: once a value
        exists, ``get`` answers from it. So the scan of waiting keys is off the hot path.
        """
        waiting = await self.hub.values(waiting_prefix(service))
        if not waiting:
            return
        requesters = {client.id for client in await self.hub.subscribers(service)}
        for key, session_id in waiting.items():
            await self.hub.delete_value(key)
            if session_id not in requesters:
                self.hub.send_to(session_id, outgoing)

    async def _get(self, session: Session, peer: Peer, name: str, message: Message) -> None:
        """Answer from the retained publication, or forward the request to the providers."""
        providers: dict[str, None] = {}  # session ids, each asked once
        for service in message.get:
            if await self._answer_from_value(session, service):
                continue
            found = await self.hub.members(providers_channel(service))
            if not found:
                self._error(session, name, f"service {service!r} has no provider")
                continue
            key = waiting_prefix(service) + session.id
            await self.hub.set_value(key, session.id)
            # A first put may have landed since the value was read, and missed this key.
            if await self._answer_from_value(session, service):
                await self.hub.delete_value(key)
                continue
            peer.waiting.add(key)
            providers.update(dict.fromkeys(client.id for client in found))
        if providers:
            outgoing = Outgoing.text(with_sender(message, name))
            for session_id in providers:
                self.hub.send_to(session_id, outgoing)

    async def _answer_from_value(self, session: Session, service: str) -> bool:
        found = await self.hub.retained(service)
        if not found:
            return False
        latest = found[0]
        message = latest.native if latest.native is not None and latest.sender.protocol == self.name \
            else self.render(latest)
        if message is None:  # a retained payload that is not text: no value for JSONsvc
            return False
        self._valued.add(service)
        session.send(message)
        return True

    # -- server commands -------------------------------------------------------

    async def _command(self, session: Session, name: str, command: object) -> None:
        if not isinstance(command, str) or command not in COMMANDS:
            self._error(session, name, f"unknown command {command!r} (try: help)")
            return
        reply: dict[str, Any] = {"from": SERVER_NAME, "to": name, "cmd": command}
        if command in ("clients", "services"):
            peer: Peer = session.state
            if peer.listings is None:
                peer.listings = Budget()
            wait = peer.listings.take()
            if wait:
                self._error(session, name, too_soon(wait))
                return
        if command == "whoami":
            reply["name"] = name
        elif command == "clients":
            names = sorted(await self.hub.names(NAME_SCOPE))
            reply["clients"] = names[:LISTING_LIMIT]
            if len(names) > LISTING_LIMIT:
                reply["more"] = len(names) - LISTING_LIMIT
        elif command == "services":
            reply["services"], more = await self._services()
            if more:
                reply["more"] = more
        else:
            reply["commands"] = list(COMMANDS)
            reply["help"] = HELP
        session.send_text(dump(reply))

    async def _services(self) -> tuple[dict[str, dict[str, Any]], int]:
        """Every service with a provider, a JSONsvc requester or a value, across the
        cluster: the first :data:`LISTING_LIMIT` by name, and how many more there are."""
        latest = {p.topic: p for p in await self.hub.retained("#")}
        services = set(latest)
        services.update(c[len(_PROVIDERS):] for c in await self.hub.channels(_PROVIDERS))
        requesters: dict[str, list[str]] = {}
        for topic_filter in await self.hub.filters(""):
            names = _names(c for c in await self.hub.subscribers(topic_filter) if c.protocol == self.name)
            if names:
                requesters[topic_filter] = names
        services.update(requesters)
        result: dict[str, dict[str, Any]] = {}
        listed = sorted(services)
        for service in listed[:LISTING_LIMIT]:
            value = latest.get(service)
            result[service] = {
                "providers": _names(await self.hub.members(providers_channel(service))),
                "requesters": requesters.get(service, []),
                "updated": value.time if value else None,
                "updated_by": value.sender.seen_by(self.name) if value else None,
            }
        return result, max(0, len(listed) - LISTING_LIMIT)

    # -- leaving and errors ----------------------------------------------------

    async def _leave(self, session: Session, peer: Peer, name: str) -> None:
        """Free the name and forget pending gets; the hub drops subscriptions and channels."""
        await self.hub.release_name(NAME_SCOPE, name, session)
        for key in peer.waiting:
            await self.hub.delete_value(key)

    def _error(self, session: Session, sender: str | None, reason: str) -> None:
        """SPEC §5: every error is a reply from the server; the connection stays open."""
        session.send_text(dump({"from": SERVER_NAME, "to": sender, "error": reason}))


def _names(clients: Iterable[ClientInfo]) -> list[str]:
    return sorted({client.name for client in clients if client.name is not None})
