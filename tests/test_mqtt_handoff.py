"""A kept MQTT session written as text and read back (``protocols/mqtt/handoff.py``)."""

from __future__ import annotations

from wsplex.protocols.mqtt.codec import Prop, Properties
from wsplex.protocols.mqtt.handoff import dump_session, load_session
from wsplex.protocols.mqtt.state import ClientSession, Message, Subscription


def test_a_session_round_trip() -> None:
    client = ClientSession("roamer", max_queued=10)
    client.expiry = 300.0
    client.subscriptions["jobs/#"] = Subscription("jobs/#", 1, identifier=7)
    client.subscriptions["$share/g/x"] = Subscription("x", 2, retain_as_published=True, group="g")
    props = Properties({Prop.CONTENT_TYPE: "text/plain"}, (("from", "sender"),), (7,))
    client.inflight[3] = Message("jobs/1", b"\x00\xff", 2, False, props, 123.5, 3, released=True)
    client.queue.append(Message("jobs/2", b"later", 1, True))
    client.awaiting_release.update({4, 9})
    client.dropped = 2
    back = load_session(dump_session(client), "roamer", max_queued=10)
    assert back is not None
    assert (back.expiry, back.subscriptions, back.inflight, list(back.queue), back.awaiting_release,
            back.dropped) == (client.expiry, client.subscriptions, client.inflight, list(client.queue),
                              client.awaiting_release, client.dropped)


def test_a_queue_longer_than_this_nodes_bound_keeps_the_newest() -> None:
    client = ClientSession("c", max_queued=10)
    client.queue.extend(Message(f"t/{n}", b"", 1, False) for n in range(5))
    back = load_session(dump_session(client), "c", max_queued=2)
    assert back is not None and [m.topic for m in back.queue] == ["t/3", "t/4"]


def test_text_that_is_not_a_session() -> None:
    for text in ("", "{}", "[1]", '{"expiry": "x"}', "not json"):
        assert load_session(text, "c", 10) is None
