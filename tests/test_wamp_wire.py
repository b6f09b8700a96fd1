"""WAMP serialisers and message validation (wsplex.protocols.wamp.wire), property-tested.

Whatever a client sends, decoding gives a validated message or ProtocolViolation,
nothing else; every valid message survives both serialisations; and the router
fed any frame answers the sender only (an ABORT or ERROR, or nothing), never
raises, and leaves a bystander's session working.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsplex.app import Session, filter_error, matches
from wsplex.hub import MemoryHub
from wsplex.protocols.wamp import wire
from wsplex.protocols.wamp.router import (
    Peer,
    Router,
    hub_filter,
    payload_of,
    topic_uri,
    uri_matches,
    uri_topic,
)
from wsplex.protocols.wamp.wire import JSON, MSGPACK, ProtocolViolation, is_valid_uri


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


ids = st.integers(1, 2**53)
#: Text a valid message may hold: a string starting with NUL is binary in JSON
#: (WAMP §"Binary conversion of JSON Strings"), so it is no text string of a message.
texts = st.text(max_size=20).filter(lambda s: not s.startswith("\0"))
keys = st.text(max_size=8).filter(lambda s: not s.startswith("\0"))
uris = st.from_regex(r"\A[a-z0-9_]{1,8}(\.[a-z0-9_]{1,8}){0,3}\Z")
scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts | st.floats(
    allow_nan=False, allow_infinity=False
)
values = st.recursive(scalars | st.binary(max_size=20),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner,
                                                                                   max_size=4),
                      max_leaves=12)
dicts = st.dictionaries(keys, values, max_size=4)
payloads = st.one_of(
    st.just([]), st.tuples(st.lists(values, max_size=3)).map(list),
    st.tuples(st.lists(values, max_size=3), dicts).map(list),
)


def messages() -> st.SearchStrategy[list[Any]]:
    """Every message a router receives, well formed (§"Message Definitions")."""
    return st.one_of(
        st.tuples(st.just(wire.HELLO), uris, st.just({"roles": {"caller": {}}})).map(list),
        st.tuples(st.just(wire.GOODBYE), dicts, uris).map(list),
        st.tuples(st.just(wire.AUTHENTICATE), keys, dicts).map(list),
        st.tuples(st.just(wire.ABORT), dicts, uris).map(list),
        st.builds(lambda r, o, t, p: [wire.PUBLISH, r, o, t, *p], ids, dicts, uris, payloads),
        st.tuples(st.just(wire.SUBSCRIBE), ids, dicts, uris).map(list),
        st.tuples(st.just(wire.UNSUBSCRIBE), ids, ids).map(list),
        st.builds(lambda r, o, t, p: [wire.CALL, r, o, t, *p], ids, dicts, uris, payloads),
        st.tuples(st.just(wire.CANCEL), ids, dicts).map(list),
        st.tuples(st.just(wire.REGISTER), ids, dicts, uris).map(list),
        st.tuples(st.just(wire.UNREGISTER), ids, ids).map(list),
        st.builds(lambda r, o, p: [wire.YIELD, r, o, *p], ids, dicts, payloads),
        st.builds(lambda r, d, e, p: [wire.ERROR, wire.INVOCATION, r, d, e, *p], ids, dicts, uris, payloads),
    )


def json_frame(message: list[Any]) -> str:
    return JSON.encode(message).decode()


@given(messages())
def test_valid_messages_decode_in_both_serialisations(message: list[Any]) -> None:
    from_json = JSON.decode(json_frame(message))
    from_msgpack = MSGPACK.decode(MSGPACK.encode(message))
    assert from_json == from_msgpack
    assert type(from_json).__name__.upper() == {
        1: "HELLO", 3: "ABORT", 5: "AUTHENTICATE", 6: "GOODBYE", 8: "ERROR", 16: "PUBLISH", 32: "SUBSCRIBE",
        34: "UNSUBSCRIBE", 48: "CALL", 49: "CANCEL", 64: "REGISTER", 66: "UNREGISTER", 70: "YIELD",
    }[message[0]]


@given(st.lists(values, max_size=6) | values)
def test_any_json_value_is_a_message_or_a_violation(fields: Any) -> None:
    try:
        frame = json_frame(fields)
    except TypeError:
        return
    with contextlib.suppress(ProtocolViolation):
        JSON.decode(frame)


@given(st.binary(max_size=64))
def test_any_bytes_are_a_message_or_a_violation(data: bytes) -> None:
    for frame in (data, data.decode("latin-1")):
        for serializer in (JSON, MSGPACK):
            with contextlib.suppress(ProtocolViolation):
                serializer.decode(frame)


@given(messages(), st.integers(0, 6), values)
def test_a_damaged_field_is_a_violation_not_a_crash(message: list[Any], position: int, junk: Any) -> None:
    damaged = list(message)
    damaged[min(position, len(damaged) - 1)] = junk
    try:
        packed = MSGPACK.encode(damaged)
    except (TypeError, ValueError):
        return
    with contextlib.suppress(ProtocolViolation):
        MSGPACK.decode(packed)


@pytest.mark.parametrize("frame", [
    "", "[]", "{}", "[1]", '["1", "realm1", {}]', "[2, 1, {}]", "[36, 1, 2, {}]", "[true, \"a\", {}]",
    '[1, "realm1", []]', '[1, "realm1", {}, 5]', '[16, 0, {}, "a"]', f'[16, {2**53 + 1}, {{}}, "a"]',
    '[16, true, {}, "a"]', '[16, 1, {}, "a", {}]', '[16, 1, {}, "a", [], []]', '[8, 48, 1, {}, "e"]',
    '[70, 1, {}, [], {}, []]', '[16, 1, {}, "\\u0000not base64!"]', "[99]", "[1, \"r\", {\"a\": 1}",
])
def test_malformed_json_messages(frame: str) -> None:
    with pytest.raises(ProtocolViolation):
        JSON.decode(frame)


def test_frame_types_belong_to_their_serialisation() -> None:
    with pytest.raises(ProtocolViolation):
        JSON.decode(b'[1, "realm1", {}]')
    with pytest.raises(ProtocolViolation):
        MSGPACK.decode(msgpack.packb([1, "realm1", {}]).decode("latin-1"))
    with pytest.raises(ProtocolViolation):
        MSGPACK.decode(msgpack.packb([1, "realm1", {1: 2}]))  # keys must be strings
    with pytest.raises(ProtocolViolation):
        MSGPACK.decode(msgpack.packb([1, "realm1", msgpack.ExtType(1, b"x")]))


@pytest.mark.parametrize("args", [
    [{1: "int key"}], [{b"k": "bytes key"}], [msgpack.Timestamp(1)], [_deep(300)],
])
def test_values_only_one_serialisation_carries_are_violations(args: list[Any]) -> None:
    """The router hands values from MessagePack peers to JSON peers and back."""
    with pytest.raises(ProtocolViolation):
        MSGPACK.decode(msgpack.packb([wire.PUBLISH, 1, {}, "a", args], use_bin_type=True))


def test_json_nested_beyond_what_can_be_sent_on_is_a_violation() -> None:
    with pytest.raises(ProtocolViolation):
        JSON.decode(f'[16, 1, {{}}, "a", [{"[" * 300}{"]" * 300}]]')
    assert isinstance(JSON.decode(f'[16, 1, {{}}, "a", [{"[" * 100}{"]" * 100}]]'), wire.Publish)


def test_binary_values_in_json_are_the_spec_base64_strings() -> None:
    frame = json_frame([wire.PUBLISH, 1, {}, "a.b", [b"\x00\xff", {"k": b"z"}]])
    assert '"\\u0000AP8="' in frame
    decoded = JSON.decode(frame)
    assert isinstance(decoded, wire.Publish) and decoded.args == [b"\x00\xff", {"k": b"z"}]


@pytest.mark.parametrize(("uri", "pattern", "valid"), [
    ("com.example.add", False, True), ("Com.Ex-ample/x.+", False, True), ("a", False, True),
    ("", False, False), ("a..b", False, False), (".a", False, False), ("a.", False, False),
    ("a b", False, False), ("a#b", False, False), ("a\tb", False, False),
    ("a..b", True, True), ("a.b.", True, True), (".", True, True), ("", True, False), ("a b..c", True, False),
])
def test_loose_uris(uri: str, pattern: bool, valid: bool) -> None:
    assert is_valid_uri(uri, pattern=pattern) is valid


# -- the router fed anything -----------------------------------------------------------


class Wire:
    """A session's connection without a socket, synchronous: frames and the close."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def write_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def payload_of_frame(frame: bytes) -> bytes:
    """The payload of an unmasked server frame (RFC 6455 §5.2)."""
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    return frame[start:]


