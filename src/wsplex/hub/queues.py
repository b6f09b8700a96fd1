"""Queues of one process (SPEC §12): the memory hub's, and the round robin the Redis hub shares.

A queue is its consumers in the order they came and, while it has none, its
waiting messages. A message goes to the next consumer in turn (round robin);
with nobody there it waits, within two bounds per queue: ``limit`` messages
and ``max_bytes`` of their data; past either the oldest waiting are dropped
and counted. A message given back (NACK, or its consumer left) is marked
redelivered and goes to the next consumer but the one giving it back, or
waits at the head of the queue, in its order, when nobody is there.

Synchronous and allocation-light: a send is a turn of the round robin and a
call of the consumer's ``take``, no task and no copy (the memory hub's queue
path is as cheap as a topic delivery to one session).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from wsplex.app.hub import QueueConsumer, QueueFigures, QueueMessage


class Consumers:
    """A queue's consumers in the order they came, and whose turn it is."""

    __slots__ = ("_turn", "consumers")

    def __init__(self) -> None:
        self.consumers: list[QueueConsumer] = []
        self._turn = 0

    def add(self, consumer: QueueConsumer) -> None:
        if consumer not in self.consumers:
            self.consumers.append(consumer)

    def remove(self, consumer: QueueConsumer) -> None:
        if consumer in self.consumers:
            position = self.consumers.index(consumer)
            del self.consumers[position]
            if position < self._turn:
                self._turn -= 1

    def next(self, avoid: QueueConsumer | None = None) -> QueueConsumer | None:
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


class Queue(Consumers):
    """Consumers and waiting messages of one queue (see the module doc)."""

    __slots__ = ("bytes", "limit", "max_bytes", "waiting")

    def __init__(self, limit: int, max_bytes: int) -> None:
        super().__init__()
        self.limit = limit
        self.max_bytes = max_bytes
        self.waiting: deque[QueueMessage] = deque()
        self.bytes = 0  # of the waiting messages' data

    def __bool__(self) -> bool:
        """Still worth keeping: it has consumers or waiting messages."""
        return bool(self.consumers or self.waiting)

    def park(self, message: QueueMessage) -> int:
        """Keep ``message`` until someone subscribes; how many of the oldest went for it."""
        self.waiting.append(message)
        self.bytes += message.size
        dropped = 0
        while len(self.waiting) > self.limit or (self.bytes > self.max_bytes and len(self.waiting) > 1):
            self.bytes -= self.waiting.popleft().size
            dropped += 1
        return dropped

    def park_first(self, messages: Sequence[QueueMessage]) -> int:
        """Put messages given back at the head, in their order; past the bounds the newest go
        (the given-back ones are older than what waits). How many were dropped."""
        for message in reversed(messages):
            self.waiting.appendleft(message)
            self.bytes += message.size
        dropped = 0
        while len(self.waiting) > self.limit or (self.bytes > self.max_bytes and len(self.waiting) > 1):
            self.bytes -= self.waiting.pop().size
            dropped += 1
        return dropped

    def take(self) -> QueueMessage:
        message = self.waiting.popleft()
        self.bytes -= message.size
        return message


class MemoryQueues:
    """Every queue of one process: the memory hub's queue operations (``Hub.queue_*``)."""

    def __init__(self, limit: int = 10_000, max_bytes: int = 64 << 20, max_queues: int = 10_000) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.max_queues = max_queues
        self.queues: dict[str, Queue] = {}
        self.dropped = 0

    def _queue(self, name: str) -> Queue | None:
        queue = self.queues.get(name)
        if queue is None and len(self.queues) < self.max_queues:
            queue = self.queues[name] = Queue(self.limit, self.max_bytes)
        return queue

    def send(self, name: str, message: QueueMessage, avoid: QueueConsumer | None = None) -> bool:
        queue = self._queue(name)
        if queue is None:
            return False
        consumer = queue.next(avoid)
        if consumer is None:
            self.dropped += queue.park(message)
        else:
            consumer.take(name, message)
        return True

    def consume(self, name: str, consumer: QueueConsumer) -> bool:
        queue = self._queue(name)
        if queue is None:
            return False
        queue.add(consumer)
        while queue.waiting and queue.consumers:
            chosen = queue.next()
            assert chosen is not None
            chosen.take(name, queue.take())
        return True

    def cancel(self, name: str, consumer: QueueConsumer) -> None:
        queue = self.queues.get(name)
        if queue is None:
            return
        queue.remove(consumer)
        if not queue:
            del self.queues[name]

    def settle(self, name: str, messages: Sequence[QueueMessage], *, consumed: bool,
               avoid: QueueConsumer | None = None) -> None:
        if consumed or not messages:
            return
        for message in messages:
            message.redelivered = True
        queue = self._queue(name)
        if queue is None:  # the queue went and no room is left for it again
            self.dropped += len(messages)
        elif queue.consumers:
            for message in messages:
                self.send(name, message, avoid)
        else:
            self.dropped += queue.park_first(messages)

    def figures(self) -> QueueFigures:
        waiting = sum(len(queue.waiting) for queue in self.queues.values())
        return QueueFigures(len(self.queues), waiting, self.dropped)
