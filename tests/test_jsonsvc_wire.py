"""The JSONsvc wire format (SPEC §5), without a socket: examples and properties.

The central property: any text at all gives a :class:`Message` or a
:class:`WireError`, never an exception, so no input can crash a connection's hook.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from wsplex.protocols.jsonsvc.wire import (
    HEADER_LIMIT,
    Message,
    WireError,
    dump,
    join,
    parse,
    private_receiver,
    split_message,
    with_sender,
)

names = st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=64).filter(
    lambda s: s != "JSONsvc"
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
headers = st.fixed_dictionaries({"from": names}, optional={"to": names}).flatmap(
    lambda base: st.dictionaries(
        st.text().filter(lambda k: k not in ("from", "to", "provides", "requests", "get", "put")),
        json_values, max_size=4,
    ).map(lambda extra: {**base, **extra})
)
data = st.none() | st.text()


# -- properties ------------------------------------------------------------------


@given(st.text())
@example("")
@example("{")
@example("[" * 50_000)
@example('{"from":"a"}' + ">" * 3)
@example('{"from":"\\ud800"}')
@example('{"from":"a","n":1e999}')
@example('{"from":"a","n":' + "9" * 5000 + "}")
def test_any_text_parses_or_is_refused(text: str) -> None:
    result = parse(text)
    assert isinstance(result, Message | WireError)
    if isinstance(result, WireError):
        assert result.reason
        dump({"from": "JSONsvc", "to": result.sender, "error": result.reason})  # the reply can be written


@given(st.text(alphabet='{}[]>"\\:,. \nafromtoputgetn0123456789', max_size=60))
def test_json_looking_text_parses_or_is_refused(text: str) -> None:
    assert isinstance(parse(text), Message | WireError)


@given(headers, data)
def test_a_written_message_reads_back_exactly(header: dict[str, Any], payload: str | None) -> None:
    text = join(header, payload)
    parsed = parse(text)
    assert isinstance(parsed, Message), parsed
    assert parsed.header == header
    assert parsed.data == payload
    assert parsed.sender == header["from"] and parsed.to == header.get("to")


@given(headers, st.text(), names)
def test_with_sender_changes_only_from(header: dict[str, Any], payload: str, name: str) -> None:
    parsed = parse(join(header, payload))
    assert isinstance(parsed, Message)
    again = parse(with_sender(parsed, name))
    assert isinstance(again, Message)
    assert again.header == {**header, "from": name}
    assert again.data == payload


@given(headers, st.text())
def test_data_is_never_mistaken_for_header(header: dict[str, Any], payload: str) -> None:
    """Whatever the data holds (``>``, ``}``, a JSON object), the header ends where JSON says."""
    for tricky in (payload, "}" + payload, ">" + payload, json.dumps(header) + payload):
        split = split_message(join(header, tricky))
        assert split == (header, tricky)


@given(st.lists(names, max_size=5), st.sampled_from(["provides", "requests", "get", "put"]))
def test_service_keys_take_a_name_or_a_list(services: list[str], key: str) -> None:
    parsed = parse(dump({"from": "a", key: services}))
    if any(not s.isprintable() or len(s) > 128 for s in services):
        assert isinstance(parsed, WireError)
        return
    assert isinstance(parsed, Message)
    assert getattr(parsed, key) == tuple(dict.fromkeys(services))


@given(st.one_of(st.text(), st.text(alphabet='{}[]>"\\:,. \nafromtoputgetn0123456789eE+-', max_size=60),
                 st.builds(join, headers, data)))
@example('{"from":"a","to":"b"}>x')
@example('{"from":"a","to":"b>c"}>x')
@example('{"from":"a","to":"b","n":1e999}>x')
@example('{"from":"a","to":"b","s":"\\ud800"}>x')
@example('{"from":"a","to":"b","n":' + "9" * 30 + '}')
@example('{"from":"a","to":"JSONsvc"}')
@example(' {"from":"a","to":"b"} >x')
@example('{"from":"a","to":"b"}x>y')
def test_the_fast_path_agrees_with_the_parser(text: str) -> None:
    """Whatever the hot path routes unchanged, the full parser reads as a private
    message from that sender to that receiver, which goes on unchanged."""
    for sender in ("a", "b"):
        to = private_receiver(text, sender)
        if to is None:
            continue
        parsed = parse(text)
        assert isinstance(parsed, Message), (text, parsed)
        assert (parsed.sender, parsed.to) == (sender, to)
        assert with_sender(parsed, sender) == text


# -- examples, byte for byte -------------------------------------------------------------


def test_header_and_data() -> None:
    parsed = parse('{"from":"sensor","put":"temp"}>21.5')
    assert isinstance(parsed, Message)
    assert (parsed.header, parsed.data, parsed.put) == ({"from": "sensor", "put": "temp"}, "21.5", ("temp",))


@pytest.mark.parametrize(
    ("text", "header", "payload"),
    [
        ('{"from":"a"}', {"from": "a"}, None),
        ('{"from":"a"}>', {"from": "a"}, ""),
        (' \n{"from":"a"} \r\n', {"from": "a"}, None),
        ('{"from":"a"} \t>  x ', {"from": "a"}, "  x "),
        ('{"from":"a>b","to":"}"}>}', {"from": "a>b", "to": "}"}, "}"),
        ('{"from":"a"}>{"from":"b"}>', {"from": "a"}, '{"from":"b"}>'),
        ('{"from":"a","big":' + str(10**30) + "}", {"from": "a", "big": 10**30}, None),
    ],
)
def test_where_the_header_ends(text: str, header: dict[str, Any], payload: str | None) -> None:
    assert split_message(text) == (header, payload)


@pytest.mark.parametrize(
    ("text", "reason", "sender"),
    [
        ("", "empty message", None),
        ("   ", "empty message", None),
        ("hi", "bad JSON in header: Expecting value (character 0)", None),
        ('{"from":"a"', "bad JSON in header", None),
        ("null", "header must be a JSON object, not null", None),
        ("true>x", "header must be a JSON object, not a boolean", None),
        ("1.5", "header must be a JSON object, not a number", None),
        ('{"from":"a"}x', "unexpected 'x' after the header at character 12", "a"),
        ('{"from":"a"} }', "unexpected '}' after the header", "a"),
        ('{"from":"a","x":Infinity}', "Infinity is not valid JSON", None),
        ('{"from":"a","x":-1e400}', "out of range", None),
        ("{}", 'missing "from"', None),
        ('{"from":["a"]}', '"from" must be a string, not an array', None),
        ('{"from":"a","to":1}', '"to" must be a string, not a number', "a"),
        ('{"from":"a","requests":[["x"]]}', '"requests" must be a service name or a list of them', "a"),
        ('{"from":"a","get":"\\u0007"}', '"get" has an invalid service name', "a"),
        ('{"from":"a","put":"' + "s" * 129 + '"}', "1-128 printable characters", "a"),
    ],
)
def test_refusals(text: str, reason: str, sender: str | None) -> None:
    result = parse(text)
    assert isinstance(result, WireError)
    assert reason in result.reason
    assert result.sender == sender


def test_header_limit() -> None:
    pad = "p" * (HEADER_LIMIT - len('{"from":"a","p":""}'))
    exactly = '{"from":"a","p":"' + pad + '"}'
    assert len(exactly) == HEADER_LIMIT
    assert isinstance(parse(exactly + ">" + "d" * HEADER_LIMIT), Message)
    too_long = '{"from":"a","p":"' + pad + 'x"}'
    for text in (too_long, too_long + ">data", too_long[:-2] + "pp", '{"a":[' + "1," * HEADER_LIMIT):
        result = parse(text)
        assert isinstance(result, WireError) and "header longer than 65536" in result.reason, text[-20:]


def test_with_sender_keeps_the_text_when_from_is_right() -> None:
    text = '{ "from" : "a",  "x":1 }  >data'
    parsed = parse(text)
    assert isinstance(parsed, Message)
    assert with_sender(parsed, "a") is text
    assert with_sender(parsed, "b") == '{"from":"b","x":1}>data'


def test_dump_writes_what_orjson_refuses() -> None:
    assert dump({"n": 2**70}) == '{"n":1180591620717411303424}'
    assert json.loads(dump({"s": "\ud800"})) == {"s": "\ud800"}
    assert dump({"from": "JSONsvc", "to": None}) == '{"from":"JSONsvc","to":null}'
