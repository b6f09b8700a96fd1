"""``chat``: named people talking in rooms (SPEC §3, §10).

Everything shared lives on the hub, so the same code serves one node or a
Redis cluster:

* names are claimed in the hub's name scope ``"chat"``, unique across the cluster;
* room ``R`` is topic ``chat/R`` of the topic space (SPEC §10): each line said
  there is a publication (not retained) that every protocol's subscribers
  receive, and every publication there, whatever its protocol, is a line in the
  room: ``[alice] hi`` from a chat client, ``[JSONsvc:dash] hi`` or
  ``[mqtt:sensor-1] 21.5`` from others (publications that are not UTF-8 text
  are not shown, and are counted);
* the room's people are the members of the chat channel ``chat:room:R``:
  ``/who`` and ``/rooms`` ask for them, and notices (``* alice joined``) go
  there only: they are chat's own, not publications;
* a room's history is the hub's history of its topic: its last publications
  from any protocol.

Every line the server sends is one WebSocket text message that starts with
``[name] `` (a chat message), ``* `` (a notice) or ``! `` (an error), so a
client tells them apart by the first characters of each message.

History is sent to a client entering a room as a block, so it cannot be
mistaken for live talk::

    * history: 2 messages
    [alice] hi
    [bob] hello
    * end of history

A room message is encoded once (its publication's ``native`` form) and
published once, whatever the size of the room.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wsplex.app import (
    LISTING_LIMIT,
    Budget,
    CloseCode,
    Context,
    HookResult,
    Outgoing,
    Protocol,
    Publication,
    Sender,
    Session,
    too_soon,
)

#: The hub name scope of chat names.
NAME_SCOPE = "chat"
#: Room R is topic chat/R; its people are the members of channel chat:room:R.
ROOM_TOPIC_PREFIX = "chat/"
ROOM_CHANNEL_PREFIX = "chat:room:"
LOBBY = "lobby"
#: SPEC §3: names are 1-32 printable characters without spaces; rooms follow the same rule.
MAX_NAME_LENGTH = 32

#: /join: this many at once, then this many a second (30 rooms a minute).
JOIN_BURST = 10
JOIN_RATE = 0.5
#: The most rooms ``/rooms`` lists (each with its head count); the rest are counted.
ROOMS_LISTED = 100

NAME_RULE = f"names are 1-{MAX_NAME_LENGTH} printable characters without spaces or ':'"
ROOM_RULE = f"room names are 1-{MAX_NAME_LENGTH} printable characters without spaces, '/', '+' or '#'"

HELP_TEXT = """\
* commands:
*   /name NEW    change your name (alias /nick)
*   /join ROOM   leave this room and enter ROOM (the first room is lobby)
*   /who         list the people in this room
*   /rooms       list the rooms that have people in them
*   /help        this list
* anything else is said to the others in your room; start a line with // to say
* something that begins with /"""


def _is_word(text: str) -> bool:
    """1-32 printable characters without spaces (no whitespace of any kind)."""
    return 0 < len(text) <= MAX_NAME_LENGTH and text.isprintable() and " " not in text


def is_valid_name(text: str) -> bool:
    """SPEC §3 and §10: a word, without ``:`` (others see a chat client as ``chat:NAME``)."""
    return _is_word(text) and ":" not in text


def is_valid_room(text: str) -> bool:
    """A word that is one level of a topic name: no ``/``, and no wildcard (SPEC §10)."""
    return _is_word(text) and not any(c in text for c in "/+#")


def room_topic(room: str) -> str:
    return ROOM_TOPIC_PREFIX + room


def room_channel(room: str) -> str:
    return ROOM_CHANNEL_PREFIX + room


@dataclass(slots=True)
class Member:
    """A chat client's per-connection state: who it is, and where it is when ``present``."""

    name: str
    room: str = LOBBY
    present: bool = False  # subscribed to ``room`` and announced there
    sender: Sender | None = None  # the publications' sender, kept with the name
    listings: Budget | None = None  # /who and /rooms, made on first use
    joins: Budget | None = None  # /join, made on first use

    def may_list(self, session: Session) -> bool:
        """Listings read the directory: a few at once, then one a second (SPEC §8)."""
        if self.listings is None:
            self.listings = Budget()
        wait = self.listings.take()
        if wait:
            session.send_text(f"! {too_soon(wait)}")
        return not wait


Command = Callable[[Session, Member, str], HookResult]


