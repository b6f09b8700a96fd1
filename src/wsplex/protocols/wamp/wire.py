"""WAMP messages on the wire: the two serialisers and message validation, without I/O.

Everything here is a pure function: bytes or text in, a validated message (a
frozen dataclass) or :class:`ProtocolViolation` out, so it can be fuzzed on its
own (``tests/test_wamp_wire.py``). The references are to the WAMP specification
(wamp-proto.org, "The Web Application Messaging Protocol", the Basic Profile
unless said otherwise).

* Serialisers (§"Serializations"): ``wamp.2.json`` is one JSON array per text
  frame; binary values travel as a string ``"\\0"`` + base64 (§"Binary
  conversion of JSON Strings"). ``wamp.2.msgpack`` is one MessagePack array per
  binary frame, binaries as MessagePack bin. Frames of the other type are a
  protocol violation.
* Message structure (§"Message Definitions"): an array whose first element is
  the message type code, then the fields in order, with ``Arguments|list`` and
  ``ArgumentsKw|dict`` optional at the end. Anything else, and every message a
  router never receives (WELCOME, EVENT, RESULT...), is a protocol violation:
  the router answers it with ABORT ``wamp.error.protocol_violation``
  (§"Protocol Violations").
* IDs (§"Identifiers", "IDs"): integers in [1, 2^53]; booleans are not integers.
* URIs (§"URIs", "Relaxed/Loose URIs"): a router checks the loose rule;
  components separated by ``.``, none empty, none holding whitespace or ``#``.
  Wildcard patterns (Advanced Profile, "Pattern-based Subscription") may have
  empty components. A URI that breaks the rule is not a protocol violation but
  an ERROR ``wamp.error.invalid_uri`` for that request (checked by the router).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import orjson

# -- message type codes (§"Message Codes and Direction") -----------------------

HELLO: Final = 1
WELCOME: Final = 2
ABORT: Final = 3
CHALLENGE: Final = 4
AUTHENTICATE: Final = 5
GOODBYE: Final = 6
ERROR: Final = 8
PUBLISH: Final = 16
PUBLISHED: Final = 17
SUBSCRIBE: Final = 32
SUBSCRIBED: Final = 33
UNSUBSCRIBE: Final = 34
UNSUBSCRIBED: Final = 35
EVENT: Final = 36
CALL: Final = 48
CANCEL: Final = 49
RESULT: Final = 50
REGISTER: Final = 64
REGISTERED: Final = 65
UNREGISTER: Final = 66
UNREGISTERED: Final = 67
INVOCATION: Final = 68
INTERRUPT: Final = 69
YIELD: Final = 70

#: §"IDs": every ID is an integer in [1, 2^53] (exactly representable in IEEE 754).
MAX_ID: Final = 2**53

_LOOSE_URI = re.compile(r"^([^\s.#]+\.)*([^\s.#]+)$")
_LOOSE_PATTERN = re.compile(r"^(([^\s.#]+\.)|\.)*([^\s.#]+)?$")


class ProtocolViolation(Exception):
    """A message the router cannot accept at all: ABORT ``wamp.error.protocol_violation``."""


# -- the messages a router receives --------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    realm: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Abort:
    details: dict[str, Any]
    reason: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """The answer to a CHALLENGE (Advanced Profile, "Ticket-based Authentication")."""

    signature: str
    extra: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Goodbye:
    details: dict[str, Any]
    reason: str


@dataclass(frozen=True, slots=True)
class Error:
    """An error a callee returns for an INVOCATION (the only ERROR a router receives)."""

    request_type: int
    request: int
    details: dict[str, Any]
    error: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Publish:
    request: int
    options: dict[str, Any]
    topic: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    request: int
    options: dict[str, Any]
    topic: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    request: int
    subscription: int


@dataclass(frozen=True, slots=True)
class Call:
    request: int
    options: dict[str, Any]
    procedure: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Cancel:
    request: int
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Register:
    request: int
    options: dict[str, Any]
    procedure: str


@dataclass(frozen=True, slots=True)
class Unregister:
    request: int
    registration: int


@dataclass(frozen=True, slots=True)
class Yield:
    request: int
    options: dict[str, Any]
    args: list[Any] | None
    kwargs: dict[str, Any] | None


Message = (
    Hello | Abort | Authenticate | Goodbye | Error | Publish | Subscribe | Unsubscribe | Call | Cancel
    | Register | Unregister | Yield
)

# -- field checks -----------------------------------------------------------------


def is_id(value: object) -> bool:
    return type(value) is int and 1 <= value <= MAX_ID


def is_valid_uri(uri: str, *, pattern: bool = False) -> bool:
    """True when ``uri`` follows the loose URI rule (§"Relaxed/Loose URIs"); ``pattern``
    allows the empty components of a wildcard pattern (but not an empty URI)."""
    rule = _LOOSE_PATTERN if pattern else _LOOSE_URI
    return bool(uri) and rule.match(uri) is not None


def _id(value: object, what: str) -> int:
    if not is_id(value):
        raise ProtocolViolation(f"{what} must be an ID (an integer in [1, 2^53])")
    assert isinstance(value, int)
    return value


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ProtocolViolation(f"{what} must be a dictionary with string keys")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ProtocolViolation(f"{what} must be a string (a URI)")
    return value


def _payload(fields: list[Any], start: int, what: str) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """The optional ``Arguments|list`` and ``ArgumentsKw|dict`` at ``fields[start:]``."""
    rest = fields[start:]
    if len(rest) > 2:
        raise ProtocolViolation(f"{what}: too many fields")
    args = rest[0] if rest else None
    if args is not None and not isinstance(args, list):
        raise ProtocolViolation(f"{what}: Arguments must be a list")
    kwargs = _dict(rest[1], f"{what}: ArgumentsKw") if len(rest) == 2 else None
    return args, kwargs


def _arity(fields: list[Any], least: int, most: int, what: str) -> None:
    if not least <= len(fields) <= most:
        raise ProtocolViolation(f"{what} has {len(fields)} fields, expected {least}..{most}")


def message_from(fields: object) -> Message:
    """Validate one decoded message (§"Message Definitions")."""
    if not isinstance(fields, list) or not fields:
        raise ProtocolViolation("a WAMP message is a non-empty array")
    code = fields[0]
    if type(code) is not int:
        raise ProtocolViolation("the first element of a message must be its type code")
    parse = _PARSERS.get(code)
    if parse is None:
        raise ProtocolViolation(f"message type {code} is not one a router receives")
    return parse(fields)


def _hello(f: list[Any]) -> Message:
    _arity(f, 3, 3, "HELLO")
    return Hello(_str(f[1], "HELLO.Realm"), _dict(f[2], "HELLO.Details"))


def _abort(f: list[Any]) -> Message:
    _arity(f, 3, 3, "ABORT")
    return Abort(_dict(f[1], "ABORT.Details"), _str(f[2], "ABORT.Reason"))


def _authenticate(f: list[Any]) -> Message:
    _arity(f, 3, 3, "AUTHENTICATE")
    return Authenticate(_str(f[1], "AUTHENTICATE.Signature"), _dict(f[2], "AUTHENTICATE.Extra"))


def _goodbye(f: list[Any]) -> Message:
    _arity(f, 3, 3, "GOODBYE")
    return Goodbye(_dict(f[1], "GOODBYE.Details"), _str(f[2], "GOODBYE.Reason"))


def _error(f: list[Any]) -> Message:
    _arity(f, 5, 7, "ERROR")
    request_type = f[1]
    if request_type != INVOCATION or type(request_type) is not int:
        raise ProtocolViolation("a router receives ERROR for INVOCATION only")
    args, kwargs = _payload(f, 5, "ERROR")
    return Error(request_type, _id(f[2], "ERROR.Request"), _dict(f[3], "ERROR.Details"),
                 _str(f[4], "ERROR.Error"), args, kwargs)


def _publish(f: list[Any]) -> Message:
    _arity(f, 4, 6, "PUBLISH")
    args, kwargs = _payload(f, 4, "PUBLISH")
    return Publish(_id(f[1], "PUBLISH.Request"), _dict(f[2], "PUBLISH.Options"),
                   _str(f[3], "PUBLISH.Topic"), args, kwargs)


def _subscribe(f: list[Any]) -> Message:
    _arity(f, 4, 4, "SUBSCRIBE")
    return Subscribe(_id(f[1], "SUBSCRIBE.Request"), _dict(f[2], "SUBSCRIBE.Options"),
                     _str(f[3], "SUBSCRIBE.Topic"))


def _unsubscribe(f: list[Any]) -> Message:
    _arity(f, 3, 3, "UNSUBSCRIBE")
    return Unsubscribe(_id(f[1], "UNSUBSCRIBE.Request"), _id(f[2], "UNSUBSCRIBE.Subscription"))


def _call(f: list[Any]) -> Message:
    _arity(f, 4, 6, "CALL")
    args, kwargs = _payload(f, 4, "CALL")
    return Call(_id(f[1], "CALL.Request"), _dict(f[2], "CALL.Options"), _str(f[3], "CALL.Procedure"),
                args, kwargs)


def _cancel(f: list[Any]) -> Message:
    _arity(f, 3, 3, "CANCEL")
    return Cancel(_id(f[1], "CANCEL.Request"), _dict(f[2], "CANCEL.Options"))


def _register(f: list[Any]) -> Message:
    _arity(f, 4, 4, "REGISTER")
    return Register(_id(f[1], "REGISTER.Request"), _dict(f[2], "REGISTER.Options"),
                    _str(f[3], "REGISTER.Procedure"))


def _unregister(f: list[Any]) -> Message:
    _arity(f, 3, 3, "UNREGISTER")
    return Unregister(_id(f[1], "UNREGISTER.Request"), _id(f[2], "UNREGISTER.Registration"))


def _yield(f: list[Any]) -> Message:
    _arity(f, 3, 5, "YIELD")
    args, kwargs = _payload(f, 3, "YIELD")
    return Yield(_id(f[1], "YIELD.Request"), _dict(f[2], "YIELD.Options"), args, kwargs)


_PARSERS = {
    HELLO: _hello, ABORT: _abort, AUTHENTICATE: _authenticate, GOODBYE: _goodbye, ERROR: _error,
    PUBLISH: _publish,
    SUBSCRIBE: _subscribe, UNSUBSCRIBE: _unsubscribe, CALL: _call, CANCEL: _cancel,
    REGISTER: _register, UNREGISTER: _unregister, YIELD: _yield,
}

# -- serialisers (§"Serializations") ------------------------------------------------------


class Serializer:
    """One WAMP serialisation: frames to messages and messages to payloads."""

    name: str
    is_text: bool

    def decode(self, frame: str | bytes) -> Message:
        raise NotImplementedError

    def encode(self, message: list[Any]) -> bytes:
        raise NotImplementedError


def _from_json_binary(value: Any) -> Any:
    """§"Binary conversion of JSON Strings": ``"\\0" + base64`` is a binary value."""
    if isinstance(value, str):
        if value.startswith("\0"):
            try:
                return base64.b64decode(value[1:], validate=True)
            except ValueError as exc:
                raise ProtocolViolation("a \\0-string is not base64") from exc
        return value
    if isinstance(value, list):
        return [_from_json_binary(item) for item in value]
    if isinstance(value, dict):
        return {key: _from_json_binary(item) for key, item in value.items()}
    return value


def _to_json_binary(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "\0" + base64.b64encode(bytes(value)).decode()
    raise TypeError(f"{type(value).__name__} is not serialisable")


def _check_carriable(fields: Any) -> None:
    """The router passes values from one serialisation to the other, so a message must
    hold only what both can carry (§"Serializations"): string keys, no MessagePack
    timestamps, nesting within what JSON encoding takes (orjson: 254 levels; MessagePack
    takes more), and no text string starting with NUL, which JSON reads as binary
    (§"Binary conversion of JSON Strings"). Encoding the message once as JSON is
    that check, done in C; only when the encoding holds a NUL-led string (binary
    values become one too) are the strings walked in Python."""
    try:
        encoded = orjson.dumps(fields, default=_to_json_binary)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ProtocolViolation(f"a value that not every serialisation can carry: {exc}") from None
    if b'"\\u0000' in encoded and _has_nul_led_text(fields):
        raise ProtocolViolation("a text string starting with \\0: JSON would carry it as binary")


def _has_nul_led_text(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith("\0")
    if isinstance(value, list):
        return any(_has_nul_led_text(item) for item in value)
    if isinstance(value, dict):
        return any(_has_nul_led_text(key) or _has_nul_led_text(item) for key, item in value.items())
    return False


class JSONSerializer(Serializer):
    name = "json"
    is_text = True

    def decode(self, frame: str | bytes) -> Message:
        if not isinstance(frame, str):
            raise ProtocolViolation("wamp.2.json takes text frames")
        try:
            fields = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ProtocolViolation(f"not JSON: {exc}") from None
        if "\\u0000" in frame:  # only then can a value be binary: walk it
            fields = _from_json_binary(fields)
        _check_carriable(fields)
        return message_from(fields)

    def encode(self, message: list[Any]) -> bytes:
        return orjson.dumps(message, default=_to_json_binary)


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolViolation("MessagePack extension types are not WAMP values")


class MsgpackSerializer(Serializer):
    name = "msgpack"
    is_text = False

    def decode(self, frame: str | bytes) -> Message:
        if not isinstance(frame, bytes):
            raise ProtocolViolation("wamp.2.msgpack takes binary frames")
        try:
            fields = msgpack.unpackb(frame, raw=False, strict_map_key=False, ext_hook=_no_ext,
                                     use_list=True)
        except ProtocolViolation:
            raise
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
            raise ProtocolViolation(f"not MessagePack: {type(exc).__name__}") from None
        _check_carriable(fields)
        return message_from(fields)

    def encode(self, message: list[Any]) -> bytes:
        return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


JSON: Final = JSONSerializer()
MSGPACK: Final = MsgpackSerializer()
