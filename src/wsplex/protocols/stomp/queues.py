"""``/queue/Q``: each message to exactly one consumer (SPEC §12), as the hub carries it.

The queue itself is the hub's (:meth:`wsplex.app.Hub.queue_send` and the
rest): in one process the memory hub keeps it; with ``--redis`` it is shared
by the cluster, so a message sent on one node is consumed once by a
subscriber on any node and outlives the node it was sent to. The round robin,
the waiting within bounds (``--stomp-queue-limit`` messages,
``--stomp-queue-bytes``) and the redelivery of what a consumer gave back are
the hub's; the protocol renders MESSAGE frames and keeps, per connection,
what a client ack mode has not acknowledged yet.

What a SEND puts in the queue is a :class:`QueuedMessage` encoded as bytes
(:func:`pack`), the form that crosses nodes: a 4-byte length, the header
lines (``destination``, the sender, whether the body is text, the sender's
own headers, STOMP 1.2 escaping), then the body. The memory hub hands the
object itself back (``QueueMessage.local``), so one process never decodes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from wsplex.app import QueueMessage, Sender
from wsplex.protocols.stomp.frames import V12, FrameError, encode_headers, unescape

_LENGTH = struct.Struct("!I")
#: The first three header lines of a packed message: the server's, not the sender's.
_DESTINATION, _SENDER, _TEXT = "destination", "sender", "text"
#: The bytes :func:`pack` adds besides the destination, the headers and the body
#: (the length, the three header names, the sender, the newlines), as counted.
_PACKED_OVERHEAD = 64


@dataclass(slots=True, eq=False)
class QueuedMessage:
    """A SEND to a queue, as it waits and as it is delivered (again)."""

    destination: str
    headers: tuple[tuple[str, str], ...]  # the sender's own headers, passed on (content-type...)
    body: bytes
    is_text: bool  # the body is UTF-8: a text WebSocket message carries it
    sender: Sender

    def queue_message(self) -> QueueMessage:
        """What the hub carries: this object, and its bytes (:func:`pack`) made only if the
        hub asks for them (Redis does; the memory hub hands the object back unencoded)."""
        return QueueMessage(encode=self.pack, size=self.size(), local=self)

    def pack(self) -> bytes:
        return pack(self)

    def size(self) -> int:
        """About the length of :func:`pack`'s bytes (escaping aside), without making them:
        what the message counts toward ``--stomp-queue-bytes``."""
        headers = sum(len(name) + len(value) + 2 for name, value in self.headers)
        return _PACKED_OVERHEAD + len(self.destination) + headers + len(self.body)


def pack(message: QueuedMessage) -> bytes:
    sender = message.sender
    head = encode_headers(((_DESTINATION, message.destination),
                           (_SENDER, f"{sender.protocol}:{sender.name}"),
                           (_TEXT, "1" if message.is_text else "0"), *message.headers), V12)
    return b"".join((_LENGTH.pack(len(head)), head, message.body))


def unpack(data: bytes) -> QueuedMessage:
    """The message :func:`pack` made; ValueError (or FrameError) if ``data`` is not one."""
    (length,) = _LENGTH.unpack_from(data)
    lines = data[_LENGTH.size:_LENGTH.size + length].decode().split("\n")[:-1]
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError("a packed queue message has a header line without a colon")
        headers.append((unescape(name, V12), unescape(value, V12)))
    if len(headers) < 3 or [h[0] for h in headers[:3]] != [_DESTINATION, _SENDER, _TEXT]:
        raise ValueError("a packed queue message starts with destination, sender, text")
    protocol, _, name = headers[1][1].partition(":")
    return QueuedMessage(headers[0][1], tuple(headers[3:]), data[_LENGTH.size + length:],
                         headers[2][1] == "1", Sender(protocol, name))


def queued(message: QueueMessage) -> QueuedMessage | None:
    """The STOMP message a hub delivered: as sent (one process), or decoded once; None when
    ``data`` is not a STOMP queue message (another protocol's, or damaged)."""
    local = message.local
    if isinstance(local, QueuedMessage):
        return local
    try:
        decoded = unpack(message.data)
    except (ValueError, FrameError, struct.error, UnicodeDecodeError):
        return None
    message.local = decoded
    return decoded
