"""``JSONsvc``: named peers and services (SPEC §5); the wire format is in :mod:`.wire`.

Every client has a name; any client sends to any other by name, and clients
provide and request named services whose latest value the server keeps.
Everything shared lives behind the hub, so the same code serves one process
or a Redis cluster:

* client names: hub names in scope ``JSONsvc`` (claimed by the first message);
* requesters of service S: subscribers of topic ``jsonsvc:svc:S``; a ``put``
  is published there, so it fans out on every node;
* providers of S: subscribers of topic ``jsonsvc:provider:S`` (presence only,
  nothing is published there); a service may have several providers;
* the latest value of S: hub value ``JSONsvc.value:S`` (the message as
  requesters got it, who sent it, and when);
* clients waiting for the answer to a forwarded ``get``: hub values
  ``JSONsvc.waiting:S\\n<session id>``, answered and deleted by the next ``put``.

Decisions where SPEC §5 is silent (also in the README):

* ``to`` decides who handles a message. ``to`` a client name: the message is
  private and only routed, unchanged except ``from``; the server does not act
  on ``put``/``get``/``provides``/``requests`` in it. No ``to``, or
  ``"to":"JSONsvc"``: the server acts on those keys, then on ``cmd``.
* A connection keeps the name its first message claimed. A later message with
  another ``from`` is handled as coming from the registered name (``from`` is
  rewritten): a client cannot rename itself or speak as another.
* ``put`` makes its sender a provider of the service, as ``provides`` does.
  ``requests`` subscribes to future values only; ask with ``get`` for the
  current one (both may be in one message). A latest value outlives its
  provider's connection, so ``get`` keeps answering from it.
* A binary frame gets an error reply, like any other bad message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from wsplex.app.hub import ClientInfo
from wsplex.app.outgoing import Outgoing
from wsplex.app.protocol import Context, HookResult, Protocol
from wsplex.app.session import Session
from wsplex.protocols.jsonsvc.wire import (
    HEADER_LIMIT,
    NAME_LIMIT,
    SERVER_NAME,
    Message,
    WireError,
    dump,
    parse,
    valid_name,
    with_sender,
)

#: The hub scope of client names.
NAME_SCOPE: Final = SERVER_NAME
_REQUESTERS: Final = "jsonsvc:svc:"
_PROVIDERS: Final = "jsonsvc:provider:"
_VALUE: Final = "JSONsvc.value:"
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


def requesters_topic(service: str) -> str:
    return _REQUESTERS + service


def providers_topic(service: str) -> str:
    return _PROVIDERS + service


def value_key(service: str) -> str:
    return _VALUE + service


def waiting_prefix(service: str) -> str:
    """Service names are printable, so the newline ends the name unambiguously."""
    return f"{_WAITING}{service}\n"


@dataclass(slots=True)
class Peer:
    """One connection's JSONsvc state (``session.state``)."""

    name: str | None = None
    waiting: set[str] = field(default_factory=set)  # waiting keys of its forwarded gets