def peer(router: Router, serializer: wire.Serializer, number: int) -> tuple[Peer, Wire]:
    link = Wire()
    session = Session(f"s{number}", "wamp.2.json", "127.0.0.1:1", link)
    return Peer(session, serializer), link


def frame_of(serializer: wire.Serializer, message: list[Any]) -> str | bytes:
    """A message as a client of ``serializer`` sends it: a text frame for JSON."""
    data = serializer.encode(message)
    return data.decode() if serializer.is_text else data


def received(link: Wire, serializer: wire.Serializer) -> list[list[Any]]:
    out = []
    for frame in link.frames:
        data = payload_of_frame(frame)
        out.append(orjson.loads(data) if serializer is JSON else msgpack.unpackb(data, raw=False))
    link.frames.clear()
    return out


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages() | st.lists(values, max_size=5), min_size=1, max_size=6),
       st.sampled_from(["json", "msgpack"]), st.sampled_from(["fuzz", "realm1"]))
def test_the_router_answers_any_message_and_spares_other_sessions(
    sequence: list[list[Any]], serializer_name: str, realm: str
) -> None:
    """Realm1 too: its paths go through the hub (here one with no other protocol)."""
    asyncio.run(_router_run(sequence, JSON if serializer_name == "json" else MSGPACK, realm))


