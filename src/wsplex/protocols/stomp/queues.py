"""``/queue/Q``: each message to exactly one consumer (SPEC §12).

A queue is its waiting messages and its consumers (subscriptions) in the
order they came. A message goes to the next consumer in turn (round robin);
with nobody subscribed it waits, at most ``limit`` of them per queue (past
that the oldest is dropped and counted). A message delivered to a
subscription in a client ack mode is the subscription's until it is
acknowledged; when the subscription leaves, or NACKs it, it goes to another
consumer with ``redelivered:true``, or waits at the head of the queue.

Pure bookkeeping: the protocol renders and sends what :meth:`Queue.next_consumer`
chooses. The state lives on this node (with ``--redis``, queues are not yet
shared by the cluster).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from wsplex.app import Sender

C = TypeVar("C")


@dataclass(slots=True, eq=False)
class QueuedMessage:
    """A SEND to a queue, as it waits and as it is delivered (again)."""

    destination: str
    headers: tuple[tuple[str, str], ...]  # the sender's own headers, passed on (content-type...)
    body: bytes
    is_text: bool  # the body is UTF-8: a text WebSocket message carries it
    sender: Sender
    redelivered: bool = False


class Queue(Generic[C]):
    """Waiting messages and consumers of one queue (see the module doc)."""

    __slots__ = ("_turn", "consumers", "dropped", "limit", "name", "waiting")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.waiting: deque[QueuedMessage] = deque()
        self.consumers: list[C] = []
        self.dropped = 0
        self._turn = 0

    def __bool__(self) -> bool:
        """Still worth keeping: it has consumers or waiting messages."""
        return bool(self.consumers or self.waiting)

    def add_consumer(self, consumer: C) -> None:
        self.consumers.append(consumer)

    def remove_consumer(self, consumer: C) -> None:
        if consumer in self.consumers:
            position = self.consumers.index(consumer)
            del self.consumers[position]
            if position < self._turn:
                self._turn -= 1

    def next_consumer(self, avoid: C | None = None) -> C | None:
        """Whose turn it is, skipping ``avoid`` when someone else is there; None if nobody."""
        consumers = self.consumers
        if not consumers:
            return None
        for _ in range(len(consumers)):
            self._turn %= len(consumers)
            chosen = consumers[self._turn]
            self._turn += 1
            if chosen is not avoid or len(consumers) == 1:
                return chosen
        return None  # unreachable: with two or more, one of them is not ``avoid``

    def park(self, message: QueuedMessage) -> int:
        """Keep ``message`` until someone subscribes; the oldest goes past the limit.
        How many were dropped."""
        dropped = 0
        if len(self.waiting) >= self.limit:
            self.waiting.popleft()
            dropped = 1
        self.waiting.append(message)
        self.dropped += dropped
        return dropped

    def park_first(self, messages: Iterable[QueuedMessage]) -> int:
        """Put messages given back (their consumer left) at the head, in their order.
        How many were dropped (the newest, past the limit)."""
        for message in reversed(list(messages)):
            self.waiting.appendleft(message)
        dropped = max(0, len(self.waiting) - self.limit)
        for _ in range(dropped):
            self.waiting.pop()
        self.dropped += dropped
        return dropped
