"""MQTT control packets, both ways, for 3.1.1 (level 4) and 5.0 (level 5): bytes in, packets out.

Pure functions and frozen dataclasses, no I/O. Wire rules, with their sections
(3.1.1 = OASIS MQTT Version 3.1.1, 5.0 = OASIS MQTT Version 5.0):

* Fixed header (3.1.1 §2.2, 5.0 §2.1): the packet type in the high nibble of
  the first byte, flags in the low nibble; PUBREL, SUBSCRIBE and UNSUBSCRIBE
  carry the flags 0b0010 and every other packet but PUBLISH 0b0000, anything
  else is malformed (3.1.1 [MQTT-2.2.2-1, -2], 5.0 §2.1.3).
* Remaining Length (3.1.1 §2.2.3, 5.0 §1.5.5): a Variable Byte Integer of at
  most four bytes, at most 268,435,455.
* UTF-8 strings (3.1.1 §1.5.3, 5.0 §1.5.4): two-byte length, well-formed
  UTF-8 without U+0000, or the packet is malformed [MQTT-1.5.3-1, -2].
* 5.0 properties (§2.2.2): a Variable Byte Integer length, then identifier and
  value pairs; an identifier that is unknown, not allowed in the packet, or
  repeated where it may appear once is a protocol error (§2.2.2.2).

:class:`Splitter` cuts a byte stream into packets (a packet may span several
WebSocket messages and one message may hold several, 3.1.1 §6, 5.0 §6).
:func:`decode` turns one packet into a dataclass. Every problem, whatever the
input, is a :class:`MalformedPacket` that carries the 5.0 reason code the
spec gives it (0x81 Malformed Packet, 0x82 Protocol Error, 0x95 Packet Too
Large, ...); no other exception leaves this module for bad input.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

LEVEL_311: Final = 4
LEVEL_5: Final = 5
#: 3.1.1 §2.2.3, 5.0 §1.5.5: four bytes of Variable Byte Integer.
MAX_REMAINING: Final = 268_435_455


class Type(IntEnum):
    """Control packet types (3.1.1 §2.2.1, 5.0 §2.1.2)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class Reason(IntEnum):
    """5.0 reason codes (§2.4) the server sends; 3.1.1 return codes are mapped from them."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_ID_NOT_VALID = 0x85
    BAD_USERNAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_ID_IN_USE = 0x91
    PACKET_ID_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    SUBSCRIPTION_IDS_NOT_SUPPORTED = 0xA1
    WILDCARDS_NOT_SUPPORTED = 0xA2


#: 3.1.1 §3.2.2.3 CONNACK return codes.
RC311_ACCEPTED: Final = 0x00
RC311_BAD_VERSION: Final = 0x01
RC311_IDENTIFIER_REJECTED: Final = 0x02
RC311_SERVER_UNAVAILABLE: Final = 0x03
RC311_BAD_CREDENTIALS: Final = 0x04
#: 3.1.1 §3.9.3 SUBACK failure.
RC311_SUBACK_FAILURE: Final = 0x80


class MalformedPacket(Exception):
    """Bad input: ``reason`` is the 5.0 reason code of the DISCONNECT it earns (5.0 §4.13)."""

    def __init__(self, message: str, reason: Reason = Reason.MALFORMED_PACKET) -> None:
        super().__init__(message)
        self.reason = reason


def protocol_error(message: str) -> MalformedPacket:
    return MalformedPacket(message, Reason.PROTOCOL_ERROR)


# -- properties (5.0 §2.2.2.2) -------------------------------------------------


class Prop(IntEnum):
    PAYLOAD_FORMAT = 0x01
    MESSAGE_EXPIRY = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_ID = 0x0B
    SESSION_EXPIRY = 0x11
    ASSIGNED_CLIENT_ID = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTH_METHOD = 0x15
    AUTH_DATA = 0x16
    REQUEST_PROBLEM_INFO = 0x17
    WILL_DELAY = 0x18
    REQUEST_RESPONSE_INFO = 0x19
    RESPONSE_INFO = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_AVAILABLE = 0x28
    SUBSCRIPTION_ID_AVAILABLE = 0x29
    SHARED_AVAILABLE = 0x2A


class _Kind(IntEnum):
    BYTE = 1
    U16 = 2
    U32 = 3
    VARINT = 4
    STRING = 5
    BINARY = 6
    PAIR = 7


_KIND: Final = {
    Prop.PAYLOAD_FORMAT: _Kind.BYTE, Prop.MESSAGE_EXPIRY: _Kind.U32, Prop.CONTENT_TYPE: _Kind.STRING,
    Prop.RESPONSE_TOPIC: _Kind.STRING, Prop.CORRELATION_DATA: _Kind.BINARY,
    Prop.SUBSCRIPTION_ID: _Kind.VARINT, Prop.SESSION_EXPIRY: _Kind.U32,
    Prop.ASSIGNED_CLIENT_ID: _Kind.STRING, Prop.SERVER_KEEP_ALIVE: _Kind.U16,
    Prop.AUTH_METHOD: _Kind.STRING, Prop.AUTH_DATA: _Kind.BINARY,
    Prop.REQUEST_PROBLEM_INFO: _Kind.BYTE, Prop.WILL_DELAY: _Kind.U32,
    Prop.REQUEST_RESPONSE_INFO: _Kind.BYTE, Prop.RESPONSE_INFO: _Kind.STRING,
    Prop.SERVER_REFERENCE: _Kind.STRING, Prop.REASON_STRING: _Kind.STRING,
    Prop.RECEIVE_MAXIMUM: _Kind.U16, Prop.TOPIC_ALIAS_MAXIMUM: _Kind.U16, Prop.TOPIC_ALIAS: _Kind.U16,
    Prop.MAXIMUM_QOS: _Kind.BYTE, Prop.RETAIN_AVAILABLE: _Kind.BYTE, Prop.USER_PROPERTY: _Kind.PAIR,
    Prop.MAXIMUM_PACKET_SIZE: _Kind.U32, Prop.WILDCARD_AVAILABLE: _Kind.BYTE,
    Prop.SUBSCRIPTION_ID_AVAILABLE: _Kind.BYTE, Prop.SHARED_AVAILABLE: _Kind.BYTE,
}

#: Where each property may appear (5.0 §2.2.2.2, the table); "will" is the CONNECT
#: payload's Will Properties (§3.1.3.2).
_ALLOWED: Final[dict[str, frozenset[Prop]]] = {
    "connect": frozenset({Prop.SESSION_EXPIRY, Prop.AUTH_METHOD, Prop.AUTH_DATA,
                          Prop.REQUEST_PROBLEM_INFO, Prop.REQUEST_RESPONSE_INFO, Prop.RECEIVE_MAXIMUM,
                          Prop.TOPIC_ALIAS_MAXIMUM, Prop.USER_PROPERTY, Prop.MAXIMUM_PACKET_SIZE}),
    "will": frozenset({Prop.PAYLOAD_FORMAT, Prop.MESSAGE_EXPIRY, Prop.CONTENT_TYPE, Prop.RESPONSE_TOPIC,
                       Prop.CORRELATION_DATA, Prop.WILL_DELAY, Prop.USER_PROPERTY}),
    "publish": frozenset({Prop.PAYLOAD_FORMAT, Prop.MESSAGE_EXPIRY, Prop.CONTENT_TYPE,
                          Prop.RESPONSE_TOPIC, Prop.CORRELATION_DATA, Prop.SUBSCRIPTION_ID,
                          Prop.TOPIC_ALIAS, Prop.USER_PROPERTY}),
    "ack": frozenset({Prop.REASON_STRING, Prop.USER_PROPERTY}),
    "subscribe": frozenset({Prop.SUBSCRIPTION_ID, Prop.USER_PROPERTY}),
    "unsubscribe": frozenset({Prop.USER_PROPERTY}),
    "disconnect": frozenset({Prop.SESSION_EXPIRY, Prop.SERVER_REFERENCE, Prop.REASON_STRING,
                             Prop.USER_PROPERTY}),
    "auth": frozenset({Prop.AUTH_METHOD, Prop.AUTH_DATA, Prop.REASON_STRING, Prop.USER_PROPERTY}),
}

@dataclass(frozen=True, slots=True)
class Properties:
    """A 5.0 property block: single values by identifier, and the repeatable ones as lists.

    User properties keep their order (5.0 §3.3.2.3.7); a PUBLISH to a client may
    carry several Subscription Identifiers (§3.3.4).
    """

    values: dict[Prop, int | str | bytes] = field(default_factory=dict)
    user: tuple[tuple[str, str], ...] = ()
    subscription_ids: tuple[int, ...] = ()

    def get(self, prop: Prop) -> int | str | bytes | None:
        return self.values.get(prop)

    def integer(self, prop: Prop, default: int) -> int:
        value = self.values.get(prop)
        return value if isinstance(value, int) else default

    def __bool__(self) -> bool:
        return bool(self.values or self.user or self.subscription_ids)


NO_PROPERTIES: Final = Properties()


# -- reading ----------------------------------------------------------------------


class _Reader:
    """Bounds-checked reads over one packet body: every short read is a MalformedPacket."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int) -> bytes:
        if size > self.left:
            raise MalformedPacket("packet ends early")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise MalformedPacket("packet ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def varint(self) -> int:
        """A Variable Byte Integer (5.0 §1.5.5): at most four bytes [MQTT-1.5.5-1]."""
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise MalformedPacket("variable byte integer longer than four bytes")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        return utf8(self.binary())

    def rest(self) -> bytes:
        return self.take(self.left)


def utf8(raw: bytes) -> str:
    """3.1.1 §1.5.3, 5.0 §1.5.4: well-formed UTF-8 without U+0000, else malformed."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise MalformedPacket("string is not well-formed UTF-8") from None
    if "\0" in text:
        raise MalformedPacket("string contains U+0000")
    return text


def _properties(reader: _Reader, where: str) -> Properties:
    """A 5.0 property block (§2.2.2): its length, then the properties, checked."""
    length = reader.varint()
    block = _Reader(reader.take(length))
    allowed = _ALLOWED[where]
    values: dict[Prop, int | str | bytes] = {}
    user: list[tuple[str, str]] = []
    ids: list[int] = []
    while block.left:
        code = block.varint()
        try:
            prop = Prop(code)
        except ValueError:
            raise MalformedPacket(f"unknown property 0x{code:02x}") from None
        if prop not in allowed:
            raise protocol_error(f"property 0x{code:02x} is not allowed in {where}")
        kind = _KIND[prop]
        value: int | str | bytes
        if kind is _Kind.PAIR:
            user.append((block.string(), block.string()))
            continue
        if kind is _Kind.BYTE:
            value = block.byte()
        elif kind is _Kind.U16:
            value = block.u16()
        elif kind is _Kind.U32:
            value = block.u32()
        elif kind is _Kind.VARINT:
            value = block.varint()
        elif kind is _Kind.STRING:
            value = block.string()
        else:
            value = block.binary()
        if prop is Prop.SUBSCRIPTION_ID:
            if value == 0:
                raise protocol_error("subscription identifier 0")  # §3.8.2.1.2
            ids.append(int(value))
            if where != "publish" and len(ids) > 1:
                raise protocol_error("subscription identifier given twice")
            continue
        if prop in values:
            raise protocol_error(f"property 0x{code:02x} given twice")  # §2.2.2.2
        values[prop] = value
    _check_values(values)
    return Properties(values, tuple(user), tuple(ids))


def decode_properties(data: bytes, where: str = "publish") -> Properties:
    """A property block with its length prefix, as :func:`encode_properties` writes it."""
    reader = _Reader(data)
    props = _properties(reader, where)
    if reader.left:
        raise MalformedPacket("bytes after the property block")
    return props


def _check_values(values: dict[Prop, int | str | bytes]) -> None:
    """Value rules of 5.0 §3.1.2.11 and §3.3.2.3."""
    for prop in (Prop.PAYLOAD_FORMAT, Prop.REQUEST_PROBLEM_INFO, Prop.REQUEST_RESPONSE_INFO):
        if values.get(prop, 0) not in (0, 1):
            raise protocol_error(f"property 0x{prop:02x} must be 0 or 1")
    if values.get(Prop.RECEIVE_MAXIMUM) == 0:
        raise protocol_error("Receive Maximum 0")  # §3.1.2.11.3
    if values.get(Prop.MAXIMUM_PACKET_SIZE) == 0:
        raise protocol_error("Maximum Packet Size 0")  # §3.1.2.11.4
    topic = values.get(Prop.RESPONSE_TOPIC)
    if isinstance(topic, str) and ("+" in topic or "#" in topic):
        raise protocol_error("Response Topic holds a wildcard")  # [MQTT-3.3.2-14]


# -- packets -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT (3.1.1 §3.1, 5.0 §3.1)."""

    protocol_name: str
    level: int
    clean: bool
    keep_alive: int
    client_id: str
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH (3.1.1 §3.3, 5.0 §3.3); ``packet_id`` is 0 at QoS 0."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Ack:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (§3.4-§3.7): a packet id, a 5.0 reason."""

    type: Type
    packet_id: int
    reason: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """One filter of a SUBSCRIBE with its options (5.0 §3.8.3.1; 3.1.1 has the QoS only)."""

    topic_filter: str
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    requests: tuple[SubscriptionRequest, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    reason: int = 0
    properties: Properties = NO_PROPERTIES


Packet = Connect | Publish | Ack | Subscribe | Unsubscribe | PingReq | Disconnect | Auth

_FLAGS_0010: Final = frozenset({Type.PUBREL, Type.SUBSCRIBE, Type.UNSUBSCRIBE})
_ACKS: Final = frozenset({Type.PUBACK, Type.PUBREC, Type.PUBREL, Type.PUBCOMP})


class Splitter:
    """Cuts the client's byte stream into packets (3.1.1 §6, 5.0 §6: a WebSocket message
    may hold part of a packet or several of them).

    ``limit`` is the largest packet accepted, fixed header included; a bigger one
    is refused from its fixed header, before its body arrives (5.0 §3.1.2.11.4's
    Maximum Packet Size, which the server announces in CONNACK: 0x95).
    """

    __slots__ = ("_buffer", "limit")

    def __init__(self, limit: int = MAX_REMAINING + 5) -> None:
        self._buffer = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Every complete packet now buffered, as (first byte, body)."""
        buffer = self._buffer
        buffer += data
        packets: list[tuple[int, bytes]] = []
        start = 0
        while len(buffer) - start >= 2:
            length = 0
            for index in range(4):
                position = start + 1 + index
                if position >= len(buffer):
                    break
                byte = buffer[position]
                length |= (byte & 0x7F) << (7 * index)
                if not byte & 0x80:
                    header = index + 2
                    break
            else:
                raise MalformedPacket("remaining length longer than four bytes")
            if position >= len(buffer):
                break  # the length itself is not complete yet
            if header + length > self.limit:
                raise MalformedPacket(f"packet of {header + length} bytes", Reason.PACKET_TOO_LARGE)
            end = start + header + length
            if end > len(buffer):
                break
            packets.append((buffer[start], bytes(buffer[start + header : end])))
            start = end
        if start:
            del buffer[:start]
        return packets

    @property
    def pending(self) -> int:
        return len(self._buffer)


def decode(first: int, body: bytes, level: int) -> Packet:
    """One packet from the client, read as protocol ``level`` (CONNECT reads its own)."""
    kind, flags = first >> 4, first & 0x0F
    reader = _Reader(body)
    if kind == Type.PUBLISH:
        packet: Packet = _publish(reader, flags, level)
    else:
        if kind == 0:
            raise MalformedPacket("packet type 0 is reserved")
        expected = 0b0010 if kind in _FLAGS_0010 else 0
        if flags != expected:
            raise MalformedPacket(f"packet type {kind}: reserved flags {flags:04b}")  # [MQTT-2.2.2-2]
        packet = _decode_other(Type(kind), reader, level)
    if reader.left:
        raise MalformedPacket("bytes after the end of the packet")
    return packet


def _decode_other(kind: Type, reader: _Reader, level: int) -> Packet:
    v5 = level >= LEVEL_5
    if kind is Type.CONNECT:
        return _connect(reader)
    if kind in _ACKS:
        packet_id = _packet_id(reader)
        reason, props = 0, NO_PROPERTIES
        if v5 and reader.left:  # 5.0 §3.4.2.1: reason and properties may be left out
            reason = reader.byte()
            if reader.left:
                props = _properties(reader, "ack")
        return Ack(kind, packet_id, reason, props)
    if kind is Type.SUBSCRIBE:
        return _subscribe(reader, v5)
    if kind is Type.UNSUBSCRIBE:
        packet_id = _packet_id(reader)
        props = _properties(reader, "unsubscribe") if v5 else NO_PROPERTIES
        filters: list[str] = []
        while reader.left:
            filters.append(reader.string())
        if not filters:
            raise protocol_error("UNSUBSCRIBE without a topic filter")  # [MQTT-3.10.3-2]
        return Unsubscribe(packet_id, tuple(filters), props)
    if kind is Type.PINGREQ:
        return PingReq()
    if kind is Type.DISCONNECT:
        if v5 and reader.left:
            reason = reader.byte()
            return Disconnect(reason, _properties(reader, "disconnect") if reader.left else NO_PROPERTIES)
        return Disconnect()
    if kind is Type.AUTH and v5:
        if not reader.left:
            return Auth()
        reason = reader.byte()
        return Auth(reason, _properties(reader, "auth") if reader.left else NO_PROPERTIES)
    raise protocol_error(f"a client does not send {kind.name}")


def _packet_id(reader: _Reader) -> int:
    packet_id = reader.u16()
    if packet_id == 0:
        raise protocol_error("packet identifier 0")  # [MQTT-2.3.1-1]
    return packet_id


def _connect(reader: _Reader) -> Connect:
    name = reader.string()
    level = reader.byte()
    flags = reader.byte()
    keep_alive = reader.u16()
    if name not in ("MQTT", "MQIsdp"):
        raise protocol_error(f"protocol name {name!r}")  # [MQTT-3.1.2-1]
    if level not in (LEVEL_311, LEVEL_5):
        # Not ours to read further: the caller answers with CONNACK 0x01 / 0x84.
        reader.rest()
        return Connect(name, level, True, keep_alive, "")
    v5 = level == LEVEL_5
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
    clean = bool(flags & 0x02)
    will_flag, will_qos, will_retain = bool(flags & 0x04), (flags >> 3) & 0x03, bool(flags & 0x20)
    has_password, has_username = bool(flags & 0x40), bool(flags & 0x80)
    if will_qos == 3:
        raise MalformedPacket("will QoS 3")  # [MQTT-3.1.2-14]
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("will QoS or retain without a will")  # [MQTT-3.1.2-11, -13, -15]
    if has_password and not has_username and not v5:
        raise MalformedPacket("password without a user name")  # 3.1.1 [MQTT-3.1.2-22]
    props = _properties(reader, "connect") if v5 else NO_PROPERTIES
    client_id = reader.string()
    will = None
    if will_flag:
        will_props = _properties(reader, "will") if v5 else NO_PROPERTIES
        will_topic = reader.string()
        will = Will(will_topic, reader.binary(), will_qos, will_retain, will_props)
    username = reader.string() if has_username else None
    password = reader.binary() if has_password else None
    return Connect(name, level, clean, keep_alive, client_id, will, username, password, props)


def _publish(reader: _Reader, flags: int, level: int) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise MalformedPacket("DUP set on a QoS 0 PUBLISH")  # [MQTT-3.3.1-2]
    topic = reader.string()
    packet_id = _packet_id(reader) if qos else 0
    props = _properties(reader, "publish") if level >= LEVEL_5 else NO_PROPERTIES
    if props.subscription_ids:
        raise protocol_error("a client PUBLISH carries a Subscription Identifier")  # [MQTT-3.3.4-6]
    if props.values.get(Prop.TOPIC_ALIAS) == 0:
        raise MalformedPacket("topic alias 0", Reason.TOPIC_ALIAS_INVALID)  # [MQTT-3.3.2-8]
    return Publish(topic, reader.rest(), qos, bool(flags & 0x01), dup, packet_id, props)


def _subscribe(reader: _Reader, v5: bool) -> Subscribe:
    packet_id = _packet_id(reader)
    props = _properties(reader, "subscribe") if v5 else NO_PROPERTIES
    requests: list[SubscriptionRequest] = []
    while reader.left:
        topic_filter = reader.string()
        options = reader.byte()
        qos = options & 0x03
        if qos == 3:
            raise MalformedPacket("subscription QoS 3")  # [MQTT-3.8.3-4]
        if not v5:
            if options & 0xFC:
                raise MalformedPacket("SUBSCRIBE reserved option bits set")  # 3.1.1 [MQTT-3-8.3-4]
            requests.append(SubscriptionRequest(topic_filter, qos))
            continue
        if options & 0xC0:
            raise MalformedPacket("SUBSCRIBE reserved option bits set")  # 5.0 [MQTT-3.8.3-5]
        handling = (options >> 4) & 0x03
        if handling == 3:
            raise protocol_error("Retain Handling 3")  # 5.0 §3.8.3.1
        requests.append(SubscriptionRequest(topic_filter, qos, bool(options & 0x04),
                                            bool(options & 0x08), handling))
    if not requests:
        raise protocol_error("SUBSCRIBE without a topic filter")  # [MQTT-3.8.3-3]
    return Subscribe(packet_id, tuple(requests), props)


# -- writing -------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """A Variable Byte Integer (5.0 §1.5.5, 3.1.1 §2.2.3)."""
    if not 0 <= value <= MAX_REMAINING:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _binary(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw


def encode_properties(props: Properties) -> bytes:
    """A property block with its length (5.0 §2.2.2)."""
    out = bytearray()
    for prop, value in props.values.items():
        out += varint(prop)
        kind = _KIND[prop]
        if kind is _Kind.BYTE:
            out.append(int(value))
        elif kind is _Kind.U16:
            out += struct.pack(">H", value)
        elif kind is _Kind.U32:
            out += struct.pack(">I", value)
        elif kind is _Kind.VARINT:
            out += varint(int(value))
        elif kind is _Kind.STRING:
            out += _string(str(value))
        else:
            out += _binary(bytes(value))  # type: ignore[arg-type]
    for sub_id in props.subscription_ids:
        out += varint(Prop.SUBSCRIPTION_ID) + varint(sub_id)
    for key, value in props.user:
        out += varint(Prop.USER_PROPERTY) + _string(key) + _string(value)
    return varint(len(out)) + bytes(out)


def packet(kind: Type, flags: int, body: bytes) -> bytes:
    """Fixed header plus body."""
    return bytes([(kind << 4) | flags]) + varint(len(body)) + body


def encode_connack(level: int, session_present: bool, reason: int,
                   props: Properties = NO_PROPERTIES) -> bytes:
    """CONNACK (3.1.1 §3.2, 5.0 §3.2); a 3.1.1 ``reason`` is its return code."""
    body = bytes([1 if session_present else 0, reason])
    if level >= LEVEL_5:
        body += encode_properties(props)
    return packet(Type.CONNACK, 0, body)


def encode_publish(level: int, publish: Publish) -> bytes:
    """PUBLISH (3.1.1 §3.3, 5.0 §3.3)."""
    flags = (publish.qos << 1) | (0x08 if publish.dup else 0) | (0x01 if publish.retain else 0)
    body = _string(publish.topic)
    if publish.qos:
        body += struct.pack(">H", publish.packet_id)
    if level >= LEVEL_5:
        body += encode_properties(publish.properties)
    return packet(Type.PUBLISH, flags, body + publish.payload)


def encode_ack(level: int, kind: Type, packet_id: int, reason: int = 0,
               props: Properties = NO_PROPERTIES) -> bytes:
    """PUBACK, PUBREC, PUBREL, PUBCOMP; 5.0 leaves out a success reason without properties
    (§3.4.2.1)."""
    body = struct.pack(">H", packet_id)
    if level >= LEVEL_5 and (reason or props):
        body += bytes([reason])
        if props:
            body += encode_properties(props)
    return packet(kind, 0b0010 if kind is Type.PUBREL else 0, body)


def encode_suback(level: int, packet_id: int, reasons: Sequence[int],
                  props: Properties = NO_PROPERTIES) -> bytes:
    body = struct.pack(">H", packet_id)
    if level >= LEVEL_5:
        body += encode_properties(props)
    return packet(Type.SUBACK, 0, body + bytes(reasons))


def encode_unsuback(level: int, packet_id: int, reasons: Sequence[int]) -> bytes:
    """UNSUBACK: 3.1.1 has no payload (§3.11), 5.0 one reason per filter (§3.11.3)."""
    body = struct.pack(">H", packet_id)
    if level >= LEVEL_5:
        body += encode_properties(NO_PROPERTIES) + bytes(reasons)
    return packet(Type.UNSUBACK, 0, body)


PINGRESP: Final = packet(Type.PINGRESP, 0, b"")


def encode_disconnect(reason: int, props: Properties = NO_PROPERTIES) -> bytes:
    """A server DISCONNECT: 5.0 only (§3.14; 3.1.1 servers just close)."""
    body = bytes([reason]) + (encode_properties(props) if props else b"")
    return packet(Type.DISCONNECT, 0, body)


# -- client packets, for tests and tools ------------------------------------------------


def encode_connect(connect: Connect) -> bytes:
    v5 = connect.level >= LEVEL_5
    flags = 0x02 if connect.clean else 0
    will = connect.will
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if connect.password is not None:
        flags |= 0x40
    if connect.username is not None:
        flags |= 0x80
    body = _string(connect.protocol_name) + bytes([connect.level, flags])
    body += struct.pack(">H", connect.keep_alive)
    if v5:
        body += encode_properties(connect.properties)
    body += _string(connect.client_id)
    if will is not None:
        if v5:
            body += encode_properties(will.properties)
        body += _string(will.topic) + _binary(will.payload)
    if connect.username is not None:
        body += _string(connect.username)
    if connect.password is not None:
        body += _binary(connect.password)
    return packet(Type.CONNECT, 0, body)


def encode_subscribe(level: int, subscribe: Subscribe) -> bytes:
    body = struct.pack(">H", subscribe.packet_id)
    if level >= LEVEL_5:
        body += encode_properties(subscribe.properties)
    for request in subscribe.requests:
        options = request.qos
        if level >= LEVEL_5:
            options |= (0x04 if request.no_local else 0) | (0x08 if request.retain_as_published else 0)
            options |= request.retain_handling << 4
        body += _string(request.topic_filter) + bytes([options])
    return packet(Type.SUBSCRIBE, 0b0010, body)


def encode_unsubscribe(level: int, unsubscribe: Unsubscribe) -> bytes:
    body = struct.pack(">H", unsubscribe.packet_id)
    if level >= LEVEL_5:
        body += encode_properties(unsubscribe.properties)
    for topic_filter in unsubscribe.filters:
        body += _string(topic_filter)
    return packet(Type.UNSUBSCRIBE, 0b0010, body)


def encode_client_disconnect(level: int, reason: int = 0) -> bytes:
    return packet(Type.DISCONNECT, 0, bytes([reason]) if level >= LEVEL_5 and reason else b"")
