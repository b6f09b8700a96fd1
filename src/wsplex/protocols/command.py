"""``command``: one command per message, one reply per command (SPEC §4).

For people and scripts operating the server. Every reply is one text message:
plain text by default, or one JSON object when the command ends with
``--json``. Errors are ``error: ...`` (text) or ``{"error": "..."}`` (JSON).

Privileged commands (``kick``, ``broadcast``, ``killserver``) need ``auth TOKEN``
on the same connection first. The token is compared in constant time
(:func:`hmac.compare_digest`). Wrong tokens are logged and throttled per client
address (:class:`AuthThrottle`): a few free attempts, then a lockout that
doubles with each failure, during which ``auth`` is refused without checking.
The throttle is a clock check, never a sleep, so it costs the server nothing.

Cluster-wide answers (``clients``, connection counts in ``status``, ``kick``,
``broadcast``) go through the hub; message counters are this node's.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wsplex.app import (
    LISTING_LIMIT,
    VERSION,
    Budget,
    ClientInfo,
    CloseCode,
    Context,
    HookResult,
    Outgoing,
    Protocol,
    Session,
    protocol_channel,
    too_soon,
)

log = logging.getLogger("wsplex.command")

#: The longest command line accepted, in characters; longer ones get an error.
MAX_LINE_LENGTH = 4096
JSON_FLAG = "--json"


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply, in both shapes: ``text`` for people, ``data`` for ``--json``.

    ``then`` runs once the reply is queued: what must happen after the client
    has its answer (a shutdown, closing the asker's own connection).
    """

    text: str
    data: dict[str, Any]
    then: Callable[[], None] | None = None

    def render(self, as_json: bool) -> str:
        return json.dumps(self.data, ensure_ascii=False) if as_json else self.text


def error(message: str) -> Reply:
    return Reply(f"error: {message}", {"error": message})


def utc_iso(timestamp: float) -> str:
    """``2026-11-25T12:47:48Z``: connection times in ``clients``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m {secs:02d}s"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


class AuthThrottle:
    """Failed ``auth`` attempts per client address, and the lockout they earn.

    The first ``FREE_ATTEMPTS`` failures cost nothing (typos); each later one
    locks the address out for twice as long as the last, up to ``MAX_LOCKOUT``
    seconds. Keyed by address, not connection, so reconnecting does not reset
    it; an address quiet for ``FORGET_AFTER`` seconds starts afresh.
    """

    FREE_ATTEMPTS = 5
    MAX_LOCKOUT = 60.0
    FORGET_AFTER = 600.0
    MAX_TRACKED = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, locked until)

    def wait(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may try now."""
        entry = self._failures.get(address)
        return max(0.0, entry[1] - self._clock()) if entry else 0.0

    def failed(self, address: str) -> int:
        """Record a failure; returns how many in a row this address has made."""
        now = self._clock()
        count, until = self._failures.get(address, (0, now))
        if now - until > self.FORGET_AFTER:
            count = 0
        count += 1
        lockout = 0.0
        if count >= self.FREE_ATTEMPTS:
            lockout = min(2.0 ** (count - self.FREE_ATTEMPTS), self.MAX_LOCKOUT)
        self._failures[address] = (count, now + lockout)
        if len(self._failures) > self.MAX_TRACKED:
            self._forget_old(now)
        return count

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _forget_old(self, now: float) -> None:
        for address in [a for a, (_, until) in self._failures.items() if now - until > self.FORGET_AFTER]:
            del self._failures[address]


@dataclass(slots=True)
class Operator:
    """A command client's per-connection state."""

    authenticated: bool = False
    listings: Budget | None = None  # ``clients`` and ``status``, made on first use