class ChatProtocol(Protocol):
    name = "chat"
    description = "Named people talking in rooms: /name, /join, /who, /rooms, /help."
    help = (
        "You start in room lobby, named by ?name= on the URL or guest-N.\n"
        "A line you send goes to everyone else in your room as [yourname] line.\n"
        "/name NEW (or /nick NEW) renames you: 1-32 printable characters, no spaces, not taken.\n"
        "/join ROOM moves you to ROOM; you first get its recent history between\n"
        "'* history: N messages' and '* end of history'.\n"
        "/who lists your room, /rooms lists the rooms, /help lists the commands.\n"
        "Server notices start with '* ', errors with '! '. Text only: binary closes with 1003.\n"
        "Room R is topic chat/R for every other protocol: their messages there show as\n"
        "[PROTOCOL:NAME] text."
    )
    text_only = True

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self._guest_numbers = itertools.count(1)
        self._commands: dict[str, Command] = {
            "/name": self._rename,
            "/nick": self._rename,
            "/join": self._join,
            "/who": self._who,
            "/rooms": self._rooms,
            "/help": self._help,
        }
        self.hub.keep_history(ROOM_TOPIC_PREFIX, self._history_limit)

    @property
    def _history_limit(self) -> int:
        return self.context.settings.chat_history

    # -- hooks ---------------------------------------------------------------

    async def on_connect(self, session: Session) -> None:
        wanted = session.query.get("name")
        problem = None
        name = None
        if wanted is not None:
            if not is_valid_name(wanted):
                problem = f"invalid name: {NAME_RULE}"
            elif await self.hub.claim_name(NAME_SCOPE, wanted, session):
                name = wanted
            else:
                problem = f"name '{wanted}' is taken"
        if name is None:
            name = await self._claim_guest_name(session)
        member = Member(name, sender=Sender(self.name, name))
        session.state = member
        session.name = name
        self.hub.touch(session)
        if problem is not None:
            session.send_text(f"! {problem}; you are {name}")
        await self._enter(session, member, LOBBY, echo_join=False)

    def on_message(self, session: Session, message: str | bytes) -> HookResult:
        if isinstance(message, bytes):
            session.close(CloseCode.UNSUPPORTED_DATA, "chat accepts text messages only")
            return None
        # Line-based clients (websocat, wsplex connect) may send the line ending too.
        message = message.rstrip("\r\n")
        member = session.state
        if not isinstance(member, Member) or not member.present:
            return None  # the connection is closing (or on_connect failed and closed it)
        if message.startswith("//"):
            return self._say(session, member, message[1:])
        if message.startswith("/"):
            return self._command(session, member, message)
        return self._say(session, member, message)

    async def on_disconnect(self, session: Session, code: int) -> None:
        member = session.state
        if not isinstance(member, Member):
            return
        self._leave(session, member)
        await self.hub.release_name(NAME_SCOPE, member.name, session)

    # -- the topic space (SPEC §10) ----------------------------------------------

    def render(self, publication: Publication) -> Outgoing | None:
        """Another protocol's publication on a room, as the room's line."""
        text = publication.text
        if text is None:
            return None
        return Outgoing.text(f"[{publication.sender.seen_by(self.name)}] {text}")

    # -- talking -------------------------------------------------------------

    def _say(self, session: Session, member: Member, text: str) -> HookResult:
        if not text.strip():
            session.send_text("! empty message, not sent")
            return None
        assert member.sender is not None
        line = Outgoing.text(f"[{member.name}] {text}")
        publication = Publication(room_topic(member.room), text, member.sender, native=line)
        self.hub.publish(publication, exclude=session.id)
        return None

    def _command(self, session: Session, member: Member, line: str) -> HookResult:
        word, *rest = line.split(None, 1)  # the argument is the rest of the line
        argument = rest[0].strip() if rest else ""
        command = self._commands.get(word.lower())
        if command is None:
            session.send_text(f"! unknown command {word} (try /help)")
            return None
        return command(session, member, argument)

    # -- rooms ---------------------------------------------------------------

    async def _enter(self, session: Session, member: Member, room: str, *, echo_join: bool) -> None:
        """Put ``session`` in ``room``: its history first, then the announcement.

        The history is read before subscribing, so no message can arrive both
        live and in the history block, nor in the middle of the block.
        """
        history = await self.hub.history(room_topic(room)) if self._history_limit > 0 else []
        if session.closed:
            return
        member.room, member.present = room, True
        self.hub.join(room_channel(room), session)
        self.hub.subscribe(room_topic(room), session)
        lines = [line for line in map(self._line, history[-self._history_limit :]) if line is not None]
        if lines:
            self._send_history(session, lines)
        joined = Outgoing.text(f"* {member.name} joined")
        self.hub.broadcast(room_channel(room), joined, exclude=None if echo_join else session.id)

    def _line(self, publication: Publication) -> Outgoing | None:
        """A publication as the room shows it: chat's own line, or rendered."""
        if publication.native is not None and publication.sender.protocol == self.name:
            return publication.native
        return self.render(publication)

    def _leave(self, session: Session, member: Member) -> None:
        if not member.present:
            return
        member.present = False
        channel = room_channel(member.room)
        self.hub.broadcast(channel, Outgoing.text(f"* {member.name} left"), exclude=session.id)
        self.hub.unsubscribe(room_topic(member.room), session)
        self.hub.leave(channel, session)

    @staticmethod
    def _send_history(session: Session, lines: list[Outgoing]) -> None:
        count = len(lines)
        session.send_text(f"* history: {count} message{'' if count == 1 else 's'}")
        for line in lines:
            session.send(line)
        session.send_text("* end of history")

    # -- commands --------------------------------------------------------------

    async def _rename(self, session: Session, member: Member, new: str) -> None:
        if not new:
            session.send_text("! usage: /name NEW")
        elif not is_valid_name(new):
            session.send_text(f"! invalid name: {NAME_RULE}")
        elif new == member.name:
            session.send_text(f"! you are already {new}")
        elif not await self.hub.claim_name(NAME_SCOPE, new, session):
            session.send_text(f"! name '{new}' is taken")
        else:
            old = member.name
            member.name = session.name = new
            member.sender = Sender(self.name, new)
            self.hub.touch(session)
            self.hub.broadcast(room_channel(member.room), Outgoing.text(f"* {old} is now {new}"))
            await self.hub.release_name(NAME_SCOPE, old, session)

    def _join(self, session: Session, member: Member, room: str) -> Awaitable[None] | None:
        if not room:
            session.send_text("! usage: /join ROOM")
        elif not is_valid_room(room):
            session.send_text(f"! invalid room: {ROOM_RULE}")
        elif room == member.room:
            session.send_text(f"! you are already in {room}")
        elif (wait := self._join_wait(member)) > 0:
            session.send_text(f"! too many /join; try again in {int(wait) + 1} s")
        else:
            self._leave(session, member)
            return self._enter(session, member, room, echo_join=True)
        return None

    @staticmethod
    def _join_wait(member: Member) -> float:
        """Each room entered may be a room made (a topic with a history): a client
        gets :data:`JOIN_BURST` joins at once, then one every two seconds."""
        if member.joins is None:
            member.joins = Budget(JOIN_BURST, JOIN_RATE)
        return member.joins.take()

    async def _who(self, session: Session, member: Member, argument: str) -> None:
        if not member.may_list(session):
            return
        members = await self.hub.members(room_channel(member.room))
        names = sorted(m.name for m in members if m.name is not None)
        session.send_text(f"* in {member.room}: {', '.join(names[:LISTING_LIMIT])}{_more(names)}")

    async def _rooms(self, session: Session, member: Member, argument: str) -> None:
        if not member.may_list(session):
            return
        channels = sorted(await self.hub.channels(ROOM_CHANNEL_PREFIX))
        rooms = []
        for channel in channels[:ROOMS_LISTED]:  # each count is a directory read
            count = len(await self.hub.members(channel))
            rooms.append(f"{channel.removeprefix(ROOM_CHANNEL_PREFIX)} ({count})")
        session.send_text(f"* rooms: {', '.join(rooms)}{_more(channels, ROOMS_LISTED)}")

    @staticmethod
    def _help(session: Session, member: Member, argument: str) -> None:
        session.send_text(HELP_TEXT)

    async def _claim_guest_name(self, session: Session) -> str:
        """``guest-N``: the first free N from a counter (someone may have taken one by hand)."""
        while True:
            name = f"guest-{next(self._guest_numbers)}"
            if await self.hub.claim_name(NAME_SCOPE, name, session):
                return name


def _more(items: list[str], shown: int = LISTING_LIMIT) -> str:
    """`` and 5 more`` after a listing cut at ``shown`` entries, else nothing."""
    return f" and {len(items) - shown} more" if len(items) > shown else ""
