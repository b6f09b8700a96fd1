"""A publication: what travels on the topic space between protocols (SPEC §10).

A publication is a topic, a payload (text or bytes), the sender's identity and
a retain flag. Every protocol renders it in its own format: the hub asks each
receiving protocol once per publication, not once per receiver.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from wsplex.app.outgoing import Outgoing


@dataclass(frozen=True, slots=True)
class Sender:
    """Who published: set by the server, never taken from the client (SPEC §10).

    ``name`` is the protocol's own name for the client (a chat name, a JSONsvc
    name, an MQTT client id, a session id).
    """

    protocol: str
    name: str

    def seen_by(self, protocol: str) -> str:
        """The sender as a receiver of ``protocol`` sees it: its bare name when both
        speak the same protocol, else ``PROTOCOL:NAME``, so nobody can pass for a
        client of another protocol."""
        return self.name if protocol == self.protocol else f"{self.protocol}:{self.name}"

    def __str__(self) -> str:
        return f"{self.protocol}:{self.name}"


class Publication:
    """One message on a topic.

    ``payload`` is kept as given (``str`` for text, ``bytes`` for binary); each
    form is computed once on first use, so a chat line never becomes bytes
    unless a binary protocol receives it. ``native`` is how the sending
    protocol renders the publication for receivers of its own protocol (a chat
    line ``[alice] hi``, a JSONsvc message with its whole header): framed once,
    it goes unchanged to every one of them. ``time`` is when it was published
    (seconds since the epoch), for expiry and listings.
    """

    __slots__ = ("_data", "_text", "is_text", "native", "retain", "sender", "time", "topic")

    def __init__(
        self,
        topic: str,
        payload: str | bytes,
        sender: Sender,
        *,
        retain: bool = False,
        native: Outgoing | None = None,
        published_at: float | None = None,
    ) -> None:
        self.topic = topic
        self.sender = sender
        self.retain = retain
        self.native = native
        self.time = time.time() if published_at is None else published_at
        self.is_text = isinstance(payload, str)
        self._text: str | bool | None = payload if isinstance(payload, str) else False  # False: not tried
        self._data: bytes | None = payload if isinstance(payload, bytes) else None

    @property
    def data(self) -> bytes:
        """The payload as bytes (UTF-8 for a text payload)."""
        data = self._data
        if data is None:
            assert isinstance(self._text, str)
            data = self._data = self._text.encode()
        return data

    @property
    def text(self) -> str | None:
        """The payload as text, or None when it is not valid UTF-8 (SPEC §10: text
        protocols do not receive such publications)."""
        text = self._text
        if text is False:
            try:
                text = self._text = self.data.decode()
            except UnicodeDecodeError:
                text = self._text = None
        return text  # type: ignore[return-value]

    def as_sent(self) -> Outgoing:
        """The payload as it was published, framed: a text message or a binary one."""
        text = self.text if self.is_text else None
        return Outgoing.text(text) if text is not None else Outgoing.binary(self.data)

    def compact(self) -> Publication:
        """This publication as it is best kept for a while (history, retained): its
        payload held once, in its smallest form. ASCII text stays a ``str`` (one byte a
        character); other text becomes its UTF-8 bytes, decoded again on first read (a
        ``str`` with one emoji costs four bytes a character); a form made for a
        receiver (the bytes of a text, the text of binary data) is not kept."""
        text = self._text
        ascii_text = self.is_text and isinstance(text, str) and text.isascii()
        if ascii_text and self._data is None:
            return self  # held once, as a compact str
        if not ascii_text and not isinstance(text, str) and self._data is not None:
            return self  # held once, as bytes
        payload: str | bytes = text if ascii_text and isinstance(text, str) else self.data
        kept = Publication(self.topic, payload, self.sender, retain=self.retain,
                           native=self.native, published_at=self.time)
        kept.is_text = self.is_text  # text as bytes: ``text`` decodes them when asked
        return kept

    def kept_size(self) -> int:
        """What keeping this publication costs, as the history and retained bounds count
        it: its payload (in the form :meth:`compact` keeps, without making another) plus
        its native message's frame, which is kept with it and costs as much again.
        Counting only the payload let a chat room's history hold three times its bound."""
        data, text = self._data, self._text
        if data is not None:
            size = len(data)
        elif isinstance(text, str):
            size = len(text) if text.isascii() else len(text.encode())
        else:
            size = 0
        native = self.native
        return size + len(native.frame) if native is not None else size

    @property
    def empty(self) -> bool:
        """An empty payload: published with ``retain``, it clears the retained one."""
        return not self._data if self._data is not None else not self._text

    def __repr__(self) -> str:
        kind = "text" if self.is_text else "binary"
        retained = " retained" if self.retain else ""
        return f"<Publication {self.topic!r} {kind}{retained} from {self.sender}>"