Handler = Callable[[Session, str], "Reply | Awaitable[Reply]"]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    usage: str
    summary: str
    handler: Handler
    privileged: bool = False
    takes_argument: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed command line: the command word, the rest, and whether JSON was asked for."""

    word: str
    argument: str
    as_json: bool

    @classmethod
    def parse(cls, line: str) -> Request:
        stripped = line.strip()
        words = stripped.rsplit(None, 1)
        as_json = bool(words) and words[-1] == JSON_FLAG
        if as_json:
            stripped = stripped.removesuffix(JSON_FLAG).rstrip()
        word, *rest = stripped.split(None, 1) or [""]
        return cls(word, rest[0].strip() if rest else "", as_json)


class CommandProtocol(Protocol):
    name = "command"
    description = "Operate the server: status, clients, protocols; kick, broadcast, killserver."
    help = (
        "One command per message, one reply per command; add --json for a JSON object.\n"
        "help, date, time, status, protocols, clients.\n"
        "auth TOKEN unlocks kick ID, broadcast PROTOCOL TEXT and killserver\n"
        "(the token is set with --admin-token-file or WSPLEX_ADMIN_TOKEN)."
    )

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.throttle = AuthThrottle()
        commands = [
            Command("help", "help", "this list", self._help),
            Command("date", "date", "today's date on the server", self._date),
            Command("time", "time", "the time on the server", self._time),
            Command("status", "status", "version, node, uptime, connections, messages", self._status),
            Command("protocols", "protocols", "the protocols this server speaks", self._protocols),
            Command("clients", "clients", "every connected client", self._clients),
            Command("auth", "auth TOKEN", "unlock the privileged commands on this connection",
                    self._auth, takes_argument=True),
            Command("kick", "kick ID", "close client ID with 1008 'kicked'", self._kick,
                    privileged=True, takes_argument=True),
            Command("broadcast", "broadcast PROTOCOL TEXT", "send TEXT to every client of PROTOCOL",
                    self._broadcast, privileged=True, takes_argument=True),
            Command("killserver", "killserver", "shut the server down (every client gets 1001)",
                    self._killserver, privileged=True),
        ]
        self.commands = {command.name: command for command in commands}

    @property
    def _token(self) -> str | None:
        return self.context.settings.admin_token

    # -- hooks -----------------------------------------------------------------

    def on_connect(self, session: Session) -> HookResult:
        session.state = Operator()
        return None

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        if isinstance(message, bytes):
            session.send_text("error: binary messages are not commands; send text (try: help)")
            return None
        request = Request.parse(message)
        if len(message) > MAX_LINE_LENGTH:
            reply: Reply | Awaitable[Reply] = error(f"command longer than {MAX_LINE_LENGTH} characters")
        else:
            reply = self._run(session, request)
        if isinstance(reply, Reply):
            _send(session, reply, request.as_json)
            return None
        return self._reply_later(session, reply, request.as_json)

    @staticmethod
    async def _reply_later(session: Session, pending: Awaitable[Reply], as_json: bool) -> None:
        _send(session, await pending, as_json)

    def _run(self, session: Session, request: Request) -> Reply | Awaitable[Reply]:
        if not request.word:
            return error("empty command (try: help)")
        command = self.commands.get(request.word.lower())
        if command is None:
            return error(f"unknown command '{request.word}' (try: help)")
        if command.privileged:
            refusal = self._refuse_unprivileged(session)
            if refusal is not None:
                return refusal
        if request.argument and not command.takes_argument:
            return error(f"{command.name} takes no argument (usage: {command.usage})")
        if not request.argument and command.takes_argument:
            return error(f"usage: {command.usage}")
        return command.handler(session, request.argument)

    def _refuse_unprivileged(self, session: Session) -> Reply | None:
        if self._token is None:
            return error("privileged commands are disabled (no admin token configured)")
        if not _authenticated(session):
            return error("not authorized (auth TOKEN first)")
        return None

    # -- information -------------------------------------------------------------

    def _help(self, session: Session, argument: str) -> Reply:
        width = max(len(c.usage) for c in self.commands.values())
        lines = ["commands (one per message; add --json for a JSON reply):"]
        for command in self.commands.values():
            mark = " (privileged)" if command.privileged else ""
            lines.append(f"  {command.usage:<{width}}  {command.summary}{mark}")
        if self._token is None:
            lines.append("privileged commands are disabled: no admin token configured")
        else:
            lines.append("privileged commands need auth TOKEN first on this connection")
        data = {
            "commands": [
                {"name": c.name, "usage": c.usage, "description": c.summary, "privileged": c.privileged}
                for c in self.commands.values()
            ],
            "privileged_enabled": self._token is not None,
        }
        return Reply("\n".join(lines), data)

    @staticmethod
    def _date(session: Session, argument: str) -> Reply:
        now = datetime.now().astimezone()
        day = now.date().isoformat()
        return Reply(f"{day} ({now.strftime('%A')})", {"date": day, "weekday": now.strftime("%A")})

    @staticmethod
    def _time(session: Session, argument: str) -> Reply:
        now = datetime.now().astimezone()
        clock = now.strftime("%H:%M:%S")
        offset = now.strftime("%z")
        zone = now.tzname() or offset
        data = {"time": clock, "timezone": zone, "utc_offset": offset, "unix": round(now.timestamp(), 3)}
        return Reply(f"{clock} {zone}", data)

    async def _status(self, session: Session, argument: str) -> Reply:
        """Counts the cluster's clients, so it reads the whole presence like ``clients``
        and spends the same budget (issue 17 item 6)."""
        refused = _spend_listing(session)
        if refused is not None:
            return refused
        stats = self.context.stats
        connections = dict.fromkeys(self.context.registry.names, 0)
        for client in await self.hub.clients():
            connections[client.protocol] = connections.get(client.protocol, 0) + 1
        total = sum(connections.values())
        per_protocol = ", ".join(f"{name} {count}" for name, count in connections.items())
        text = "\n".join([
            f"wsplex {VERSION} on node {self.context.node_id}",
            f"uptime: {format_duration(stats.uptime)}",
            f"connections: {total} ({per_protocol})",
            f"messages: {stats.messages_in} in, {stats.messages_out} out (this node)",
        ])
        figures = {name: figure.read() for name, figure in sorted(stats.figures.items())}
        if figures:
            text += "\nprotocols: " + ", ".join(f"{name} {value}" for name, value in figures.items())
        data = {
            "version": VERSION,
            "node": self.context.node_id,
            "uptime": round(stats.uptime, 3),
            "connections": connections,
            "connections_total": total,
            "messages_in": stats.messages_in,
            "messages_out": stats.messages_out,
            **figures,
        }
        return Reply(text, data)

    def _protocols(self, session: Session, argument: str) -> Reply:
        table = self.context.registry.describe()
        text = "\n".join(f"{p['name']}: {p['description']}" for p in table)
        return Reply(text, {"protocols": table})

    async def _clients(self, session: Session, argument: str) -> Reply:
        """Every client, oldest first: at most :data:`LISTING_LIMIT` rows, the rest
        counted, and a few listings at once per connection, then one a second (it
        reads the whole cluster's presence)."""
        refused = _spend_listing(session)
        if refused is not None:
            return refused
        clients = sorted(await self.hub.clients(), key=lambda c: (c.since, c.id))
        show_remote = _authenticated(session)  # addresses are personal data: operators only
        rows = [_client_row(c, show_remote) for c in clients[:LISTING_LIMIT]]
        title = f"{len(clients)} client{'' if len(clients) == 1 else 's'}"
        data: dict[str, Any] = {"clients": rows}
        if len(clients) > LISTING_LIMIT:
            title += f" (the first {LISTING_LIMIT} shown)"
            data["more"] = len(clients) - LISTING_LIMIT
        return Reply(_table(rows, title), data)

    # -- privileges --------------------------------------------------------------

    def _auth(self, session: Session, token: str) -> Reply:
        if self._token is None:
            return error("privileged commands are disabled (no admin token configured)")
        address = session.address
        wait = self.throttle.wait(address)
        if wait > 0:
            return error(f"too many failed auth attempts; try again in {int(wait) + 1} s")
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            failures = self.throttle.failed(address)
            log.warning("command: wrong admin token from %s (session %s, failure %d)",
                        session.remote, session.id, failures)
            return error("wrong token")
        self.throttle.succeeded(address)
        listings = session.state.listings if isinstance(session.state, Operator) else None
        session.state = Operator(authenticated=True, listings=listings)
        log.info("command: session %s from %s authenticated", session.id, session.remote)
        return Reply("ok: authenticated", {"authenticated": True})

    async def _kick(self, session: Session, target: str) -> Reply:
        if target == session.id:  # close after the reply, or the reply is lost
            return Reply(f"ok: kicked {target}", {"kicked": target},
                         then=lambda: session.close(CloseCode.POLICY_VIOLATION, "kicked"))
        if not await self.hub.close_session(target, CloseCode.POLICY_VIOLATION, "kicked"):
            return error(f"no client with id '{target}'")
        log.info("command: session %s kicked %s", session.id, target)
        return Reply(f"ok: kicked {target}", {"kicked": target})

    def _broadcast(self, session: Session, argument: str) -> Reply:
        protocol, *rest = argument.split(None, 1)  # any whitespace, as between the other words
        text = rest[0].strip() if rest else ""
        if protocol not in self.context.registry:
            enabled = ", ".join(self.context.registry.names)
            return error(f"unknown protocol '{protocol}' (enabled: {enabled})")
        if not text:
            return error("usage: broadcast PROTOCOL TEXT")
        if not self.context.registry.takes_raw_text(protocol):
            return error(f"{protocol} clients read framed messages, not lines of text: "
                         "publish on a topic they subscribe to instead")
        # The sender is left out so that its next message is the reply, one per command.
        self.hub.broadcast(protocol_channel(protocol), Outgoing.text(text), exclude=session.id)
        log.info("command: session %s broadcast %d characters to %s", session.id, len(text), protocol)
        return Reply(f"ok: broadcast to {protocol}", {"broadcast": protocol, "text": text})

    def _killserver(self, session: Session, argument: str) -> Reply:
        log.warning("command: killserver from session %s (%s)", session.id, session.remote)
        return Reply("ok: shutting down", {"shutdown": True}, then=self.context.shutdown)


def _spend_listing(session: Session) -> Reply | None:
    """One call of the connection's listing budget; the refusal when it is spent."""
    operator = session.state
    if not isinstance(operator, Operator):
        return None
    if operator.listings is None:
        operator.listings = Budget()
    wait = operator.listings.take()
    return error(too_soon(wait)) if wait else None


def _send(session: Session, reply: Reply, as_json: bool) -> None:
    session.send_text(reply.render(as_json))
    if reply.then is not None:
        reply.then()


def _authenticated(session: Session) -> bool:
    return isinstance(session.state, Operator) and session.state.authenticated


def _client_row(client: ClientInfo, show_remote: bool) -> dict[str, Any]:
    """One client; ``remote`` is None unless the asker has authenticated."""
    return {
        "id": client.id,
        "protocol": client.protocol,
        "remote": client.remote if show_remote else None,
        "name": client.name,
        "since": utc_iso(client.since),
    }


def _table(rows: list[dict[str, Any]], title: str) -> str:
    """Rows as aligned columns under a header line, for people."""
    columns = ["id", "protocol", "remote", "name", "since"]
    cells = [columns] + [[str(row[c]) if row[c] is not None else "-" for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in cells]
    return "\n".join([title, *lines])
