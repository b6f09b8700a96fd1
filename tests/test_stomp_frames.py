"""The STOMP frame codec, byte for byte and fuzzed (STOMP 1.2 "STOMP Frames", "Value Encoding")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsplex.protocols.stomp.frames import (
    V10,
    V11,
    V12,
    VERSIONS,
    Frame,
    FrameError,
    FrameParser,
    encode,
    escape,
    unescape,
)

LIMIT = 1 << 16


def parse(data: bytes, version: str = V12, limit: int = LIMIT) -> list[Frame]:
    return FrameParser(limit, version).feed(data)


def test_a_frame_with_headers_and_a_body() -> None:
    [frame] = parse(b"SEND\ndestination:/topic/a\nreceipt:1\n\nhello\0")
    assert frame.command == "SEND"
    assert frame.headers == (("destination", "/topic/a"), ("receipt", "1"))
    assert frame.body == b"hello"


def test_crlf_line_ends_and_heart_beats_between_frames() -> None:
    parser = FrameParser(LIMIT, V12)
    frames = parser.feed(b"\n\r\nBEGIN\r\ntransaction:t\r\n\r\n\0\n\nCOMMIT\ntransaction:t\n\n\0\r\n")
    assert [(f.command, f.get("transaction")) for f in frames] == [("BEGIN", "t"), ("COMMIT", "t")]
    assert parser.heart_beats == 5


def test_content_length_body_holds_nul() -> None:
    [frame] = parse(b"SEND\ndestination:/queue/q\ncontent-length:5\n\na\0b\0c\0")
    assert frame.body == b"a\0b\0c"


def test_content_length_must_end_at_a_nul() -> None:
    with pytest.raises(FrameError, match="not followed by NUL"):
        parse(b"SEND\ncontent-length:2\n\nabc\0")


@pytest.mark.parametrize("value", ["-1", "x", "1.5", ""])
def test_bad_content_length(value: str) -> None:
    with pytest.raises(FrameError, match="content-length"):
        parse(f"SEND\ncontent-length:{value}\n\n\0".encode())


def test_first_of_repeated_headers_wins() -> None:
    [frame] = parse(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0")
    assert frame.get("foo") == "World"
    assert frame.headers == (("foo", "World"), ("foo", "Hello"))


def test_a_frame_in_pieces_and_frames_in_one_piece() -> None:
    data = b"SEND\ndestination:/topic/a\n\none\0SEND\ndestination:/topic/b\ncontent-length:3\n\ntwo\0"
    parser = FrameParser(LIMIT, V12)
    frames = [frame for octet in range(len(data)) for frame in parser.feed(data[octet : octet + 1])]
    assert [f.body for f in frames] == [b"one", b"two"]
    assert parse(data) == frames


@pytest.mark.parametrize(
    ("version", "raw", "value"),
    [
        (V12, "a\\cb\\nc\\rd\\\\e", "a:b\nc\rd\\e"),
        (V11, "a\\cb\\nc\\\\e", "a:b\nc\\e"),
        (V10, "a\\cb", "a\\cb"),
    ],
)
def test_header_unescaping_per_version(version: str, raw: str, value: str) -> None:
    [frame] = parse(f"SEND\nh:{raw}\n\n\0".encode(), version)
    assert frame.get("h") == value


@pytest.mark.parametrize(("version", "raw"), [(V12, "\\t"), (V11, "\\r"), (V12, "end\\")])
def test_undefined_escapes_are_fatal(version: str, raw: str) -> None:
    with pytest.raises(FrameError):
        parse(f"SEND\nh:{raw}\n\n\0".encode(), version)


def test_connect_is_never_unescaped() -> None:
    [frame] = parse(b"CONNECT\npasscode:a\\cb\n\n\0", V12)
    assert frame.get("passcode") == "a\\cb"


def test_raw_colon_in_a_value_is_kept() -> None:
    [frame] = parse(b"SEND\nhost:example.com:61613\n\n\0", V10)
    assert frame.get("host") == "example.com:61613"


@pytest.mark.parametrize(
    "data",
    [b"\0", b"SE ND\n\n\0", b"SEND\nnocolon\n\n\0", b"SEND\n:empty-name\n\n\0", b"\xff\n\n\0",
     b"SEND\nh:\xff\n\n\0"],
)
def test_bad_frames(data: bytes) -> None:
    with pytest.raises(FrameError):
        parse(data)


def test_size_limit_whole_frame_and_content_length() -> None:
    with pytest.raises(FrameError, match="larger than 64"):
        parse(b"SEND\n\n" + b"x" * 100 + b"\0", limit=64)
    with pytest.raises(FrameError, match="larger than 64"):
        parse(b"SEND\ncontent-length:1000\n\n", limit=64)
    with pytest.raises(FrameError, match="larger than 64"):
        FrameParser(64).feed(b"SEND\n\n" + b"x" * 80)  # not complete yet, already too big


def test_encode_escapes_per_version_and_adds_content_length() -> None:
    headers = [("message", "a:b\nc")]
    assert encode("ERROR", headers, b"x\0y", V12) == b"ERROR\nmessage:a\\cb\\nc\ncontent-length:3\n\nx\0y\0"
    assert encode("ERROR", headers, b"", V10) == b"ERROR\nmessage:a:b c\n\n\0"
    assert encode("CONNECTED", [("server", "a:b")]) == b"CONNECTED\nserver:a:b\n\n\0"


# -- fuzzing -------------------------------------------------------------------

names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
values = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
commands = st.sampled_from(["SEND", "MESSAGE", "ERROR", "SUBSCRIBE", "ACK"])
frames = st.builds(
    lambda command, headers, body: Frame(command, tuple(headers), body),
    commands,
    st.lists(st.tuples(names, values), max_size=5).map(
        lambda pairs: [p for p in pairs if p[0] != "content-length"]
    ),
    st.binary(max_size=40),
)


@given(st.lists(frames, min_size=1, max_size=4), st.sampled_from([V11, V12]), st.data())
def test_round_trip_in_any_pieces(sent: list[Frame], version: str, data: st.DataObject) -> None:
    wire = b"".join(encode(f.command, f.headers, f.body, version) + b"\n" * data.draw(
        st.integers(0, 2)) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    parser = FrameParser(LIMIT, version)
    received: list[Frame] = []
    for begin, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        received += parser.feed(wire[begin:end])
    def carried(text: str) -> str:  # STOMP 1.1 has no escape for CR: it becomes a space
        return text.replace("\r", " ") if version == V11 else text

    expected = [Frame(f.command, tuple((carried(k), carried(v)) for k, v in f.headers)
                      + ((("content-length", str(len(f.body))),) if f.body else ()), f.body) for f in sent]
    assert received == expected


@given(values, st.sampled_from(VERSIONS))
def test_escape_round_trip(value: str, version: str) -> None:
    if version == V10 or (version == V11 and "\r" in value):
        return  # 1.0 cannot carry CR or LF; 1.1 has no escape for CR
    assert unescape(escape(value, version), version) == value


@given(st.binary(max_size=200), st.sampled_from(VERSIONS), st.data())
def test_any_bytes_parse_or_fail_the_same_in_any_pieces(
    wire: bytes, version: str, data: st.DataObject
) -> None:
    """Arbitrary input gives frames or a FrameError, never another exception, and
    the outcome does not depend on how the bytes were cut into messages."""
    def run(pieces: list[bytes]) -> list[Frame] | str:
        parser = FrameParser(128, version)
        out: list[Frame] = []
        try:
            for piece in pieces:
                out += parser.feed(piece)
        except FrameError as exc:
            return f"error: {type(exc).__name__}"
        return out

    cut = data.draw(st.integers(0, len(wire)))
    assert run([wire[:cut], wire[cut:]]) == run([wire])
