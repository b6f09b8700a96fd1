"""What a protocol sends: a message framed once, whatever the number of receivers."""

from __future__ import annotations

from wsplex.ws.frames import Opcode, encode_frame

_TEXT_OPCODE = int(Opcode.TEXT)
_BINARY_OPCODE = int(Opcode.BINARY)


class Outgoing:
    """A message on its way out: its type, its payload, and its frame, encoded once.

    The hub hands the same ``Outgoing`` to every receiver, so a message sent to
    a room of 500 is framed once, not 500 times. The frame is built up front: a
    plain attribute is the cheapest thing to read 500 times.

    ``compressed`` holds the frames the transport derived from it for receivers
    that negotiated permessage-deflate without context takeover, one per set of
    parameters (RFC 7692; SPEC §14): computed at the first such receiver, so a
    fan-out compresses once and a message nobody compresses costs nothing.

    The payload is held once, as the end of the frame: a message kept for a
    while (a chat line in a room's history, a retained value's native form)
    costs its size once, not twice. :attr:`payload` copies it out for the
    few readers that need it apart (once per publication, not per receiver);
    :attr:`size` is its length without a copy.
    """

    __slots__ = ("compressed", "frame", "is_text", "size")

    def __init__(self, payload: bytes, *, is_text: bool) -> None:
        self.is_text = is_text
        #: The complete server frame (RFC 6455 §5.2): unmasked, so the payload is its end.
        self.frame = encode_frame(_TEXT_OPCODE if is_text else _BINARY_OPCODE, payload)
        self.size = len(payload)
        self.compressed: dict[object, bytes] | None = None

    @property
    def payload(self) -> bytes:
        """The message's payload (a copy of the end of :attr:`frame`)."""
        frame = self.frame
        return frame[len(frame) - self.size:]

    @classmethod
    def text(cls, text: str) -> Outgoing:
        return cls(text.encode(), is_text=True)

    @classmethod
    def binary(cls, data: bytes) -> Outgoing:
        return cls(data, is_text=False)

    def __repr__(self) -> str:
        kind = "text" if self.is_text else "binary"
        return f"<Outgoing {kind} {self.size} bytes>"
