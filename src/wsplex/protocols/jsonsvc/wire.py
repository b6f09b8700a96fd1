"""The JSONsvc wire format (SPEC §5): a JSON object header, then optionally ``>`` and raw data.

    {"from":"sensor","put":"temp"}>21.5

Rules, in the order :func:`parse` applies them:

* JSON whitespace may surround the header. After the header comes either the
  end of the message, or ``>`` followed by the data: every character to the
  end of the message, kept exactly (it may hold ``>``, ``}``, JSON, anything).
  Anything else after the header is an error.
* The header is decoded by a real JSON decoder, which finds its end itself,
  so a ``>`` or ``}`` inside a header string or in the data cannot confuse it.
  ``NaN`` and ``Infinity`` are not JSON and are refused.
* A header longer than :data:`HEADER_LIMIT` characters is refused; the data
  is only bounded by the server's message size limit.
* The header must be an object with a string ``from``; ``to`` is a string;
  ``provides``, ``requests``, ``get`` and ``put`` are each a service name or a
  list of them, checked when the server acts on them (not in a message ``to``
  a client). Every other key is the receiver's business and left alone.

:func:`parse` never raises: it returns a :class:`Message` or a :class:`WireError`
whose ``reason`` is the text of the error reply.

Decoder choice: ``json.JSONDecoder.raw_decode`` (the C scanner). orjson measured
10-40 % faster on typical headers (1.64 vs 1.86 µs for a small ``put``, 10 vs
17 µs for a 5 KB header), but it cannot say where a value ends, so it needs the
header cut out first (split at the first ``>``, fall back when that is inside
a string), and it turns integers beyond 64 bits into floats, which would alter
pass-through keys whenever a header is re-serialized. A fraction of a
microsecond per message is not worth two code paths and lossy numbers.
orjson is used for writing (:func:`dump`), where it is plainly faster.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

#: The longest header accepted, in characters. Headers are routing metadata;
#: 64 KiB leaves room for generous pass-through keys while payloads go in the data.
HEADER_LIMIT: Final = 64 * 1024
#: Client names (``from``, ``to``) and service names: printable, at most this long.
NAME_LIMIT: Final = 64
SERVICE_LIMIT: Final = 128
#: The server's own name in ``from`` and ``to``.
SERVER_NAME: Final = "JSONsvc"
#: The keys whose value is a service name or a list of them.
SERVICE_KEYS: Final = ("provides", "requests", "get", "put")

_DATA_MARK: Final = ">"
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# Numbers are kept exactly (integers of any size) or refused (NaN, overflowing floats),
# so a header written back by :func:`dump` says what the sender wrote.
_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


class Message(NamedTuple):
    """A well-formed message: its header, its data (None without ``>``) and the text itself.

    A named tuple rather than a frozen dataclass: it is built once per message,
    and a frozen dataclass pays an ``object.__setattr__`` per field for that.
    """

    header: dict[str, Any]
    data: str | None
    text: str
    sender: str
    to: str | None
    provides: tuple[str, ...] = ()
    requests: tuple[str, ...] = ()
    get: tuple[str, ...] = ()
    put: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WireError:
    """Why a message was refused, and who sent it if the header said (for the reply's ``to``)."""

    reason: str
    sender: str | None = None


def parse(text: str) -> Message | WireError:
    """Split ``text`` into header and data and check the header's keys; never raises."""
    split = split_message(text)
    if isinstance(split, WireError):
        return split
    header, data = split
    return check_header(header, data, text)


def split_message(text: str) -> tuple[dict[str, Any], str | None] | WireError:
    """The header object and the data (None when there is no ``>``)."""
    # Most messages start with "{" and put ">" right after the header: skip the regex then.
    start = 0 if text.startswith("{") else _WHITESPACE.match(text).end()  # type: ignore[union-attr]
    try:
        header, end = _decoder.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        ran_out = exc.pos == len(text) or exc.msg.startswith("Unterminated")
        if exc.pos - start > HEADER_LIMIT or (ran_out and len(text) - start > HEADER_LIMIT):
            return _oversize()
        if start == len(text):
            return WireError("empty message: expected a JSON object header like {\"from\":\"me\"}")
        return WireError(f"bad JSON in header: {exc.msg} (character {exc.pos})")
    except (ValueError, RecursionError) as exc:  # NaN, 1e999, absurd nesting
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        return WireError(f"bad JSON in header: {reason}")
    if end - start > HEADER_LIMIT:
        return _oversize()
    if not isinstance(header, dict):
        return WireError(f"header must be a JSON object, not {_json_type(header)}")
    if text.startswith(_DATA_MARK, end):
        return header, text[end + 1 :]
    after = _WHITESPACE.match(text, end).end()  # type: ignore[union-attr]
    if after == len(text):
        return header, None
    if text[after] == _DATA_MARK:
        return header, text[after + 1 :]
    sender = header.get("from")
    return WireError(
        f"unexpected {text[after]!r} after the header at character {after}: "
        "expected '>' and data, or the end of the message",
        sender if isinstance(sender, str) else None,
    )


def private_receiver(text: str, sender: str) -> str | None:
    """The receiver of ``text`` if it is a well-formed private message from ``sender``
    that goes on unchanged (the hot path: ``{"from":"a","to":"b"}>data``), else None
    and :func:`parse` decides.

    orjson reads the header cut at the first ``>``: faster than the standard
    decoder, and safe here because nothing of the header is written back. A cut
    that falls inside a header string leaves an unterminated string, which
    orjson refuses, and so does everything else it reads differently from
    :data:`_decoder` (lone surrogates, NaN, overflowing numbers, deep nesting):
    all of those take the full path.
    """
    cut = text.find(_DATA_MARK)
    head = text if cut < 0 else text[:cut]
    if len(head) > HEADER_LIMIT:
        return None
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        return None
    if type(header) is not dict or header.get("from") != sender:
        return None
    to = header.get("to")
    return to if type(to) is str and to != SERVER_NAME else None


def check_header(header: dict[str, Any], data: str | None, text: str) -> Message | WireError:
    """Check the keys the server acts on; every other key passes through untouched."""
    sender = header.get("from")
    if sender is None:
        return WireError('missing "from": every message names its sender')
    if not isinstance(sender, str):
        return WireError(f'"from" must be a string, not {_json_type(sender)}')
    to = header.get("to")
    if to is not None:
        if not isinstance(to, str):
            return WireError(f'"to" must be a string, not {_json_type(to)}', sender)
        if to != SERVER_NAME:
            # A private message: the server only routes it and acts on none of its
            # service keys, so they are the receiver's business (and the hot path).
            return Message(header, data, text, sender, to)
    services: dict[str, tuple[str, ...]] = {}
    for key in SERVICE_KEYS:
        value = header.get(key)
        if value is None:
            continue  # most messages name no service: the default () stands
        names = _service_names(value)
        if isinstance(names, str):
            return WireError(f'"{key}" {names}', sender)
        services[key] = names
    return Message(header, data, text, sender, to, **services)


def _service_names(value: object) -> tuple[str, ...] | str:
    """The service names in a ``provides``/``requests``/``get``/``put`` value, or what is wrong."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str):
            return f"must be a service name or a list of them, not {_json_type(item)}"
        if not valid_service(item):
            return f"has an invalid service name {item!r}: 1-{SERVICE_LIMIT} printable characters"
    return tuple(dict.fromkeys(items))  # without repeats, in order


def valid_name(name: str) -> bool:
    """A client name: 1-64 printable characters (any script) without ``:``, not the
    server's own name. SPEC §10: other protocols see a JSONsvc client as
    ``JSONsvc:NAME``, so a ``:`` in a name could pass for another protocol's client."""
    return 0 < len(name) <= NAME_LIMIT and name.isprintable() and ":" not in name and name != SERVER_NAME


def valid_service(name: str) -> bool:
    """A service name: 1-128 printable characters (any script)."""
    return 0 < len(name) <= SERVICE_LIMIT and name.isprintable()


def _oversize() -> WireError:
    return WireError(f"header longer than {HEADER_LIMIT} characters")


_JSON_TYPES: Final = {
    dict: "an object", list: "an array", str: "a string", bool: "a boolean",
    int: "a number", float: "a number", type(None): "null",
}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


# -- writing -------------------------------------------------------------------


def dump(value: Any) -> str:
    """JSON text for ``value``: orjson, or the standard library for what orjson refuses.

    orjson refuses integers beyond 64 bits and lone surrogates (``"\\ud800"`` in
    a header decodes to one); ``json.dumps`` writes both back as they came.
    """
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, UnicodeDecodeError):
        return json.dumps(value, separators=(",", ":"), allow_nan=False)


def with_sender(message: Message, name: str) -> str:
    """The message as its receivers get it: unchanged when ``from`` is already ``name``,
    else with ``from`` set to ``name`` (the header re-written, the data kept exactly)."""
    if message.sender == name:
        return message.text
    header = {**message.header, "from": name}
    return join(header, message.data)


def join(header: dict[str, Any], data: str | None = None) -> str:
    """Write a message: the header, then ``>`` and ``data`` when there is data."""
    text = dump(header)
    return text if data is None else f"{text}{_DATA_MARK}{data}"
