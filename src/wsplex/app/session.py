"""A Session is one client connection as protocols and the hub see it.

It knows nothing about the WebSocket library: the server gives it a
:class:`Link` (write a pre-encoded frame, close with a code) and feeds it
messages. Protocol hooks run in arrival order. A hook may be a plain function
(the fast path, no task) or return an awaitable; while one is running, later
events for the same session wait in a backlog, so a protocol never sees its
messages reordered by an ``await``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, Protocol
from urllib.parse import parse_qsl

from wsplex.app.outgoing import Outgoing
from wsplex.ws.close import CloseCode

log = logging.getLogger("wsplex.session")


class Link(Protocol):
    """What a session needs from its connection; ``server.py`` implements it."""

    def write_frame(self, frame: bytes) -> None:
        """Queue one encoded frame for this connection."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with ``code`` and ``reason``."""


#: While a hook waits, later events queue; past either mark the session asks its link
#: to stop reading (``pause_reading``, if the link has it) until the queue is down to
#: a quarter: a client that pipelines requests whose answers need Redis round trips
#: cannot make the node hold its messages without bound (issue 17 item 8).
BACKLOG_EVENTS = 256
BACKLOG_BYTES = 4 << 20


class Backlog(deque[tuple["Hook", tuple[Any, ...]]]):
    """The events waiting behind a running hook, with the message bytes they hold."""

    __slots__ = ("paused", "size")

    def __init__(self) -> None:
        super().__init__()
        self.size = 0
        self.paused = False


def _message_size(args: tuple[Any, ...]) -> int:
    if args:
        first = args[0]
        if type(first) is str or type(first) is bytes:
            return len(first)
    return 0


#: What a hook returns: None when it is done, or an awaitable the session waits for.
HookResult = Awaitable[None] | None
Hook = Callable[..., HookResult]


class Session:
    """One connected client: identity for the hub, sending and closing for protocols."""

    __slots__ = (
        "_backlog",
        "_link",
        "_query",
        "_task",
        "address",
        "channels",
        "closed",
        "filters",
        "id",
        "name",
        "protocol",
        "remote",
        "since",
        "state",
    )

    def __init__(
        self,
        session_id: str,
        protocol: str,
        remote: str,
        link: Link,
        query: str = "",
        address: str | None = None,
    ) -> None:
        self.id = session_id
        self.protocol = protocol
        self.remote = remote  # host:port, for people
        self.address = remote if address is None else address  # the host: what per-client limits count
        self.since = time.time()
        self.name: str | None = None
        self._query = query  # as it came in the URL: a dict of it is ~300 bytes per idle connection
        self.state: Any = None  # free for the protocol's per-connection state
        self.closed = False
        #: The topic filters and channels this session is in, kept by the hub so a
        #: disconnect costs the session's own subscriptions; None until the first.
        #: One filter is the string itself, a set from the second (``hub/local.py``).
        self.filters: str | set[str] | None = None
        self.channels: set[str] | None = None
        self._link = link
        self._task: asyncio.Future[None] | None = None  # the hook being awaited
        self._backlog: Backlog | None = None

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.protocol} {self.remote}>"

    @property
    def query(self) -> dict[str, str]:
        """The handshake URL's query parameters, parsed on each read (RFC 3986 §3.4).

        A parameter given without a value (``?name=``) is there, as ``""``.
        """
        return dict(parse_qsl(self._query, keep_blank_values=True)) if self._query else {}

    # -- sending -------------------------------------------------------------

    def send(self, message: Outgoing) -> None:
        """Send a message built once (``Outgoing``); fan-out reuses its encoded frame."""
        if not self.closed:
            self._link.write_frame(message.frame)

    def send_text(self, text: str) -> None:
        self.send(Outgoing.text(text))

    def send_bytes(self, data: bytes) -> None:
        self.send(Outgoing.binary(data))

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close this connection with ``code`` and ``reason`` (RFC 6455 §7.1.2)."""
        if not self.closed:
            self.closed = True
            self._link.close(code, reason)

    # -- running protocol hooks in order -------------------------------------

    def run(self, hook: Hook, *args: Any) -> None:
        """Run a protocol hook now, or after the hooks still running for this session."""
        if self._task is not None:
            backlog = self._backlog
            if backlog is None:
                backlog = self._backlog = Backlog()
            backlog.append((hook, args))
            backlog.size += _message_size(args)
            if not backlog.paused and (len(backlog) > BACKLOG_EVENTS or backlog.size > BACKLOG_BYTES):
                backlog.paused = True
                pause = getattr(self._link, "pause_reading", None)
                if pause is not None:
                    pause()
            return
        try:
            result = hook(self, *args)
            if result is not None and type(result) is CoroutineType:  # an ``async def`` hook
                result = _start(result)
        except Exception:
            self._crashed(hook)
            return
        if result is not None:
            if self._task is not None:
                # Before its first wait the hook made the session wait on something
                # else (a Redis hub's barrier after a subscribe): the hook's rest
                # comes first in line after that, not beside it.
                if self._backlog is None:
                    self._backlog = Backlog()
                self._backlog.appendleft((_resume, (result,)))
            else:
                self._task = asyncio.ensure_future(self._await(hook, result))

    async def _await(self, hook: Hook, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception:
            self._crashed(hook)
        self._task = None
        backlog = self._backlog
        while backlog and self._task is None:
            next_hook, args = backlog.popleft()
            backlog.size -= _message_size(args)
            self.run(next_hook, *args)
        if backlog is not None and backlog.paused and (
            len(backlog) <= BACKLOG_EVENTS // 4 and backlog.size <= BACKLOG_BYTES // 4
        ):
            backlog.paused = False
            resume = getattr(self._link, "resume_reading", None)
            if resume is not None:
                resume()

    def _crashed(self, hook: Hook) -> None:
        """A protocol that raises closes only its own connection, with 1011."""
        name = getattr(hook, "__qualname__", repr(hook))
        log.exception("protocol hook %s failed for %s; closing it with 1011", name, self)
        self.close(CloseCode.INTERNAL_ERROR, "internal error")


def _resume(session: Session, pending: Awaitable[None]) -> Awaitable[None]:
    """The rest of a hook that had to wait its turn (see :meth:`Session.run`)."""
    return pending


def _start(coroutine: Coroutine[Any, Any, Any]) -> Awaitable[Any] | None:
    """Run a coroutine hook now, up to its first real wait (what Python 3.12 calls an
    eager task). None if it finished without waiting, else the rest of it to await.

    With the in-memory hub, the directory calls a hook awaits (names, history)
    never wait, so chat and JSONsvc messages finish inline: no task per message,
    and the messages of one read still go out in one write per receiver.
    """
    try:
        waiting_on = coroutine.send(None)
    except StopIteration:
        return None
    return _Started(coroutine, waiting_on)


class _Started:
    """The rest of a coroutine that already yielded ``waiting_on`` (a future, or None
    for a bare yield): awaiting this resumes it exactly as ``await coroutine`` would
    have from that point (PEP 380's ``yield from``, entered half-way)."""

    __slots__ = ("_coroutine", "_waiting_on")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coroutine = coroutine
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, waiting_on = self._coroutine, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # cancellation, thrown in by the task
                try:
                    waiting_on = coroutine.throw(exc)
                except StopIteration as done:
                    return done.value
                continue
            try:
                waiting_on = coroutine.send(sent)
            except StopIteration as done:
                return done.value
