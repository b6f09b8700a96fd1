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

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from wsplex.app.hub import Hub
from wsplex.app.session import Session
from wsplex.config import Settings
from wsplex.stats import Stats

if TYPE_CHECKING:
    from wsplex.app.registry import ProtocolRegistry

HookResult = Awaitable[None] | None


@dataclass
class Context:
    """What the server shares with its protocols."""

    settings: Settings
    hub: Hub
    stats: Stats
    registry: ProtocolRegistry
    shutdown: Callable[[], None] = field(default=lambda: None)

    @property
    def node_id(self) -> str:
        return self.hub.node_id


class Protocol:
    """Subclass, set ``name``, ``description`` and ``help``, override the hooks."""

    #: The exact, case-sensitive ``Sec-WebSocket-Protocol`` token (RFC 6455 §1.9).
    name: ClassVar[str] = ""
    #: One line for ``/protocols`` and the protocol picker.
    description: ClassVar[str] = ""
    #: What a person needs to use it: shown by HELP in the web client.
    help: ClassVar[str] = ""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.hub = context.hub

    async def start(self) -> None:
        """Called once when the server starts, before the first connection."""

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
