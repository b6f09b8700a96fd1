"""A real WAMP client for the tests: Autobahn's asyncio ``ApplicationSession`` over a
real socket to an in-process server, one serialisation per client.

``await wamp_client(server, "json")`` returns a joined :class:`Client`; its
futures (``left``, ``closed``) and queues let a test wait for what the router
sends without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import Challenge, CloseDetails, ComponentConfig, SessionDetails

from support.processes import WsplexProcess
from wsplex.server import Server

TIMEOUT = 5.0
SERIALIZERS = ("json", "msgpack")
T = TypeVar("T")


def make(cls: type[T], **kwargs: Any) -> T:
    """An Autobahn object (``make(CallOptions, timeout=100)``): Autobahn's constructors
    are not annotated, so strict mypy would refuse to call them directly."""
    return cls(**kwargs)


class Client(ApplicationSession):
    """An Autobahn session that reports joining, leaving and disconnecting as futures."""

    def __init__(self, config: ComponentConfig, ticket: tuple[str, str] | None = None) -> None:
        super().__init__(config)
        self.ticket = ticket  # (authid, ticket) for ticket authentication
        loop = asyncio.get_running_loop()
        self.joined: asyncio.Future[SessionDetails] = loop.create_future()
        self.left: asyncio.Future[CloseDetails] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def onConnect(self) -> None:
        if self.ticket is None:
            super().onConnect()
        else:
            self.join(self.config.realm, authmethods=["ticket"], authid=self.ticket[0])

    def onChallenge(self, challenge: Challenge) -> str:
        assert challenge.method == "ticket" and self.ticket is not None
        return self.ticket[1]

    def onJoin(self, details: SessionDetails) -> None:
        if not self.joined.done():
            self.joined.set_result(details)

    def onLeave(self, details: CloseDetails) -> Any:
        if not self.left.done():
            self.left.set_result(details)
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(f"not joined: {details.reason} {details.message}"))
        return super().onLeave(details)

    def onDisconnect(self) -> None:
        super().onDisconnect()
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.joined.done():
            self.joined.set_exception(RuntimeError("disconnected before joining"))


async def wamp_client(server: Server | WsplexProcess, serializer: str = "json", realm: str = "realm1",
                      ticket: tuple[str, str] | None = None) -> Client:
    """A client joined to ``realm`` over ``wamp.2.SERIALIZER``, with ticket authentication
    as ``(authid, ticket)`` if given."""
    return await connect_client(server, Client(make(ComponentConfig, realm=realm), ticket), serializer)


async def connect_client(server: Server | WsplexProcess, session: Client, serializer: str = "json") -> Client:
    """Connect ``session`` to ``server`` and wait until it joined (or raise why not)."""
    url = f"ws://127.0.0.1:{server.port}/"
    codec = make(JsonSerializer) if serializer == "json" else make(MsgPackSerializer)
    factory = make(WampWebSocketClientFactory, factory=lambda: session, url=url, serializers=[codec])
    loop = asyncio.get_running_loop()
    await loop.create_connection(factory, "127.0.0.1", server.port)
    await asyncio.wait_for(session.joined, TIMEOUT)
    return session


@asynccontextmanager
async def wamp_clients(server: Server | WsplexProcess) -> AsyncIterator[list[Client]]:
    """Collects clients opened in the block and closes them at its end."""
    opened: list[Client] = []
    try:
        yield opened
    finally:
        for client in opened:
            if client.is_attached():
                client.leave()
            if client._transport is not None:
                client.disconnect()
            await asyncio.wait_for(asyncio.shield(client.closed), TIMEOUT)
