"""The base class every application protocol derives from (SPEC §7).

A protocol is one object per server, shared by all its connections; per-connection
state goes on ``session.state`` (or in the protocol, keyed by ``session.id``).
It reaches other connections only through ``self.hub``, so the same code runs on
one node or many.

Hooks are plain methods. A hook that needs to wait (a name claim on a Redis hub,
say) returns an awaitable, typically by being ``async def``; the session runs
it and holds later events for that connection until it is done. Hooks that
never wait stay plain functions and cost no task.

A hook that raises closes only its own connection, with 1011; the traceback is
logged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar
from typing import Protocol as Interface

from wsplex.app.hub import Hub
from wsplex.app.outgoing import Outgoing
from wsplex.app.publication import Publication
from wsplex.app.session import HookResult, Session
from wsplex.app.users import Users
from wsplex.config import Settings
from wsplex.stats import Stats


class ProtocolTable(Interface):
    """The enabled protocols, as ``command`` shows them (implemented by the registry)."""

    @property
    def names(self) -> list[str]: ...

    def describe(self) -> list[dict[str, str]]: ...

    def takes_raw_text(self, name: str) -> bool: ...

    def __contains__(self, name: object) -> bool: ...


@dataclass
class Context:
    """What the server shares with its protocols."""

    settings: Settings
    hub: Hub
    stats: Stats
    registry: ProtocolTable
    shutdown: Callable[[], None] = field(default=lambda: None)

    @property
    def node_id(self) -> str:
        return self.hub.node_id

    @cached_property
    def users(self) -> Users:
        """The ``--users`` file: ``users.check(name, password)``; not ``enabled`` without one."""
        path = self.settings.users_file
        return Users.load(path) if path else Users()


class Protocol:
    """Subclass, set ``name``, ``description`` and ``help``, override the hooks."""

    #: The exact, case-sensitive ``Sec-WebSocket-Protocol`` token (RFC 6455 §1.9).
    name: ClassVar[str] = ""
    #: One line for ``/protocols`` and the protocol picker.
    description: ClassVar[str] = ""
    #: What a person needs to use it: shown by HELP in the web client.
    help: ClassVar[str] = ""
    #: A text protocol does not receive publications whose payload is not UTF-8
    #: (SPEC §10); the hub skips them and counts them in ``/metrics``.
    text_only: ClassVar[bool] = False
    #: A line of text, sent as one message, is something this protocol's clients
    #: read (``command``'s ``broadcast PROTOCOL TEXT`` sends one). False for the
    #: framed standard protocols (MQTT, STOMP, WAMP), whose clients it would break.
    raw_text: ClassVar[bool] = True

    def __init__(self, context: Context) -> None:
        self.context = context
        self.hub = context.hub

    async def start(self) -> None:
        """Called once when the server starts, before the first connection."""

    def shutting_down(self) -> None:
        """Called once when shutdown starts, just before every connection is closed with
        1001: the moment to say goodbye in the protocol's own terms (MQTT 5.0's DISCONNECT
        0x8B). Sending is all it may do; the closes follow at once."""

    def kicked(self, session: Session, code: int, reason: str) -> None:
        """The hub is about to close ``session`` because someone asked it to
        (:meth:`Hub.close_session`: ``kick``, a takeover from another node), with ``code``
        and ``reason``: the moment to say why in the protocol's own terms (MQTT 5.0's
        DISCONNECT 0x8E or 0x98). Sending is all it may do; the close follows at once."""

    async def stop(self) -> None:
        """Called once at shutdown, after every connection is closed."""

    def on_connect(self, session: Session) -> HookResult:
        """A client chose this protocol and the handshake completed."""
        return None

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        """One whole message: ``str`` for a text message, ``bytes`` for binary."""
        return None

    def on_disconnect(self, session: Session, code: int) -> HookResult:
        """The connection is gone; ``code`` is the close code (1006 if none)."""
        return None

    # -- the topic space (SPEC §10) --------------------------------------------

    def render(self, publication: Publication) -> Outgoing | None:
        """This protocol's message for ``publication``, or None to drop it.

        Called once per publication for all of this protocol's receivers on a
        node. The default sends the payload as it is, text or binary (echo).
        """
        return publication.as_sent()

    def deliver(
        self, publication: Publication, sessions: Mapping[str, Session], exclude: str | None
    ) -> None:
        """Hand ``publication`` to this node's ``sessions`` (by id) of this protocol
        that subscribed to it, but the one whose id is ``exclude``.

        Rendered once for all of them: the sender protocol's own rendering
        (``publication.native``) for receivers of the same protocol, else
        :meth:`render`. Override for per-receiver work (MQTT's QoS, say).
        """
        native = publication.native
        message = native if native is not None and publication.sender.protocol == self.name else (
            self.render(publication)
        )
        if message is None:
            return
        skipped = sessions.get(exclude) if exclude is not None else None
        for session in list(sessions.values()):  # a copy: a send may close a receiver
            if session is not skipped:
                session.send(message)
