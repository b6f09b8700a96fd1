"""Topic names, filters and the local bookkeeping of the topic space (SPEC §10), without sockets.

Matching follows MQTT 3.1.1 §4.7 (the examples of §4.7.1.2, §4.7.1.3 and
§4.7.2 are cases here); the :class:`FilterIndex` is checked against the plain
:func:`matches` on generated filters and topics.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsplex.app import Outgoing, Protocol, Publication, Sender, Session
from wsplex.app.topics import FilterIndex, filter_error, is_server_topic, matches, topic_error
from wsplex.hub.local import Local

pytestmark = pytest.mark.memory_only("pure functions and this node's bookkeeping: no hub involved")


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("sport/tennis/player1/#", "sport/tennis/player1", True),  # §4.7.1.2: # includes the parent
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("#", "sport/tennis", True),
        ("sport/tennis/+", "sport/tennis/player1", True),  # §4.7.1.3
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("#", "$SYS/uptime", False),  # §4.7.2: wildcards first do not see $ topics
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+/c", "a//c", True),
    ],
)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected
    index: FilterIndex[str] = FilterIndex()
    index.set(topic_filter, topic_filter)
    assert list(index.match(topic)) == ([topic_filter] if expected else [])


@pytest.mark.parametrize(
    ("topic_filter", "problem"),
    [
        ("", "filter is empty"),
        ("a/#/b", "# must be a whole level and the last one"),
        ("a#", "# must be a whole level"),
        ("a/b+", "+ must be a whole level"),
        ("a\0b", "contains NUL"),
        ("x" * 65_536, "longer than 65535 bytes"),
        ("\ud800", "not valid UTF-8"),
    ],
)
def test_bad_filters(topic_filter: str, problem: str) -> None:
    found = filter_error(topic_filter)
    assert found is not None and problem in found


@pytest.mark.parametrize("topic_filter", ["#", "+", "a/+/b", "a/#", "+/+", "/", "a//b", "é/ü"])
def test_good_filters(topic_filter: str) -> None:
    assert filter_error(topic_filter) is None


def test_topics_for_publishing() -> None:
    assert topic_error("sensors/temp") is None
    assert "wildcard" in (topic_error("sensors/+") or "")
    assert "wildcard" in (topic_error("a/#") or "")
    assert topic_error("") == "topic is empty"
    assert is_server_topic("$SYS/uptime") and not is_server_topic("$share/x")


levels = st.sampled_from(["a", "b", "", "$x", "c"])
filter_levels = st.sampled_from(["a", "b", "", "+", "$x"])


@st.composite
def filters(draw: st.DrawFn) -> str:
    parts = draw(st.lists(filter_levels, min_size=1, max_size=4))
    if draw(st.booleans()):
        parts.append("#")
    return "/".join(parts)


@given(st.lists(filters(), max_size=8), st.lists(levels, min_size=1, max_size=5).map("/".join))
def test_index_agrees_with_matches(topic_filters: list[str], topic: str) -> None:
    index: FilterIndex[str] = FilterIndex()
    for topic_filter in topic_filters:
        index.set(topic_filter, topic_filter)
    expected = sorted({f for f in topic_filters if matches(f, topic)})
    assert sorted(index.match(topic)) == expected
    for topic_filter in topic_filters:
        index.remove(topic_filter)
    assert len(index) == 0 and list(index.match(topic)) == []


# -- the local bookkeeping ---------------------------------------------------------


class Frames:
    """A session's link: what it was sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write_frame(self, frame: bytes) -> None:
        self.sent.append(frame)

    def close(self, code: int, reason: str) -> None:
        pass


class Counting(Protocol):
    """A protocol that counts how often the hub asks it to render."""

    name = "counting"
    text_only = True

    def __init__(self) -> None:  # no server context needed to render
        self.rendered = 0

    def render(self, publication: Publication) -> Outgoing | None:
        self.rendered += 1
        return Outgoing.text(f"{publication.sender.seen_by(self.name)}: {publication.text}")


def session(number: int, protocol: str = "counting") -> tuple[Session, Frames]:
    link = Frames()
    return Session(str(number), protocol, "127.0.0.1:1", link), link


def local_with(receivers: Mapping[str, Protocol]) -> Local:
    local = Local()
    local.receivers = receivers
    return local


def test_rendered_once_per_protocol_and_delivered_once_per_session() -> None:
    counting = Counting()
    local = local_with({"counting": counting})
    sessions = [session(n) for n in range(50)]
    for s, _ in sessions:
        local.attach(s)
        local.subscribe("sensors/+", s)
        local.subscribe("sensors/#", s)
        local.subscribe("sensors/temp", s)
    local.deliver(Publication("sensors/temp", "21", Sender("mqtt", "probe")), exclude="3")
    assert counting.rendered == 1
    frames = [link.sent for _, link in sessions]
    assert frames[3] == []
    assert all(sent == [b"\x81\x0emqtt:probe: 21"] for n, sent in enumerate(frames) if n != 3)


def test_native_goes_to_the_senders_own_protocol() -> None:
    counting = Counting()
    local = local_with({"counting": counting})
    one, link = session(1)
    local.attach(one)
    local.subscribe("t", one)
    local.deliver(Publication("t", "x", Sender("counting", "me"), native=Outgoing.text("native")))
    assert counting.rendered == 0 and link.sent == [b"\x81\x06native"]


def test_text_protocols_do_not_receive_bytes_that_are_not_utf8() -> None:
    counting = Counting()
    local = local_with({"counting": counting})
    one, link = session(1)
    local.attach(one)
    local.subscribe("#", one)
    local.deliver(Publication("t", b"\xff", Sender("echo", "1")))
    assert link.sent == [] and local.stats.not_text_dropped["counting"] == 1


def test_a_departure_costs_the_sessions_own_subscriptions() -> None:
    local = local_with({})
    stays, _ = session(1, "x")
    leaves, _ = session(2, "x")
    for s in (stays, leaves):
        local.attach(s)
        local.subscribe("shared", s)
        local.join("room", s)
    local.subscribe("own/+", leaves)
    local.join("own", leaves)
    local.hold("names", "bob", leaves)
    departure = local.detach(leaves)
    assert sorted(departure.filters) == [("own/+", True), ("shared", False)]
    assert sorted(departure.channels) == [("own", True), ("protocol:x", False), ("room", False)]
    assert departure.names == [("names", "bob")]
    assert sorted(local.filters()) == ["shared"]
    assert [s.id for s in local.members("room")] == ["1"]
    assert local.holder("names", "bob") is None