async def _router_run(sequence: list[list[Any]], serializer: wire.Serializer, realm: str = "fuzz") -> None:
    router = Router(MemoryHub("fuzz"))
    bystander, bystander_link = peer(router, MSGPACK, 1)
    router.receive(bystander, MSGPACK.encode([wire.HELLO, "fuzz", {"roles": {"callee": {}, "caller": {}}}]))
    router.receive(bystander, MSGPACK.encode([wire.REGISTER, 1, {}, "com.bystander.echo"]))
    fuzzer, link = peer(router, serializer, 2)
    router.receive(fuzzer, frame_of(serializer, [wire.HELLO, realm, {"roles": {"caller": {}}}]))
    assert received(link, serializer)[0][0] == wire.WELCOME
    for message in sequence:
        try:
            frame = frame_of(serializer, message)
        except (TypeError, ValueError):
            continue
        pending = router.receive(fuzzer, frame)  # must not raise
        if pending is not None:
            await pending
        for answer in received(link, serializer):
            assert answer[0] in (wire.WELCOME, wire.ABORT, wire.GOODBYE, wire.ERROR, wire.PUBLISHED,
                                 wire.SUBSCRIBED, wire.UNSUBSCRIBED, wire.REGISTERED, wire.UNREGISTERED,
                                 wire.RESULT, wire.INVOCATION, wire.EVENT, wire.INTERRUPT), answer
            if answer[0] == wire.ABORT:
                assert answer[2] in ("wamp.error.protocol_violation", "wamp.error.invalid_uri"), answer
        if link.closed is not None:
            break
    # The bystander still works: a call of its own procedure reaches it, the fuzzer's calls aside.
    received(bystander_link, MSGPACK)
    caller, caller_link = peer(router, JSON, 3)
    router.receive(caller, json_frame([wire.HELLO, "fuzz", {"roles": {"caller": {}}}]))
    router.receive(caller, json_frame([wire.CALL, 7, {}, "com.bystander.echo", ["ping"]]))
    invocations = [m for m in received(bystander_link, MSGPACK) if m[0] == wire.INVOCATION]
    assert invocations and invocations[-1][4] == ["ping"]
    router.receive(bystander, MSGPACK.encode([wire.YIELD, invocations[-1][1], {}, ["pong"]]))
    assert received(caller_link, JSON)[-1] == [wire.RESULT, 7, {}, ["pong"]]


# -- realm1 on the topic space: the hub filter of a subscription covers what it matches --------

components = st.sampled_from(["a", "b", "ab", "abc", "com", "x_1"])
topic_uris = st.lists(components, min_size=1, max_size=4).map(".".join)


@st.composite
def patterns(draw: st.DrawFn) -> tuple[str, str]:
    match = draw(st.sampled_from(["exact", "prefix", "wildcard"]))
    parts = draw(st.lists(components | st.just(""), min_size=1, max_size=4))
    if match == "exact" or (match == "wildcard" and not any(parts)):
        parts = [part or "a" for part in parts]
    if match == "prefix":
        parts = [part or "a" for part in parts]
        uri = ".".join(parts)
        return draw(st.sampled_from([uri, uri[:-1] or uri, uri + "."])), match
    return ".".join(parts), match


@given(patterns(), topic_uris)
def test_a_subscriptions_hub_filter_covers_every_topic_it_matches(pattern: tuple[str, str], uri: str) -> None:
    uri_pattern, match = pattern
    topic_filter = hub_filter(uri_pattern, match)
    assert filter_error(topic_filter) is None
    assert topic_uri(uri_topic(uri)) == uri
    if uri_matches(uri_pattern, match, uri):
        assert matches(topic_filter, uri_topic(uri))


@pytest.mark.parametrize(("args", "kwargs", "payload"), [
    (["hi"], None, "hi"), ([b"\x00"], None, b"\x00"), ([21.5], None, "21.5"),
    ([{"a": [1]}], None, '{"a":[1]}'), (None, None, ""), ([1, 2], None, '{"args":[1,2],"kwargs":{}}'),
    (["x"], {"k": b"\x01"}, '{"args":["x"],"kwargs":{"k":"\\u0000AQ=="}}'),
])
def test_what_other_protocols_see_of_a_wamp_publication(
    args: list[Any] | None, kwargs: dict[str, Any] | None, payload: str | bytes
) -> None:
    assert payload_of(args, kwargs) == payload


@pytest.mark.parametrize("fields", [[wire.PUBLISH, 1, {}, "a.b", ["\0text"]],
                                    [wire.PUBLISH, 1, {"\0key": 1}, "a.b"]])
def test_text_starting_with_nul_is_refused_in_msgpack(fields: list[Any]) -> None:
    """JSON would read it as binary, so the router could not pass it on unchanged."""
    with pytest.raises(ProtocolViolation, match="starting with"):
        MSGPACK.decode(MSGPACK.encode(fields))
