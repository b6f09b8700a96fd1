"""Random STOMP conversations against the protocol (SPEC §8, §12): whatever clients send,
a connection ends with an ERROR frame and close 1002 or carries on; no hook ever fails
(1011), and every ERROR names its problem. Real Sessions on the in-memory hub, over a
link that keeps what it was given: hypothesis needs thousands of conversations, which
the wire tests (test_stomp.py) cannot afford.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from wsplex.app import Context, Session
from wsplex.app.registry import ProtocolRegistry
from wsplex.config import Settings
from wsplex.hub.memory import MemoryHub
from wsplex.protocols.stomp import Stomp12
from wsplex.protocols.stomp.frames import V12, Frame, FrameParser, encode
from wsplex.stats import Stats

COMMANDS = ["CONNECT", "STOMP", "SEND", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN",
            "COMMIT", "ABORT", "DISCONNECT", "MESSAGE", "PING"]
VALUES = {
    "accept-version": ["1.0", "1.1", "1.2", "1.0,1.2", "3.0", ""],
    "heart-beat": ["0,0", "10,x", "5"],
    "destination": ["/topic/a", "/topic/a/+", "/topic/#", "/queue/q", "/queue/r", "/queue/a+", "/x", ""],
    "id": ["1", "2", "3"],
    "ack": ["auto", "client", "client-individual", "never"],
    "transaction": ["t1", "t2"],
    "receipt": ["r1", "r2"],
    "message-id": ["1", "2", "3", "4", "5", "6"],
    "subscription": ["1", "2"],
    "content-type": ["text/plain"],
}
headers = st.dictionaries(st.sampled_from(sorted(VALUES)), st.none(), max_size=5).flatmap(
    lambda names: st.fixed_dictionaries({name: st.sampled_from(VALUES[name]) for name in names}))
frames = st.tuples(st.sampled_from(COMMANDS), headers, st.sampled_from([b"", b"hi", b"\0\xff"]))
steps = st.lists(st.tuples(st.integers(0, 2), frames, st.booleans()), max_size=60)


class KeepingLink:
    def __init__(self) -> None:
        self.parser = FrameParser(1 << 20, V12)
        self.frames: list[Frame] = []
        self.closed: int | None = None

    def write_frame(self, frame: bytes) -> None:
        length = frame[1] & 0x7F
        payload = frame[2:] if length < 126 else frame[4:] if length == 126 else frame[10:]
        self.frames += self.parser.feed(payload)

    def close(self, code: int, reason: str) -> None:
        self.closed = code


class Conversation:
    def __init__(self) -> None:
        base = replace(Settings(), protocols=("v12.stomp",), stomp_heart_beat=0, stomp_queue_limit=3)
        self.hub = MemoryHub("fuzz", Stats())
        self.hub.queues.limit = base.stomp_queue_limit
        context = Context(base, self.hub, Stats(), ProtocolRegistry.build(("v12.stomp",)))
        self.protocol = Stomp12(context)
        self.hub.bind({"v12.stomp": self.protocol})
        self.count = 0
        self.clients = [self.open() for _ in range(3)]

    def open(self) -> tuple[Session, KeepingLink]:
        self.count += 1
        link = KeepingLink()
        session = Session(str(self.count), "v12.stomp", "test:1", link)
        self.hub.attach(session)
        session.run(self.protocol.on_connect)
        if self.count % 4:  # most are past CONNECTED; some start from nothing
            session.run(self.protocol.on_message, encode("CONNECT", [("accept-version", "1.2")]))
        return session, link

    def leave(self, index: int, *, reopen: bool = True) -> None:
        session, link = self.clients[index]
        session.closed = True
        self.hub.detach(session)
        session.run(self.protocol.on_disconnect, link.closed or 1006)
        if reopen:
            self.clients[index] = self.open()


@settings(max_examples=300, deadline=None)
@given(steps)
def test_random_conversations_never_break_the_protocol(conversation: list[tuple[int, tuple[
        str, dict[str, str], bytes], bool]]) -> None:
    world = Conversation()
    for index, (command, frame_headers, body), as_text in conversation:
        session, link = world.clients[index]
        wire = encode(command, list(frame_headers.items()), body)
        session.run(world.protocol.on_message, wire.decode(errors="replace") if as_text else wire)
        assert link.closed in (None, 1000, 1002), link.closed  # never 1011: no hook failed
        if link.closed == 1002:
            assert link.frames and link.frames[-1].command == "ERROR"
            assert link.frames[-1].get("message")
        if link.closed is not None:
            world.leave(index)
    for index in range(len(world.clients)):
        world.leave(index, reopen=False)
    assert not world.protocol.broker.connections
    assert all(not queue.consumers for queue in world.hub.queues.queues.values())
