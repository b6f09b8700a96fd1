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
    """

    __slots__ = ("compressed", "frame", "is_text", "payload")

    def __init__(self, payload: bytes, *, is_text: bool) -> None:
        self.payload = payload
        self.is_text = is_text
        #: The complete server frame (RFC 6455 §5.2).
        self.frame = encode_frame(_TEXT_OPCODE if is_text else _BINARY_OPCODE, payload)
        self.compressed: dict[object, bytes] | None = None

    @classmethod
    def text(cls, text: str) -> Outgoing:
        return cls(text.encode(), is_text=True)

    @classmethod
    def binary(cls, data: bytes) -> Outgoing:
        return cls(data, is_text=False)

    def __repr__(self) -> str:
        kind = "text" if self.is_text else "binary"
        return f"<Outgoing {kind} {len(self.payload)} bytes>"
