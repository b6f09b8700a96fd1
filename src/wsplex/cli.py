"""The ``wsplex`` command line (SPEC §1).

It keeps the original PHP server's flags (``-p9999`` or ``-p 9999``, ``-d``)
and adds one flag per setting. A bad value is one line on stderr and exit
status 2, like every argparse error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn
from urllib.parse import urlsplit

from wsplex import __version__
from wsplex.app.registry import ProtocolLoadError, available_protocols, load_class
from wsplex.config import BUILTIN_PROTOCOLS, DEFAULT_PORT, Settings

#: Set in the environment of the processes ``--workers`` starts.
WORKER_ENV = "WSPLEX_WORKER"

_SIZE = re.compile(r"(\d+)\s*(k|ki|kib|kb|m|mi|mib|mb|g|gi|gib|gb)?", re.IGNORECASE)
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, exit status 2: the usage block hides the message in a log."""
        self.exit(2, f"wsplex: error: {message} (see wsplex --help)\n")


def size(text: str) -> int:
    """A byte count, with an optional K/M/G suffix (powers of 1024): ``1MiB``, ``64k``."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 1048576, 64K, 1MiB)")
    number, unit = match.groups()
    value = int(number) * (_UNITS[unit[0].lower()] if unit else 1)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more, got {text!r}")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive(text: str) -> int:
    value = count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def header_limit(text: str) -> int:
    """A ``--max-header-size``: picows refuses anything above 16 KiB on its own."""
    value = size(text)
    if not 256 <= value <= 16 * 1024:
        raise argparse.ArgumentTypeError(f"must be between 256 and 16k bytes, not {value}")
    return value


def protocol_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one protocol, e.g. --protocols echo,chat")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"protocol listed twice in {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wsplex",
        description="One WebSocket server, many application protocols, chosen by the "
        "Sec-WebSocket-Protocol handshake header.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--version", action="version", version=f"wsplex {__version__}")
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=None,
                     help="interface to listen on (default: every interface)")
    net.add_argument("-p", "--port", type=port, default=DEFAULT_PORT,
                     help="TCP port; -p9999 and -p 9999 both work; 0 picks a free port")
    net.add_argument("--tls-cert", metavar="PEM", help="certificate chain: serve wss:// and https://")
    net.add_argument("--tls-key", metavar="PEM", help="private key for --tls-cert")
    net.add_argument("--origin", action="append", default=[], metavar="GLOB",
                     help="allowed Origin header (glob, repeatable); others get 403. "
                     "Default: every origin")

    proto = parser.add_argument_group("protocols")
    proto.add_argument("--protocols", type=protocol_list, default=BUILTIN_PROTOCOLS,
                       metavar="A,B", help="protocols to enable, in the server's preference order "
                       f"(default: {','.join(BUILTIN_PROTOCOLS)} plus none from plugins)")
    proto.add_argument("--prefer", choices=("client", "server"), default="client",
                       help="whose order picks the protocol when the client offers several")
    proto.add_argument("--default-protocol", metavar="NAME",
                       help="protocol for clients that offer none (default: refuse them with 400)")
    proto.add_argument("--protocol-module", action="append", default=[], metavar="PKG.MOD:CLASS",
                       help="load a protocol class from outside wsplex and enable it (repeatable)")
    proto.add_argument("--chat-history", type=count, default=20, metavar="N",
                       help="chat messages a client joining a room receives; 0 disables")
    proto.add_argument("--admin-token-file", metavar="PATH",
                       help="file holding the token for privileged commands "
                       "(or set WSPLEX_ADMIN_TOKEN); without one they are disabled")

    keep = parser.add_argument_group("keepalive")
    keep.add_argument("--ping-interval", type=seconds, default=20.0, metavar="S",
                      help="seconds between pings to each client; 0 disables")
    keep.add_argument("--ping-timeout", type=seconds, default=20.0, metavar="S",
                      help="seconds a client has to answer a ping before it is closed")

    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-message-size", type=size, default=1 << 20, metavar="BYTES",
                        help="largest message accepted; bigger ones close with 1009")
    limits.add_argument("--max-connections", type=positive, default=100_000, metavar="N",
                        help="connections in all; more get HTTP 503")
    limits.add_argument("--max-connections-per-ip", type=positive, default=10_000, metavar="N",
                        help="connections per client address; more get HTTP 503")
    limits.add_argument("--max-messages-per-second", type=positive, default=10_000, metavar="N",
                        help="messages per second per connection; more close it with 1008")
    limits.add_argument("--handshake-timeout", type=seconds, default=10.0, metavar="S",
                        help="seconds a client has to complete the HTTP upgrade")
    limits.add_argument("--max-header-size", type=header_limit, default=16 * 1024, metavar="BYTES",
                        help="largest request line plus headers, at most 16k (the WebSocket "
                        "library's own cap); bigger requests get HTTP 431")
    limits.add_argument("--max-send-buffer", type=size, default=4 << 20, metavar="BYTES",
                        help="bytes queued for one client before it is closed as a slow consumer")

    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--redis", metavar="URL", default=os.environ.get("WSPLEX_REDIS_URL"),
                         help="redis://HOST:PORT/DB: run as one node of a cluster "
                         "(or set WSPLEX_REDIS_URL)")
    cluster.add_argument("--workers", type=positive, default=1, metavar="N",
                         help="processes sharing the port (SO_REUSEPORT); more than 1 needs --redis")
    cluster.add_argument("--redis-ttl", type=seconds, metavar="S",
                         default=os.environ.get("WSPLEX_REDIS_TTL", "15"),
                         help="seconds a node that died without a goodbye keeps its names and "
                         "presence (renewed every S/3; or set WSPLEX_REDIS_TTL)")

    parser.add_argument("-d", "--debug", action="store_true",
                        help="log every connection (address, offered and chosen protocol) and close")
    return parser


def settings_from_args(argv: Sequence[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.workers > 1 and not args.redis:
        parser.error("--workers above 1 needs --redis, so the workers act as one server")
    if args.redis and urlsplit(args.redis).scheme not in ("redis", "rediss", "unix"):
        parser.error(f"--redis {args.redis!r} is not a redis://, rediss:// or unix:// URL")
    if not 1.0 <= args.redis_ttl <= 30.0:
        parser.error("--redis-ttl must be between 1 and 30 seconds (SPEC §9)")
    if args.default_protocol and args.default_protocol not in args.protocols:
        parser.error(f"--default-protocol {args.default_protocol} is not among --protocols")
    token = os.environ.get("WSPLEX_ADMIN_TOKEN") or None
    if args.admin_token_file:
        try:
            with open(args.admin_token_file, encoding="utf-8") as fh:
                token = fh.read().strip() or None
        except OSError as exc:
            parser.error(f"cannot read --admin-token-file: {exc.strerror}")
        if token is None:
            parser.error("--admin-token-file is empty")
    protocols = tuple(args.protocols)
    try:
        available = available_protocols(args.protocol_module)
    except ProtocolLoadError as exc:
        parser.error(str(exc))
    unknown = [name for name in protocols if name not in available]
    if unknown:
        parser.error(f"unknown protocol {', '.join(unknown)} (available: {', '.join(available)})")
    for spec in args.protocol_module:
        name = load_class(spec).name
        if name not in protocols:
            protocols += (name,)
    return Settings(
        host=args.host,
        port=args.port,
        debug=args.debug,
        protocols=protocols,
        prefer=args.prefer,
        default_protocol=args.default_protocol,
        protocol_modules=tuple(args.protocol_module),
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        max_message_size=args.max_message_size,
        max_connections=args.max_connections,
        max_connections_per_ip=args.max_connections_per_ip,
        max_messages_per_second=args.max_messages_per_second,
        handshake_timeout=args.handshake_timeout,
        max_header_size=args.max_header_size,
        max_send_buffer=args.max_send_buffer,
        origins=tuple(args.origin),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        chat_history=args.chat_history,
        admin_token=token,
        redis_url=args.redis,
        redis_ttl=args.redis_ttl,
        workers=args.workers,
    )


def configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        logging.getLogger("wsplex.picows").setLevel(logging.WARNING)


async def serve(settings: Settings) -> None:
    """Run one server until SIGINT, SIGTERM or ``killserver``."""
    from wsplex.server import Server

    server = Server(settings)
    loop = asyncio.get_running_loop()
    # Before start(): a signal that arrives as soon as "listening on" is printed
    # must already mean a graceful shutdown.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_shutdown)
    await server.start()
    await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    settings = settings_from_args(argv)
    configure_logging(settings.debug)
    if settings.workers > 1 and WORKER_ENV not in os.environ:
        from wsplex.workers import supervise

        sys.exit(supervise(settings, list(sys.argv[1:] if argv is None else argv)))
    from wsplex.server import install_event_loop

    run = install_event_loop()
    try:
        run(serve(settings))
    except ProtocolLoadError as exc:
        sys.exit(f"wsplex: error: {exc}")
    except OSError as exc:
        sys.exit(f"wsplex: error: cannot listen on port {settings.port}: {exc.strerror or exc}")