class JSONsvcProtocol(Protocol):
    name = SERVER_NAME
    description = "Named peers and services: JSON headers, routing by name, latest values pushed."
    help = HELP

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        # Services known to have a value. Values are never deleted, so this only
        # grows, and it spares each put of a known service a directory read.
        self._valued: set[str] = set()

    def on_connect(self, session: Session) -> HookResult:
        session.state = Peer()
        return None

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        peer: Peer = session.state
        if isinstance(message, bytes):
            self._error(session, peer.name, "JSONsvc takes text messages: a JSON header, then '>' and data")
            return None
        parsed = parse(message)
        if isinstance(parsed, WireError):
            self._error(session, peer.name or parsed.sender, parsed.reason)
            return None
        return self._handle(session, peer, parsed)

    def on_disconnect(self, session: Session, code: int) -> HookResult:
        peer: Peer = session.state
        if peer is None or peer.name is None:
            return None
        return self._leave(session, peer, peer.name)

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
        for service in message.provides:
            self.hub.subscribe(providers_topic(service), session)
        for service in message.requests:
            self.hub.subscribe(requesters_topic(service), session)
        if message.put:
            await self._put(session, name, message)
        if message.get:
            await self._get(session, peer, name, message)
        command = message.header.get("cmd")
        if command is not None:
            await self._command(session, name, command)

    async def _register(self, session: Session, peer: Peer, claimed: str) -> str | None:
        """The first message's ``from`` becomes the connection's name, if it is free."""
        if not valid_name(claimed):
            reason = (
                f"name {claimed!r} is reserved" if claimed == SERVER_NAME
                else f"invalid name {claimed!r}: 1-{NAME_LIMIT} printable characters"
            )
            self._error(session, claimed, reason)
            return None
        if not await self.hub.claim_name(NAME_SCOPE, claimed, session):
            self._error(session, claimed, f"name {claimed!r} is taken")
            return None
        peer.name = session.name = claimed
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
        """Keep the message as the latest value, push it to requesters and waiting getters."""
        text = with_sender(message, name)
        outgoing = Outgoing.text(text)
        record = dump({"message": text, "from": name, "time": time.time()})
        for service in message.put:
            self.hub.subscribe(providers_topic(service), session)
            first = service not in self._valued and await self.hub.get_value(value_key(service)) is None
            await self.hub.set_value(value_key(service), record)
            self._valued.add(service)
            self.hub.publish(requesters_topic(service), outgoing)
            if first:
                await self._answer_waiting(service, outgoing)

    async def _answer_waiting(self, service: str, outgoing: Outgoing) -> None:
        """Clients whose ``get`` went to the provider get the first ``put`` once, unless
        they already got it as requesters.

        Only the first ``put`` of a service can have clients waiting: once a value
        exists, ``get`` answers from it. So the scan of waiting keys is off the hot path.
        """
        waiting = await self.hub.values(waiting_prefix(service))
        if not waiting:
            return
        requesters = {client.id for client in await self.hub.members(requesters_topic(service))}
        for key, session_id in waiting.items():
            await self.hub.delete_value(key)
            if session_id not in requesters:
                self.hub.send_to(session_id, outgoing)

    async def _get(self, session: Session, peer: Peer, name: str, message: Message) -> None:
        """Answer from the latest value, or forward the request to the service's providers."""
        providers: dict[str, None] = {}  # session ids, each asked once
        for service in message.get:
            if await self._answer_from_value(session, service):
                continue
            found = await self.hub.members(providers_topic(service))
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
        record = await self.hub.get_value(value_key(service))
        if record is None:
            return False
        self._valued.add(service)
        session.send_text(orjson.loads(record)["message"])
        return True

    # -- server commands -------------------------------------------------------

    async def _command(self, session: Session, name: str, command: object) -> None:
        if not isinstance(command, str) or command not in COMMANDS:
            self._error(session, name, f"unknown command {command!r} (try: help)")
            return
        reply: dict[str, Any] = {"from": SERVER_NAME, "to": name, "cmd": command}
        if command == "whoami":
            reply["name"] = name
        elif command == "clients":
            reply["clients"] = sorted(await self.hub.names(NAME_SCOPE))
        elif command == "services":
            reply["services"] = await self._services()
        else:
            reply["commands"] = list(COMMANDS)
            reply["help"] = HELP
        session.send_text(dump(reply))

    async def _services(self) -> dict[str, dict[str, Any]]:
        """Every service with a provider, a requester or a value, across the cluster."""
        values = await self.hub.values(_VALUE)
        services = {key[len(_VALUE):] for key in values}
        services.update(t[len(_PROVIDERS):] for t in await self.hub.topics(_PROVIDERS))
        services.update(t[len(_REQUESTERS):] for t in await self.hub.topics(_REQUESTERS))
        result: dict[str, dict[str, Any]] = {}
        for service in sorted(services):
            record = values.get(value_key(service))
            latest = orjson.loads(record) if record is not None else None
            result[service] = {
                "providers": _names(await self.hub.members(providers_topic(service))),
                "requesters": _names(await self.hub.members(requesters_topic(service))),
                "updated": latest["time"] if latest else None,
                "updated_by": latest["from"] if latest else None,
            }
        return result

    # -- leaving and errors ----------------------------------------------------

    async def _leave(self, session: Session, peer: Peer, name: str) -> None:
        """Free the name and forget pending gets; the hub drops the topic subscriptions."""
        await self.hub.release_name(NAME_SCOPE, name, session)
        for key in peer.waiting:
            await self.hub.delete_value(key)

    def _error(self, session: Session, sender: str | None, reason: str) -> None:
        """SPEC §5: every error is a reply from the server; the connection stays open."""
        session.send_text(dump({"from": SERVER_NAME, "to": sender, "error": reason}))


def _names(clients: list[ClientInfo]) -> list[str]:
    return sorted({client.name for client in clients if client.name is not None})

