"""Server settings: one table of options, one frozen value built from it (SPEC §15).

Every operator setting is one :class:`Option` row in :data:`OPTIONS`: its name
(the long flag without dashes, ``-`` written as ``_``: the key in a TOML
``--config`` file; ``WSPLEX_`` plus the name in capitals in the environment),
its default, how text becomes a value, and its help. The command line
(:mod:`wsplex.cli`) and the :class:`Settings` defaults are both built from the
table, so a default is written once. A new setting is one row here and one
field in :class:`Settings`.

Layers, highest first: command line, environment, file, default (SPEC §15).
This module only knows the table and how to read the file and the environment;
it imports nothing else of wsplex, so every layer may import it.

Defaults follow SPEC §1 and §8: sized for a busy public server, so limits stop
abuse without shaping normal traffic.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Preference = Literal["client", "server"]

#: Environment variables are ``ENV_PREFIX`` plus the option's name in capitals.
ENV_PREFIX = "WSPLEX_"


class BadValue(ValueError):
    """A value that does not fit its option; the message is what the user sees."""


# -- Parsers: text (from the command line, the environment or a file) to a value --

_SIZE = re.compile(r"(\d+)\s*(k|ki|kib|kb|m|mi|mib|mb|g|gi|gib|gb)?", re.IGNORECASE)
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size(text: str) -> int:
    """A byte count, with an optional K/M/G suffix (powers of 1024): ``1MiB``, ``64k``."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise BadValue(f"invalid size {text!r} (examples: 1048576, 64K, 1MiB)")
    number, unit = match.groups()
    value = int(number) * (_UNITS[unit[0].lower()] if unit else 1)
    if value <= 0:
        raise BadValue(f"size must be positive, got {text!r}")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadValue(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise BadValue(f"port must be 0-65535, got {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadValue(f"invalid number of seconds {text!r}") from None
    if value < 0 or math.isnan(value):
        raise BadValue(f"seconds must be 0 or more, got {text!r}")
    return value


def timeout(text: str) -> float:
    """Seconds more than 0: a wait that must end."""
    value = seconds(text)
    if value == 0:
        raise BadValue("must be more than 0 seconds")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadValue(f"invalid number {text!r}") from None
    if value < 0:
        raise BadValue(f"must be 0 or more, got {value}")
    return value


def positive(text: str) -> int:
    value = count(text)
    if value == 0:
        raise BadValue("must be at least 1")
    return value


def subscription_cap(text: str) -> int:
    """A ``--max-subscriptions``: a chat client holds two (its room's channel and topic)."""
    value = count(text)
    if value < 2:
        raise BadValue(f"must be at least 2 (a chat room is a channel and a topic), not {value}")
    return value


def window_bits(text: str) -> int:
    """An LZ77 window as a power of two, 8 to 15 (RFC 7692 §7.1.2)."""
    value = count(text)
    if not 8 <= value <= 15:
        raise BadValue(f"must be between 8 and 15, not {value}")
    return value


def zlib_level(low: int) -> Callable[[str], int]:
    """A zlib level: compression 1-9, memory 1-9."""
    def parse(text: str) -> int:
        value = count(text)
        if not low <= value <= 9:
            raise BadValue(f"must be between {low} and 9, not {value}")
        return value

    return parse


def header_limit(text: str) -> int:
    """A ``--max-header-size``: picows refuses anything above 16 KiB on its own."""
    value = size(text)
    if not 256 <= value <= 16 * 1024:
        raise BadValue(f"must be between 256 and 16k bytes, not {value}")
    return value


def protocol_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise BadValue("give at least one protocol, e.g. --protocols echo,chat")
    if len(set(names)) != len(names):
        raise BadValue(f"protocol listed twice in {text!r}")
    return names


def one_of(*choices: str) -> Callable[[str], str]:
    def choose(text: str) -> str:
        if text not in choices:
            raise BadValue(f"invalid choice {text!r} (choose from {', '.join(choices)})")
        return text

    return choose


def text(value: str) -> str:
    return value


def network(text: str) -> str:
    """An IP network, ``10.0.0.0/8`` or one address (``127.0.0.1``, ``::1``), canonical."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise BadValue(f"invalid address or CIDR {text!r} (examples: 10.0.0.0/8, ::1)") from None


def switch(text: str) -> bool:
    """An on/off setting written as text (environment): 1/0, true/false, yes/no, on/off."""
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise BadValue(f"invalid on/off value {text!r} (use true or false)")


def show_size(value: int) -> str:
    """A byte count as ``--help`` shows it: ``1MiB``, ``16KiB``, ``100``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value % scale == 0:
            return f"{value // scale}{unit}"
    return str(value)


# -- The table ---------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting: the flag ``--NAME`` (with ``_`` as ``-``), file key NAME, ``WSPLEX_NAME``."""

    name: str
    default: Any
    help: str
    group: str
    parse: Callable[[str], Any] = text
    short: str | None = None  # e.g. "-p"
    metavar: str | None = None
    #: The :class:`Settings` field it fills; ``None`` for the same as ``name``.
    attr: str | None = None
    #: Not a :class:`Settings` field: the command line turns it into one (a token file into the token).
    derived: bool = False
    repeat: bool = False  # the flag may be given several times; the value is a tuple
    flag: bool = False  # an on/off switch without an argument
    #: Older environment variables that keep working (SPEC §15), after ``WSPLEX_<NAME>``.
    env: tuple[str, ...] = ()
    #: The default as ``--help`` says it, when the value itself says it badly ("every interface").
    shown: str | None = None
    show: Callable[[Any], str] | None = None  # how ``--help`` writes a default value

    @property
    def field(self) -> str:
        return self.attr or self.name

    @property
    def long_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_names(self) -> tuple[str, ...]:
        return (ENV_PREFIX + self.name.upper(), *self.env)

    def default_text(self) -> str | None:
        """The default in the user's terms, or None when there is nothing worth saying."""
        if self.shown is not None:
            return self.shown
        value = self.default
        if value is None or value is False or value == ():
            return None
        if self.show is not None:
            return self.show(value)
        if isinstance(value, tuple):
            return ",".join(str(item) for item in value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    def decode(self, raw: object) -> Any:
        """A value from the environment (text) or a TOML file (text, number, bool or array)."""
        if self.flag:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str):
                return switch(raw)
            raise BadValue(f"expected true or false, got {raw!r}")
        if isinstance(raw, list):
            if not all(isinstance(item, str) for item in raw):
                raise BadValue(f"expected a list of strings, got {raw!r}")
            if self.repeat:
                return tuple(self.parse(item) for item in raw)
            raw = ",".join(raw)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str):
            raise BadValue(f"expected a string or a number, got {raw!r}")
        if self.repeat:
            return tuple(self.parse(item.strip()) for item in raw.split(",") if item.strip())
        return self.parse(raw)


#: SPEC §1: the original four, then the standard subprotocols of MQTT, STOMP and WAMP.
BUILTIN_PROTOCOLS = ("echo", "chat", "command", "JSONsvc", "mqtt", "v12.stomp", "v11.stomp",
                     "v10.stomp", "wamp.2.json", "wamp.2.msgpack")
DEFAULT_PORT = 12352

NETWORK, PROTOCOLS, KEEPALIVE, LIMITS, COMPRESSION, CLUSTER, LOGGING = (
    "network", "protocols", "keepalive", "limits", "compression", "cluster", "logging")

OPTIONS: tuple[Option, ...] = (
    Option("host", None, "interface to listen on", NETWORK, shown="every interface"),
    Option("port", DEFAULT_PORT, "TCP port; -p9999 and -p 9999 both work; 0 picks a free port",
           NETWORK, port, short="-p"),
    Option("tls_cert", None, "certificate chain: serve wss:// and https://", NETWORK, metavar="PEM"),
    Option("tls_key", None, "private key for --tls-cert", NETWORK, metavar="PEM"),
    Option("origin", (), "allowed Origin header (glob, repeatable); others get 403", NETWORK,
           metavar="GLOB", attr="origins", repeat=True, shown="every origin"),
    Option("trusted_proxy", (), "a proxy's address or network (repeatable): for connections from "
           "it the client address is taken from X-Forwarded-For or Forwarded", NETWORK, network,
           metavar="CIDR", attr="trusted_proxies", repeat=True, shown="none: those headers are ignored"),
    Option("drain_seconds", 0.0, "on shutdown, seconds /healthz answers 503 \"draining\" and new "
           "upgrades are refused while open connections are served, before they are closed with 1001",
           NETWORK, seconds, metavar="S"),

    Option("protocols", BUILTIN_PROTOCOLS, "protocols to enable, in the server's preference order; "
           "a plugin's protocols only when listed", PROTOCOLS, protocol_list, metavar="A,B"),
    Option("prefer", "client", "whose order picks the protocol when the client offers several",
           PROTOCOLS, one_of("client", "server"), metavar="{client,server}"),
    Option("default_protocol", None, "protocol for clients that offer none", PROTOCOLS,
           metavar="NAME", shown="refuse them with 400"),
    Option("protocol_module", (), "load a protocol class from outside wsplex and enable it "
           "(repeatable)", PROTOCOLS, metavar="PKG.MOD:CLASS", attr="protocol_modules", repeat=True),
    Option("app_dir", ".", "folder put first on the import path, for --protocol-module",
           PROTOCOLS, metavar="DIR", shown="the current folder"),
    Option("users", None, "TOML file of users and password hashes (made by wsplex hash-password) "
           "for the protocols that authenticate", PROTOCOLS, metavar="FILE", attr="users_file",
           shown="none: those protocols accept anyone"),
    Option("chat_history", 20, "chat messages a client joining a room receives; 0 disables",
           PROTOCOLS, count, metavar="N"),
    Option("mqtt_max_queued", 1000, "QoS 1 and 2 messages an MQTT session keeps queued (client "
           "away or in-flight window full); past it the oldest are dropped and counted", PROTOCOLS,
           positive, metavar="N"),
    Option("mqtt_max_inflight", 100, "QoS 1 and 2 messages in flight to one MQTT client (at most "
           "the client's 5.0 Receive Maximum)", PROTOCOLS, positive, metavar="N"),
    Option("mqtt_session_expiry", 86_400, "seconds, at most, an MQTT session outlives its connection "
           "(3.1.1 clean session 0, 5.0 Session Expiry Interval)", PROTOCOLS, count, metavar="S"),
    Option("stomp_heart_beat", 10_000, "STOMP heart-beat the server offers, both ways: it sends "
           "at least and wants at least every MS milliseconds (STOMP 1.2 heart-beating); 0 disables",
           PROTOCOLS, count, metavar="MS"),
    Option("stomp_max_frame_size", 1 << 20, "largest STOMP frame, headers and body, accepted; a "
           "bigger one gets an ERROR frame and the close", PROTOCOLS, size, metavar="BYTES",
           show=show_size),
    Option("stomp_queue_limit", 10_000, "messages a STOMP /queue/ keeps while nobody consumes "
           "them; past it the oldest are dropped and counted", PROTOCOLS, positive, metavar="N"),
    Option("stomp_queue_bytes", 64 << 20, "bytes of message bodies and headers a STOMP /queue/ "
           "keeps while nobody consumes them; past it the oldest are dropped and counted",
           PROTOCOLS, size, metavar="BYTES", show=show_size),
    Option("stomp_max_queues", 10_000, "STOMP queues one node keeps (with --redis: sends to or "
           "consumes); a SEND or SUBSCRIBE that would make one more gets an ERROR frame and the "
           "close", PROTOCOLS, positive, metavar="N"),
    Option("admin_token_file", None, "file holding the token for privileged commands "
           "(or set WSPLEX_ADMIN_TOKEN)", PROTOCOLS, metavar="PATH", derived=True,
           shown="none, so privileged commands are disabled"),

    Option("ping_interval", 20.0, "seconds between pings to each client; 0 disables", KEEPALIVE,
           seconds, metavar="S"),
    Option("ping_timeout", 20.0, "seconds a client has to answer a ping before it is closed",
           KEEPALIVE, seconds, metavar="S"),

    Option("max_message_size", 1 << 20, "largest message accepted; bigger ones close with 1009",
           LIMITS, size, metavar="BYTES", show=show_size),
    Option("max_connections", 100_000, "connections in all; more get HTTP 503", LIMITS, positive,
           metavar="N"),
    Option("max_connections_per_ip", 10_000, "connections per client address; more get HTTP 503",
           LIMITS, positive, metavar="N"),
    Option("max_messages_per_second", 10_000, "messages per second per connection; more close it "
           "with 1008", LIMITS, positive, metavar="N"),
    Option("handshake_timeout", 10.0, "seconds a client has to complete the HTTP upgrade", LIMITS,
           seconds, metavar="S"),
    Option("max_header_size", 16 * 1024, "largest request line plus headers, at most 16KiB (the "
           "WebSocket library's own cap); bigger requests get HTTP 431", LIMITS, header_limit,
           metavar="BYTES", show=show_size),
    Option("max_handshakes_per_ip", 256, "TCP connections from one client address still in their "
           "handshake; more are closed at once (trusted proxies are not counted)", LIMITS, positive,
           metavar="N"),
    Option("max_subscriptions", 1000, "topic filters and channels one connection may hold; more "
           "are refused with the protocol's own error", LIMITS, subscription_cap, metavar="N"),
    Option("history_topics", 10_000, "topics (chat rooms) whose last messages are kept; a new one "
           "pushes out the oldest nobody is in", LIMITS, positive, metavar="N"),
    Option("history_bytes", 256 * 1024, "bytes of messages kept per topic's history (chat "
           "rooms), each its payload plus its framed message; the oldest go first", LIMITS, size,
           metavar="BYTES", show=show_size),
    Option("retained_value_size", 1 << 20, "largest payload a retained publication (a JSONsvc "
           "put, an MQTT retained message) keeps; bigger ones are delivered, not kept", LIMITS, size,
           metavar="BYTES", show=show_size),
    Option("retained_max", 100_000, "retained topics in all (with --redis, of the cluster)", LIMITS,
           positive, metavar="N"),
    Option("retained_per_sender", 10_000, "retained topics one client holds", LIMITS,
           positive, metavar="N"),
    Option("retained_bytes", 256 << 20, "bytes of all retained publications, each its payload plus "
           "its framed message (with --redis, of the cluster)", LIMITS, size, metavar="BYTES",
           show=show_size),
    Option("max_send_buffer", 4 << 20, "bytes queued for one client before it is closed as a slow "
           "consumer", LIMITS, size, metavar="BYTES", show=show_size),
    Option("max_send_buffers_total", 1 << 30, "bytes queued for all clients of the node; past it "
           "the clients with the most waiting are closed first (1013)", LIMITS, size, metavar="BYTES",
           show=show_size),
    Option("max_fragments", 4096, "frames one message may arrive in; more close the connection "
           "with 1008", LIMITS, positive, metavar="N"),
    Option("fragment_timeout", 60.0, "seconds a fragmented message may stay unfinished, checked "
           "by the keepalive sweep (every --ping-interval); then 1008; 0 disables", LIMITS, seconds,
           metavar="S"),
    Option("max_partial_bytes", 256 << 20, "bytes held by the unfinished messages of all "
           "connections; the one that would pass it closes with 1013", LIMITS, size, metavar="BYTES",
           show=show_size),
    Option("read_per_turn", 256 * 1024, "work handled for one connection before the others get "
           "their turn: bytes of payload, each frame counting 64 more; then its socket rests until "
           "the next event-loop turn", LIMITS, size, metavar="BYTES", show=show_size),

    Option("compression", True, "permessage-deflate (RFC 7692) with clients that offer it",
           COMPRESSION, flag=True, shown="on"),
    Option("compression_threshold", 128, "messages shorter than this go out uncompressed",
           COMPRESSION, size, metavar="BYTES"),
    Option("compression_context_takeover", False, "keep zlib state between messages when the "
           "client allows it: better ratios, and memory per connection (see README)", COMPRESSION,
           flag=True),
    Option("compression_server_window_bits", 15, "largest LZ77 window (2^N bytes) the server "
           "compresses with", COMPRESSION, window_bits, metavar="8-15"),
    Option("compression_client_window_bits", 15, "largest window asked of clients (with context "
           "takeover, what their context costs here)", COMPRESSION, window_bits, metavar="8-15"),
    Option("compression_memory_level", 8, "zlib memory level of a compressor kept with context "
           "takeover", COMPRESSION, zlib_level(1), metavar="1-9"),
    Option("compression_level", 6, "zlib compression level", COMPRESSION, zlib_level(1),
           metavar="1-9"),

    Option("redis", None, "redis://HOST:PORT/DB: run as one node of a cluster (or set "
           "WSPLEX_REDIS_URL)", CLUSTER, metavar="URL", attr="redis_url", env=("WSPLEX_REDIS_URL",)),
    Option("workers", 1, "processes sharing the port (SO_REUSEPORT); more than 1 needs --redis",
           CLUSTER, positive, metavar="N"),
    Option("redis_ttl", 15.0, "seconds (1-30) a node that died without a goodbye keeps its names "
           "and presence; renewed every S/3", CLUSTER, seconds, metavar="S"),
    Option("redis_ping_timeout", 2.0, "seconds Redis may leave a PING (sent every second) "
           "unanswered before the node counts it as away: /healthz 503, local view only, reconnect",
           CLUSTER, timeout, metavar="S"),

    Option("debug", False, "log every connection (address, offered and chosen protocol) and close",
           LOGGING, short="-d", flag=True),
    Option("log_level", "info", "least severe log records written (-d means debug)", LOGGING,
           one_of("debug", "info", "warning", "error"), metavar="{debug,info,warning,error}"),
    Option("log_format", "text", "log lines as text, or one JSON object per line", LOGGING,
           one_of("text", "json"), metavar="{text,json}"),
)

OPTION = {option.name: option for option in OPTIONS}


def _default(name: str) -> Any:
    return OPTION[name].default


@dataclass(frozen=True)
class Settings:
    """Everything the operator can set (defaults from :data:`OPTIONS`), plus a few for tests."""

    host: str | None = _default("host")
    port: int = _default("port")
    debug: bool = _default("debug")
    log_level: str = _default("log_level")
    log_format: str = _default("log_format")
    protocols: tuple[str, ...] = _default("protocols")
    prefer: Preference = _default("prefer")  # noqa: RUF009 (a str: immutable)
    default_protocol: str | None = _default("default_protocol")
    protocol_modules: tuple[str, ...] = _default("protocol_module")
    ping_interval: float = _default("ping_interval")
    ping_timeout: float = _default("ping_timeout")

    # Limits (SPEC §8)
    max_message_size: int = _default("max_message_size")
    max_connections: int = _default("max_connections")
    max_connections_per_ip: int = _default("max_connections_per_ip")
    max_messages_per_second: int = _default("max_messages_per_second")
    handshake_timeout: float = _default("handshake_timeout")
    max_header_size: int = _default("max_header_size")
    max_subscriptions: int = _default("max_subscriptions")
    retained_value_size: int = _default("retained_value_size")
    retained_max: int = _default("retained_max")
    retained_per_sender: int = _default("retained_per_sender")
    retained_bytes: int = _default("retained_bytes")
    max_handshakes_per_ip: int = _default("max_handshakes_per_ip")
    history_topics: int = _default("history_topics")
    history_bytes: int = _default("history_bytes")
    max_send_buffer: int = _default("max_send_buffer")
    max_send_buffers_total: int = _default("max_send_buffers_total")
    max_fragments: int = _default("max_fragments")
    fragment_timeout: float = _default("fragment_timeout")
    max_partial_bytes: int = _default("max_partial_bytes")
    read_per_turn: int = _default("read_per_turn")
    origins: tuple[str, ...] = _default("origin")
    trusted_proxies: tuple[str, ...] = _default("trusted_proxy")
    tls_cert: str | None = _default("tls_cert")
    tls_key: str | None = _default("tls_key")
    drain_seconds: float = _default("drain_seconds")

    # Protocol options
    app_dir: str = _default("app_dir")
    users_file: str | None = _default("users")
    chat_history: int = _default("chat_history")
    mqtt_max_queued: int = _default("mqtt_max_queued")
    mqtt_max_inflight: int = _default("mqtt_max_inflight")
    mqtt_session_expiry: int = _default("mqtt_session_expiry")  # seconds
    stomp_heart_beat: int = _default("stomp_heart_beat")  # milliseconds
    stomp_max_frame_size: int = _default("stomp_max_frame_size")
    stomp_queue_limit: int = _default("stomp_queue_limit")
    stomp_queue_bytes: int = _default("stomp_queue_bytes")
    stomp_max_queues: int = _default("stomp_max_queues")
    admin_token: str | None = field(default=None, repr=False)  # from --admin-token-file or the env

    # Compression (SPEC §14)
    compression: bool = _default("compression")
    compression_threshold: int = _default("compression_threshold")
    compression_context_takeover: bool = _default("compression_context_takeover")
    compression_server_window_bits: int = _default("compression_server_window_bits")
    compression_client_window_bits: int = _default("compression_client_window_bits")
    compression_memory_level: int = _default("compression_memory_level")
    compression_level: int = _default("compression_level")

    # Cluster (SPEC §9)
    redis_url: str | None = _default("redis")
    redis_ttl: float = _default("redis_ttl")  # seconds a dead node's names outlive it (SPEC §9: <= 30)
    redis_ping_timeout: float = _default("redis_ping_timeout")
    workers: int = _default("workers")

    # Not operator settings: tests and the worker supervisor set these.
    node_id: str | None = None
    close_timeout: float = 5.0
    shutdown_timeout: float = 5.0


# -- The lower layers: a TOML file and the environment ------------------------


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The values set in the environment, by option name; a bad one raises :class:`BadValue`."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        for variable in option.env_names:
            if variable in environ:
                try:
                    values[option.name] = option.decode(environ[variable])
                except BadValue as exc:
                    raise BadValue(f"{variable}: {exc}") from None
                break
    return values


def from_file(path: str) -> dict[str, Any]:
    """The values in a TOML file, by option name; an unknown key or a bad value raises :class:`BadValue`."""
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except OSError as exc:
        raise BadValue(f"cannot read --config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadValue(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, raw in table.items():
        option = OPTION.get(key)
        if option is None:
            raise BadValue(f"{path}: unknown setting {key!r}")
        try:
            values[key] = option.decode(raw)
        except BadValue as exc:
            raise BadValue(f"{path}: {key}: {exc}") from None
    return values
