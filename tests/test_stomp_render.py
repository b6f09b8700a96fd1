"""A topic MESSAGE rendered in parts (shared head and tail, per-receiver lines) is the frame
``encode`` makes of the whole, for every version, ack mode, subscription id and body."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from hypothesis import example, given
from hypothesis import strategies as st

from wsplex.app import Publication, Sender, Session
from wsplex.protocols.stomp import (
    ACK_MODES,
    Connection,
    Subscription,
    _message_headers,
    _Rendering,
    encode_passed_on,
)
from wsplex.protocols.stomp.frames import V10, V11, V12, FrameParser, encode, encode_headers

# Header text with the characters each version escapes or flattens.
header_text = st.text(alphabet=st.sampled_from("ab:\\\r\n é1"), min_size=1, max_size=8)
topic = st.text(alphabet=st.sampled_from("ab/:\\\n1é"), min_size=1, max_size=10)


def whole(rendering: _Rendering, subscription: Subscription, message_id: str) -> bytes:
    """What ``encode`` made of the frame before it was rendered in parts."""
    version = subscription.connection.version or V12
    headers = _message_headers(rendering.destination, message_id, subscription, version)
    return encode("MESSAGE", headers, rendering.body, version,
                  raw_headers=encode_headers(rendering.headers, version))


@given(version=st.sampled_from((V10, V11, V12)), ack_index=st.integers(0, 2),
       subscription_id=header_text, name=topic,
       payload=st.one_of(st.text(max_size=20), st.binary(max_size=20)),
       stomp_sender=st.booleans(), passed_on=st.lists(st.tuples(header_text, header_text), max_size=3),
       first_id=st.integers(0, 10**6))
@example(version=V10, ack_index=0, subscription_id="1", name="1", payload="", stomp_sender=True,
         passed_on=[(":", "1")], first_id=0)  # found by hypothesis: the frame is right, unreadable in 1.0
def test_parts_are_the_whole_frame(version: str, ack_index: int, subscription_id: str, name: str,
                                   payload: str | bytes, stomp_sender: bool,
                                   passed_on: list[tuple[str, str]], first_id: int) -> None:
    session = cast(Session, SimpleNamespace(id="s1"))
    connection = Connection(session, 1 << 20)
    connection.version = version
    modes = ACK_MODES[version]
    ack = modes[ack_index % len(modes)]
    subscription = Subscription(subscription_id, name, False, ack, session, connection, 1)
    sender = Sender("stomp", "s2") if stomp_sender else Sender("chat", "alice")
    native = encode_passed_on(passed_on) if stomp_sender else None
    rendering = _Rendering(Publication(name, payload, sender, native=native))
    for _ in range(2):  # the second receiver reuses the parts of the first
        connection.next_id = first_id
        expected = whole(rendering, subscription, str(first_id + 1))
        got = rendering.message(subscription)
        assert got.payload == expected
        assert got.is_text == utf8(payload)  # a UTF-8 body goes in a text message
        if version == V10 and any(":" in header for header, _ in passed_on):
            continue  # 1.0 has no escape for a colon in a header name: no client could read it
        parser = FrameParser(1 << 20, version)
        [frame] = parser.feed(got.payload)
        assert frame.get("subscription") == as_read(subscription_id, version)


def utf8(payload: str | bytes) -> bool:
    try:
        payload if isinstance(payload, str) else payload.decode()
    except UnicodeDecodeError:
        return False
    return True


def as_read(value: str, version: str) -> str:
    """What a client of ``version`` reads of a header value: 1.1 has no escape for CR,
    1.0 none for CR and LF (both become spaces)."""
    if version == V12:
        return value
    value = value.replace("\r", " ")
    return value if version == V11 else value.replace("\n", " ")
