"""The ``wsplex`` command line (SPEC §1).

It keeps the original PHP server's flags (``-p9999`` or ``-p 9999``, ``-d``)
and has one flag per row of :data:`wsplex.config.OPTIONS`. A bad value, on
the command line, in the environment or in the ``--config`` file, is one line
on stderr and exit status 2, like every argparse error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

from wsplex import __version__
from wsplex.app.registry import ProtocolLoadError, available_protocols, load_class
from wsplex.app.users import Users, UsersFileError
from wsplex.config import (
    OPTIONS,
    BadValue,
    Option,
    Settings,
    from_environment,
    from_file,
)
from wsplex.workers import WORKER_ENV, supervise


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, exit status 2: the usage block hides the message in a log."""
        self.exit(2, f"wsplex: error: {message} (see wsplex --help)\n")


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """The option's parser, its :class:`BadValue` as the message argparse prints."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except BadValue as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _help(option: Option) -> str:
    shown = option.default_text()
    text = option.help if shown is None else f"{option.help} (default: {shown})"
    return text.replace("%", "%%")  # argparse %-formats help strings


def _add(group: argparse._ArgumentGroup, option: Option) -> None:
    flags = [option.long_flag] if option.short is None else [option.short, option.long_flag]
    # No argparse defaults: what the command line leaves out comes from the lower layers.
    if option.flag:  # a switch that is on by default is turned off with --no-NAME
        action = argparse.BooleanOptionalAction if option.default else "store_true"
        group.add_argument(*flags, dest=option.name, action=action, help=_help(option),
                           default=argparse.SUPPRESS)
        return
    group.add_argument(*flags, dest=option.name, type=_argparse_type(option.parse),
                       action="append" if option.repeat else "store", metavar=option.metavar,
                       help=_help(option), default=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wsplex",
        description="One WebSocket server, many application protocols, chosen by the "
        "Sec-WebSocket-Protocol handshake header.",
        epilog="Every flag is also a key in the --config file (the long name without dashes, "
        "- written as _, e.g. max_message_size = \"1MiB\") and an environment variable "
        "(WSPLEX_ and the key in capitals, e.g. WSPLEX_MAX_MESSAGE_SIZE). The command line "
        "beats the environment, which beats the file. Other commands: wsplex connect URL "
        "--protocol NAME (a terminal client for any WebSocket server) and wsplex hash-password "
        "(a password hash for the --users file); each has its own --help.",
    )
    parser.add_argument("--version", action="version", version=f"wsplex {__version__}")
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML file of settings (or set WSPLEX_CONFIG)")
    titles = dict.fromkeys(option.group for option in OPTIONS)  # in the table's order
    groups = {title: parser.add_argument_group(title) for title in titles}
    for option in OPTIONS:
        _add(groups[option.group], option)
    return parser


def layered_values(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """Every option's value: command line beats environment beats file beats default (SPEC §15)."""
    given = vars(args)
    values = {option.name: option.default for option in OPTIONS}
    config = given.pop("config", None) or environ.get("WSPLEX_CONFIG")
    if config:
        values.update(from_file(config))
    values.update(from_environment(environ))
    for option in OPTIONS:
        if option.name in given:
            value = given[option.name]
            values[option.name] = tuple(value) if option.repeat else value
    return values


def settings_from_args(argv: Sequence[str] | None = None,
                       environ: Mapping[str, str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        values = layered_values(args, environ)
    except BadValue as exc:
        parser.error(str(exc))
    if (values["tls_cert"] is None) != (values["tls_key"] is None):
        parser.error("--tls-cert and --tls-key go together")
    redis_url = values["redis"]
    if values["workers"] > 1 and not redis_url:
        parser.error("--workers above 1 needs --redis, so the workers act as one server")
    if redis_url and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        parser.error(f"--redis {redis_url!r} is not a redis://, rediss:// or unix:// URL")
    if not 1.0 <= values["redis_ttl"] <= 30.0:
        parser.error("--redis-ttl must be between 1 and 30 seconds")
    if values["default_protocol"] and values["default_protocol"] not in values["protocols"]:
        parser.error(f"--default-protocol {values['default_protocol']} is not among --protocols")
    token = environ.get("WSPLEX_ADMIN_TOKEN") or None
    if values["admin_token_file"]:
        try:
            with open(values["admin_token_file"], encoding="utf-8") as fh:
                token = fh.read().strip() or None
        except OSError as exc:
            parser.error(f"cannot read --admin-token-file: {exc.strerror}")
        if token is None:
            parser.error("--admin-token-file is empty")
    if values["users"]:
        try:
            Users.load(values["users"])  # a bad file stops the start, not the first login
        except UsersFileError as exc:
            parser.error(str(exc))
    protocols: tuple[str, ...] = values["protocols"]
    modules: tuple[str, ...] = values["protocol_module"]
    add_app_dir(values["app_dir"])
    try:
        available = available_protocols(list(modules))
    except ProtocolLoadError as exc:
        parser.error(str(exc))
    unknown = [name for name in protocols if name not in available]
    if unknown:
        parser.error(f"unknown protocol {', '.join(unknown)} (available: {', '.join(available)})")
    for spec in modules:
        name = load_class(spec).name
        if name not in protocols:
            protocols += (name,)
    fields = {option.field: values[option.name] for option in OPTIONS if not option.derived}
    return Settings(**{**fields, "protocols": protocols, "admin_token": token})


def add_app_dir(folder: str) -> None:
    """Put ``--app-dir`` (the current folder by default) first on the import path, as
    uvicorn does, so ``--protocol-module mypkg.mod:Class`` finds ``mypkg`` where it is run."""
    path = os.path.abspath(folder)
    if path not in sys.path:
        sys.path.insert(0, path)


def configure_logging(settings: Settings) -> None:
    from wsplex.logs import configure

    configure(settings.log_level, settings.log_format, settings.debug)


async def serve(settings: Settings) -> None:
    """Run one server until SIGINT, SIGTERM or ``killserver``."""
    from wsplex.server import Server

    server = Server(settings)
    loop = asyncio.get_running_loop()
    # Before start(): a signal that arrives as soon as "listening on" is printed
    # must already mean a graceful shutdown.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_shutdown)
    loop.add_signal_handler(signal.SIGHUP, server.reload)  # certificate renewals, --users edits
    await server.start()
    await server.serve_forever()


def run_subcommand(argv: Sequence[str]) -> None:
    """``wsplex connect ...`` and ``wsplex hash-password``; with no subcommand, the server."""
    if argv[0] == "connect":
        from wsplex.connect import main as connect

        sys.exit(connect(argv[1:]))
    from wsplex.users import main as hash_password

    sys.exit(hash_password(argv[1:]))


def main(argv: Sequence[str] | None = None) -> None:
    if (sys.argv[1:] if argv is None else argv)[:1] in (["connect"], ["hash-password"]):
        run_subcommand(sys.argv[1:] if argv is None else argv)
    settings = settings_from_args(argv)
    configure_logging(settings)
    if settings.workers > 1 and WORKER_ENV not in os.environ:
        sys.exit(supervise(settings, list(sys.argv[1:] if argv is None else argv)))
    from wsplex.server import install_event_loop

    run = install_event_loop()
    try:
        run(serve(settings))
    except ProtocolLoadError as exc:
        sys.exit(f"wsplex: error: {exc}")
    except OSError as exc:
        sys.exit(f"wsplex: error: cannot listen on port {settings.port}: {exc.strerror or exc}")
