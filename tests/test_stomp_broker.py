"""The queue bookkeeping of STOMP (SPEC §12), as a state machine: hypothesis runs random
sends, subscriptions, ACKs, NACKs and departures and checks that no message is lost or
consumed twice. Real Sessions over a link that keeps what it was given, and the memory
hub's queues (hub/queues.py) under the STOMP broker; no socket, since only the bookkeeping
is under test here (test_stomp_queues.py has it over the wire, test_stomp_cluster.py
across nodes on Redis).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wsplex.app import QueueMessage, Sender, Session
from wsplex.hub.memory import MemoryHub
from wsplex.protocols.stomp import (
    AUTO,
    CLIENT,
    CLIENT_INDIVIDUAL,
    Broker,
    Connection,
    Subscription,
)
from wsplex.protocols.stomp.frames import V12, Frame, FrameParser
from wsplex.protocols.stomp.queues import QueuedMessage, queued

LIMIT = 4  # waiting messages per queue


class KeepingLink:
    """A connection that keeps the STOMP frames it was given (WebSocket frames, unmasked)."""

    def __init__(self) -> None:
        self.parser = FrameParser(1 << 16, V12)
        self.received: list[Frame] = []

    def write_frame(self, frame: bytes) -> None:
        length = frame[1] & 0x7F
        payload = frame[2:] if length < 126 else frame[4:]
        self.received += self.parser.feed(payload)

    def close(self, code: int, reason: str) -> None:
        pass


class Queues(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.hub = MemoryHub("test")
        self.hub.queues.limit, self.hub.queues.max_queues = LIMIT, 10
        self.broker = Broker(self.hub)
        self.sent: set[str] = set()
        self.consumed: list[str] = []  # auto deliveries and acknowledged messages
        self.unacked: dict[tuple[int, str], str] = {}  # (consumer, ack id) -> body
        self.consumers: dict[int, Subscription] = {}
        self.count = 0

    def _deliveries(self, number: int, subscription: Subscription) -> None:
        """Record what ``subscription``'s connection received since the last look."""
        link = subscription.session._link  # the KeepingLink above
        assert isinstance(link, KeepingLink)
        for frame in link.received:
            body = frame.body.decode()
            assert body in self.sent
            if subscription.ack == AUTO:
                self.consumed.append(body)
            else:
                self.unacked[number, frame.get("ack") or ""] = body
        link.received = []

    def _look(self) -> None:
        for number, subscription in self.consumers.items():
            self._deliveries(number, subscription)

    @rule()
    def send(self) -> None:
        self.count += 1
        body = f"m{self.count}"
        self.sent.add(body)
        self.broker.dispatch("q", QueuedMessage("/queue/q", (), body.encode(), True, Sender("stomp", "p")))
        self._look()

    @rule(ack=st.sampled_from([AUTO, CLIENT_INDIVIDUAL, CLIENT]))
    def subscribe(self, ack: str) -> None:
        self.count += 1
        session = Session(str(self.count), "v12.stomp", "test:1", KeepingLink())
        connection = Connection(session, 1 << 16)
        connection.version = V12
        subscription = Subscription("s", "q", True, ack, session, connection, 1)
        connection.subscriptions["s"] = subscription
        session.state = connection
        self.consumers[self.count] = subscription
        self.broker.consume(subscription)
        self._look()

    @precondition(lambda self: self.unacked)
    @rule(data=st.data(), positive=st.booleans())
    def acknowledge(self, data: st.DataObject, positive: bool) -> None:
        """ACK or NACK: one message (client-individual), or it and every earlier one of
        its subscription (client: the model's delivery order is its dict's order)."""
        number, ack_id = data.draw(st.sampled_from(sorted(self.unacked)))
        subscription = self.consumers[number]
        settled = [(number, ack_id)]
        if subscription.ack == CLIENT:
            mine = [key for key in self.unacked if key[0] == number]
            settled = mine[: mine.index((number, ack_id)) + 1]
        bodies = [self.unacked.pop(key) for key in settled]
        self.broker.acknowledge(subscription.connection, ack_id, consumed=positive)
        assert not any(key in subscription.connection.pending for _, key in settled)
        if positive:
            self.consumed += bodies
        self._look()  # NACKed: redelivered (seen here) or waiting

    @precondition(lambda self: self.consumers)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        number = data.draw(st.sampled_from(sorted(self.consumers)))
        subscription = self.consumers.pop(number)
        for key in [key for key in self.unacked if key[0] == number]:
            del self.unacked[key]  # given back: waiting, or delivered to another (seen below)
        self.broker.leave(subscription)
        self._look()

    @invariant()
    def nothing_lost_nothing_twice(self) -> None:
        queue = self.hub.queues.queues.get("q")
        waiting = [_body(m) for m in queue.waiting] if queue is not None else []
        unacked = list(self.unacked.values())
        everywhere = self.consumed + unacked + waiting
        assert len(everywhere) == len(set(everywhere)), "a message is in two places"
        assert len(set(self.consumed)) == len(self.consumed), "a message was consumed twice"
        missing = self.sent - set(everywhere)
        assert len(missing) == self.hub.queues.dropped, (missing, self.hub.queues.dropped)

    @invariant()
    def waiting_only_without_consumers(self) -> None:
        queue = self.hub.queues.queues.get("q")
        if queue is not None and queue.waiting:
            assert not queue.consumers
            assert len(queue.waiting) <= LIMIT


def _body(message: QueueMessage) -> str:
    sent = queued(message)
    assert sent is not None
    return sent.body.decode()


TestQueues = Queues.TestCase
TestQueues.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
