"""``wamp.2.json`` and ``wamp.2.msgpack``: a WAMP router (SPEC §13, wamp-proto.org).

Two subprotocol names, one router: each class only picks the serialisation
(:mod:`.wire`); the router (:mod:`.router`) is one object per hub, so a JSON
caller reaches a MessagePack callee. Realm ``realm1`` is the topic space of
SPEC §10 (topic URI ``chat.lobby`` is topic ``chat/lobby``); other realms are
WAMP's only (across nodes with ``--redis``). What WELCOME announces is exactly
what is implemented (:data:`.router.ROLES`, plus the session meta API where it is
served: :data:`.router.META_ROLES`).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import ClassVar

from wsplex.app import Context, HookResult, Hub, Outgoing, Protocol, Publication, Session
from wsplex.protocols.wamp.router import Peer, Router
from wsplex.protocols.wamp.wire import JSON, MSGPACK, Serializer

_routers: weakref.WeakKeyDictionary[Hub, Router] = weakref.WeakKeyDictionary()


def router_for(context: Context) -> Router:
    """The one router of a server (of its hub), shared by both serialisations."""
    router = _routers.get(context.hub)
    if router is None:
        users = context.users
        settings = context.settings
        router = _routers[context.hub] = Router(context.hub, users.check if users.enabled else None,
                                                settings.redis_ttl, settings.max_subscriptions,
                                                clustered=settings.redis_url is not None)
    return router


HELP = (
    "WAMP v2 (Basic Profile and the Advanced features WELCOME announces), for Autobahn clients.\n"
    "Join any realm; realm1 is the topic space: topic URI chat.lobby is the chat room lobby,\n"
    "a.b.c is topic a/b/c. Events from other protocols carry the payload as first argument\n"
    "and the sender as publisher_authid (chat:alice); your publications reach them as\n"
    "wamp:SESSION. Other realms are WAMP-only. With --users, join with ticket authentication:\n"
    "authid your user name, the ticket your password."
)


class WampProtocol(Protocol):
    """The router behind both subprotocol names; subclasses choose the serialisation."""

    serializer: ClassVar[Serializer]
    raw_text = False  # WAMP messages only: a line of text is a protocol violation

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.router = router_for(context)

    def shutting_down(self) -> None:
        self.router.shutting_down(self.serializer)

    async def stop(self) -> None:
        self.router.close()

    def on_connect(self, session: Session) -> None:
        session.state = Peer(session, self.serializer)

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        peer = session.state
        if isinstance(peer, Peer) and not session.closed:
            return self.router.receive(peer, message)
        return None

    def on_disconnect(self, session: Session, code: int) -> None:
        peer = session.state
        if isinstance(peer, Peer):
            self.router.leave(peer)

    def render(self, publication: Publication) -> Outgoing | None:
        return None  # every event is built per subscription: see deliver()

    def deliver(
        self, publication: Publication, sessions: Mapping[str, Session], exclude: str | None
    ) -> None:
        """Realm1's subscribers of this serialisation get an EVENT per matching subscription."""
        self.router.deliver_bridged(publication, self.serializer, exclude, sessions)


class WampJSON(WampProtocol):
    name = "wamp.2.json"
    description = "WAMP v2 router, JSON serialisation (Autobahn): RPC and pub/sub in realms."
    help = HELP
    serializer = JSON


class WampMsgpack(WampProtocol):
    name = "wamp.2.msgpack"
    description = "WAMP v2 router, MessagePack serialisation (Autobahn): RPC and pub/sub in realms."
    help = HELP
    serializer = MSGPACK
